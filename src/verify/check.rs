//! The checks: pure functions from (what the plan expects, what the live DNS
//! said) to a list of [`Check`]s. No I/O, no clock, no hickory types, so every
//! rule is unit-tested with hand-made observations (see `check/tests.rs`).
//!
//! A check that depends on a lookup which gave no usable answer is not
//! reported at all: the check that owns the lookup fails instead, naming the
//! error (NXDOMAIN, SERVFAIL, timeout, …). Nothing is ever reported as a pass
//! for want of an answer.
//!
//! [`CHECKS`] lists every id, the SMTP ones included; the SMTP rules
//! themselves live in [`super::smtp`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::Expected;
use super::observe::{Answer, AuthObservation, DomainObservation, HostAnswer, LiveMx, QueryError};
use crate::config::{Layout, Role};

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As planned.
    Pass,
    /// Worth a look; does not make `verify` exit 1.
    Warn,
    /// Not as planned, or not checkable because a lookup failed: exit 1.
    Fail,
}

impl Status {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// A check's identity: its stable id and what it verifies.
#[derive(Clone, Copy, Debug)]
pub struct CheckKind {
    /// Stable identifier, e.g. `decoy-lowest`.
    pub id: &'static str,
    /// What it verifies, in one line.
    pub explanation: &'static str,
}

macro_rules! checks {
    ($($name:ident = $id:literal, $why:literal;)*) => {
        $(
            #[doc = $why]
            pub const $name: CheckKind = CheckKind { id: $id, explanation: $why };
        )*
        /// Every check, in report order.
        pub const CHECKS: &[CheckKind] = &[$($name),*];
    };
}

checks! {
    MX_LOOKUP = "mx-lookup",
        "the domain's MX query returns records (not NXDOMAIN, NODATA, SERVFAIL, REFUSED or a timeout)";
    MX_RECORDS = "mx-records",
        "every planned MX host is published with exactly its planned preference(s)";
    MX_EXTRA = "mx-extra",
        "no MX host outside the plan: an unplanned MX lets mail bypass the decoy";
    DECOY_LOWEST = "decoy-lowest",
        "the decoy's live preference is strictly lower than every other MX, so senders try it first";
    TAIL_HIGHEST = "tail-highest",
        "sandwich only: the tail decoy's live preference is strictly higher than every other MX";
    MX_ADDRESS = "mx-address",
        "each MX host resolves, to exactly the planned A and AAAA addresses (hosts without configured addresses: to anything)";
    MX_CNAME = "mx-cname",
        "no MX target is an alias (CNAME): RFC 2181 section 10.3";
    NS_LOOKUP = "ns-lookup",
        "--authoritative: the domain's NS query returns records";
    NS_RECORDS = "ns-records",
        "--authoritative, complete zones: the live NS set is the planned one";
    NS_ADDRESS = "ns-address",
        "--authoritative: each name server host resolves to at least one address";
    NS_ANSWER = "ns-answer",
        "--authoritative: each name server address answers SOA and MX authoritatively (AA bit)";
    NS_AGREE = "ns-agree",
        "--authoritative: all name servers publish the same MX set (fail) and SOA serial (warn)";
    SMTP_DECOY = "smtp-decoy",
        "each decoy and tail decoy address answers as responder.mode says (refused quickly, 4xx banner, or 2xx banner and 4xx at RCPT), never with a 2xx to RCPT, a 5xx or a timeout";
    SMTP_REAL = "smtp-real",
        "each address of a real MX (and of a live MX outside the plan) answers 220, then 250 to EHLO, to MAIL FROM:<> and to RCPT TO the probe recipient";
    SMTP_STARTTLS = "smtp-starttls",
        "each real MX address that answered EHLO offers STARTTLS (warn when it does not)";
}

/// One verdict about one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The check id (see [`CHECKS`]).
    pub id: &'static str,
    /// What was checked: the domain, a host, or a name server address.
    pub subject: String,
    /// The verdict.
    pub status: Status,
    /// What was found, in one sentence.
    pub message: String,
}

