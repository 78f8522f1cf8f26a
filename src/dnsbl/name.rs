//! RFC 5782 §2.1 and §2.4 query names: the labels below the blocklist zone
//! read as an address, IPv4 as four decimal octets in reverse order, IPv6
//! as 32 hexadecimal nibbles in reverse order. Pure, and total: every
//! sequence of labels maps to exactly one [`Query`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a name under the zone asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// The zone apex itself (SOA, NS).
    Apex,
    /// A complete address.
    Address(IpAddr),
    /// The leading part of an address (1 to 3 octets, 1 to 31 nibbles):
    /// an empty non-terminal above the addresses. Answered NODATA rather
    /// than NXDOMAIN, because a resolver minimising its query names (RFC
    /// 9156) asks for these, and takes NXDOMAIN to mean that nothing below
    /// exists (RFC 8020).
    Partial,
    /// Anything else: no such name.
    Invalid,
}

/// Reads `labels`, the labels in front of the zone, leftmost first (as in
/// `2.0.0.127.bl.example.org`: `["2", "0", "0", "127"]`).
pub fn parse<L: AsRef<[u8]>>(labels: &[L]) -> Query {
    // Without allocating: the DNS server reads one name per query.
    let n = labels.len();
    if n == 0 {
        return Query::Apex;
    }
    let mut o = [0u8; 4];
    if n <= 4
        && labels
            .iter()
            .zip(&mut o)
            .all(|(label, slot)| octet(label.as_ref()).map(|v| *slot = v).is_some())
    {
        return match n {
            4 => Query::Address(Ipv4Addr::new(o[3], o[2], o[1], o[0]).into()),
            _ => Query::Partial,
        };
    }
    if n <= 32 {
        let value = labels.iter().rev().try_fold(0u128, |acc, label| {
            nibble(label.as_ref()).map(|d| (acc << 4) | u128::from(d))
        });
        match (n, value) {
            (32, Some(v)) => return Query::Address(Ipv6Addr::from(v).into()),
            (_, Some(_)) => return Query::Partial,
            (_, None) => {}
        }
    }
    Query::Invalid
}

/// A decimal octet as written in a reversed IPv4 name: `0` to `255`, no
/// leading zero (`010` would be ambiguous: octal to some).
fn octet(label: &[u8]) -> Option<u8> {
    let valid = (1..=3).contains(&label.len())
        && label.iter().all(u8::is_ascii_digit)
        && (label.len() == 1 || label[0] != b'0');
    if !valid {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

/// One hexadecimal digit, either case.
fn nibble(label: &[u8]) -> Option<u8> {
    match label {
        [c] => char::from(*c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok()),
        _ => None,
    }
}

/// The labels of `ip` in RFC 5782 order (for tests and the export's
/// documentation examples): reversed octets or nibbles, dot-separated.
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(63);
            for byte in v6.octets().iter().rev() {
                for d in [byte & 0x0f, byte >> 4] {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push(char::from_digit(u32::from(d), 16).unwrap_or('0'));
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn labels(name: &str) -> Vec<&str> {
        if name.is_empty() {
            Vec::new()
        } else {
            name.split('.').collect()
        }
    }

    #[test]
    fn rfc_5782_examples() {
        // RFC 5782 §2.1 and §2.4.
        assert_eq!(
            parse(&labels("2.0.0.127")),
            Query::Address("127.0.0.2".parse().unwrap())
        );
        let v6 = "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2";
        assert_eq!(
            parse(&labels(v6)),
            Query::Address("2001:db8:1:2:3:4:567:89ab".parse().unwrap())
        );
        assert_eq!(parse(&labels(&v6.to_uppercase())), parse(&labels(v6)));
    }

    #[test]
    fn apex_partial_and_garbage() {
        assert_eq!(parse::<&str>(&[]), Query::Apex);
        for partial in [
            "127",
            "0.127",
            "0.0.127",
            "a",
            "f.e.d",
            &"0.".repeat(30).to_owned(),
        ] {
            let p = partial.trim_end_matches('.');
            assert_eq!(parse(&labels(p)), Query::Partial, "{p}");
        }
        for garbage in [
            "256.0.0.127",
            "02.0.0.127",
            "1.2.3.4.55",
            "x.2.0.0.127",
            "www",
            "1a.0.0.127",
            "-1.0.0.127",
            " 2.0.0.127",
            "g",
            "\u{0}",
        ] {
            assert_eq!(parse(&labels(garbage)), Query::Invalid, "{garbage:?}");
        }
        assert_eq!(parse(&[""]), Query::Invalid);
        // 33 nibbles, 5 octets, a 2-digit label among nibbles.
        assert_eq!(parse(&labels(&["0"; 33].join("."))), Query::Invalid);
        let mut mixed = vec!["0"; 32];
        mixed[7] = "10";
        assert_eq!(parse(&mixed), Query::Invalid);
    }

    proptest! {
        #[test]
        fn every_address_reads_back(v4 in any::<u32>(), v6 in any::<u128>()) {
            for ip in [IpAddr::from(Ipv4Addr::from(v4)), IpAddr::from(Ipv6Addr::from(v6))] {
                prop_assert_eq!(parse(&labels(&reversed(ip))), Query::Address(ip));
            }
        }

        #[test]
        fn any_labels_parse_without_panicking(labels in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5), 0..40)) {
            let q = parse(&labels);
            if let Query::Address(IpAddr::V4(a)) = q {
                prop_assert_eq!(labels.len(), 4);
                prop_assert_eq!(reversed(a.into()).into_bytes(), labels.join(&b'.'));
            }
        }
    }
}
