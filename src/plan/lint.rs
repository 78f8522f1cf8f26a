//! The layout linter: pure checks of a config against what nolisting needs
//! to work without losing mail. Each lint has a stable id, a severity and a
//! one-line explanation (see [`LINTS`]); errors make `plan` exit 1. The
//! docs/plan.md's lint table lists every id, and a unit test checks that it does.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::config::{Backend, Config, Domain, Loc, Mode, MxHost, MxTarget, Name, Role};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The layout would lose mail or defeat nolisting: `plan` exits 1.
    Error,
    /// Worth a look; `plan` still exits 0.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A lint's identity: id, severity and the one-line reason it exists.
#[derive(Clone, Copy, Debug)]
pub struct Lint {
    /// Stable identifier, e.g. `decoy-not-lowest`.
    pub id: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// Why it matters, in one line.
    pub explanation: &'static str,
}

macro_rules! lints {
    ($($name:ident = $id:literal, $sev:ident, $why:literal;)*) => {
        $(
            #[doc = $why]
            pub const $name: Lint = Lint { id: $id, severity: Severity::$sev, explanation: $why };
        )*
        /// Every lint, in documentation order.
        pub const LINTS: &[Lint] = &[$($name),*];
    };
}

lints! {
    DECOY_NOT_LOWEST = "decoy-not-lowest", Error,
        "the decoy must have a strictly lower preference than every real MX, or senders go to a real MX first";
    TAIL_NOT_HIGHEST = "tail-not-highest", Error,
        "the tail decoy must have a strictly higher preference than every real MX, or real mail is sent to it";
    DECOY_SHARES_HOST = "decoy-shares-host", Error,
        "a decoy and a real MX with the same host name cannot behave differently";
    DECOY_SHARES_ADDRESS = "decoy-shares-address", Error,
        "a decoy and a real MX on the same address cannot behave differently";
    MX_IP_LITERAL = "mx-ip-literal", Error,
        "an MX must name a host, not an address (RFC 5321 5.1); many senders ignore such records";
    NULL_MX_MIXED = "null-mx-mixed", Error,
        "a null MX (RFC 7505) says the domain takes no mail and must be the only MX";
    DUPLICATE_MX = "duplicate-mx", Error,
        "the same host is listed twice in one domain's MX set";
    HOST_ADDRESS_CONFLICT = "host-address-conflict", Error,
        "the same host is given different addresses in different places";
    DECOY_MISSING_FAMILY = "decoy-missing-family", Warning,
        "senders on an address family the decoy lacks skip it and go straight to the real MX";
    RESPONDER_NOT_REFUSE = "responder-not-refuse", Warning,
        "some senders do not fall back from this mode (stock qmail from any 4xx, OpenSMTPD from a 450 at RCPT) but retry the decoy; only `refuse` loses no mail";
    NON_PUBLIC_ADDRESS = "non-public-address", Warning,
        "a documentation, private or special-purpose address in a real (non-example) domain is unreachable from the internet";
    HOST_WITHOUT_ADDRESS = "host-without-address", Warning,
        "an MX host inside the zone has no address in the config, so the zone has no A/AAAA for it";
    NS_WITHOUT_ADDRESS = "ns-without-address", Error,
        "a name server inside the zone needs address records (glue), or the zone cannot be resolved";
    TTL_LOW = "ttl-low", Warning,
        "a TTL below 300 s multiplies DNS load and makes every sender re-resolve";
    TTL_HIGH = "ttl-high", Warning,
        "a TTL above one week keeps a mistake in caches for that long";
    ENFORCE_TABLE_UNUSED = "enforce-table-unused", Warning,
        "a `bans.enforce` table for another backend than the one chosen is ignored: the bans are not enforced the way it says";
    GRACE_TOO_SHORT = "grace-too-short", Error,
        "a `bans.grace` below 30 s can ban a real sender before its fallback to the next MX arrives (OpenSMTPD falls back about 2 s after a RST or a 4xx greeting), and the ban then blocks that fallback";
    DNSBL_SHADOWS = "dnsbl-shadows-records", Error,
        "the DNSBL zone is answered before the planned zones, so a mail domain, MX host or name server at or below its apex is never answered (no MX, no address: mail to it is lost)";
    DNSBL_INSIDE_MAIL_DOMAIN = "dnsbl-inside-mail-domain", Warning,
        "a DNSBL zone inside a planned mail domain is only found through NS records delegating it in that domain's zone, which `plan` and `apply` do not write: where the domain is served elsewhere, every listing is NXDOMAIN and every address looks clean";
    DNSBL_TTL_OVER_BANTIME = "dnsbl-ttl-over-bantime", Warning,
        "a DNSBL TTL longer than `bans.bantime` keeps listings in resolvers' caches after their bans have ended";
}

