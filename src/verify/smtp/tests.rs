//! The SMTP verdicts on hand-made probe reports: each mode's pass, every way
//! a decoy can fail (accepts, bounces, drops, stalls, answers in the wrong
//! mode), a real MX's pass and failures, the targets read off DNS answers,
//! and properties over arbitrary dialogues (no panic; a decoy that accepted
//! or 5xx'd never passes).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::config;
use crate::plan::Plan;
use crate::verify::expectations;
use crate::verify::observe::{LiveMx, QueryError};

const T: Duration = Duration::from_secs(10);

const SANDWICH: &str = "\
domains:
  - name: example.com
    layout: sandwich
    decoy: { host: mx01.example.com, preference: 10, ipv4: [192.0.2.10], ipv6: [\"2001:db8::10\"] }
    real:
      - { host: mx02.example.com, preference: 20, ipv4: [192.0.2.20] }
    tail_decoy: { host: mx99.example.com, preference: 90, ipv4: [192.0.2.11] }
responder: { mode: rcpt-450 }
";

fn expected(yaml: &str) -> Expected {
    let cfg = config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    expectations(&Plan::build(&cfg), &cfg).remove(0)
}

/// A report as the probe would make it from `script` (`<- ` received, `-> `
/// sent), ending with `outcome` at the step the script reached.
fn probe(outcome: Outcome, script: &[&str]) -> ProbeReport {
    let mut r = ProbeReport {
        outcome,
        elapsed_ms: 1,
        ..ProbeReport::new("192.0.2.10:25".parse().unwrap())
    };
    let mut verb = None::<String>;
    let at_connect = matches!(
        outcome,
        Outcome::Refused | Outcome::Error | Outcome::Timeout
    );
    if !(script.is_empty() && at_connect) {
        r.step = Step::Banner;
    }
    for line in script {
        let (dir, text) = match line.split_at(3) {
            ("-> ", t) => (Direction::Sent, t),
            ("<- ", t) => (Direction::Received, t),
            _ => panic!("bad script line {line:?}"),
        };
        r.transcript.push(Line {
            dir,
            text: text.to_owned(),
        });
        if dir == Direction::Sent {
            let v = text.split_whitespace().next().unwrap().to_owned();
            r.step = match v.as_str() {
                "EHLO" | "HELO" => Step::Ehlo,
                "MAIL" => Step::Mail,
                "RCPT" => Step::Rcpt,
                _ => r.step,
            };
            verb = Some(v);
            continue;
        }
        if text.contains("STARTTLS") {
            r.starttls = true;
        }
        let code: Option<u16> = text.get(..3).and_then(|c| c.parse().ok());
        if text.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        match verb.as_deref() {
            None => r.banner = code,
            Some("EHLO") => r.ehlo = code,
            Some("HELO") => {
                r.ehlo = code;
                r.helo_fallback = true;
            }
            Some("MAIL") => r.mail = code,
            Some("RCPT") => r.rcpt = code,
            _ => {}
        }
    }
    r
}

fn refused() -> ProbeReport {
    probe(Outcome::Refused, &[])
}

fn dropped() -> ProbeReport {
    probe(Outcome::Timeout, &[])
}

const RCPT_450: &[&str] = &[
    "<- 220 mx01.example.com ESMTP",
    "-> EHLO nolist-probe.invalid",
    "<- 250-mx01.example.com",
    "<- 250 PIPELINING",
    "-> MAIL FROM:<>",
    "<- 250 2.1.0 Ok",
    "-> RCPT TO:<postmaster@example.com>",
    "<- 450 4.7.1 Try again later",
    "-> QUIT",
    "<- 221 Bye",
];

const REAL_OK: &[&str] = &[
    "<- 220 mx02.example.com ESMTP",
    "-> EHLO nolist-probe.invalid",
    "<- 250-mx02.example.com",
    "<- 250-STARTTLS",
    "<- 250 8BITMIME",
    "-> MAIL FROM:<>",
    "<- 250 2.1.0 Ok",
    "-> RCPT TO:<postmaster@example.com>",
    "<- 250 2.1.5 Ok",
    "-> QUIT",
    "<- 221 Bye",
];

/// `base` with the line starting with `from` replaced by `to`.
fn with(base: &[&'static str], from: &str, to: &'static str) -> Vec<&'static str> {
    let mut done = false;
    let v: Vec<&str> = base
        .iter()
        .map(|l| {
            if !done && l.starts_with(from) {
                done = true;
                to
            } else {
                *l
            }
        })
        .collect();
    assert!(done, "{from} not in script");
    v
}

fn target(role: Role) -> Target {
    Target {
        host: match role {
            Role::Decoy => "mx01.example.com.",
            Role::TailDecoy => "mx99.example.com.",
            Role::Real => "mx02.example.com.",
            Role::Unplanned => "backup.example.com.",
        }
        .into(),
        role,
        address: "192.0.2.10:25".parse().unwrap(),
        rcpt: "postmaster@example.com".into(),
    }
}

/// The single check for a decoy probe, as (status, message).
#[track_caller]
fn decoy(mode: Mode, report: &ProbeReport) -> (Status, String) {
    let checks = judge(&target(Role::Decoy), mode, report, T);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0].id, "smtp-decoy");
    assert_eq!(checks[0].subject, "mx01.example.com. 192.0.2.10:25");
    (checks[0].status, checks[0].message.clone())
}

