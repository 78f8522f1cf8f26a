//! `nolist verify`'s SMTP checks end to end, on loopback only: DNS from
//! `nolist serve`, the decoy from `nolist run` (or a stand-in), the real MX
//! from Postfix's `smtp-sink`. MX hosts resolve to 127.0.0.1 (decoy),
//! 127.0.0.2 (real) and 127.0.0.3 (tail decoy), all probed on one free port
//! with `--smtp-port`. A correct setup passes; a decoy that accepts mail,
//! one that 5xx's, one that drops or stalls, and a real MX that rejects the
//! recipient each fail the right check with the right words.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::nolist;
use crate::util::nsd::free_port;
use crate::util::serve::Server;
use crate::util::sink::Sink;
use serde_json::Value;

const DECOY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const REAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TAIL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A config, the DNS serving it, and the SMTP port every MX is probed on.
struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    dns: Server,
    port: u16,
}

impl Setup {
    /// `example.org` with the decoy on 127.0.0.1, the real MX on 127.0.0.2
    /// and (sandwich) the tail decoy on 127.0.0.3; the responder in `mode`,
    /// listening on the decoy addresses and one free port.
    fn new(mode: &str, sandwich: bool) -> Setup {
        let port = free_port(&[DECOY, REAL, TAIL]);
        let dir = tempfile::tempdir().unwrap();
        let (layout, tail, listen) = if sandwich {
            (
                "sandwich",
                "    tail_decoy: { host: mx99.example.org, preference: 90, ipv4: [127.0.0.3] }\n",
                format!("\"127.0.0.1:{port}\", \"127.0.0.3:{port}\""),
            )
        } else {
            ("classic", "", format!("\"127.0.0.1:{port}\""))
        };
        let yaml = format!(
            "domains:\n  - name: example.org\n    layout: {layout}\n    ttl: 300\n    \
             decoy: {{ host: mx01.example.org, preference: 10, ipv4: [127.0.0.1] }}\n    \
             real:\n      - {{ host: mx02.example.org, preference: 20, ipv4: [127.0.0.2] }}\n\
             {tail}\
             responder:\n  mode: {mode}\n  listen: [{listen}]\n\
             bans: {{ enforce: {{ backend: none }} }}\n\
             dns:\n  soa: {{ mname: ns1.example.org, rname: hostmaster@example.org }}\n  \
             ns: [ns1.example.net]\n"
        );
        let config = dir.path().join("nolist.yaml");
        std::fs::write(&config, yaml).unwrap();
        let dns = Server::start(&config);
        Setup {
            _dir: dir,
            config,
            dns,
            port,
        }
    }

    fn at(&self, ip: Ipv4Addr) -> SocketAddr {
        SocketAddr::from((ip, self.port))
    }

    /// `nolist run` with this config: the decoy responder on its addresses.
    fn responder(&self, listeners: usize) -> Server {
        Server::start_with("run", &self.config, &[], listeners)
            .unwrap_or_else(|log| panic!("nolist run did not start:\n{log}"))
    }

    /// The command line of `nolist verify` against this setup.
    fn verify(&self, extra: &[&str]) -> assert_cmd::Command {
        let mut cmd = nolist();
        cmd.arg("verify")
            .arg("-c")
            .arg(&self.config)
            .args(["--nameserver", &self.dns.addr("udp", false).to_string()])
            .args(["--smtp-port", &self.port.to_string()])
            .args(extra);
        cmd
    }

    /// Runs `verify --format json`; returns (exit code, report).
    fn verify_json(&self, extra: &[&str]) -> (i32, Value) {
        let out = self
            .verify(&[extra, &["--format", "json"]].concat())
            .output()
            .unwrap();
        util::exit_and_json(&out)
    }
}

fn checks(report: &Value) -> Vec<&Value> {
    report["domains"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["checks"].as_array().unwrap())
        .collect()
}