/// The shortest `bans.grace` with an enforcing backend: the slowest
/// measured fallback (OpenSMTPD, about 2 s after a RST or a 4xx greeting;
/// it then avoids the decoy for 15 s) with a wide margin for a loaded
/// sender's queue, DNS and the real MX's log line reaching `run`.
pub const MIN_GRACE_SECS: u64 = 30;

/// TTLs below this many seconds draw `ttl-low`.
pub const TTL_LOW_SECS: u32 = 300;
/// TTLs above this many seconds draw `ttl-high`.
pub const TTL_HIGH_SECS: u32 = 7 * 86_400;

/// One thing the linter found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The lint id.
    pub id: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// The domain concerned, if any.
    pub domain: Option<Name>,
    /// Where in the config (line, column), when known.
    #[serde(flatten)]
    pub at: Option<Loc>,
    /// What exactly is wrong, in one sentence.
    pub message: String,
}

impl Serialize for Loc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Loc", 2)?;
        st.serialize_field("line", &self.line)?;
        st.serialize_field("column", &self.column)?;
        st.end()
    }
}

/// Collects findings as the checks run.
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, lint: Lint, domain: Option<&Name>, at: Option<Loc>, message: String) {
        self.0.push(Finding {
            id: lint.id,
            severity: lint.severity,
            domain: domain.cloned(),
            at,
            message,
        });
    }
}

/// The message of `responder-not-refuse` for a listening `mode`: which
/// sender families do not fall back from it, and what retry recognition
/// (on or off) does about it, with the `nftables` let-through (a TCP
/// reset, which every family falls back from) or without it (`421`).
fn not_refuse_message(mode: Mode, retry: bool, let_through: bool) -> String {
    let name = serde_json::to_string(&mode).unwrap_or_default();
    let rcpt = mode == Mode::Rcpt450;
    let (families, from) = if rcpt {
        ("stock qmail and OpenSMTPD do", "a 450 at RCPT")
    } else {
        ("stock qmail does", "a 4xx greeting")
    };
    let effect = match (retry, rcpt, let_through) {
        (true, true, true) => {
            "retry recognition (bans.retry) limits the damage to one retry interval: a retrying sender is never banned, and once its retry is recognised the nftables let-through answers its next attempt with a TCP reset, from which OpenSMTPD and stock qmail fall back"
        }
        (true, false, true) => {
            "retry recognition (bans.retry) limits the damage to one retry interval: a retrying sender is never banned, and once its retry is recognised the nftables let-through answers its next attempt with a TCP reset, from which stock qmail falls back"
        }
        (true, true, false) => {
            "retry recognition (bans.retry) limits the damage to one retry interval: a retrying sender is never banned, and once its retry is recognised OpenSMTPD gets 421 at the greeting of its next attempt and falls back; stock qmail falls back only from a TCP reset (`refuse`, or the let-through of bans.enforce.backend nftables), so its mail waits in its queue"
        }
        (true, false, false) => {
            "retry recognition (bans.retry) limits the damage to one retry interval of bans (a retrying sender is never banned), but stock qmail falls back only from a TCP reset (`refuse`, or the let-through of bans.enforce.backend nftables), so its mail waits in its queue"
        }
        (false, _, _) => {
            "with retry recognition off (bans.retry.enabled: false) nothing limits the damage: they retry the decoy until their messages expire, and are banned"
        }
    };
    format!(
        "responder mode is {name}: {families} not fall back to the next MX from {from} but retry the decoy; {effect}"
    )
}