fn real(report: &ProbeReport) -> Vec<(&'static str, Status, String)> {
    judge(&target(Role::Real), Mode::Rcpt450, report, T)
        .into_iter()
        .map(|c| (c.id, c.status, c.message))
        .collect()
}

#[test]
fn refuse_mode_passes_a_reset_and_fails_a_drop() {
    assert_eq!(
        decoy(Mode::Refuse, &refused()),
        (
            Status::Pass,
            "connection refused (TCP reset): senders fall back to the next MX at once".into()
        )
    );
    let (status, message) = decoy(Mode::Refuse, &dropped());
    assert_eq!(status, Status::Fail);
    assert_eq!(
        message,
        "connect timed out after 10s (the decoy drops connections): a DROPped decoy delays every \
         legitimate sender by 30 s to 5 min; it must refuse (TCP reset) or answer"
    );
    // A slow reset is worth a warning.
    let mut slow = refused();
    slow.elapsed_ms = 4_200;
    let (status, message) = decoy(Mode::Refuse, &slow);
    assert_eq!(status, Status::Warn);
    assert!(
        message.starts_with("refused, but only after 4s 200ms"),
        "{message}"
    );
    // Host unreachable and the like: senders fall back, but it is not a reset.
    let mut unreachable = probe(Outcome::Error, &[]);
    unreachable.error = Some("No route to host (os error 113)".into());
    let (status, message) = decoy(Mode::Refuse, &unreachable);
    assert_eq!(status, Status::Warn);
    assert!(
        message.starts_with("connect failed (No route to host"),
        "{message}"
    );
}

#[test]
fn refuse_mode_fails_anything_that_answers() {
    let (status, message) = decoy(Mode::Refuse, &probe(Outcome::Completed, RCPT_450));
    assert_eq!(status, Status::Fail);
    assert_eq!(
        message,
        "banner 220, EHLO 250, MAIL 250, RCPT 450: something answers on the decoy, but \
         responder.mode is refuse (nothing may listen)"
    );
    let (status, message) = decoy(Mode::Refuse, &probe(Outcome::Closed, &[]));
    assert_eq!(status, Status::Fail);
    assert!(
        message.starts_with("the connection was closed before the banner: something answers"),
        "{message}"
    );
}

#[test]
fn greet_modes_pass_a_4xx_banner_only() {
    let greeted = probe(
        Outcome::Completed,
        &["<- 421 4.3.2 mx01.example.com busy", "-> QUIT"],
    );
    for mode in [Mode::Greet421, Mode::Greet450] {
        assert_eq!(
            decoy(mode, &greeted),
            (
                Status::Pass,
                "banner 421: senders fall back to the next MX".into()
            )
        );
    }
    let (status, message) = decoy(Mode::Greet421, &probe(Outcome::Completed, RCPT_450));
    assert_eq!(status, Status::Fail);
    assert_eq!(
        message,
        "banner 220, EHLO 250, MAIL 250, RCPT 450: responder.mode greet-421 answers with a 4xx banner"
    );
    let (status, _) = decoy(Mode::Greet450, &refused());
    assert_eq!(status, Status::Fail);
    let (status, message) = decoy(Mode::Greet450, &probe(Outcome::Closed, &[]));
    assert_eq!(status, Status::Fail);
    assert!(message.contains("closed before the banner"), "{message}");
}

