//! Small config value types that validate themselves while being parsed.
//!
//! Doing the check inside `Deserialize` means the YAML parser attaches the
//! line and column of the offending scalar to the error for free.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A span of time written as `90s`, `10m`, `1h 30m`, `1d`, or a bare number
/// of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 90s, 10m, 1h or 1d, or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(secs))
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
                u64::try_from(secs).map(Duration::from_secs).map_err(|_| {
                    E::custom(format!("invalid duration {secs}: must not be negative"))
                })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                if let Ok(secs) = s.trim().parse::<u64>() {
                    return Ok(Duration::from_secs(secs));
                }
                humantime::parse_duration(s.trim())
                    .map(Duration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {s:?} ({e}); expected e.g. 90s, 10m, 1h, 1d"
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// A DNS TTL: a duration of at most 2^31 − 1 seconds (RFC 2181 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(pub u32);

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = Duration::deserialize(d)?.as_secs();
        match u32::try_from(secs) {
            Ok(v) if v <= i32::MAX as u32 => Ok(Ttl(v)),
            _ => Err(de::Error::custom(format!(
                "TTL {secs}s is too large: RFC 2181 allows at most 2147483647 seconds"
            ))),
        }
    }
}

/// An address or network in CIDR notation; a bare address means a single
/// host (`/32` or `/128`). Host bits must be zero, so a typo such as
/// `192.0.2.7/24` is caught rather than silently widened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// True when `ip` lies inside this network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        let net: IpNet = s.parse().map_err(|_| {
            format!("invalid CIDR {s:?}: expected an address or address/prefix, e.g. 192.0.2.0/24")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "invalid CIDR {s:?}: host bits are set (did you mean {}?)",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A network prefix length no longer than `MAX` bits (32 for IPv4, 128 for IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLen<const MAX: u8>(pub u8);

impl<'de, const MAX: u8> Deserialize<'de> for PrefixLen<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        match u8::try_from(v) {
            Ok(len) if len <= MAX => Ok(PrefixLen(len)),
            _ => Err(de::Error::custom(format!(
                "invalid prefix length {v}: expected 0 to {MAX}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        let parse = |s: &str| serde_json::from_str::<Duration>(s).map(Duration::as_secs);
        assert_eq!(parse("\"10m\"").unwrap(), 600);
        assert_eq!(parse("\"1h 30m\"").unwrap(), 5400);
        assert_eq!(parse("\"3600\"").unwrap(), 3600);
        assert_eq!(parse("86400").unwrap(), 86_400);
        assert!(parse("\"10 parsecs\"").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn cidr_accepts_hosts_and_networks() {
        assert_eq!(
            "192.0.2.1".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn cidr_rejects_host_bits_and_garbage() {
        let err = "192.0.2.7/24".parse::<Cidr>().unwrap_err();
        assert!(err.contains("192.0.2.0/24"), "{err}");
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }
}