/// Runs every lint over `config`.
pub fn lint(config: &Config) -> Vec<Finding> {
    let mut out = Findings(Vec::new());
    if config.responder.mode != Mode::Refuse {
        out.push(
            RESPONDER_NOT_REFUSE,
            None,
            None,
            not_refuse_message(
                config.responder.mode,
                config.bans.retry.enabled,
                config.bans.enforce.backend == Backend::Nftables,
            ),
        );
    }
    // With `backend: none` a ban blocks nothing: the fallback arrives and
    // its delivery lifts the ban.
    if config.bans.grace.as_secs() < MIN_GRACE_SECS && config.bans.enforce.backend != Backend::None
    {
        out.push(
            GRACE_TOO_SHORT,
            None,
            None,
            format!(
                "bans.grace is {}s, below {MIN_GRACE_SECS}s: a real sender that falls back to the next MX (OpenSMTPD takes about 2 s) can be banned first, and the ban blocks its fallback",
                config.bans.grace.as_secs()
            ),
        );
    }
    let enforce = &config.bans.enforce;
    for (table, given, backend) in [
        ("command", enforce.command.is_some(), Backend::Command),
        ("fail2ban", enforce.fail2ban_given, Backend::Fail2ban),
    ] {
        if given && enforce.backend != backend {
            out.push(
                ENFORCE_TABLE_UNUSED,
                None,
                None,
                format!(
                    "bans.enforce.{table} is set but bans.enforce.backend is {}: it is ignored (set `backend: {table}`, or remove the table)",
                    serde_json::to_string(&enforce.backend)
                        .unwrap_or_default()
                        .trim_matches('"')
                ),
            );
        }
    }
    for domain in &config.domains {
        lint_domain(domain, &mut out);
        for ns in config
            .dns
            .ns
            .iter()
            .filter(|ns| ns.host.is_within(&domain.name))
        {
            if ns.ipv4.is_empty() && ns.ipv6.is_empty() {
                out.push(
                    NS_WITHOUT_ADDRESS,
                    Some(&domain.name),
                    Some(ns.at),
                    format!(
                        "{}: name server {} is inside the zone; give it ipv4/ipv6 in dns.ns",
                        domain.name.as_str(),
                        ns.host
                    ),
                );
            }
        }
    }
    lint_host_addresses(config, &mut out);
    lint_dnsbl(config, &mut out);
    let mut findings = out.0;
    // Stable: errors first, then by position in the config (global findings first).
    findings.sort_by_key(|f| (f.severity, f.at));
    findings
}