#[test]
fn rcpt_450_mode_passes_a_2xx_banner_and_4xx_at_rcpt() {
    assert_eq!(
        decoy(Mode::Rcpt450, &probe(Outcome::Completed, RCPT_450)),
        (
            Status::Pass,
            "banner 220, 450 at RCPT TO: senders fall back to the next MX".into()
        )
    );
    // The same verdict for the tail decoy.
    let checks = judge(
        &target(Role::TailDecoy),
        Mode::Rcpt450,
        &probe(Outcome::Completed, RCPT_450),
        T,
    );
    assert_eq!(checks[0].id, "smtp-decoy");
    assert_eq!(checks[0].status, Status::Pass);
    // Refused or greeting with 4xx is not what rcpt-450 does.
    let (status, message) = decoy(Mode::Rcpt450, &refused());
    assert_eq!(status, Status::Fail);
    assert_eq!(
        message,
        "connection refused (TCP reset): responder.mode rcpt-450 answers with a 2xx banner and 4xx at RCPT TO"
    );
    let (status, _) = decoy(
        Mode::Rcpt450,
        &probe(Outcome::Completed, &["<- 421 busy", "-> QUIT"]),
    );
    assert_eq!(status, Status::Fail);
    // A 4xx at MAIL stops the dialogue before RCPT: not as configured either.
    let (status, message) = decoy(
        Mode::Rcpt450,
        &probe(
            Outcome::Completed,
            &with(RCPT_450, "<- 250 2.1.0", "<- 451 4.3.0 later")[..6],
        ),
    );
    assert_eq!(status, Status::Fail, "{message}");
    assert!(
        message.starts_with("banner 220, EHLO 250, MAIL 451:"),
        "{message}"
    );
}

