//! The config as written: serde structs that keep source positions, and the
//! validation that turns them into [`Config`]. Checks that span several keys
//! live here; checks of a single value live in the value types themselves.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::dnsbl::RawDnsbl;
use super::fleet::RawFleet;
use super::provider::RawProvider;
use super::{
    Bans, Config, ConfigError, Dns, Domain, Layout, Loc, Metrics, Mta, MxHost, MxTarget, Name,
    NameServer, Responder, Serve, Soa, Ttl,
};

type Sp<T> = Spanned<T>;

pub(super) fn loc<T>(s: &Sp<T>) -> Loc {
    Loc {
        line: u32::try_from(s.referenced.line()).unwrap_or(u32::MAX),
        column: u32::try_from(s.referenced.column()).unwrap_or(u32::MAX),
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/nolist")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    domains: Sp<Vec<Sp<RawDomain>>>,
    #[serde(default)]
    responder: Responder,
    #[serde(default)]
    mta: Mta,
    #[serde(default)]
    bans: Bans,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    metrics: Option<Metrics>,
    provider: Option<RawProvider>,
    #[serde(default)]
    fleet: Option<RawFleet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Sp<Name>,
    #[serde(default = "default_ttl")]
    ttl: Ttl,
    #[serde(default)]
    layout: Layout,
    decoy: Sp<RawHost>,
    real: Sp<Vec<Sp<RawHost>>>,
    #[serde(default)]
    tail_decoy: Option<Sp<RawHost>>,
    #[serde(default)]
    base_zone: Option<PathBuf>,
    #[serde(default)]
    provider: Option<RawProvider>,
}

fn default_ttl() -> Ttl {
    Ttl(3600)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    host: MxTarget,
    preference: u16,
    #[serde(default)]
    ipv4: Vec<Sp<Ipv4Addr>>,
    #[serde(default)]
    ipv6: Vec<Sp<Ipv6Addr>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    serve: Option<Serve>,
    #[serde(default)]
    soa: Option<Sp<RawSoa>>,
    #[serde(default)]
    ns: Option<Sp<Vec<Sp<RawNs>>>>,
    #[serde(default)]
    dnsbl: Option<Sp<RawDnsbl>>,
}

/// A name server: a bare name, or `{ host, ipv4, ipv6 }` when the server is
/// inside a planned zone and needs address records.
struct RawNs {
    host: Name,
    ipv4: Vec<Sp<Ipv4Addr>>,
    ipv6: Vec<Sp<Ipv6Addr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNsMap {
    host: Name,
    #[serde(default)]
    ipv4: Vec<Sp<Ipv4Addr>>,
    #[serde(default)]
    ipv6: Vec<Sp<Ipv6Addr>>,
}

impl<'de> Deserialize<'de> for RawNs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawNs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name server host name, or a mapping with `host`, `ipv4`, `ipv6`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawNs, E> {
                Ok(RawNs {
                    host: Name::parse(s).map_err(E::custom)?,
                    ipv4: Vec::new(),
                    ipv6: Vec::new(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawNs, A::Error> {
                let m = RawNsMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawNs {
                    host: m.host,
                    ipv4: m.ipv4,
                    ipv6: m.ipv6,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoa {
    mname: Name,
    rname: Sp<String>,
    #[serde(default = "default_serial")]
    serial: u32,
    #[serde(default = "default_refresh")]
    refresh: Ttl,
    #[serde(default = "default_retry")]
    retry: Ttl,
    #[serde(default = "default_expire")]
    expire: Ttl,
    #[serde(default = "default_minimum")]
    minimum: Ttl,
}

fn default_serial() -> u32 {
    1
}
fn default_refresh() -> Ttl {
    Ttl(3600)
}
fn default_retry() -> Ttl {
    Ttl(900)
}
fn default_expire() -> Ttl {
    Ttl(1_209_600)
}
fn default_minimum() -> Ttl {
    Ttl(3600)
}

impl RawConfig {
    /// Checks what spans several keys and builds the validated [`Config`].
    pub(super) fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        if self.domains.value.is_empty() {
            return Err(ConfigError::at(
                path,
                loc(&self.domains),
                "`domains` is empty: configure at least one mail domain",
            ));
        }
        let mut seen: HashMap<Name, Loc> = HashMap::new();
        let mut domains = Vec::with_capacity(self.domains.value.len());
        for raw in self.domains.value {
            let at = loc(&raw);
            let name_at = loc(&raw.value.name);
            if let Some(first) = seen.insert(raw.value.name.value.clone(), name_at) {
                return Err(ConfigError::at(
                    path,
                    name_at,
                    format!(
                        "duplicate domain {} (first defined at line {})",
                        raw.value.name.value.as_str(),
                        first.line
                    ),
                ));
            }
            domains.push(raw.value.validate(path, at)?);
        }
        let fleet = self
            .fleet
            .map(|f| f.validate(path, !self.mta.logs.is_empty()))
            .transpose()?;
        Ok(Config {
            source: path.to_path_buf(),
            state_dir: self.state_dir,
            domains,
            responder: self.responder,
            mta: self.mta,
            bans: self.bans,
            dns: self.dns.validate(path)?,
            metrics: self.metrics,
            provider: self.provider.map(|p| p.validate(path)).transpose()?,
            fleet,
        })
    }
}

impl RawDomain {
    fn validate(self, path: &Path, at: Loc) -> Result<Domain, ConfigError> {
        match (self.layout, &self.tail_decoy) {
            (Layout::Sandwich, None) => {
                return Err(ConfigError::at(
                    path,
                    at,
                    format!(
                        "domain {}: layout `sandwich` needs a `tail_decoy` (the highest-preference decoy)",
                        self.name.value.as_str()
                    ),
                ));
            }
            (Layout::Classic, Some(tail)) => {
                return Err(ConfigError::at(
                    path,
                    loc(tail),
                    format!(
                        "domain {}: `tail_decoy` is only used with `layout: sandwich`",
                        self.name.value.as_str()
                    ),
                ));
            }
            _ => {}
        }
        if self.real.value.is_empty() {
            return Err(ConfigError::at(
                path,
                loc(&self.real),
                format!(
                    "domain {}: `real` is empty: at least one MX must accept mail",
                    self.name.value.as_str()
                ),
            ));
        }
        let host = |h: Sp<RawHost>| {
            let at = loc(&h);
            h.value.validate(path, at)
        };
        Ok(Domain {
            name: self.name.value,
            ttl: self.ttl.0,
            layout: self.layout,
            decoy: host(self.decoy)?,
            real: self
                .real
                .value
                .into_iter()
                .map(host)
                .collect::<Result<_, _>>()?,
            tail_decoy: self.tail_decoy.map(host).transpose()?,
            base_zone: self.base_zone.map(|p| relative_to_config(path, p)),
            provider: self.provider.map(|p| p.validate(path)).transpose()?,
            at,
        })
    }
}

impl RawHost {
    fn validate(self, path: &Path, at: Loc) -> Result<MxHost, ConfigError> {
        Ok(MxHost {
            target: self.host,
            preference: self.preference,
            ipv4: unique(path, self.ipv4)?,
            ipv6: unique(path, self.ipv6)?,
            at,
        })
    }
}

/// `p` as given if absolute, else relative to the config file's directory.
pub(super) fn relative_to_config(config: &Path, p: PathBuf) -> PathBuf {
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// The values of `list`, refusing any that appears twice.
fn unique<T: PartialEq + Copy + std::fmt::Display>(
    path: &Path,
    list: Vec<Sp<T>>,
) -> Result<Vec<T>, ConfigError> {
    let mut out: Vec<T> = Vec::with_capacity(list.len());
    for item in &list {
        if out.contains(&item.value) {
            return Err(ConfigError::at(
                path,
                loc(item),
                format!("address {} is listed twice", item.value),
            ));
        }
        out.push(item.value);
    }
    Ok(out)
}

impl RawDns {
    fn validate(self, path: &Path) -> Result<Dns, ConfigError> {
        let (soa, ns) = match (self.soa, self.ns) {
            (None, None) => (None, Vec::new()),
            (Some(soa), Some(ns)) => {
                if ns.value.is_empty() {
                    return Err(ConfigError::at(
                        path,
                        loc(&ns),
                        "`dns.ns` is empty: a zone needs at least one name server",
                    ));
                }
                let ns = ns
                    .value
                    .into_iter()
                    .map(|n| {
                        let at = loc(&n);
                        Ok(NameServer {
                            at,
                            host: n.value.host,
                            ipv4: unique(path, n.value.ipv4)?,
                            ipv6: unique(path, n.value.ipv6)?,
                        })
                    })
                    .collect::<Result<_, ConfigError>>()?;
                (Some(soa.value.validate(path)?), ns)
            }
            (Some(soa), None) => {
                return Err(ConfigError::at(
                    path,
                    loc(&soa),
                    "`dns.soa` needs `dns.ns` too: a complete zone has both",
                ));
            }
            (None, Some(ns)) => {
                return Err(ConfigError::at(
                    path,
                    loc(&ns),
                    "`dns.ns` needs `dns.soa` too: a complete zone has both",
                ));
            }
        };
        let dnsbl = self
            .dnsbl
            .map(|d| {
                let at = loc(&d);
                d.value.validate(path, at, soa.is_some())
            })
            .transpose()?;
        Ok(Dns {
            serve: self.serve,
            soa,
            ns,
            dnsbl,
        })
    }
}

impl RawSoa {
    fn validate(self, path: &Path) -> Result<Soa, ConfigError> {
        let rname = mailbox_to_rname(&self.rname.value)
            .map_err(|m| ConfigError::at(path, loc(&self.rname), m))?;
        Ok(Soa {
            mname: self.mname,
            rname,
            serial: self.serial,
            refresh: self.refresh.0,
            retry: self.retry.0,
            expire: self.expire.0,
            minimum: self.minimum.0,
        })
    }
}

/// Turns `hostmaster@example.org` (or `hostmaster.example.org`) into the
/// SOA RNAME `hostmaster.example.org.`, escaping dots in the local part.
fn mailbox_to_rname(mailbox: &str) -> Result<String, String> {
    let Some((local, domain)) = mailbox.rsplit_once('@') else {
        return Name::parse(mailbox)
            .map(|n| n.to_string())
            .map_err(|e| format!("invalid `rname`: {e}"));
    };
    let valid_local = !local.is_empty()
        && local.len() <= 63
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !valid_local {
        return Err(format!(
            "invalid `rname` {mailbox:?}: the local part may hold letters, digits, '.', '_', '+', '-'"
        ));
    }
    let domain = Name::parse(domain).map_err(|e| format!("invalid `rname`: {e}"))?;
    Ok(format!("{}.{domain}", local.replace('.', "\\.")))
}

#[cfg(test)]
mod tests {
    use super::mailbox_to_rname;

    #[test]
    fn rname_from_mailbox() {
        assert_eq!(
            mailbox_to_rname("hostmaster@example.org").unwrap(),
            "hostmaster.example.org."
        );
        assert_eq!(
            mailbox_to_rname("first.last@Example.org").unwrap(),
            "first\\.last.example.org."
        );
        assert_eq!(
            mailbox_to_rname("hostmaster.example.org.").unwrap(),
            "hostmaster.example.org."
        );
        assert!(mailbox_to_rname("a b@example.org").is_err());
        assert!(mailbox_to_rname("@example.org").is_err());
    }
}
