//! The SMTP checks of `verify`, as pure functions: which addresses to probe
//! (read off the plan and the live DNS), and the verdict on each probe
//! (a [`ProbeReport`] and what the plan expects in, [`Check`]s out). No
//! sockets, no clock: the probes run in `probes` (the network edge) and the
//! dialogue itself in [`crate::smtp::probe`]. Unit tests in `smtp/tests.rs`.
//!
//! - `smtp-decoy`: every address of the decoy and the tail decoy, judged
//!   against `responder.mode`. Whatever the mode, a 2xx to RCPT (the decoy
//!   takes mail), a 5xx anywhere (senders bounce instead of falling back) and
//!   a timeout (a DROP: senders wait 30 s to 5 min) fail.
//! - `smtp-real`: every address of a real MX, and of a live MX the plan does
//!   not know: `220` banner, `250` to EHLO, to `MAIL FROM:<>` and to
//!   `RCPT TO:<postmaster@domain>` (or `--rcpt`); `251` counts as `250`.
//! - `smtp-starttls`: real MX addresses that answered EHLO: STARTTLS offered
//!   (pass) or not (warn).
//!
//! A host whose A/AAAA lookups failed is not probed (in that family); the
//! report says so with a `warn` under the host's SMTP check id, next to the
//! failed `mx-address` check that owns the lookup.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::Expected;
use super::check::{Check, CheckKind, SMTP_DECOY, SMTP_REAL, SMTP_STARTTLS, Status, host_names};
use super::observe::{Answer, DomainObservation, HostAnswer};
use crate::config::{Mode, Role as PlanRole};
use crate::smtp::probe::{Direction, Line, Outcome, ProbeReport, Step};

/// A refusal slower than this is a warning: senders wait that long per try.
pub const SLOW_REFUSAL: Duration = Duration::from_secs(3);

/// Longest reply text quoted in a check message.
const MAX_QUOTE: usize = 80;

/// What an MX host is, for the SMTP checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The planned decoy (lowest preference).
    Decoy,
    /// The planned tail decoy (sandwich, highest preference).
    TailDecoy,
    /// A planned real MX.
    Real,
    /// A live MX host that the plan does not list; judged like a real MX.
    Unplanned,
}

impl Role {
    /// The check that judges hosts of this role.
    pub fn check(self) -> CheckKind {
        match self {
            Role::Decoy | Role::TailDecoy => SMTP_DECOY,
            Role::Real | Role::Unplanned => SMTP_REAL,
        }
    }

    fn is_decoy(self) -> bool {
        matches!(self, Role::Decoy | Role::TailDecoy)
    }
}

/// `responder.mode` as written in the config.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Refuse => "refuse",
        Mode::Greet421 => "greet-421",
        Mode::Greet450 => "greet-450",
        Mode::Rcpt450 => "rcpt-450",
    }
}

/// One address to probe for one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The MX host, absolute (`mx01.example.org.`).
    pub host: String,
    /// What the plan says the host is.
    pub role: Role,
    /// The address (as resolved) and the SMTP port.
    pub address: SocketAddr,
    /// The RCPT TO address.
    pub rcpt: String,
}

impl Target {
    /// The check subject: host and address, e.g. `mx01.example.org. 192.0.2.10:25`.
    pub fn subject(&self) -> String {
        format!("{} {}", self.host, self.address)
    }
}

/// The default probe recipient of a domain: `postmaster@example.org`.
pub fn postmaster(expected: &Expected) -> String {
    format!("postmaster@{}", expected.origin.as_str())
}

/// One step of a domain's SMTP checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Probe this address, then [`judge`] the report.
    Probe(Target),
    /// A host (or one address family of it) that cannot be probed: a `warn`.
    Skip(Check),
}

