//! The planned records of a zone as hickory resource records, and the
//! "owned" RRsets that nobody else may define. Pure: no I/O.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA};
use hickory_proto::rr::{Name as DnsName, RData, Record, RecordType};

use crate::config::{MxTarget, Name};
use crate::plan::Zone;

/// Why a plan could not be turned into records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A name or RNAME did not convert (it was validated, so this is a bug).
    #[error("{0:?} is not a valid DNS name: {1}")]
    Name(String, String),
}

/// Converts a validated name to hickory's absolute form.
pub fn dns_name(name: &Name) -> Result<DnsName, RecordError> {
    from_text(&name.to_string())
}

fn from_text(text: &str) -> Result<DnsName, RecordError> {
    DnsName::from_str(text).map_err(|e| RecordError::Name(text.to_owned(), e.to_string()))
}

fn target_name(target: &MxTarget) -> Result<DnsName, RecordError> {
    match target {
        MxTarget::Host(name) => dns_name(name),
        MxTarget::Null => Ok(DnsName::root()),
        // Lint errors stop a plan with IP literals long before it is served.
        MxTarget::IpLiteral(ip) => from_text(&format!("{ip}.")),
    }
}

/// The RRsets nolist owns in `zone`: the apex MX, the A and AAAA of every
/// in-zone host it defines, and the apex SOA and NS when the config has them.
pub fn owned_rrsets(zone: &Zone) -> Result<BTreeSet<(DnsName, RecordType)>, RecordError> {
    let origin = dns_name(&zone.origin)?;
    let mut owned = BTreeSet::from([(origin.clone(), RecordType::MX)]);
    if zone.is_complete() {
        owned.insert((origin.clone(), RecordType::SOA));
        owned.insert((origin, RecordType::NS));
    }
    for host in zone.owned_hosts() {
        let name = dns_name(host)?;
        owned.insert((name.clone(), RecordType::A));
        owned.insert((name, RecordType::AAAA));
    }
    Ok(owned)
}

/// The RRsets `apply` manages at a DNS provider: [`owned_rrsets`] without
/// the apex SOA and NS, which stay the provider's (as in `plan --format
/// nsupdate`).
pub fn provider_rrsets(zone: &Zone) -> Result<BTreeSet<(DnsName, RecordType)>, RecordError> {
    let mut owned = owned_rrsets(zone)?;
    owned.retain(|(_, t)| !matches!(t, RecordType::SOA | RecordType::NS));
    Ok(owned)
}

/// Every record the plan defines for `zone` (SOA with `serial` when the
/// zone is complete), in a fixed order.
pub fn planned_records(zone: &Zone, serial: u32) -> Result<Vec<Record>, RecordError> {
    let origin = dns_name(&zone.origin)?;
    let ttl = zone.ttl;
    let mut out = Vec::new();
    if let Some(soa) = zone.soa.as_ref().filter(|_| zone.is_complete()) {
        let rdata = SOA::new(
            dns_name(&soa.mname)?,
            from_text(&soa.rname)?,
            serial,
            i32::try_from(soa.refresh).unwrap_or(i32::MAX),
            i32::try_from(soa.retry).unwrap_or(i32::MAX),
            i32::try_from(soa.expire).unwrap_or(i32::MAX),
            soa.minimum,
        );
        out.push(Record::from_rdata(origin.clone(), ttl, RData::SOA(rdata)));
        for ns in &zone.ns {
            let rdata = RData::NS(NS(dns_name(ns)?));
            out.push(Record::from_rdata(origin.clone(), ttl, rdata));
        }
    }
    for mx in &zone.mx {
        let rdata = RData::MX(MX::new(mx.preference, target_name(&mx.host)?));
        out.push(Record::from_rdata(origin.clone(), ttl, rdata));
    }
    let glue = zone.ns_addresses.iter().filter(|_| zone.is_complete());
    let addresses: BTreeSet<_> = zone.addresses.iter().chain(glue).collect();
    for a in addresses {
        let rdata = match a.address {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        out.push(Record::from_rdata(dns_name(&a.name)?, ttl, rdata));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::plan::Plan;

    #[test]
    fn records_match_the_zone_rendering() {
        let cfg = config::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/sandwich.yaml"
        )))
        .unwrap();
        let plan = Plan::build(&cfg);
        let zone = &plan.zones[0];
        let records = planned_records(zone, 7).unwrap();
        let text = crate::plan::render::zone(zone);
        let record_lines = text
            .lines()
            .filter(|l| !l.starts_with(';') && !l.starts_with('$'));
        assert_eq!(records.len(), record_lines.count());
        let RData::SOA(soa) = &records[0].data else {
            panic!("SOA first")
        };
        assert_eq!(soa.serial, 7);
        let owned = owned_rrsets(zone).unwrap();
        assert!(owned.contains(&(
            DnsName::from_str("mx01.example.com.").unwrap(),
            RecordType::AAAA
        )));
        assert!(!owned.contains(&(
            DnsName::from_str("ns1.example.com.").unwrap(),
            RecordType::A
        )));
    }
}