/// Live hosts beyond the plan that are looked up at most, per domain.
pub const MAX_EXTRA_HOSTS: usize = 16;

/// Runs every check for one domain.
pub fn domain(expected: &Expected, observed: &DomainObservation) -> Vec<Check> {
    let mut out = Out {
        checks: Vec::new(),
        origin: expected.origin.to_string(),
    };
    mx_set(expected, observed, &mut out);
    for host in host_names(expected, observed) {
        let Some(answer) = observed.hosts.get(&host) else {
            continue;
        };
        let planned = expected.hosts.get(&host);
        out.checks.push(mx_address(&host, planned, answer));
        if let Some(check) = mx_cname(&host, answer) {
            out.checks.push(check);
        }
    }
    if let Some(auth) = &observed.authoritative {
        authoritative(expected, auth, &mut out);
    }
    out.checks
}

/// The hosts to check, planned ones first (in MX order), then live ones
/// that the plan does not know (sorted).
pub fn host_names(expected: &Expected, observed: &DomainObservation) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for mx in &expected.mx {
        if let Some(host) = mx.host.host() {
            let host = host.to_string();
            if !names.contains(&host) {
                names.push(host);
            }
        }
    }
    names.extend(extra_live_hosts(
        expected,
        observed.mx.records().unwrap_or(&[]),
    ));
    names
}

/// Live MX hosts that the plan does not list, sorted, without the null MX,
/// at most [`MAX_EXTRA_HOSTS`].
pub fn extra_live_hosts(expected: &Expected, live: &[LiveMx]) -> Vec<String> {
    let planned = planned_targets(expected);
    live.iter()
        .map(|mx| &mx.host)
        .filter(|h| h.as_str() != "." && !planned.contains_key(h.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_EXTRA_HOSTS)
        .cloned()
        .collect()
}

struct Out {
    checks: Vec<Check>,
    origin: String,
}

impl Out {
    fn push(&mut self, kind: CheckKind, subject: &str, status: Status, message: String) {
        self.checks.push(Check {
            id: kind.id,
            subject: subject.to_owned(),
            status,
            message,
        });
    }
}

/// A name for messages: without the trailing dot (the root stays `.`).
fn bare(name: &str) -> &str {
    match name.strip_suffix('.') {
        Some(s) if !s.is_empty() => s,
        _ => name,
    }
}

fn join<I: IntoIterator<Item = String>>(items: I) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

fn mx_list<'a>(records: impl IntoIterator<Item = &'a LiveMx>) -> String {
    let mut sorted: Vec<&LiveMx> = records.into_iter().collect();
    sorted.sort();
    join(
        sorted
            .into_iter()
            .map(|mx| format!("{} {}", mx.preference, bare(&mx.host))),
    )
}

fn prefs(set: &BTreeSet<u16>) -> String {
    join(set.iter().map(u16::to_string))
}

/// Planned MX target (as it appears in RDATA) → its planned preferences.
fn planned_targets(expected: &Expected) -> BTreeMap<String, BTreeSet<u16>> {
    let mut map: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for mx in &expected.mx {
        map.entry(mx.host.to_string())
            .or_default()
            .insert(mx.preference);
    }
    map
}

fn live_by_host(live: &[LiveMx]) -> BTreeMap<&str, BTreeSet<u16>> {
    let mut map: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for mx in live {
        map.entry(mx.host.as_str())
            .or_default()
            .insert(mx.preference);
    }
    map
}

