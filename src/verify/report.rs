//! The verify report and its two renderings: a compact text table per domain,
//! and versioned JSON (`nolist.verify/1`, documented in `docs/verify-json.md`).
//! String building only; the CLI decides where the text goes.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use super::check::{Check, Status};
use super::observe::LiveMx;
use crate::config::{Layout, Name};

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

/// Why SMTP was not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Smtp {
    /// `--dns-only` was given.
    Skipped,
    /// SMTP probes do not exist yet.
    NotImplemented,
}

impl Smtp {
    /// The JSON `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Smtp::Skipped => "dns_only",
            Smtp::NotImplemented => "not_implemented",
        }
    }

    /// One sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            Smtp::Skipped => "SMTP not checked (--dns-only)",
            Smtp::NotImplemented => {
                "SMTP not checked: SMTP probes are not implemented yet, so only DNS was verified"
            }
        }
    }
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
    smtp: JsonSmtp,
    summary: JsonSummary,
    domains: Vec<JsonDomain<'a>>,
}

#[derive(Serialize)]
struct JsonSmtp {
    checked: bool,
    reason: &'static str,
    message: &'static str,
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
        smtp: JsonSmtp {
            checked: false,
            reason: report.smtp.reason(),
            message: report.smtp.message(),
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
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("report types always serialize");
    s.push('\n');
    s
}