/// The SMTP checks of one domain, in host order (planned hosts in MX order,
/// then unplanned live ones): each host's addresses as resolved, IPv4 before
/// IPv6, after a `warn` when a family cannot be probed because its lookup
/// failed, or the host has no address at all.
pub fn targets(
    expected: &Expected,
    observed: &DomainObservation,
    port: u16,
    rcpt: &str,
) -> Vec<Planned> {
    let mut planned = Vec::new();
    for host in host_names(expected, observed) {
        let role = role_of(expected, &host);
        let Some(answer) = observed.hosts.get(&host) else {
            planned.push(Planned::Skip(not_probed(
                &host,
                role,
                "not probed: its addresses were not looked up",
            )));
            continue;
        };
        let (addresses, problem) = addresses(answer);
        if let Some(problem) = problem {
            planned.push(Planned::Skip(not_probed(&host, role, &problem)));
        }
        planned.extend(addresses.into_iter().map(|ip| {
            Planned::Probe(Target {
                host: host.clone(),
                role,
                address: SocketAddr::new(ip, port),
                rcpt: rcpt.to_owned(),
            })
        }));
    }
    planned
}

fn role_of(expected: &Expected, host: &str) -> Role {
    expected
        .mx
        .iter()
        .find(|mx| mx.host.to_string() == host)
        .map_or(Role::Unplanned, |mx| match mx.role {
            PlanRole::Decoy => Role::Decoy,
            PlanRole::TailDecoy => Role::TailDecoy,
            PlanRole::Real => Role::Real,
        })
}

/// The resolved addresses (sorted, IPv4 first) and, when a family could not
/// be resolved or nothing was found, why.
fn addresses(answer: &HostAnswer) -> (Vec<IpAddr>, Option<String>) {
    let v4: BTreeSet<IpAddr> = answer
        .ipv4
        .records()
        .unwrap_or(&[])
        .iter()
        .map(|a| IpAddr::V4(*a))
        .collect();
    let v6: BTreeSet<IpAddr> = answer
        .ipv6
        .records()
        .unwrap_or(&[])
        .iter()
        .map(|a| IpAddr::V6(*a))
        .collect();
    let failed4 = matches!(answer.ipv4, Answer::Failed(_));
    let failed6 = matches!(answer.ipv6, Answer::Failed(_));
    let problem = match (failed4, failed6) {
        (true, true) => Some("not probed: the A and AAAA lookups failed (see mx-address)".into()),
        (true, false) => Some("IPv4 not probed: the A lookup failed (see mx-address)".into()),
        (false, true) => Some("IPv6 not probed: the AAAA lookup failed (see mx-address)".into()),
        (false, false) if v4.is_empty() && v6.is_empty() => {
            Some("not probed: no A or AAAA record (see mx-address)".into())
        }
        (false, false) => None,
    };
    (v4.into_iter().chain(v6).collect(), problem)
}

/// A `warn` under the host's SMTP check id: `message` says what was not probed.
fn not_probed(host: &str, role: Role, message: &str) -> Check {
    Check {
        id: role.check().id,
        subject: host.to_owned(),
        status: Status::Warn,
        message: message.to_owned(),
    }
}

/// The checks for one probe: `smtp-decoy`, or `smtp-real` and (when EHLO
/// was answered) `smtp-starttls`. `timeout` is the probe's timeout, for the
/// wording only.
pub fn judge(target: &Target, mode: Mode, probe: &ProbeReport, timeout: Duration) -> Vec<Check> {
    let dialogue = Dialogue::new(&probe.transcript);
    let subject = target.subject();
    if target.role.is_decoy() {
        let (status, message) = decoy(mode, probe, &dialogue, timeout);
        return vec![Check {
            id: SMTP_DECOY.id,
            subject,
            status,
            message,
        }];
    }
    let (status, mut message) = real(target, probe, &dialogue, timeout);
    if target.role == Role::Unplanned {
        message = format!("not in the plan; {message}");
    }
    let mut checks = vec![Check {
        id: SMTP_REAL.id,
        subject: subject.clone(),
        status,
        message,
    }];
    if probe.ehlo.is_some_and(is_2xx) && !probe.helo_fallback {
        let (status, message) = if probe.starttls {
            (Status::Pass, "STARTTLS offered".to_owned())
        } else {
            (
                Status::Warn,
                "STARTTLS not offered: mail to this MX travels unencrypted".to_owned(),
            )
        };
        checks.push(Check {
            id: SMTP_STARTTLS.id,
            subject,
            status,
            message,
        });
    }
    checks
}

