//! `dns.dnsbl`: the bans published as an RFC 5782 DNS blocklist zone
//! (see `docs/dnsbl.md`). Without it nothing is published.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::loc;
use super::{ConfigError, Loc, Name, Ttl};

type Sp<T> = Spanned<T>;

/// The `dns.dnsbl` section, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnsbl {
    /// The zone the listings are published under (`bl.example.org`).
    pub zone: Name,
    /// The A record of a listing, inside 127.0.0.0/8.
    pub answer: Ipv4Addr,
    /// The TTL of listings, seconds.
    pub ttl: u32,
    /// The TXT record of a listing, if any.
    pub txt: Option<TxtTemplate>,
    /// Publish the engine's bans.
    pub engine: bool,
    /// Publish the operators' bans (`nolist bans add`).
    pub manual: bool,
    /// Where the section is in the config.
    pub at: Loc,
    /// Where its `ttl` is (or the section, when defaulted).
    pub ttl_at: Loc,
}

/// Whose bans are published (`dns.dnsbl.publish`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// The ban engine's decisions (and, in a fleet, the other nodes').
    Engine,
    /// Bans put in place by hand.
    Manual,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnsbl {
    zone: Name,
    #[serde(default)]
    answer: Option<Sp<Ipv4Addr>>,
    #[serde(default)]
    ttl: Option<Sp<Ttl>>,
    #[serde(default)]
    txt: Option<TxtTemplate>,
    #[serde(default)]
    publish: Option<Sp<Vec<Publish>>>,
}

/// The A record of a listing unless configured (RFC 5782 §2.1's usual value).
pub const DEFAULT_ANSWER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The TTL of listings unless configured: 5 minutes, short enough that a
/// lifted ban leaves resolvers' caches soon.
pub const DEFAULT_TTL: u32 = 300;

impl RawDnsbl {
    /// Checks the values that need more than their own type; `at` is the
    /// section's place, `soa_given` whether `dns.soa` and `dns.ns` are set.
    pub(super) fn validate(
        self,
        path: &Path,
        at: Loc,
        soa_given: bool,
    ) -> Result<Dnsbl, ConfigError> {
        if !soa_given {
            return Err(ConfigError::at(
                path,
                at,
                "`dns.dnsbl` needs `dns.soa` and `dns.ns`: the blocklist zone takes its SOA and NS from them",
            ));
        }
        let answer = self.answer.as_ref().map_or(DEFAULT_ANSWER, |a| a.value);
        if answer.octets()[0] != 127 || answer == Ipv4Addr::new(127, 0, 0, 1) {
            return Err(ConfigError::at(
                path,
                self.answer.as_ref().map_or(at, loc),
                format!(
                    "`answer` {answer} is not a listing value: RFC 5782 §2.1 wants an address in 127.0.0.0/8 other than 127.0.0.1 (so a listing can never be mistaken for a real host, nor for the never-listed test entry)"
                ),
            ));
        }
        let (engine, manual) = match &self.publish {
            None => (true, true),
            Some(list) if list.value.is_empty() => {
                return Err(ConfigError::at(
                    path,
                    loc(list),
                    "`publish` is empty: list `engine`, `manual` or both (or remove `dns.dnsbl`)",
                ));
            }
            Some(list) => (
                list.value.contains(&Publish::Engine),
                list.value.contains(&Publish::Manual),
            ),
        };
        Ok(Dnsbl {
            zone: self.zone,
            answer,
            ttl: self.ttl.as_ref().map_or(DEFAULT_TTL, |t| t.value.0),
            ttl_at: self.ttl.as_ref().map_or(at, loc),
            txt: self.txt,
            engine,
            manual,
            at,
        })
    }
}

/// A TXT template: printable ASCII in which `{ip}`, `{hits}`, `{offence}`
/// and `{until}` are replaced. Nothing a client sends reaches it (the
/// address is the one queried), and any other `{` or `}` is an error, so a
/// typo never reaches a published record. Its longest rendering fits one
/// TXT character-string (255 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtTemplate(String);

/// The placeholders of a [`TxtTemplate`] and the longest text each stands for.
pub const TXT_PLACEHOLDERS: [(&str, usize); 4] = [
    // An IPv6 address, written out in full.
    ("{ip}", 39),
    // u32::MAX
    ("{hits}", 10),
    ("{offence}", 10),
    // 9999-12-31T23:59:59Z
    ("{until}", 20),
];

/// The longest TXT character-string (RFC 1035 §3.3).
const TXT_MAX: usize = 255;