/// `mx-lookup`, and when it has records, `mx-records`, `mx-extra`,
/// `decoy-lowest` and `tail-highest`.
fn mx_set(expected: &Expected, observed: &DomainObservation, out: &mut Out) {
    let origin = out.origin.clone();
    let live = match &observed.mx {
        Answer::Records(live) if !live.is_empty() => live,
        other => {
            out.push(
                MX_LOOKUP,
                &origin,
                Status::Fail,
                no_answer("MX", &origin, other),
            );
            return;
        }
    };
    let n = live.len();
    out.push(
        MX_LOOKUP,
        &origin,
        Status::Pass,
        format!(
            "{n} MX record{}: {}",
            if n == 1 { "" } else { "s" },
            mx_list(live)
        ),
    );

    // mx-records: each planned target with exactly its planned preferences.
    let planned = planned_targets(expected);
    let by_host = live_by_host(live);
    let mut problems = Vec::new();
    for (host, want) in &planned {
        let empty = BTreeSet::new();
        let got = by_host.get(host.as_str()).unwrap_or(&empty);
        if got == want {
            continue;
        }
        problems.push(if got.is_empty() {
            format!(
                "{} is not published (planned preference {})",
                bare(host),
                prefs(want)
            )
        } else {
            format!(
                "{} has preference {}, planned {}",
                bare(host),
                prefs(got),
                prefs(want)
            )
        });
    }
    if problems.is_empty() {
        out.push(
            MX_RECORDS,
            &origin,
            Status::Pass,
            format!(
                "every planned MX is published as planned: {}",
                join(expected.mx.iter().map(|mx| format!(
                    "{} {}",
                    mx.preference,
                    bare(&mx.host.to_string())
                )))
            ),
        );
    } else {
        out.push(MX_RECORDS, &origin, Status::Fail, problems.join("; "));
    }

    // mx-extra: live targets the plan does not know.
    let extra: Vec<&LiveMx> = live
        .iter()
        .filter(|mx| !planned.contains_key(&mx.host))
        .collect();
    if extra.is_empty() {
        out.push(
            MX_EXTRA,
            &origin,
            Status::Pass,
            "no MX host outside the plan".into(),
        );
    } else {
        out.push(
            MX_EXTRA,
            &origin,
            Status::Fail,
            format!(
                "not in the plan: {}; mail can reach an unplanned MX without going through the decoy",
                mx_list(extra)
            ),
        );
    }

    // decoy-lowest / tail-highest, compared with every non-decoy live record.
    let decoy_hosts: BTreeSet<String> = expected
        .mx
        .iter()
        .filter(|mx| mx.role != Role::Real)
        .map(|mx| mx.host.to_string())
        .collect();
    let others: Vec<&LiveMx> = live
        .iter()
        .filter(|mx| !decoy_hosts.contains(&mx.host))
        .collect();
    let role_host = |role: Role| {
        expected
            .mx
            .iter()
            .find(|mx| mx.role == role)
            .map(|mx| mx.host.to_string())
    };
    if let Some(decoy) = role_host(Role::Decoy) {
        let check = match by_host.get(decoy.as_str()).and_then(|p| p.first()) {
            None => (
                Status::Fail,
                format!(
                    "the decoy {} is not published: senders go straight to a real MX",
                    bare(&decoy)
                ),
            ),
            Some(&lowest) => {
                let below: Vec<&LiveMx> = others
                    .iter()
                    .copied()
                    .filter(|mx| mx.preference <= lowest)
                    .collect();
                if below.is_empty() {
                    (
                        Status::Pass,
                        format!(
                            "the decoy {} ({lowest}) has the lowest preference: senders try it first",
                            bare(&decoy)
                        ),
                    )
                } else {
                    (
                        Status::Fail,
                        format!(
                            "{} not above the decoy {} ({lowest}): senders may try them first",
                            mx_list(below),
                            bare(&decoy)
                        ),
                    )
                }
            }
        };
        out.push(DECOY_LOWEST, &origin, check.0, check.1);
    }
    if expected.layout == Layout::Sandwich
        && let Some(tail) = role_host(Role::TailDecoy)
    {
        let check = match by_host.get(tail.as_str()).and_then(|p| p.last()) {
            None => (
                Status::Fail,
                format!(
                    "the tail decoy {} is not published: bots that pick the last MX reach a real one",
                    bare(&tail)
                ),
            ),
            Some(&highest) => {
                let above: Vec<&LiveMx> = others
                    .iter()
                    .copied()
                    .filter(|mx| mx.preference >= highest)
                    .collect();
                if above.is_empty() {
                    (
                        Status::Pass,
                        format!(
                            "the tail decoy {} ({highest}) has the highest preference: bots that pick the last MX hit it",
                            bare(&tail)
                        ),
                    )
                } else {
                    (
                        Status::Fail,
                        format!(
                            "{} not below the tail decoy {} ({highest}): bots that pick the last MX reach them",
                            mx_list(above),
                            bare(&tail)
                        ),
                    )
                }
            }
        };
        out.push(TAIL_HIGHEST, &origin, check.0, check.1);
    }
}

