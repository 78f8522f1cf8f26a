//! The verify report and its two renderings: a compact text table per domain
//! (one line per check, DNS and SMTP alike, then a summary and one line on how
//! SMTP was probed), and versioned JSON (`nolist.verify/1`, documented in
//! `docs/verify-json.md`; it also carries every SMTP probe with its
//! transcript). String building only; the CLI decides where the text goes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::check::{Check, Status};
use super::observe::LiveMx;
use super::smtp::{Role, mode_name};
use crate::config::{Layout, Mode, Name};
use crate::smtp::probe::ProbeReport;

/// The schema tag of the JSON report. Fields are only added within one
/// version; a removal or rename bumps it.
pub const JSON_SCHEMA: &str = "nolist.verify/1";

/// The outcome of one `verify` run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Who was asked.
    pub resolver: Resolver,
    /// Whether the authoritative servers were asked directly too.
    pub authoritative: bool,
    /// What happened to the SMTP probes.
    pub smtp: Smtp,
    /// One entry per verified domain, in config order.
    pub domains: Vec<DomainReport>,
}

/// The resolver the queries went to.
#[derive(Clone, Debug, Serialize)]
pub struct Resolver {
    /// True for the system resolver (`/etc/resolv.conf`), false for `--nameserver`.
    pub system: bool,
    /// The servers, in order.
    pub nameservers: Vec<SocketAddr>,
    /// How long one answer was waited for, in milliseconds.
    pub timeout_ms: u64,
    /// How many times a query was sent at most.
    pub tries: usize,
}

/// What happened to the SMTP probes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Smtp {
    /// `--dns-only` was given.
    Skipped,
    /// Every resolved MX address was probed.
    Probed(SmtpRun),
}

/// How the SMTP probes were made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpRun {
    /// The port every address was probed on.
    pub port: u16,
    /// Limit for the connect and for each reply.
    pub timeout: Duration,
    /// The EHLO name.
    pub helo: String,
    /// `--rcpt`, when given; otherwise each domain's `postmaster@`.
    pub rcpt: Option<String>,
    /// The `responder.mode` the decoys were judged against.
    pub mode: Mode,
    /// SMTP connections attempted.
    pub connections: usize,
}

impl Smtp {
    /// The JSON `reason`: why SMTP was not checked (`None` when it was).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Smtp::Skipped => Some("dns_only"),
            Smtp::Probed(_) => None,
        }
    }

    /// One sentence for people.
    pub fn message(&self) -> String {
        match self {
            Smtp::Skipped => "SMTP not checked (--dns-only)".into(),
            Smtp::Probed(run) => format!(
                "SMTP checked: {} to port {} (timeout {}, RCPT TO {}), decoys judged as responder.mode {}",
                plural(run.connections, "connection"),
                run.port,
                humantime::format_duration(run.timeout),
                run.rcpt.as_deref().unwrap_or("postmaster@<domain>"),
                mode_name(run.mode)
            ),
        }
    }
}

/// One SMTP probe of one domain's MX address, as the JSON shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeEntry {
    /// The MX host, absolute.
    pub host: String,
    /// What the plan says the host is.
    pub role: Role,
    /// The RCPT TO address used.
    pub recipient: String,
    /// The probe (schema as in `nolist.probe/1`).
    #[serde(flatten)]
    pub report: ProbeReport,
}

/// The checks of one domain.
#[derive(Clone, Debug)]
pub struct DomainReport {
    /// The mail domain.
    pub domain: Name,
    /// Its planned layout.
    pub layout: Layout,
    /// The live MX RRset, sorted; empty for NXDOMAIN/NODATA, `None` when the
    /// MX query failed (SERVFAIL, REFUSED, timeout, …).
    pub mx: Option<Vec<LiveMx>>,
    /// The checks, in report order.
    pub checks: Vec<Check>,
    /// The SMTP probes behind the `smtp-*` checks, in check order.
    pub probes: Vec<ProbeEntry>,
}

impl DomainReport {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

impl Report {
    /// True when no check failed (warnings allowed): exit 0.
    pub fn ok(&self) -> bool {
        self.domains.iter().all(DomainReport::ok)
    }

    /// How many checks have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.domains
            .iter()
            .flat_map(|d| &d.checks)
            .filter(|c| c.status == status)
            .count()
    }

    fn checks(&self) -> usize {
        self.domains.iter().map(|d| d.checks.len()).sum()
    }

    fn resolver_text(&self) -> String {
        let servers: Vec<String> = self
            .resolver
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect();
        let plural = if servers.len() == 1 { "" } else { "s" };
        let who = if self.resolver.system {
            format!("the system resolver ({})", servers.join(", "))
        } else {
            format!("nameserver{plural} {}", servers.join(", "))
        };
        let timeout =
            humantime::format_duration(std::time::Duration::from_millis(self.resolver.timeout_ms));
        format!(
            "{who} (timeout {timeout}, {})",
            plural_word(self.resolver.tries, "try", "tries")
        )
    }
}

