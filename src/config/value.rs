//! Small config value types that validate themselves while being parsed.
//!
//! Doing the check inside `Deserialize` means the YAML parser attaches the
//! line and column of the offending scalar to the error for free.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use ipnet::{IpNet, Ipv4Net};
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

/// The longest ban nolist keeps: 10 years, the longest timeout it gives a
/// firewall ([`crate::enforce::MAX_TIMEOUT`]). Capping every ban here keeps
/// every ban's end a valid RFC 3339 time (years up to 9999) and inside one
/// firewall timeout.
pub const MAX_BAN: Duration = Duration::from_secs(crate::enforce::MAX_TIMEOUT);

/// A ban longer than [`MAX_BAN`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a ban of {0} is longer than the longest ban nolist keeps: at most {days}d (10 years)",
    days = MAX_BAN.as_secs() / 86_400
)]
pub struct BanTooLong(pub Duration);

/// A ban length (`bans.bantime`, `bans.escalation.max`, `bans add --for`):
/// a duration of at most [`MAX_BAN`].
pub fn ban_length(d: Duration) -> Result<Duration, BanTooLong> {
    if d > MAX_BAN {
        return Err(BanTooLong(d));
    }
    Ok(d)
}

/// Deserializes a ban length (see [`ban_length`]), so the parser reports
/// where a too long one is written.
pub(super) fn de_ban_length<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    ban_length(Duration::deserialize(d)?).map_err(de::Error::custom)
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
/// `192.0.2.7/24` is caught rather than silently widened. An IPv4-mapped
/// IPv6 address or network (`::ffff:192.0.2.7`) is read as the IPv4 one it
/// stands for: that is how nolist sees such clients everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// True when `ip` lies inside this network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// `net` with an IPv4-mapped IPv6 network (`::ffff:0:0/96` or
    /// narrower) rewritten as the IPv4 network it stands for.
    pub fn unmapped(net: IpNet) -> IpNet {
        let IpNet::V6(v6) = net else {
            return net;
        };
        match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
            }
            _ => net,
        }
    }
}

/// Why a text is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Neither an address nor address/prefix.
    #[error("invalid CIDR {0:?}: expected an address or address/prefix, e.g. 192.0.2.0/24")]
    Syntax(String),
    /// A network written with host bits.
    #[error("invalid CIDR {text:?}: host bits are set (did you mean {network}?)")]
    HostBits {
        /// As written.
        text: String,
        /// The network it truncates to.
        network: IpNet,
    },
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip.to_canonical())));
        }
        let net: IpNet = s.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        let net = Cidr::unmapped(net);
        if net.trunc() != net {
            return Err(CidrError::HostBits {
                text: s.to_owned(),
                network: net.trunc(),
            });
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
        let err = "192.0.2.7/24".parse::<Cidr>().unwrap_err().to_string();
        assert!(err.contains("192.0.2.0/24"), "{err}");
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    /// Regression: `::ffff:1.2.3.4` was a /128 that no IPv4 client (nor
    /// the engine, which sees mapped clients as IPv4) ever matched.
    #[test]
    fn cidr_reads_ipv4_mapped_addresses_as_ipv4() {
        let parse = |s: &str| s.parse::<Cidr>().map(|c| c.to_string());
        assert_eq!(parse("::ffff:192.0.2.7").unwrap(), "192.0.2.7/32");
        assert_eq!(parse("::ffff:192.0.2.0/120").unwrap(), "192.0.2.0/24");
        assert_eq!(parse("::ffff:0:0/96").unwrap(), "0.0.0.0/0");
        let err = parse("::ffff:192.0.2.7/120").unwrap_err().to_string();
        assert!(err.contains("192.0.2.0/24"), "{err}");
        // Wider than the mapped range, and other IPv6, stay IPv6.
        assert_eq!(parse("::/80").unwrap(), "::/80");
        assert_eq!(parse("2001:db8::1").unwrap(), "2001:db8::1/128");
        assert_eq!(parse("::1").unwrap(), "::1/128");
    }

    #[test]
    fn ban_lengths_stop_at_ten_years() {
        assert_eq!(ban_length(MAX_BAN), Ok(MAX_BAN));
        let err = ban_length(Duration::from_secs(MAX_BAN.as_secs() + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 3650d"), "{err}");
    }
}
