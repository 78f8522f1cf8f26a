//! The plan: the desired DNS state computed from the config.
//!
//! One plan is the single source of truth: `plan` prints it, `serve`
//! publishes it, `verify` compares the live world with it and `apply` pushes
//! it. Building it is pure (no I/O, no clock) and deterministic: the same
//! config always yields the same plan, byte for byte once rendered.

pub mod lint;
pub mod render;

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{Config, Layout, MxTarget, Name, Role, Soa};
pub use lint::{Finding, Severity};

/// The desired state of every configured domain, plus what the linter found.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// One zone per domain, in config order.
    pub zones: Vec<Zone>,
    /// Lint findings, errors first, then by position in the config.
    pub findings: Vec<Finding>,
}

/// The records nolist owns in one zone.
#[derive(Clone, Debug, Serialize)]
pub struct Zone {
    /// The zone apex (the mail domain).
    pub origin: Name,
    /// The layout the MX set follows.
    pub layout: Layout,
    /// TTL of every record.
    pub ttl: u32,
    /// Present when the config has `dns.soa` and `dns.ns`: the zone is complete.
    pub soa: Option<Soa>,
    /// The apex NS set (empty for a fragment).
    pub ns: Vec<Name>,
    /// A and AAAA records of the name servers inside the zone (complete zones only).
    pub ns_addresses: Vec<Address>,
    /// The apex MX RRset, by preference then target.
    pub mx: Vec<Mx>,
    /// A and AAAA records of the MX hosts inside the zone.
    pub addresses: Vec<Address>,
    /// MX hosts outside the zone: no address records here; `verify` resolves them.
    pub external_hosts: Vec<Name>,
}

impl Zone {
    /// True when the zone has SOA and NS, i.e. it is a complete master file.
    pub fn is_complete(&self) -> bool {
        self.soa.is_some() && !self.ns.is_empty()
    }

    /// The in-zone hosts whose address records nolist owns, sorted.
    pub fn owned_hosts(&self) -> BTreeSet<&Name> {
        self.addresses.iter().map(|a| &a.name).collect()
    }
}

/// One MX record, with the role its target plays.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Mx {
    /// Preference (lower is tried first).
    pub preference: u16,
    /// The exchange.
    pub host: MxTarget,
    /// Decoy, real or tail decoy.
    pub role: Role,
}

/// One A or AAAA record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    /// The owner name (an MX host inside the zone).
    pub name: Name,
    /// The address; its family decides A or AAAA.
    pub address: IpAddr,
}

impl Address {
    /// `A` or `AAAA`.
    pub fn rtype(&self) -> &'static str {
        if self.address.is_ipv4() { "A" } else { "AAAA" }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Address", 3)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("type", self.rtype())?;
        st.serialize_field("address", &self.address)?;
        st.end()
    }
}

impl Plan {
    /// Computes the plan and lints it.
    pub fn build(config: &Config) -> Plan {
        let zones = config
            .domains
            .iter()
            .map(|domain| {
                let mut mx = Vec::new();
                let mut addresses = BTreeSet::new();
                let mut external = BTreeSet::new();
                for (role, host) in domain.hosts() {
                    mx.push(Mx {
                        preference: host.preference,
                        host: host.target.clone(),
                        role,
                    });
                    let Some(name) = host.target.host() else {
                        continue;
                    };
                    if name.is_within(&domain.name) {
                        addresses.extend(host.addresses().map(|address| Address {
                            name: name.clone(),
                            address,
                        }));
                    } else {
                        external.insert(name.clone());
                    }
                }
                mx.sort();
                mx.dedup();
                let ns_addresses: BTreeSet<Address> = config
                    .dns
                    .ns
                    .iter()
                    .filter(|ns| ns.host.is_within(&domain.name))
                    .flat_map(|ns| {
                        ns.addresses().map(|address| Address {
                            name: ns.host.clone(),
                            address,
                        })
                    })
                    .collect();
                Zone {
                    origin: domain.name.clone(),
                    layout: domain.layout,
                    ttl: domain.ttl,
                    soa: config.dns.soa.clone(),
                    ns: config.dns.ns.iter().map(|ns| ns.host.clone()).collect(),
                    ns_addresses: ns_addresses.into_iter().collect(),
                    mx,
                    addresses: addresses.into_iter().collect(),
                    external_hosts: external.into_iter().collect(),
                }
            })
            .collect();
        Plan {
            zones,
            findings: lint::lint(config),
        }
    }

    /// Keeps only the zone `origin` and the findings that concern it (or no
    /// domain in particular). Returns `false` when no such zone is planned.
    pub fn retain_domain(&mut self, origin: &Name) -> bool {
        self.zones.retain(|z| &z.origin == origin);
        self.findings
            .retain(|f| f.domain.as_ref().is_none_or(|d| d == origin));
        !self.zones.is_empty()
    }

    /// True when any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}