fn plural_word(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The report as one table per domain, then a summary.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verifying {} via {}{}",
        plural(report.domains.len(), "domain"),
        report.resolver_text(),
        if report.authoritative {
            ", and each authoritative server directly"
        } else {
            ""
        }
    );
    for domain in &report.domains {
        let _ = writeln!(out, "\n{} ({})", domain.domain, domain.layout.as_str());
        let id_w = domain
            .checks
            .iter()
            .map(|c| c.id.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        let subject_w = domain
            .checks
            .iter()
            .map(|c| c.subject.chars().count())
            .chain([7])
            .max()
            .unwrap_or(7);
        let _ = writeln!(
            out,
            "  {:<6}  {:<id_w$}  {:<subject_w$}  DETAIL",
            "STATUS", "CHECK", "SUBJECT"
        );
        for check in &domain.checks {
            let status = match check.status {
                Status::Pass => "pass",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(
                out,
                "  {status:<6}  {:<id_w$}  {:<subject_w$}  {}",
                check.id, check.subject, check.message
            );
        }
    }
    let failed_domains = report.domains.iter().filter(|d| !d.ok()).count();
    let _ = writeln!(
        out,
        "\nsummary: {}, {}: {} pass, {} warn, {} fail",
        plural(report.domains.len(), "domain"),
        plural(report.checks(), "check"),
        report.count(Status::Pass),
        report.count(Status::Warn),
        report.count(Status::Fail),
    );
    let _ = writeln!(out, "{}", report.smtp.message());
    if report.ok() {
        let _ = writeln!(out, "result: ok");
    } else {
        let _ = writeln!(
            out,
            "result: FAILED ({} of {} failed)",
            plural(failed_domains, "domain"),
            report.domains.len()
        );
    }
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    ok: bool,
    resolver: &'a Resolver,
    authoritative: bool,
    smtp: JsonSmtp<'a>,
    summary: JsonSummary,
    domains: Vec<JsonDomain<'a>>,
}

#[derive(Serialize)]
struct JsonSmtp<'a> {
    checked: bool,
    reason: Option<&'static str>,
    message: String,
    port: Option<u16>,
    timeout_ms: Option<u64>,
    helo: Option<&'a str>,
    rcpt: Option<&'a str>,
    mode: Option<Mode>,
    connections: usize,
}

#[derive(Serialize)]
struct JsonSummary {
    domains: usize,
    checks: usize,
    pass: usize,
    warn: usize,
    fail: usize,
}

#[derive(Serialize)]
struct JsonDomain<'a> {
    domain: &'a Name,
    layout: Layout,
    ok: bool,
    mx: Option<Vec<JsonMx<'a>>>,
    checks: &'a [Check],
    probes: &'a [ProbeEntry],
}

#[derive(Serialize)]
struct JsonMx<'a> {
    preference: u16,
    host: &'a str,
}

/// The report as pretty-printed JSON with a trailing newline.
pub fn json(report: &Report) -> String {
    let doc = JsonReport {
        schema: JSON_SCHEMA,
        ok: report.ok(),
        resolver: &report.resolver,
        authoritative: report.authoritative,
        smtp: {
            let run = match &report.smtp {
                Smtp::Probed(run) => Some(run),
                Smtp::Skipped => None,
            };
            JsonSmtp {
                checked: run.is_some(),
                reason: report.smtp.reason(),
                message: report.smtp.message(),
                port: run.map(|r| r.port),
                timeout_ms: run.map(|r| u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX)),
                helo: run.map(|r| r.helo.as_str()),
                rcpt: run.and_then(|r| r.rcpt.as_deref()),
                mode: run.map(|r| r.mode),
                connections: run.map_or(0, |r| r.connections),
            }
        },
        summary: JsonSummary {
            domains: report.domains.len(),
            checks: report.checks(),
            pass: report.count(Status::Pass),
            warn: report.count(Status::Warn),
            fail: report.count(Status::Fail),
        },
        domains: report
            .domains
            .iter()
            .map(|d| JsonDomain {
                domain: &d.domain,
                layout: d.layout,
                ok: d.ok(),
                mx: d.mx.as_ref().map(|mx| {
                    mx.iter()
                        .map(|m| JsonMx {
                            preference: m.preference,
                            host: &m.host,
                        })
                        .collect()
                }),
                checks: &d.checks,
                probes: &d.probes,
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("report types always serialize");
    s.push('\n');
    s
}