/// The check when no probe report exists for a target (a probe task died).
pub fn missing(target: &Target) -> Check {
    Check {
        id: target.role.check().id,
        subject: target.subject(),
        status: Status::Fail,
        message: "the probe did not run (internal error); nothing was checked".into(),
    }
}

fn is_2xx(code: u16) -> bool {
    (200..300).contains(&code)
}

fn is_4xx(code: u16) -> bool {
    (400..500).contains(&code)
}

fn is_5xx(code: u16) -> bool {
    (500..600).contains(&code)
}

fn duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// One command (or the banner) and its reply, as read off the transcript.
struct Exchange<'a> {
    /// The command verb, upper case (`EHLO`, `MAIL`, …); `None` for the banner.
    verb: Option<String>,
    /// The reply lines.
    reply: Vec<&'a str>,
}

impl Exchange<'_> {
    /// The reply code of the last line.
    fn code(&self) -> Option<u16> {
        self.reply
            .last()
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
    }

    /// The last reply line, cut to [`MAX_QUOTE`] characters.
    fn quote(&self) -> String {
        let line = self.reply.last().copied().unwrap_or("").trim_end();
        if line.chars().count() > MAX_QUOTE {
            let cut: String = line.chars().take(MAX_QUOTE).collect();
            format!("{cut}…")
        } else {
            line.to_owned()
        }
    }

    /// What it answered, for messages: `the banner`, `EHLO`, `MAIL FROM`, …
    fn label(&self) -> &'static str {
        label(self.verb.as_deref())
    }
}

fn label(verb: Option<&str>) -> &'static str {
    match verb {
        None => "the banner",
        Some("EHLO") => "EHLO",
        Some("HELO") => "HELO",
        Some("MAIL") => "MAIL FROM",
        Some("RCPT") => "RCPT TO",
        Some("QUIT") => "QUIT",
        Some(_) => "a command",
    }
}

/// The transcript as exchanges, in order.
struct Dialogue<'a> {
    exchanges: Vec<Exchange<'a>>,
}

impl<'a> Dialogue<'a> {
    fn new(transcript: &'a [Line]) -> Self {
        let mut exchanges: Vec<Exchange<'a>> = Vec::new();
        for line in transcript {
            match line.dir {
                Direction::Sent => exchanges.push(Exchange {
                    verb: Some(
                        line.text
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase(),
                    ),
                    reply: Vec::new(),
                }),
                Direction::Received => match exchanges.last_mut() {
                    Some(last) => last.reply.push(&line.text),
                    None => exchanges.push(Exchange {
                        verb: None,
                        reply: vec![&line.text],
                    }),
                },
            }
        }
        Dialogue { exchanges }
    }

    /// The last exchange for `verb` (`None`: the banner) that got a reply.
    fn find(&self, verb: Option<&str>) -> Option<&Exchange<'a>> {
        self.exchanges
            .iter()
            .rev()
            .find(|e| e.verb.as_deref() == verb && !e.reply.is_empty())
    }

    /// The quoted reply to `verb`, or the bare code when the transcript lacks it.
    fn quote(&self, verb: Option<&str>, code: u16) -> String {
        self.find(verb)
            .map(Exchange::quote)
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| code.to_string())
    }

    /// The first 5xx reply to anything but QUIT.
    fn first_5xx(&self) -> Option<&Exchange<'a>> {
        self.exchanges
            .iter()
            .filter(|e| e.verb.as_deref() != Some("QUIT"))
            .find(|e| e.code().is_some_and(is_5xx))
    }
}

/// Where the dialogue was, for messages.
fn step_label(step: Step, helo: bool) -> &'static str {
    match step {
        Step::Connect => "the connect",
        Step::Banner => "the banner",
        Step::Ehlo if helo => "HELO",
        Step::Ehlo => "EHLO",
        Step::Mail => "MAIL FROM",
        Step::Rcpt => "RCPT TO",
        Step::Quit => "QUIT",
    }
}