#[test]
fn a_decoy_that_accepts_mail_fails_in_every_mode() {
    let accepts = probe(
        Outcome::Completed,
        &with(RCPT_450, "<- 450", "<- 250 2.1.5 Ok"),
    );
    for mode in [Mode::Refuse, Mode::Greet421, Mode::Greet450, Mode::Rcpt450] {
        assert_eq!(
            decoy(mode, &accepts),
            (
                Status::Fail,
                "RCPT TO accepted (250 2.1.5 Ok): the decoy takes mail; it must never accept a recipient"
                    .into()
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn a_decoy_that_answers_5xx_anywhere_fails() {
    let cases: [(&str, Vec<&str>); 5] = [
        ("the banner", vec!["<- 554 5.7.1 go away", "-> QUIT"]),
        (
            "EHLO",
            // EHLO refused with 5xx, HELO accepted: still a 5xx from a decoy.
            vec![
                "<- 220 mx01 ESMTP",
                "-> EHLO nolist-probe.invalid",
                "<- 502 5.5.2 no",
                "-> HELO nolist-probe.invalid",
                "<- 250 mx01",
                "-> MAIL FROM:<>",
                "<- 250 ok",
                "-> RCPT TO:<postmaster@example.com>",
                "<- 450 later",
            ],
        ),
        (
            "MAIL FROM",
            with(RCPT_450, "<- 250 2.1.0", "<- 553 5.7.1 no"),
        ),
        (
            "RCPT TO",
            with(RCPT_450, "<- 450", "<- 550 5.1.1 unknown user"),
        ),
        (
            "RCPT TO",
            with(RCPT_450, "<- 450", "<- 550-5.1.1 first line of many"),
        ),
    ];
    for (what, script) in cases {
        for mode in [Mode::Refuse, Mode::Greet421, Mode::Greet450, Mode::Rcpt450] {
            let (status, message) = decoy(mode, &probe(Outcome::Completed, &script));
            assert_eq!(status, Status::Fail, "{what} {mode:?}: {message}");
            assert!(
                message.starts_with(&format!("5xx to {what} (")),
                "{what} {mode:?}: {message}"
            );
            assert!(
                message.contains("senders bounce the mail instead of trying the next MX"),
                "{message}"
            );
        }
    }
    // A 5xx to QUIT bounces nothing.
    let quit_5xx = probe(Outcome::Completed, &with(RCPT_450, "<- 221", "<- 500 no"));
    assert_eq!(decoy(Mode::Rcpt450, &quit_5xx).0, Status::Pass);
}

#[test]
fn a_decoy_that_stalls_fails_with_the_delay_it_causes() {
    let silent = probe(Outcome::Timeout, &[]);
    let mut silent = silent;
    silent.step = Step::Banner;
    for mode in [Mode::Refuse, Mode::Greet421, Mode::Rcpt450] {
        let (status, message) = decoy(mode, &silent);
        assert_eq!(status, Status::Fail);
        assert_eq!(
            message,
            "connected, but no banner within 10s: a silent decoy delays every legitimate sender by 30 s to 5 min"
        );
    }
    let stalled = probe(Outcome::Timeout, &RCPT_450[..7]);
    assert_eq!(stalled.step, Step::Rcpt);
    let (status, message) = decoy(Mode::Rcpt450, &stalled);
    assert_eq!(status, Status::Fail);
    assert_eq!(
        message,
        "no reply to RCPT TO within 10s: a stalling decoy delays every legitimate sender by 30 s to 5 min"
    );
    for mode in [Mode::Greet450, Mode::Rcpt450] {
        let (status, message) = decoy(mode, &dropped());
        assert_eq!(status, Status::Fail);
        assert!(message.contains("timed out"), "{message}");
    }
}

#[test]
fn a_real_mx_that_takes_mail_passes_and_reports_starttls() {
    assert_eq!(
        real(&probe(Outcome::Completed, REAL_OK)),
        [
            (
                "smtp-real",
                Status::Pass,
                "220 banner, 250 to EHLO and MAIL FROM:<>, 250 to RCPT TO:<postmaster@example.com>: accepts the mail".into()
            ),
            ("smtp-starttls", Status::Pass, "STARTTLS offered".into()),
        ]
    );
    let plain = probe(
        Outcome::Completed,
        &with(REAL_OK, "<- 250-STARTTLS", "<- 250-DSN"),
    );
    assert_eq!(
        real(&plain)[1],
        (
            "smtp-starttls",
            Status::Warn,
            "STARTTLS not offered: mail to this MX travels unencrypted".into()
        )
    );
    // 251 (will forward) is as good as 250.
    let forwards = probe(
        Outcome::Completed,
        &with(REAL_OK, "<- 250 2.1.5", "<- 251 forward"),
    );
    assert_eq!(real(&forwards)[0].1, Status::Pass);
}

#[test]
fn a_real_mx_that_does_not_take_mail_fails() {
    let cases: [(Vec<&str>, &str); 5] = [
        (
            with(
                REAL_OK,
                "<- 250 2.1.5",
                "<- 550 5.1.1 <postmaster@example.com>: unknown",
            ),
            "RCPT TO:<postmaster@example.com> answered 550 5.1.1 <postmaster@example.com>: unknown: mail to it bounces",
        ),
        (
            with(REAL_OK, "<- 250 2.1.5", "<- 450 4.2.0 greylisted"),
            "RCPT TO:<postmaster@example.com> answered 450 4.2.0 greylisted: mail to it is deferred",
        ),
        (
            with(REAL_OK, "<- 250 2.1.0", "<- 553 5.1.8 sender rejected"),
            "MAIL FROM:<> answered 553 5.1.8 sender rejected: a real MX must accept the null sender (RFC 5321 section 4.5.5)",
        ),
        (
            vec!["<- 421 4.3.2 busy", "-> QUIT"],
            "banner 421 4.3.2 busy: a real MX must greet with 220",
        ),
        (
            vec![
                "<- 220 old ESMTP",
                "-> EHLO nolist-probe.invalid",
                "<- 500 what",
                "-> HELO nolist-probe.invalid",
                "<- 250 old",
            ],
            "EHLO rejected (500 what), HELO answered 250: a real MX must answer 250 to EHLO",
        ),
    ];
    for (script, want) in cases {
        let checks = real(&probe(Outcome::Completed, &script));
        assert_eq!(checks[0], ("smtp-real", Status::Fail, want.to_owned()));
        // STARTTLS is judged only where EHLO was answered.
        let starttls = checks.iter().any(|c| c.0 == "smtp-starttls");
        assert_eq!(
            starttls,
            script.iter().any(|l| l.starts_with("<- 250-STARTTLS"))
        );
    }
    assert_eq!(
        real(&refused()),
        [(
            "smtp-real",
            Status::Fail,
            "connection refused (TCP reset): nothing listens on port 25, so senders cannot deliver here".into()
        )]
    );
    assert_eq!(
        real(&dropped())[0].2,
        "connect timed out after 10s: senders cannot deliver here"
    );
    let closed = probe(Outcome::Closed, &REAL_OK[..8]);
    assert_eq!(
        real(&closed)[0].2,
        "the connection was closed at RCPT TO after banner 220, EHLO 250, MAIL 250: a real MX must answer 250 to RCPT TO:<postmaster@example.com>"
    );
}

#[test]
fn an_unplanned_live_mx_is_judged_like_a_real_one() {
    let checks = judge(
        &target(Role::Unplanned),
        Mode::Refuse,
        &probe(Outcome::Completed, REAL_OK),
        T,
    );
    assert_eq!(checks[0].id, "smtp-real");
    assert_eq!(checks[0].status, Status::Pass);
    assert!(checks[0].message.starts_with("not in the plan; 220 banner"));
}

#[test]
fn long_and_odd_reply_text_is_cut() {
    let long = format!("<- 550 {}", "é".repeat(300));
    let script = with(RCPT_450, "<- 450", Box::leak(long.into_boxed_str()));
    let (status, message) = decoy(Mode::Rcpt450, &probe(Outcome::Completed, &script));
    assert_eq!(status, Status::Fail);
    assert!(message.contains("…"), "{message}");
    assert!(message.chars().count() < 200, "{message}");
}

fn host(v4: Answer<Ipv4Addr>, v6: Answer<Ipv6Addr>) -> HostAnswer {
    HostAnswer {
        ipv4: v4,
        ipv6: v6,
        alias: None,
    }
}

fn sandwich_live() -> DomainObservation {
    let mx = |p: u16, h: &str| LiveMx {
        preference: p,
        host: h.into(),
    };
    DomainObservation {
        mx: Answer::Records(vec![
            mx(10, "mx01.example.com."),
            mx(20, "mx02.example.com."),
            mx(30, "backup.example.com."),
            mx(90, "mx99.example.com."),
        ]),
        hosts: BTreeMap::from([
            (
                "mx01.example.com.".into(),
                host(
                    Answer::Records(vec!["192.0.2.10".parse().unwrap()]),
                    Answer::Records(vec!["2001:db8::10".parse().unwrap()]),
                ),
            ),
            (
                "mx02.example.com.".into(),
                host(
                    Answer::Records(vec![
                        "192.0.2.21".parse().unwrap(),
                        "192.0.2.20".parse().unwrap(),
                    ]),
                    Answer::NoData,
                ),
            ),
            (
                "backup.example.com.".into(),
                host(
                    Answer::Records(vec!["198.51.100.1".parse().unwrap()]),
                    Answer::NoData,
                ),
            ),
            (
                "mx99.example.com.".into(),
                host(
                    Answer::Failed(QueryError::Timeout),
                    Answer::Failed(QueryError::Timeout),
                ),
            ),
        ]),
        authoritative: None,
    }
}

fn summary(planned: &[Planned]) -> Vec<String> {
    planned
        .iter()
        .map(|p| match p {
            Planned::Probe(t) => format!("probe {:?} {} {}", t.role, t.address, t.rcpt),
            Planned::Skip(c) => {
                format!("{} {} {} {}", c.status.as_str(), c.id, c.subject, c.message)
            }
        })
        .collect()
}

#[test]
fn every_resolved_address_of_every_mx_host_is_a_target() {
    let exp = expected(SANDWICH);
    assert_eq!(exp.mode, Mode::Rcpt450);
    assert_eq!(postmaster(&exp), "postmaster@example.com");
    let planned = targets(&exp, &sandwich_live(), 2525, "postmaster@example.com");
    assert_eq!(
        summary(&planned),
        [
            "probe Decoy 192.0.2.10:2525 postmaster@example.com",
            "probe Decoy [2001:db8::10]:2525 postmaster@example.com",
            "probe Real 192.0.2.20:2525 postmaster@example.com",
            "probe Real 192.0.2.21:2525 postmaster@example.com",
            "warn smtp-decoy mx99.example.com. not probed: the A and AAAA lookups failed (see mx-address)",
            "probe Unplanned 198.51.100.1:2525 postmaster@example.com",
        ]
    );
}

#[test]
fn a_family_that_failed_is_skipped_and_said_so() {
    let exp = expected(SANDWICH);
    let mut live = sandwich_live();
    live.hosts.insert(
        "mx01.example.com.".into(),
        host(
            Answer::Records(vec!["192.0.2.10".parse().unwrap()]),
            Answer::Failed(QueryError::ServFail),
        ),
    );
    live.hosts.insert(
        "mx02.example.com.".into(),
        host(Answer::NxDomain, Answer::NxDomain),
    );
    live.hosts.remove("backup.example.com.");
    let planned = targets(&exp, &live, 25, "x@y");
    assert_eq!(
        summary(&planned)[..4],
        [
            "warn smtp-decoy mx01.example.com. IPv6 not probed: the AAAA lookup failed (see mx-address)",
            "probe Decoy 192.0.2.10:25 x@y",
            "warn smtp-real mx02.example.com. not probed: no A or AAAA record (see mx-address)",
            "warn smtp-decoy mx99.example.com. not probed: the A and AAAA lookups failed (see mx-address)",
        ]
    );
    assert_eq!(
        summary(&planned)[4],
        "warn smtp-real backup.example.com. not probed: its addresses were not looked up"
    );
}

fn any_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        prop_oneof![
            Just("EHLO x".to_owned()),
            Just("HELO x".to_owned()),
            Just("MAIL FROM:<>".to_owned()),
            Just("RCPT TO:<a@b>".to_owned()),
            Just("QUIT".to_owned()),
            ".{0,10}".prop_map(|s| s),
        ]
        .prop_map(|text| Line {
            dir: Direction::Sent,
            text
        }),
        prop_oneof![
            (100u16..700, "[ -]", ".{0,100}").prop_map(|(c, sep, t)| format!("{c}{sep}{t}")),
            ".{0,20}",
        ]
        .prop_map(|text| Line {
            dir: Direction::Received,
            text
        }),
    ]
}

fn any_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Refused),
        Just(Outcome::Timeout),
        Just(Outcome::Closed),
        Just(Outcome::Completed),
        Just(Outcome::Error),
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Connect),
        Just(Step::Banner),
        Just(Step::Ehlo),
        Just(Step::Mail),
        Just(Step::Rcpt),
        Just(Step::Quit),
    ]
}

