//! The records nolist manages at a provider: MX, A and AAAA, as RRsets
//! keyed by absolute lowercase name and type.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ProviderError;

/// The record types nolist owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    /// The apex MX RRset.
    Mx,
    /// IPv4 addresses of an MX host.
    A,
    /// IPv6 addresses of an MX host.
    Aaaa,
}

impl RecordType {
    /// `MX`, `A` or `AAAA`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Mx => "MX",
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        }
    }

    /// The type named `s` (any case), if nolist owns such RRsets.
    pub fn parse(s: &str) -> Option<RecordType> {
        match s.to_ascii_uppercase().as_str() {
            "MX" => Some(RecordType::Mx),
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            _ => None,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record's data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rdata {
    /// `MX preference exchange`; the exchange is absolute and lowercase.
    Mx {
        /// Lower is tried first.
        preference: u16,
        /// The mail exchanger, e.g. `mx01.example.org.`.
        exchange: String,
    },
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
}

impl Rdata {
    /// The record's type.
    pub fn rtype(&self) -> RecordType {
        match self {
            Rdata::Mx { .. } => RecordType::Mx,
            Rdata::A(_) => RecordType::A,
            Rdata::Aaaa(_) => RecordType::Aaaa,
        }
    }

    /// An MX record; the exchange is made absolute and lowercase.
    pub fn mx(preference: u16, exchange: &str) -> Rdata {
        Rdata::Mx {
            preference,
            exchange: absolute(exchange),
        }
    }

    /// Parses master-file presentation (`10 mx01.example.org.`,
    /// `192.0.2.1`, `2001:db8::1`) of a record of type `rtype`. A relative
    /// MX exchange is taken as absolute, as the HTTP APIs write them.
    pub fn parse(rtype: RecordType, text: &str) -> Result<Rdata, InvalidRdata> {
        let text = text.trim();
        let bad = || InvalidRdata {
            rtype,
            text: text.to_owned(),
        };
        match rtype {
            RecordType::A => text.parse().map(Rdata::A).map_err(|_| bad()),
            RecordType::Aaaa => text.parse().map(Rdata::Aaaa).map_err(|_| bad()),
            RecordType::Mx => {
                let mut parts = text.split_ascii_whitespace();
                let (Some(pref), Some(exchange), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                let preference = pref.parse().map_err(|_| bad())?;
                Ok(Rdata::mx(preference, exchange))
            }
        }
    }
}

/// Record data that does not parse as its type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {rtype} data {text:?}")]
pub struct InvalidRdata {
    /// The type it should be.
    pub rtype: RecordType,
    /// As written.
    pub text: String,
}

impl fmt::Display for Rdata {
    /// Master-file presentation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rdata::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            Rdata::A(a) => a.fmt(f),
            Rdata::Aaaa(a) => a.fmt(f),
        }
    }
}

/// `name` lowercased with exactly one trailing dot (`.` stays `.`).
pub fn absolute(name: &str) -> String {
    let trimmed = name.trim().trim_end_matches('.').to_ascii_lowercase();
    format!("{trimmed}.")
}

/// Which RRset: an absolute lowercase owner name and a type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The owner, e.g. `example.org.`.
    pub name: String,
    /// The type.
    pub rtype: RecordType,
}

impl Key {
    /// The key of `name` (made absolute and lowercase) and `rtype`.
    pub fn new(name: &str, rtype: RecordType) -> Key {
        Key {
            name: absolute(name),
            rtype,
        }
    }

    /// The owner relative to `zone` (`@` for the apex), for APIs that
    /// want subnames. `None` when the name is outside the zone.
    pub fn relative_to(&self, zone: &str) -> Option<String> {
        let zone = absolute(zone);
        if self.name == zone {
            return Some("@".into());
        }
        self.name
            .strip_suffix(&zone)
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|rest| !rest.is_empty())
            .map(str::to_owned)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)
    }
}

/// One RRset: every record of a name and type, with their TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrSet {
    /// Name and type.
    pub key: Key,
    /// The TTL (an RRset has one; where a provider stores one per record,
    /// the lowest is taken).
    pub ttl: u32,
    /// The records, never empty.
    pub records: BTreeSet<Rdata>,
}

/// What one RRset should become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The RRset.
    pub key: Key,
    /// What the provider holds now (none: the RRset does not exist).
    pub before: Option<RrSet>,
    /// What it must hold (none: delete the RRset).
    pub after: Option<RrSet>,
}

/// The [`RrSet`]s among `keys` of an API that lists RRsets as `(name,
/// type, ttl, contents in master-file form)` (PowerDNS, deSEC, Hetzner),
/// sorted; an RRset without contents is absent.
pub(crate) fn rrsets_from_text(
    provider: &str,
    keys: &[Key],
    sets: impl Iterator<Item = (String, String, u32, Vec<String>)>,
) -> Result<Vec<RrSet>, ProviderError> {
    let mut out = Vec::new();
    for (name, rtype, ttl, contents) in sets {
        let Some(rtype) = RecordType::parse(&rtype) else {
            continue;
        };
        let key = Key::new(&name, rtype);
        if !keys.contains(&key) {
            continue;
        }
        if contents.is_empty() {
            continue;
        }
        let records = contents
            .iter()
            .map(|c| Rdata::parse(rtype, c))
            .collect::<Result<_, _>>()
            .map_err(|message| ProviderError::Protocol {
                provider: provider.into(),
                message: format!("{key}: {message}"),
            })?;
        out.push(RrSet { key, ttl, records });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_absolute_and_lowercase() {
        assert_eq!(absolute("MX01.Example.org"), "mx01.example.org.");
        assert_eq!(absolute("mx01.example.org."), "mx01.example.org.");
        let k = Key::new("mx01.example.org", RecordType::A);
        assert_eq!(k.relative_to("example.org.").as_deref(), Some("mx01"));
        assert_eq!(
            Key::new("example.org", RecordType::Mx)
                .relative_to("example.org")
                .as_deref(),
            Some("@")
        );
        assert_eq!(k.relative_to("example.net"), None);
        assert_eq!(
            Key::new("xexample.org", RecordType::A).relative_to("example.org"),
            None
        );
    }

    #[test]
    fn rdata_parses_presentation() {
        assert_eq!(
            Rdata::parse(RecordType::Mx, "10 MX01.example.org").unwrap(),
            Rdata::mx(10, "mx01.example.org.")
        );
        assert_eq!(
            Rdata::parse(RecordType::Mx, "10 mx01.example.org.")
                .unwrap()
                .to_string(),
            "10 mx01.example.org."
        );
        assert!(Rdata::parse(RecordType::Mx, "ten mx").is_err());
        assert!(Rdata::parse(RecordType::Mx, "10").is_err());
        assert!(Rdata::parse(RecordType::A, "2001:db8::1").is_err());
        assert_eq!(
            Rdata::parse(RecordType::Aaaa, "2001:DB8::1")
                .unwrap()
                .to_string(),
            "2001:db8::1"
        );
    }
}