/// The reply codes the probe collected: `banner 220, EHLO 250, MAIL 250, RCPT 450`.
fn codes(probe: &ProbeReport) -> String {
    let mut parts = Vec::new();
    let mut push = |name: &str, code: Option<u16>| {
        if let Some(code) = code {
            parts.push(format!("{name} {code}"));
        }
    };
    push("banner", probe.banner);
    push(
        if probe.helo_fallback { "HELO" } else { "EHLO" },
        probe.ehlo,
    );
    push("MAIL", probe.mail);
    push("RCPT", probe.rcpt);
    parts.join(", ")
}

/// What the probe saw, in a few words (for mismatches).
fn seen(probe: &ProbeReport, timeout: Duration) -> String {
    let step = step_label(probe.step, probe.helo_fallback);
    let so_far = codes(probe);
    let after = if so_far.is_empty() {
        String::new()
    } else {
        format!(" after {so_far}")
    };
    match probe.outcome {
        Outcome::Refused => "connection refused (TCP reset)".into(),
        Outcome::Timeout if probe.step == Step::Connect => {
            format!("connect timed out after {}", duration(timeout))
        }
        Outcome::Timeout if probe.step == Step::Banner => {
            format!("connected, but no banner within {}", duration(timeout))
        }
        Outcome::Timeout => format!("no reply to {step} within {}{after}", duration(timeout)),
        Outcome::Closed if probe.step == Step::Banner => {
            "the connection was closed before the banner".into()
        }
        Outcome::Closed => format!("the connection was closed at {step}{after}"),
        Outcome::Error => format!(
            "error at {step}: {}{after}",
            probe.error.as_deref().unwrap_or("unknown error")
        ),
        Outcome::Completed => so_far,
    }
}

/// The verdict on one decoy address.
fn decoy(
    mode: Mode,
    probe: &ProbeReport,
    dialogue: &Dialogue,
    timeout: Duration,
) -> (Status, String) {
    if let Some(ex) = dialogue.first_5xx() {
        return (
            Status::Fail,
            format!(
                "5xx to {} ({}): senders bounce the mail instead of trying the next MX; a decoy must never answer 5xx",
                ex.label(),
                ex.quote()
            ),
        );
    }
    if let Some(code) = probe.rcpt.filter(|c| is_2xx(*c)) {
        return (
            Status::Fail,
            format!(
                "RCPT TO accepted ({}): the decoy takes mail; it must never accept a recipient",
                dialogue.quote(Some("RCPT"), code)
            ),
        );
    }
    if probe.outcome == Outcome::Timeout {
        let t = duration(timeout);
        return (
            Status::Fail,
            match probe.step {
                Step::Connect => format!(
                    "connect timed out after {t} (the decoy drops connections): a DROPped decoy delays every legitimate sender by 30 s to 5 min; it must refuse (TCP reset) or answer"
                ),
                Step::Banner => format!(
                    "connected, but no banner within {t}: a silent decoy delays every legitimate sender by 30 s to 5 min"
                ),
                step => format!(
                    "no reply to {} within {t}: a stalling decoy delays every legitimate sender by 30 s to 5 min",
                    step_label(step, probe.helo_fallback)
                ),
            },
        );
    }
    let name = mode_name(mode);
    match mode {
        Mode::Refuse => match probe.outcome {
            Outcome::Refused if probe.elapsed_ms > duration_ms(SLOW_REFUSAL) => (
                Status::Warn,
                format!(
                    "refused, but only after {}: every sender waits that long before trying the next MX",
                    duration(Duration::from_millis(probe.elapsed_ms))
                ),
            ),
            Outcome::Refused => (
                Status::Pass,
                "connection refused (TCP reset): senders fall back to the next MX at once".into(),
            ),
            Outcome::Error if probe.step == Step::Connect => (
                Status::Warn,
                format!(
                    "connect failed ({}) without the TCP reset that mode refuse expects: senders fall back, but check the route and the firewall",
                    probe.error.as_deref().unwrap_or("unknown error")
                ),
            ),
            _ => (
                Status::Fail,
                format!(
                    "{}: something answers on the decoy, but responder.mode is refuse (nothing may listen)",
                    seen(probe, timeout)
                ),
            ),
        },
        Mode::Greet421 | Mode::Greet450 => match probe.banner {
            Some(code) if is_4xx(code) => (
                Status::Pass,
                format!("banner {code}: senders fall back to the next MX"),
            ),
            _ => mismatch(probe, timeout, name, "a 4xx banner"),
        },
        Mode::Rcpt450 => match (probe.banner, probe.rcpt) {
            (Some(banner), Some(rcpt)) if is_2xx(banner) && is_4xx(rcpt) => (
                Status::Pass,
                format!("banner {banner}, {rcpt} at RCPT TO: senders fall back to the next MX"),
            ),
            _ => mismatch(probe, timeout, name, "a 2xx banner and 4xx at RCPT TO"),
        },
    }
}