fn any_code() -> impl Strategy<Value = Option<u16>> {
    proptest::option::of(0u16..1000)
}

fn any_report() -> impl Strategy<Value = ProbeReport> {
    (
        (
            any_outcome(),
            any_step(),
            any_code(),
            any_code(),
            any::<bool>(),
        ),
        (any_code(), any_code(), any::<bool>(), any::<u64>()),
        proptest::collection::vec(any_line(), 0..12),
    )
        .prop_map(
            |((outcome, step, banner, ehlo, helo_fallback), (mail, rcpt, starttls, ms), t)| {
                ProbeReport {
                    address: "127.0.0.1:25".parse().unwrap(),
                    outcome,
                    step,
                    banner,
                    ehlo,
                    helo_fallback,
                    extensions: Vec::new(),
                    starttls,
                    mail,
                    rcpt,
                    error: None,
                    elapsed_ms: ms,
                    transcript: t,
                }
            },
        )
}

fn any_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Refuse),
        Just(Mode::Greet421),
        Just(Mode::Greet450),
        Just(Mode::Rcpt450),
    ]
}

proptest! {
    /// Any report gets one verdict per check, never a panic; a decoy that
    /// said 2xx to RCPT or 5xx to anything but QUIT never passes, and one
    /// that timed out always fails.
    #[test]
    fn any_report_is_judged_without_panic(report in any_report(), mode in any_mode()) {
        for role in [Role::Decoy, Role::TailDecoy, Role::Real, Role::Unplanned] {
            let checks = judge(&target(role), mode, &report, T);
            prop_assert!(!checks.is_empty() && checks.len() <= 2);
            for c in &checks {
                prop_assert!(!c.message.is_empty());
            }
            if role == Role::Decoy {
                let dialogue = Dialogue::new(&report.transcript);
                let bad = report.rcpt.is_some_and(is_2xx)
                    || dialogue.first_5xx().is_some()
                    || report.outcome == Outcome::Timeout;
                if bad {
                    prop_assert_eq!(checks[0].status, Status::Fail);
                }
            }
            if matches!(role, Role::Real | Role::Unplanned) && checks[0].status == Status::Pass {
                prop_assert!(matches!(report.rcpt, Some(250 | 251)));
                prop_assert_eq!(report.banner, Some(220));
            }
        }
    }
}