fn lint_domain(domain: &Domain, out: &mut Findings) {
    let d = Some(&domain.name);
    let name = domain.name.as_str();
    let decoys: Vec<(Role, &MxHost)> = domain.hosts().filter(|(r, _)| *r != Role::Real).collect();

    if let Some(lowest_real) = domain.real.iter().min_by_key(|h| h.preference)
        && domain.decoy.preference >= lowest_real.preference
    {
        out.push(
            DECOY_NOT_LOWEST,
            d,
            Some(domain.decoy.at),
            format!(
                "{name}: decoy {} has preference {}, not below real MX {} ({})",
                domain.decoy.target,
                domain.decoy.preference,
                lowest_real.target,
                lowest_real.preference
            ),
        );
    }
    if let Some(tail) = &domain.tail_decoy
        && let Some(highest_real) = domain.real.iter().max_by_key(|h| h.preference)
        && tail.preference <= highest_real.preference
    {
        out.push(
            TAIL_NOT_HIGHEST,
            d,
            Some(tail.at),
            format!(
                "{name}: tail decoy {} has preference {}, not above real MX {} ({})",
                tail.target, tail.preference, highest_real.target, highest_real.preference
            ),
        );
    }
    for (_, decoy) in &decoys {
        for real in &domain.real {
            if decoy.target == real.target {
                out.push(
                    DECOY_SHARES_HOST,
                    d,
                    Some(decoy.at),
                    format!("{name}: {} is both a decoy and a real MX", decoy.target),
                );
            }
            for addr in decoy
                .addresses()
                .filter(|a| real.addresses().any(|b| b == *a))
            {
                out.push(
                    DECOY_SHARES_ADDRESS,
                    d,
                    Some(decoy.at),
                    format!(
                        "{name}: decoy {} and real MX {} share the address {addr}",
                        decoy.target, real.target
                    ),
                );
            }
        }
    }
    for (_, host) in domain.hosts() {
        match &host.target {
            MxTarget::IpLiteral(ip) => out.push(
                MX_IP_LITERAL,
                d,
                Some(host.at),
                format!("{name}: MX target {ip} is an address; name a host that has it as A/AAAA"),
            ),
            MxTarget::Null => out.push(
                NULL_MX_MIXED,
                d,
                Some(host.at),
                format!("{name}: null MX \".\" cannot be combined with other MX records"),
            ),
            MxTarget::Host(host_name) => {
                if host_name.is_within(&domain.name) && host.ipv4.is_empty() && host.ipv6.is_empty()
                {
                    out.push(
                        HOST_WITHOUT_ADDRESS,
                        d,
                        Some(host.at),
                        format!("{name}: {host_name} is inside the zone but has no ipv4/ipv6 in the config"),
                    );
                }
            }
        }
    }
    // A decoy may sit at both ends of a sandwich; a real MX listed twice is a mistake.
    let mut seen: BTreeMap<&MxTarget, Loc> = BTreeMap::new();
    for real in &domain.real {
        if let Some(first) = seen.insert(&real.target, real.at) {
            out.push(
                DUPLICATE_MX,
                d,
                Some(real.at),
                format!(
                    "{name}: {} is listed twice (first at line {})",
                    real.target, first.line
                ),
            );
        }
    }
    lint_families(domain, &decoys, out);
    if !domain.name.is_reserved_example() {
        for (_, host) in domain.hosts() {
            for addr in host.addresses().filter(|a| !is_public(a)) {
                out.push(
                    NON_PUBLIC_ADDRESS,
                    d,
                    Some(host.at),
                    format!(
                        "{name}: {} has the non-public address {addr}; senders on the internet cannot reach it",
                        host.target
                    ),
                );
            }
        }
    }
    if domain.ttl < TTL_LOW_SECS {
        out.push(
            TTL_LOW,
            d,
            Some(domain.at),
            format!("{name}: TTL {} s is below {TTL_LOW_SECS} s", domain.ttl),
        );
    } else if domain.ttl > TTL_HIGH_SECS {
        out.push(
            TTL_HIGH,
            d,
            Some(domain.at),
            format!("{name}: TTL {} s is above one week", domain.ttl),
        );
    }
}

/// `decoy-missing-family`: a real MX has IPv4 (IPv6) addresses but a decoy has none.
fn lint_families(domain: &Domain, decoys: &[(Role, &MxHost)], out: &mut Findings) {
    type HasFamily = fn(&MxHost) -> bool;
    let families: [(&str, HasFamily); 2] = [
        ("IPv4", |h| !h.ipv4.is_empty()),
        ("IPv6", |h| !h.ipv6.is_empty()),
    ];
    for (family, has) in families {
        let Some(real) = domain.real.iter().find(|h| has(h)) else {
            continue;
        };
        for (role, decoy) in decoys {
            let known = !decoy.ipv4.is_empty() || !decoy.ipv6.is_empty();
            if known && !has(decoy) {
                let what = if *role == Role::TailDecoy {
                    "tail decoy"
                } else {
                    "decoy"
                };
                out.push(
                    DECOY_MISSING_FAMILY,
                    Some(&domain.name),
                    Some(decoy.at),
                    format!(
                        "{}: {what} {} has no {family} address but real MX {} has: {family} senders skip the {what}",
                        domain.name.as_str(),
                        decoy.target,
                        real.target
                    ),
                );
            }
        }
    }
}