/// (id, subject) of every check with `status`.
fn with_status(report: &Value, status: &str) -> BTreeSet<(String, String)> {
    checks(report)
        .into_iter()
        .filter(|c| c["status"] == status)
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The SMTP checks as (id, subject, status).
fn smtp_checks(report: &Value) -> Vec<(String, String, String)> {
    checks(report)
        .into_iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with("smtp-"))
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["subject"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn message(report: &Value, id: &str, subject: &str) -> String {
    checks(report)
        .into_iter()
        .find(|c| c["id"] == id && c["subject"] == subject)
        .unwrap_or_else(|| panic!("no check {id} {subject} in {report:#}"))["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn check(id: &str, host: &str, addr: SocketAddr, status: &str) -> (String, String, String) {
    (id.into(), format!("{host} {addr}"), status.into())
}

#[test]
fn rcpt_450_decoys_and_a_real_mx_that_takes_mail_pass() {
    let setup = Setup::new("rcpt-450", true);
    let _responder = setup.responder(2);
    let Some(_real) = Sink::start(setup.at(REAL), &[]) else {
        return;
    };
    let (code, report) = setup.verify_json(&[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(with_status(&report, "fail").is_empty(), "{report:#}");
    let (decoy, real, tail) = (setup.at(DECOY), setup.at(REAL), setup.at(TAIL));
    assert_eq!(
        smtp_checks(&report),
        [
            check("smtp-decoy", "mx01.example.org.", decoy, "pass"),
            check("smtp-real", "mx02.example.org.", real, "pass"),
            // smtp-sink does not offer STARTTLS: a warning, not a failure.
            check("smtp-starttls", "mx02.example.org.", real, "warn"),
            check("smtp-decoy", "mx99.example.org.", tail, "pass"),
        ]
    );
    assert_eq!(
        message(&report, "smtp-decoy", &format!("mx01.example.org. {decoy}")),
        "banner 220, 450 at RCPT TO: senders fall back to the next MX"
    );
    assert_eq!(
        message(&report, "smtp-real", &format!("mx02.example.org. {real}")),
        "220 banner, 250 to EHLO and MAIL FROM:<>, 250 to RCPT TO:<postmaster@example.org>: accepts the mail"
    );
    // The report says how SMTP was probed, and carries each probe.
    let smtp = &report["smtp"];
    assert_eq!(smtp["checked"], true);
    assert_eq!(smtp["reason"], Value::Null);
    assert_eq!(smtp["port"], setup.port);
    assert_eq!(smtp["timeout_ms"], 10_000);
    assert_eq!(smtp["mode"], "rcpt-450");
    assert_eq!(smtp["connections"], 3);
    let probes = report["domains"][0]["probes"].as_array().unwrap();
    let roles: Vec<(&str, &str)> = probes
        .iter()
        .map(|p| (p["role"].as_str().unwrap(), p["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("decoy", "completed"),
            ("real", "completed"),
            ("tail_decoy", "completed")
        ]
    );
    assert_eq!(probes[0]["rcpt"], 450);
    assert_eq!(probes[0]["recipient"], "postmaster@example.org");
    assert_eq!(probes[1]["rcpt"], 250);
    // Never DATA.
    for p in probes {
        for line in p["transcript"].as_array().unwrap() {
            assert!(!line["text"].as_str().unwrap().starts_with("DATA"));
        }
    }

    // The text report stays one line per check, with one SMTP summary line.
    let out = setup
        .verify(&["--rcpt", "abuse@example.org"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "  WARN    smtp-starttls  mx02.example.org. {real}  STARTTLS not offered: mail to this MX travels unencrypted\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\nSMTP checked: 3 connections to port {} (timeout 10s, RCPT TO abuse@example.org), decoys judged as responder.mode rcpt-450\n",
            setup.port
        )),
        "{text}"
    );
    assert!(
        text.contains("RCPT TO:<abuse@example.org>: accepts the mail"),
        "{text}"
    );
    assert!(text.ends_with("result: ok\n"), "{text}");
}

#[test]
fn greet_mode_decoys_pass_with_a_4xx_banner() {
    for (mode, code) in [("greet-421", 421), ("greet-450", 450)] {
        let setup = Setup::new(mode, false);
        let _responder = setup.responder(1);
        let Some(_real) = Sink::start(setup.at(REAL), &[]) else {
            return;
        };
        let (exit, report) = setup.verify_json(&[]);
        assert_eq!(exit, 0, "{mode}: {report:#}");
        let subject = format!("mx01.example.org. {}", setup.at(DECOY));
        assert_eq!(
            message(&report, "smtp-decoy", &subject),
            format!("banner {code}: senders fall back to the next MX")
        );
        assert_eq!(report["smtp"]["mode"], mode);
    }
}

#[test]
fn refuse_mode_passes_when_nothing_listens_on_the_decoy() {
    let setup = Setup::new("refuse", false);
    let Some(_real) = Sink::start(setup.at(REAL), &[]) else {
        return;
    };
    let started = Instant::now();
    let (code, report) = setup.verify_json(&[]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        smtp_checks(&report),
        [
            check("smtp-decoy", "mx01.example.org.", setup.at(DECOY), "pass"),
            check("smtp-real", "mx02.example.org.", setup.at(REAL), "pass"),
            check("smtp-starttls", "mx02.example.org.", setup.at(REAL), "warn"),
        ]
    );
    assert_eq!(
        message(
            &report,
            "smtp-decoy",
            &format!("mx01.example.org. {}", setup.at(DECOY))
        ),
        "connection refused (TCP reset): senders fall back to the next MX at once"
    );
    assert_eq!(report["domains"][0]["probes"][0]["outcome"], "refused");
}

#[test]
fn a_decoy_that_accepts_mail_fails_smtp_decoy() {
    let setup = Setup::new("rcpt-450", false);
    // The "decoy" is an MTA that takes every recipient.
    let Some(_decoy) = Sink::start(setup.at(DECOY), &[]) else {
        return;
    };
    let Some(_real) = Sink::start(setup.at(REAL), &[]) else {
        return;
    };
    let (code, report) = setup.verify_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    let subject = format!("mx01.example.org. {}", setup.at(DECOY));
    assert_eq!(
        with_status(&report, "fail"),
        BTreeSet::from([("smtp-decoy".to_owned(), subject.clone())])
    );
    assert_eq!(
        message(&report, "smtp-decoy", &subject),
        "RCPT TO accepted (250 2.1.5 Ok): the decoy takes mail; it must never accept a recipient"
    );
}

#[test]
fn a_decoy_that_answers_5xx_fails_smtp_decoy() {
    let setup = Setup::new("rcpt-450", false);
    let Some(_real) = Sink::start(setup.at(REAL), &[]) else {
        return;
    };
    let subject = format!("mx01.example.org. {}", setup.at(DECOY));
    {
        // 5xx at RCPT: senders bounce instead of trying the real MX.
        let Some(_decoy) = Sink::start(setup.at(DECOY), &["-f", "RCPT", "-B", "550 5.7.1 go away"])
        else {
            return;
        };
        let (code, report) = setup.verify_json(&[]);
        assert_eq!(code, 1, "{report:#}");
        assert_eq!(
            with_status(&report, "fail"),
            BTreeSet::from([("smtp-decoy".to_owned(), subject.clone())])
        );
        assert_eq!(
            message(&report, "smtp-decoy", &subject),
            "5xx to RCPT TO (550 5.7.1 go away): senders bounce the mail instead of trying the next MX; \
             a decoy must never answer 5xx"
        );
    }
    // A 5xx banner fails as well (and is not mistaken for a greet-* decoy).
    let Some(_decoy) = Sink::start(
        setup.at(DECOY),
        &["-f", "CONNECT", "-B", "554 5.7.1 no service"],
    ) else {
        return;
    };
    let (code, report) = setup.verify_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    assert!(
        message(&report, "smtp-decoy", &subject)
            .starts_with("5xx to the banner (554 5.7.1 no service): senders bounce"),
        "{report:#}"
    );
}

/// A listener whose accept queue is full: the kernel drops further SYNs,
/// like a firewall DROP rule. Holds the listener and the queued client.
struct Dropping {
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl Dropping {
    fn at(addr: SocketAddr) -> Dropping {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.set_reuse_address(true).unwrap();
        listener.bind(&addr.into()).unwrap();
        listener.listen(0).unwrap();
        let mut queued = Vec::new();
        // Fill the queue until a connect times out (bounded).
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => queued.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Dropping {
                        _listener: listener,
                        _queued: queued,
                    };
                }
                Err(e) => panic!("filling the accept queue of {addr}: {e}"),
            }
        }
        panic!("the accept queue of {addr} never filled up");
    }
}

#[test]
fn a_decoy_that_drops_or_stalls_fails_with_the_delay_it_causes() {
    let setup = Setup::new("refuse", false);
    let Some(_real) = Sink::start(setup.at(REAL), &[]) else {
        return;
    };
    let subject = format!("mx01.example.org. {}", setup.at(DECOY));
    {
        let _drop = Dropping::at(setup.at(DECOY));
        let started = Instant::now();
        let (code, report) = setup.verify_json(&["--smtp-timeout", "500ms"]);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(code, 1, "{report:#}");
        assert_eq!(
            with_status(&report, "fail"),
            BTreeSet::from([("smtp-decoy".to_owned(), subject.clone())])
        );
        assert_eq!(
            message(&report, "smtp-decoy", &subject),
            "connect timed out after 500ms (the decoy drops connections): a DROPped decoy delays every \
             legitimate sender by 30 s to 5 min; it must refuse (TCP reset) or answer"
        );
        assert_eq!(report["domains"][0]["probes"][0]["outcome"], "timeout");
        assert_eq!(report["domains"][0]["probes"][0]["step"], "connect");
    }
    // Accepts the connection, never says a word.
    let silent = TcpListener::bind(setup.at(DECOY)).unwrap();
    silent.set_nonblocking(true).unwrap();
    let holder = std::thread::spawn(move || {
        // Hold one connection open (silently) until the client gives up;
        // stop waiting for it after 20 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match silent.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = conn.read(&mut [0u8; 64]);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let (code, report) = setup.verify_json(&["--smtp-timeout", "500ms"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        message(&report, "smtp-decoy", &subject),
        "connected, but no banner within 500ms: a silent decoy delays every legitimate sender by 30 s to 5 min"
    );
    holder.join().unwrap();
}

#[test]
fn a_real_mx_that_rejects_the_recipient_fails_smtp_real() {
    let setup = Setup::new("rcpt-450", false);
    let _responder = setup.responder(1);
    let Some(_real) = Sink::start(
        setup.at(REAL),
        &[
            "-f",
            "RCPT",
            "-B",
            "550 5.1.1 <postmaster@example.org>: unknown user",
        ],
    ) else {
        return;
    };
    let (code, report) = setup.verify_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    let subject = format!("mx02.example.org. {}", setup.at(REAL));
    assert_eq!(
        with_status(&report, "fail"),
        BTreeSet::from([("smtp-real".to_owned(), subject.clone())])
    );
    assert_eq!(
        message(&report, "smtp-real", &subject),
        "RCPT TO:<postmaster@example.org> answered 550 5.1.1 <postmaster@example.org>: unknown user: \
         mail to it bounces"
    );
    // The decoy is still judged on its own.
    assert!(
        with_status(&report, "pass").contains(&(
            "smtp-decoy".to_owned(),
            format!("mx01.example.org. {}", setup.at(DECOY))
        )),
        "{report:#}"
    );
}

#[test]
fn smtp_flags_are_checked() {
    let bad: [&[&str]; 6] = [
        &["--smtp-port", "0"],
        &["--smtp-timeout", "0s"],
        &["--rcpt", "postmaster"],
        &["--rcpt", "a@b>\r\nDATA"],
        &["--helo", "two words"],
        &["--dns-only", "--smtp-port", "2525"],
    ];
    for args in bad {
        nolist()
            .args(["verify", "-c", "examples/classic.yaml"])
            .args(["--nameserver", "127.0.0.1:1"])
            .args(args)
            .assert()
            .code(2);
    }
}
