//! `nolist bans export`: the bans in force as a file for other servers.
//! Pure: the bans and the time come in, the file's bytes go out.
//!
//! - `rbldnsd`: one data file of rbldnsd's `combined` type (serve it as
//!   `ZONE:combined:FILE`), an `ip4set` section for IPv4 and an `ip6trie`
//!   one for IPv6 (`ip6tset` holds /64s only, so a banned /128 would list
//!   its whole /64), with the RFC 5782 test entries, the listing's A value
//!   and, with a template, each listing's TXT (rbldnsd replaces `$` with
//!   the address asked about).
//! - `plain`: one address or network per line.
//! - `json`: `nolist.bans/1`, every ban with its end (`docs/dnsbl.md`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::IpNet;
use serde::Serialize;

use super::set::canonical;
use crate::config::dnsbl::{DEFAULT_ANSWER, TxtTemplate};
use crate::store::{BanRecord, Source, host_of};
use crate::watch::time::rfc3339;

/// The listing's A value and TXT template of an rbldnsd export.
#[derive(Clone, Debug)]
pub struct Values<'a> {
    /// The A record of a listing.
    pub answer: Ipv4Addr,
    /// The TXT template, if any.
    pub txt: Option<&'a TxtTemplate>,
}

impl Default for Values<'_> {
    fn default() -> Self {
        Values {
            answer: DEFAULT_ANSWER,
            txt: None,
        }
    }
}

/// `target` as written in the exports: a host without its prefix length.
fn written(target: &IpNet) -> String {
    let target = canonical(*target);
    host_of(&target).map_or_else(|| target.to_string(), |ip| ip.to_string())
}

/// The rbldnsd `combined` data file of `bans` (in force at `now`).
pub fn rbldnsd(bans: &[BanRecord], values: &Values<'_>, now: i64) -> String {
    let mut out = format!(
        "# nolist bans export at {}: {} bans in force\n",
        rfc3339(now),
        bans.len()
    );
    let default = format!(":{}:", values.answer);
    for (family, kind, test) in [
        (true, "ip4set:nolist-ipv4", ["127.0.0.2", "!127.0.0.1"]),
        // rbldnsd reads no dotted quad inside an IPv6 address.
        (
            false,
            "ip6trie:nolist-ipv6",
            ["::ffff:7f00:2", "!::ffff:7f00:1"],
        ),
    ] {
        let _ = writeln!(out, "$DATASET {kind} @");
        // A TXT of its own for the test entries, as `nolist` answers.
        let test_txt = values.txt.map_or("", |_| super::zone::TEST_ENTRY_TXT);
        let _ = writeln!(out, "{default}");
        let _ = writeln!(out, "{} {default}{test_txt}", test[0]);
        let _ = writeln!(out, "{}", test[1]);
        for ban in bans
            .iter()
            .filter(|b| canonical(b.target).addr().is_ipv4() == family)
        {
            let txt = values.txt.map_or_else(String::new, |t| {
                t.render(|field| match field {
                    "ip" => "$".into(),
                    "hits" => ban.hits.to_string(),
                    "offence" => ban.offence.to_string(),
                    _ => rfc3339(ban.until),
                })
            });
            let _ = writeln!(out, "{} {default}{txt}", written(&ban.target));
        }
    }
    out
}

/// One address or network per line.
pub fn plain(bans: &[BanRecord]) -> String {
    bans.iter().map(|b| written(&b.target) + "\n").collect()
}

/// The `nolist.bans/1` JSON document.
#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    generated: String,
    bans: Vec<JsonBan<'a>>,
}

#[derive(Serialize)]
struct JsonBan<'a> {
    target: String,
    since: String,
    until: String,
    until_unix: i64,
    source: Source,
    hits: u32,
    offence: u32,
    reason: &'a str,
}

/// The bans as `nolist.bans/1` JSON (one document, a newline at the end).
pub fn json(bans: &[BanRecord], now: i64) -> String {
    let doc = Document {
        format: "nolist.bans/1",
        generated: rfc3339(now),
        bans: bans
            .iter()
            .map(|b| JsonBan {
                target: written(&b.target),
                since: rfc3339(b.since),
                until: rfc3339(b.until),
                until_unix: b.until,
                source: b.source,
                hits: b.hits,
                offence: b.offence,
                reason: &b.reason,
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn bans() -> Vec<BanRecord> {
        [
            "192.0.2.7/32",
            "198.51.100.0/24",
            "2001:db8::1/128",
            "2001:db8:1::/64",
        ]
        .iter()
        .map(|t| BanRecord {
            target: t.parse().unwrap(),
            since: NOW - 60,
            until: NOW + 3600,
            reason: "decoy hits".into(),
            hits: 5,
            offence: 2,
            source: Source::Engine,
        })
        .collect()
    }

    #[test]
    fn plain_lists_hosts_without_prefix() {
        assert_eq!(
            plain(&bans()),
            "192.0.2.7\n198.51.100.0/24\n2001:db8::1\n2001:db8:1::/64\n"
        );
    }

    #[test]
    fn rbldnsd_has_a_section_per_family_and_the_test_entries() {
        let template = TxtTemplate::parse("{ip} after {hits} hits").unwrap();
        let values = Values {
            answer: Ipv4Addr::new(127, 0, 0, 3),
            txt: Some(&template),
        };
        let text = rbldnsd(&bans(), &values, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[1..],
            [
                "$DATASET ip4set:nolist-ipv4 @",
                ":127.0.0.3:",
                "127.0.0.2 :127.0.0.3:RFC 5782 test entry",
                "!127.0.0.1",
                "192.0.2.7 :127.0.0.3:$ after 5 hits",
                "198.51.100.0/24 :127.0.0.3:$ after 5 hits",
                "$DATASET ip6trie:nolist-ipv6 @",
                ":127.0.0.3:",
                "::ffff:7f00:2 :127.0.0.3:RFC 5782 test entry",
                "!::ffff:7f00:1",
                "2001:db8::1 :127.0.0.3:$ after 5 hits",
                "2001:db8:1::/64 :127.0.0.3:$ after 5 hits",
            ]
        );
    }

    #[test]
    fn json_carries_the_expiry() {
        let v: serde_json::Value = serde_json::from_str(&json(&bans()[..1], NOW)).unwrap();
        assert_eq!(v["format"], "nolist.bans/1");
        assert_eq!(v["bans"][0]["target"], "192.0.2.7");
        assert_eq!(v["bans"][0]["until_unix"], NOW + 3600);
        assert_eq!(v["bans"][0]["until"], rfc3339(NOW + 3600));
        assert_eq!(v["bans"][0]["source"], "engine");
    }
}
