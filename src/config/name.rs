//! Validated DNS names and MX targets.
//!
//! Every name nolist emits passes through [`Name`]: Unicode input is
//! converted to A-labels (IDNA/UTS 46, STD3 rules), letters are lowered, and
//! the result is checked against the DNS length limits. MX targets are parsed
//! into [`MxTarget`] so that an IP literal or a null MX survives parsing and
//! can be reported by the linter instead of being silently mangled.

use std::fmt;
use std::net::IpAddr;

/// Why a name is not a valid DNS name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing, or only a dot.
    #[error("{0:?} is not a host or domain name")]
    Empty(String),
    /// Two dots in a row, or a leading dot.
    #[error("{0:?} has an empty label")]
    EmptyLabel(String),
    /// Not a host name under IDNA's STD3 rules.
    #[error(
        "{0:?} is not a valid host name (letters, digits and hyphens per label, \
         no leading or trailing hyphen, labels of at most 63 octets, at most 253 in all)"
    )]
    Invalid(String),
    /// Over the DNS length limits.
    #[error("{0:?} is longer than DNS allows")]
    TooLong(String),
}

/// A fully qualified host or domain name in A-label form, lower case,
/// stored without the trailing dot ([`fmt::Display`] adds it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Parses and normalises a name; `input` may be Unicode and may end in a dot.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(NameError::Empty(input.to_owned()));
        }
        if trimmed.split('.').any(str::is_empty) {
            return Err(NameError::EmptyLabel(input.to_owned()));
        }
        let ascii = idna::domain_to_ascii_strict(trimmed)
            .map_err(|_| NameError::Invalid(input.to_owned()))?;
        if ascii.len() > 253 || ascii.split('.').any(|label| label.len() > 63) {
            return Err(NameError::TooLong(input.to_owned()));
        }
        Ok(Name(ascii))
    }

    /// The name without its trailing dot, e.g. `mx1.example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `zone` itself or a name below it.
    pub fn is_within(&self, zone: &Name) -> bool {
        self.0 == zone.0
            || (self.0.len() > zone.0.len()
                && self.0.ends_with(&zone.0)
                && self.0.as_bytes()[self.0.len() - zone.0.len() - 1] == b'.')
    }

    /// True for names reserved for documentation and testing (RFC 2606,
    /// RFC 6761): `example.{com,net,org}`, and the `example`, `test`,
    /// `invalid` and `localhost` top-level domains.
    pub fn is_reserved_example(&self) -> bool {
        const RESERVED: [&str; 7] = [
            "example.com",
            "example.net",
            "example.org",
            "example",
            "test",
            "invalid",
            "localhost",
        ];
        RESERVED.iter().any(|r| {
            let reserved = Name((*r).to_owned());
            self.is_within(&reserved)
        })
    }
}

impl fmt::Display for Name {
    /// The absolute form, with the trailing dot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.0)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        Name::parse(&value)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Name::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What an MX record points at, as written in the config.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MxTarget {
    /// A host name: the only target the lints accept.
    Host(Name),
    /// An IP address where a host name belongs (RFC 5321 §5.1 forbids it).
    IpLiteral(IpAddr),
    /// `.`: the null MX of RFC 7505 ("this domain accepts no mail").
    Null,
}

impl MxTarget {
    /// Parses a target: `.` is the null MX, `192.0.2.1`, `[192.0.2.1]` and
    /// `[IPv6:2001:db8::1]` are IP literals, anything else must be a host name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        if input == "." {
            return Ok(MxTarget::Null);
        }
        let bare = input
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(input);
        let bare = bare.strip_prefix("IPv6:").unwrap_or(bare);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(MxTarget::IpLiteral(ip));
        }
        Name::parse(input).map(MxTarget::Host)
    }

    /// The host name, when the target is one.
    pub fn host(&self) -> Option<&Name> {
        match self {
            MxTarget::Host(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for MxTarget {
    /// The target as it would appear in RDATA.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxTarget::Host(name) => name.fmt(f),
            MxTarget::IpLiteral(ip) => write!(f, "{ip}."),
            MxTarget::Null => f.write_str("."),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MxTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        MxTarget::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for MxTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowered_and_made_absolute() {
        let n = Name::parse("MX1.Example.ORG.").unwrap();
        assert_eq!(n.as_str(), "mx1.example.org");
        assert_eq!(n.to_string(), "mx1.example.org.");
    }

    #[test]
    fn unicode_names_become_a_labels() {
        let n = Name::parse("mx.bücher.example").unwrap();
        assert_eq!(n.as_str(), "mx.xn--bcher-kva.example");
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "under_score.example",
            "sp ace.example",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}example", "abcdefghi.".repeat(26)),
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn within_respects_label_boundaries() {
        let zone = Name::parse("example.org").unwrap();
        assert!(Name::parse("example.org").unwrap().is_within(&zone));
        assert!(Name::parse("mx.example.org").unwrap().is_within(&zone));
        assert!(!Name::parse("badexample.org").unwrap().is_within(&zone));
        assert!(!Name::parse("org").unwrap().is_within(&zone));
    }

    #[test]
    fn reserved_example_names() {
        for n in [
            "example.org",
            "mx.example.com",
            "a.test",
            "b.example",
            "localhost",
        ] {
            assert!(Name::parse(n).unwrap().is_reserved_example(), "{n}");
        }
        for n in ["example.de", "notexample.org", "mail.ru"] {
            assert!(!Name::parse(n).unwrap().is_reserved_example(), "{n}");
        }
    }

    #[test]
    fn mx_targets() {
        assert_eq!(MxTarget::parse(".").unwrap(), MxTarget::Null);
        for lit in [
            "192.0.2.1",
            "[192.0.2.1]",
            "2001:db8::1",
            "[IPv6:2001:db8::1]",
        ] {
            assert!(
                matches!(MxTarget::parse(lit).unwrap(), MxTarget::IpLiteral(_)),
                "{lit}"
            );
        }
        assert_eq!(
            MxTarget::parse("MX.example.org").unwrap().to_string(),
            "mx.example.org."
        );
        assert!(MxTarget::parse("[bad").is_err());
    }
}