/// Why a query for `rtype` at `name` gave no records, in one sentence.
fn no_answer<T>(rtype: &str, name: &str, answer: &Answer<T>) -> String {
    match answer {
        Answer::NxDomain => format!("{} does not exist (NXDOMAIN)", bare(name)),
        Answer::Failed(e) => format!("{rtype} query for {}: {e}", bare(name)),
        Answer::Records(_) | Answer::NoData => {
            let consequence = if rtype == "MX" {
                ": senders would deliver to the domain's own address, bypassing the decoy"
            } else {
                ""
            };
            format!(
                "{} has no {rtype} records (NODATA){consequence}",
                bare(name)
            )
        }
    }
}

/// The lookup errors of a host, as `A query: …; AAAA query: …`, if any.
fn lookup_errors(answer: &HostAnswer) -> Option<String> {
    let mut errors: Vec<(&str, &QueryError)> = Vec::new();
    if let Some(e) = answer.ipv4.error() {
        errors.push(("A", e));
    }
    if let Some(e) = answer.ipv6.error() {
        errors.push(("AAAA", e));
    }
    match errors.as_slice() {
        [] => None,
        [(_, a), (_, b)] if a == b => Some(format!("A and AAAA queries: {a}")),
        _ => Some(
            errors
                .iter()
                .map(|(t, e)| format!("{t} query: {e}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn both_nxdomain(answer: &HostAnswer) -> bool {
    matches!(answer.ipv4, Answer::NxDomain) && matches!(answer.ipv6, Answer::NxDomain)
}

fn addresses_text(v4: &BTreeSet<Ipv4Addr>, v6: &BTreeSet<Ipv6Addr>) -> String {
    join(
        v4.iter()
            .map(|a| format!("A {a}"))
            .chain(v6.iter().map(|a| format!("AAAA {a}"))),
    )
}

/// `mx-address` for one host.
fn mx_address(host: &str, planned: Option<&super::Addresses>, answer: &HostAnswer) -> Check {
    let (status, message) = host_addresses(host, planned, answer);
    Check {
        id: MX_ADDRESS.id,
        subject: host.to_owned(),
        status,
        message,
    }
}

fn host_addresses(
    host: &str,
    planned: Option<&super::Addresses>,
    answer: &HostAnswer,
) -> (Status, String) {
    let planned_text = planned
        .filter(|p| !p.is_empty())
        .map(|p| format!("; planned {}", addresses_text(&p.ipv4, &p.ipv6)))
        .unwrap_or_default();
    if let Some(errors) = lookup_errors(answer) {
        return (Status::Fail, format!("{errors}{planned_text}"));
    }
    if both_nxdomain(answer) {
        return (
            Status::Fail,
            format!("{} does not exist (NXDOMAIN){planned_text}", bare(host)),
        );
    }
    let live4: BTreeSet<Ipv4Addr> = answer
        .ipv4
        .records()
        .unwrap_or(&[])
        .iter()
        .copied()
        .collect();
    let live6: BTreeSet<Ipv6Addr> = answer
        .ipv6
        .records()
        .unwrap_or(&[])
        .iter()
        .copied()
        .collect();
    let live_text = addresses_text(&live4, &live6);
    let Some(planned) = planned.filter(|p| !p.is_empty()) else {
        return if live4.is_empty() && live6.is_empty() {
            (
                Status::Fail,
                format!("{} has no A or AAAA record", bare(host)),
            )
        } else {
            (
                Status::Pass,
                format!("resolves to {live_text} (no addresses configured: any address will do)"),
            )
        };
    };
    let mut problems = Vec::new();
    let missing: Vec<IpAddr> = planned
        .ipv4
        .difference(&live4)
        .map(|a| IpAddr::V4(*a))
        .chain(planned.ipv6.difference(&live6).map(|a| IpAddr::V6(*a)))
        .collect();
    let unplanned: Vec<IpAddr> = live4
        .difference(&planned.ipv4)
        .map(|a| IpAddr::V4(*a))
        .chain(live6.difference(&planned.ipv6).map(|a| IpAddr::V6(*a)))
        .collect();
    let typed = |a: &IpAddr| format!("{} {a}", if a.is_ipv4() { "A" } else { "AAAA" });
    if !missing.is_empty() {
        problems.push(format!(
            "planned {} missing",
            join(missing.iter().map(typed))
        ));
    }
    if !unplanned.is_empty() {
        problems.push(format!("{} not planned", join(unplanned.iter().map(typed))));
    }
    if problems.is_empty() {
        (Status::Pass, format!("{live_text}, as planned"))
    } else {
        let found = if live_text.is_empty() {
            "no address".to_owned()
        } else {
            live_text
        };
        (
            Status::Fail,
            format!("resolves to {found}: {}", problems.join("; ")),
        )
    }
}

/// `mx-cname` for one host, when the lookups said anything about the name.
fn mx_cname(host: &str, answer: &HostAnswer) -> Option<Check> {
    let (status, message) = if let Some(target) = &answer.alias {
        (
            Status::Fail,
            format!(
                "{} is an alias (CNAME for {}): an MX target must not be one (RFC 2181 section 10.3), and some senders refuse it",
                bare(host),
                bare(target)
            ),
        )
    } else {
        let exists_v4 = matches!(answer.ipv4, Answer::Records(_) | Answer::NoData);
        let exists_v6 = matches!(answer.ipv6, Answer::Records(_) | Answer::NoData);
        if !(exists_v4 || exists_v6) {
            return None;
        }
        (Status::Pass, format!("{} is not an alias", bare(host)))
    };
    Some(Check {
        id: MX_CNAME.id,
        subject: host.to_owned(),
        status,
        message,
    })
}

/// `ns-lookup`, `ns-records`, `ns-address`, `ns-answer` and `ns-agree`.
fn authoritative(expected: &Expected, auth: &AuthObservation, out: &mut Out) {
    let origin = out.origin.clone();
    let ns = match &auth.ns {
        Answer::Records(ns) if !ns.is_empty() => ns,
        other => {
            out.push(
                NS_LOOKUP,
                &origin,
                Status::Fail,
                no_answer("NS", &origin, other),
            );
            return;
        }
    };
    let live: BTreeSet<&str> = ns.iter().map(String::as_str).collect();
    out.push(
        NS_LOOKUP,
        &origin,
        Status::Pass,
        format!(
            "{} name server{}: {}",
            live.len(),
            if live.len() == 1 { "" } else { "s" },
            join(live.iter().map(|n| bare(n).to_owned()))
        ),
    );
    if !expected.ns.is_empty() {
        let planned: BTreeSet<String> = expected.ns.iter().map(ToString::to_string).collect();
        let missing: Vec<String> = planned
            .iter()
            .filter(|n| !live.contains(n.as_str()))
            .map(|n| bare(n).to_owned())
            .collect();
        let unplanned: Vec<String> = live
            .iter()
            .filter(|n| !planned.contains(**n))
            .map(|n| bare(n).to_owned())
            .collect();
        if missing.is_empty() && unplanned.is_empty() {
            out.push(
                NS_RECORDS,
                &origin,
                Status::Pass,
                "the NS set is the planned one".into(),
            );
        } else {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("planned but not published: {}", join(missing)));
            }
            if !unplanned.is_empty() {
                parts.push(format!("published but not planned: {}", join(unplanned)));
            }
            out.push(NS_RECORDS, &origin, Status::Fail, parts.join("; "));
        }
    }
    for host in &live {
        let Some(answer) = auth.ns_hosts.get(*host) else {
            continue;
        };
        let (status, message) = host_addresses(host, None, answer);
        out.push(NS_ADDRESS, host, status, message);
    }
    // (address, serial, MX set) of every server that answered properly.
    let mut agreeing: Vec<(String, u32, String)> = Vec::new();
    for server in &auth.servers {
        let subject = format!("{} {}", server.ns, server.address);
        let mut errors = Vec::new();
        if let Some(e) = server.serial.error() {
            errors.push(format!("SOA query: {e}"));
        }
        if let Some(e) = server.mx.error() {
            errors.push(format!("MX query: {e}"));
        }
        if !errors.is_empty() {
            out.push(NS_ANSWER, &subject, Status::Fail, errors.join("; "));
            continue;
        }
        if !server.authoritative {
            out.push(
                NS_ANSWER,
                &subject,
                Status::Fail,
                format!(
                    "answered without the AA bit: not authoritative for {} (lame delegation)",
                    bare(&origin)
                ),
            );
            continue;
        }
        let serial = match &server.serial {
            Answer::Records(s) if !s.is_empty() => s[0],
            _ => {
                out.push(
                    NS_ANSWER,
                    &subject,
                    Status::Fail,
                    format!(
                        "no SOA for {}: the server does not hold the zone",
                        bare(&origin)
                    ),
                );
                continue;
            }
        };
        let mut mx = server.mx.records().unwrap_or(&[]).to_vec();
        mx.sort();
        mx.dedup();
        let mx_set = if mx.is_empty() {
            "no MX".to_owned()
        } else {
            mx_list(&mx)
        };
        out.push(
            NS_ANSWER,
            &subject,
            Status::Pass,
            if mx.is_empty() {
                format!("authoritative: serial {serial}, no MX")
            } else {
                format!("authoritative: serial {serial}, MX {mx_set}")
            },
        );
        agreeing.push((server.address.to_string(), serial, mx_set));
    }
    if agreeing.is_empty() {
        return;
    }
    let mut by_mx: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut by_serial: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (address, serial, mx) in &agreeing {
        by_mx.entry(mx).or_default().push(address);
        by_serial.entry(*serial).or_default().push(address);
    }
    if by_mx.len() > 1 {
        out.push(
            NS_AGREE,
            &origin,
            Status::Fail,
            format!(
                "the name servers publish different MX sets ({})",
                groups_text(&by_mx)
            ),
        );
    } else if by_serial.len() > 1 {
        out.push(
            NS_AGREE,
            &origin,
            Status::Warn,
            format!(
                "same MX set, different SOA serials ({}): a server may lag behind",
                groups_text(&by_serial)
            ),
        );
    } else {
        let n = agreeing.len();
        out.push(
            NS_AGREE,
            &origin,
            Status::Pass,
            format!(
                "{n} server{} agree{}: serial {}, {}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                agreeing[0].1,
                by_mx.keys().next().copied().unwrap_or("no MX")
            ),
        );
    }
}

/// `ADDR, ADDR: VALUE; ADDR: VALUE`: which servers have which value.
fn groups_text<K: std::fmt::Display>(groups: &BTreeMap<K, Vec<&str>>) -> String {
    let mut s = String::new();
    for (value, servers) in groups {
        if !s.is_empty() {
            s.push_str("; ");
        }
        let _ = write!(s, "{}: {value}", servers.join(", "));
    }
    s
}

#[cfg(test)]
mod tests;