impl TxtTemplate {
    /// Checks `text`.
    pub fn parse(text: &str) -> Result<TxtTemplate, String> {
        if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(format!(
                "the TXT template may hold printable ASCII only, not {c:?}"
            ));
        }
        let mut rest = text.to_owned();
        let mut longest = 0;
        for (name, width) in TXT_PLACEHOLDERS {
            let n = rest.matches(name).count();
            longest += n * width;
            rest = rest.replace(name, "");
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(format!(
                "unknown placeholder in {text:?}: only {} are replaced",
                TXT_PLACEHOLDERS.map(|(p, _)| p).join(", ")
            ));
        }
        longest += rest.len();
        if longest > TXT_MAX {
            return Err(format!(
                "the TXT template can render to {longest} bytes, more than the {TXT_MAX} of one TXT string"
            ));
        }
        Ok(TxtTemplate(text.to_owned()))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with every placeholder replaced by `value(name)` (`name`
    /// without braces: `ip`, `hits`, `offence`, `until`).
    pub fn render(&self, value: impl Fn(&str) -> String) -> String {
        let mut out = self.0.clone();
        for (name, _) in TXT_PLACEHOLDERS {
            if out.contains(name) {
                out = out.replace(name, &value(&name[1..name.len() - 1]));
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for TxtTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TxtTemplate::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ConfigError, parse};

    const BASE: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
dns:
  soa: { mname: ns1.example.net, rname: h@example.org }
  ns: [ns1.example.net]
";

    fn dnsbl(section: &str) -> Result<Dnsbl, (u32, u32, String)> {
        match parse(&format!("{BASE}  dnsbl:\n{section}"), Path::new("t.yaml")) {
            Ok(c) => Ok(c.dns.dnsbl.expect("dnsbl parsed")),
            Err(ConfigError::Invalid {
                line,
                column,
                message,
                ..
            }) => Err((line, column, message)),
            Err(e) => panic!("{e}"),
        }
    }

    #[track_caller]
    fn rejected(section: &str, line: u32, column: u32, needle: &str) {
        let (l, c, m) = dnsbl(section).expect_err("accepted");
        assert_eq!((l, c), (line, column), "{m}");
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    }

    #[test]
    fn defaults() {
        let d = dnsbl("    zone: BL.example.org.\n").unwrap();
        assert_eq!(d.zone.as_str(), "bl.example.org");
        assert_eq!(d.answer, DEFAULT_ANSWER);
        assert_eq!(d.ttl, DEFAULT_TTL);
        assert_eq!(d.txt, None);
        assert!(d.engine && d.manual);
    }

    #[test]
    fn every_key() {
        let d = dnsbl(
            "    zone: bl.example.org\n    answer: 127.0.0.10\n    ttl: 1m\n    txt: \"{ip}: {hits} hits until {until} ({offence})\"\n    publish: [manual]\n",
        )
        .unwrap();
        assert_eq!(d.answer, Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(d.ttl, 60);
        assert_eq!(
            d.ttl_at,
            Loc {
                line: 12,
                column: 10
            }
        );
        assert!(!d.engine && d.manual);
        let txt = d.txt.unwrap().render(|name| format!("<{name}>"));
        assert_eq!(txt, "<ip>: <hits> hits until <until> (<offence>)");
    }

    #[test]
    fn bad_values_are_placed() {
        rejected(
            "    zone: bl.example.org\n    colour: red\n",
            11,
            5,
            "colour",
        );
        rejected(
            "    zone: bl.example.org\n    answer: 10.0.0.2\n",
            11,
            13,
            "127.0.0.0/8",
        );
        rejected(
            "    zone: bl.example.org\n    answer: 127.0.0.1\n",
            11,
            13,
            "127.0.0.1",
        );
        rejected(
            "    zone: bl.example.org\n    publish: [engine, helo]\n",
            11,
            23,
            "helo",
        );
        rejected(
            "    zone: bl.example.org\n    publish: []\n",
            11,
            14,
            "`publish` is empty",
        );
        rejected(
            "    zone: bl.example.org\n    txt: \"{helo} says hi\"\n",
            11,
            10,
            "{helo}",
        );
        rejected(
            "    zone: bl.example.org\n    txt: \"tab\\there\"\n",
            11,
            10,
            "printable ASCII",
        );
        rejected("    zone: -bad-\n", 10, 11, "");
        let long = format!(
            "    zone: bl.example.org\n    txt: \"{}\"\n",
            "{ip}".repeat(7)
        );
        rejected(&long, 11, 10, "more than the 255");
    }

    #[test]
    fn needs_soa_and_ns() {
        let yaml = BASE.split("dns:").next().unwrap().to_owned()
            + "dns:\n  dnsbl: { zone: bl.example.org }\n";
        match parse(&yaml, Path::new("t.yaml")) {
            Err(ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 7);
                assert!(
                    message.contains("needs `dns.soa` and `dns.ns`"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_longest_rendering_fits_the_limit() {
        // Each placeholder at its widest, and the template at the limit.
        let fill = 255 - 39 - 10 - 10 - 20;
        let text = format!("{{ip}}{{hits}}{{offence}}{{until}}{}", "x".repeat(fill));
        assert!(TxtTemplate::parse(&text).is_ok());
        assert!(TxtTemplate::parse(&format!("{text}x")).is_err());
    }
}