fn mismatch(probe: &ProbeReport, timeout: Duration, mode: &str, wanted: &str) -> (Status, String) {
    let warn = probe.outcome == Outcome::Error && probe.step == Step::Connect;
    (
        if warn { Status::Warn } else { Status::Fail },
        format!(
            "{}: responder.mode {mode} answers with {wanted}",
            seen(probe, timeout)
        ),
    )
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The verdict on one real (or unplanned) MX address.
fn real(
    target: &Target,
    probe: &ProbeReport,
    dialogue: &Dialogue,
    timeout: Duration,
) -> (Status, String) {
    let fail = |m: String| (Status::Fail, m);
    let port = target.address.port();
    match probe.outcome {
        Outcome::Refused => {
            return fail(format!(
                "connection refused (TCP reset): nothing listens on port {port}, so senders cannot deliver here"
            ));
        }
        Outcome::Timeout if probe.step == Step::Connect => {
            return fail(format!(
                "connect timed out after {}: senders cannot deliver here",
                duration(timeout)
            ));
        }
        Outcome::Error if probe.step == Step::Connect => {
            return fail(format!(
                "connect failed: {}",
                probe.error.as_deref().unwrap_or("unknown error")
            ));
        }
        _ => {}
    }
    let Some(banner) = probe.banner else {
        return fail(format!(
            "{}: a real MX must greet with 220",
            seen(probe, timeout)
        ));
    };
    if banner != 220 {
        return fail(format!(
            "banner {}: a real MX must greet with 220",
            dialogue.quote(None, banner)
        ));
    }
    let Some(ehlo) = probe.ehlo else {
        return fail(format!(
            "{}: a real MX must answer 250 to EHLO",
            seen(probe, timeout)
        ));
    };
    if probe.helo_fallback {
        let rejected = dialogue
            .find(Some("EHLO"))
            .map(Exchange::quote)
            .unwrap_or_else(|| "5xx".into());
        return fail(format!(
            "EHLO rejected ({rejected}), HELO answered {ehlo}: a real MX must answer 250 to EHLO"
        ));
    }
    if ehlo != 250 {
        return fail(format!(
            "EHLO answered {}: a real MX must answer 250",
            dialogue.quote(Some("EHLO"), ehlo)
        ));
    }
    let Some(mail) = probe.mail else {
        return fail(format!(
            "{}: a real MX must answer 250 to MAIL FROM:<>",
            seen(probe, timeout)
        ));
    };
    if mail != 250 {
        return fail(format!(
            "MAIL FROM:<> answered {}: a real MX must accept the null sender (RFC 5321 section 4.5.5)",
            dialogue.quote(Some("MAIL"), mail)
        ));
    }
    let rcpt = &target.rcpt;
    match probe.rcpt {
        None => fail(format!(
            "{}: a real MX must answer 250 to RCPT TO:<{rcpt}>",
            seen(probe, timeout)
        )),
        Some(code @ (250 | 251)) => (
            Status::Pass,
            format!(
                "220 banner, 250 to EHLO and MAIL FROM:<>, {code} to RCPT TO:<{rcpt}>: accepts the mail"
            ),
        ),
        Some(code) => {
            let consequence = if is_4xx(code) {
                "mail to it is deferred"
            } else if is_5xx(code) {
                "mail to it bounces"
            } else {
                "a real MX must answer 250"
            };
            fail(format!(
                "RCPT TO:<{rcpt}> answered {}: {consequence}",
                dialogue.quote(Some("RCPT"), code)
            ))
        }
    }
}

#[cfg(test)]
mod tests;