/// The DNSBL zone against the planned names and the ban length.
fn lint_dnsbl(config: &Config, out: &mut Findings) {
    let Some(bl) = &config.dns.dnsbl else {
        return;
    };
    let zone = &bl.zone;
    for domain in &config.domains {
        let d = Some(&domain.name);
        if domain.name.is_within(zone) {
            out.push(
                DNSBL_SHADOWS,
                d,
                Some(bl.at),
                format!(
                    "the DNSBL zone {zone} is the mail domain {} or above it: `serve` and `run` would answer the blocklist's NXDOMAIN for the domain's MX",
                    domain.name.as_str()
                ),
            );
            continue;
        }
        for host in domain.hosts().filter_map(|(_, h)| h.target.host()) {
            if host.is_within(zone) {
                out.push(
                    DNSBL_SHADOWS,
                    d,
                    Some(bl.at),
                    format!(
                        "MX host {host} is inside the DNSBL zone {zone}: its address records would never be answered"
                    ),
                );
            }
        }
        if zone.is_within(&domain.name) {
            out.push(
                DNSBL_INSIDE_MAIL_DOMAIN,
                d,
                Some(bl.at),
                format!(
                    "the DNSBL zone {zone} is inside the mail domain {}: its zone needs NS records for {zone} (plan and apply write none), or resolvers asking the domain's other servers get NXDOMAIN for every listing; a zone outside the mail domains (bl.example.net for mail at example.org) needs no delegation to get right",
                    domain.name.as_str()
                ),
            );
        }
    }
    for ns in config.dns.ns.iter().filter(|ns| ns.host.is_within(zone)) {
        out.push(
            DNSBL_SHADOWS,
            None,
            Some(ns.at),
            format!(
                "name server {} is inside the DNSBL zone {zone}: its address records would never be answered",
                ns.host
            ),
        );
    }
    let bantime = config.bans.bantime.as_secs();
    if u64::from(bl.ttl) > bantime {
        out.push(
            DNSBL_TTL_OVER_BANTIME,
            None,
            Some(bl.ttl_at),
            format!(
                "dns.dnsbl.ttl is {} s, longer than bans.bantime ({bantime} s): resolvers keep a listing up to {} s after its ban ended (answers are never cached past a ban's end, but a ban lifted early stays listed in caches)",
                bl.ttl,
                u64::from(bl.ttl) - bantime
            ),
        );
    }
}

/// `host-address-conflict`: one host name, different address sets.
fn lint_host_addresses(config: &Config, out: &mut Findings) {
    let mut first: BTreeMap<&Name, (&Name, &MxHost)> = BTreeMap::new();
    for domain in &config.domains {
        for (_, host) in domain.hosts() {
            let Some(name) = host.target.host() else {
                continue;
            };
            if host.ipv4.is_empty() && host.ipv6.is_empty() {
                continue;
            }
            let Some((other_domain, other)) = first.get(name).copied() else {
                first.insert(name, (&domain.name, host));
                continue;
            };
            let mut a: Vec<IpAddr> = host.addresses().collect();
            let mut b: Vec<IpAddr> = other.addresses().collect();
            a.sort();
            b.sort();
            if a != b {
                out.push(
                    HOST_ADDRESS_CONFLICT,
                    Some(&domain.name),
                    Some(host.at),
                    format!(
                        "{}: {name} has other addresses than in {} (line {})",
                        domain.name.as_str(),
                        other_domain.as_str(),
                        other.at.line
                    ),
                );
            }
        }
    }
}

/// True for globally reachable unicast addresses: not loopback, private,
/// link-local, shared, documentation, benchmarking, multicast or reserved.
pub fn is_public(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public_v4(&v4);
            }
            let s = a.segments();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
                || s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard 100::/64
        }
    }
}

fn is_public_v4(a: &Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_unspecified()
        || o[0] == 0
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_documentation()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF 192.0.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved 240.0.0.0/4
}

#[cfg(test)]
mod tests;
