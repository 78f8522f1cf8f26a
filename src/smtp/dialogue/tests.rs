//! The dialogue, command by command, and its safety invariants under random input.

use proptest::prelude::*;

use super::*;

fn rcpt450() -> Dialogue {
    Dialogue::new(Mode::Rcpt450, "mx01.example.org", "4.7.1 Try again later")
}

/// Runs `cmd` and checks the reply code.
#[track_caller]
fn expect(d: &mut Dialogue, cmd: &str, code: u16) -> Reply {
    let reply = d.command(cmd.as_bytes());
    assert_eq!(reply.code(), code, "{cmd:?} got {:?}", reply.text);
    reply
}

#[test]
fn classic_rcpt_450_dialogue() {
    let mut d = rcpt450();
    assert_eq!(d.banner().text, "220 mx01.example.org ESMTP\r\n");
    let ehlo = expect(&mut d, "EHLO client.example.net\r\n", 250);
    assert!(
        ehlo.text.starts_with("250-mx01.example.org\r\n")
            && ehlo.text.ends_with("250 SMTPUTF8\r\n")
    );
    assert!(!ehlo.text.contains("STARTTLS") && !ehlo.text.contains("CHUNKING"));
    expect(&mut d, "MAIL FROM:<bot@spam.example>", 250);
    let rcpt = expect(&mut d, "RCPT TO:<user@example.org>", 450);
    assert_eq!(rcpt.text, "450 4.7.1 Try again later\r\n");
    expect(&mut d, "RCPT TO:<other@example.org>", 450);
    expect(&mut d, "DATA", 503);
    expect(&mut d, "RSET", 250);
    expect(&mut d, "NOOP", 250);
    let quit = expect(&mut d, "QUIT", 221);
    assert_eq!(quit.close, Some(End::Quit));
    assert_eq!(d.stage, Stage::Rcpt);
    assert_eq!(d.helo.as_deref(), Some("client.example.net"));
    assert_eq!(d.mail_from.as_deref(), Some("bot@spam.example"));
    assert_eq!(d.first_rcpt.as_deref(), Some("user@example.org"));
    assert_eq!(d.commands, 8);
}

#[test]
fn greet_modes_close_at_the_banner() {
    let b = Dialogue::new(Mode::Greet421, "mx01.example.org", "4.7.1 x").banner();
    assert_eq!(b.code(), 421);
    assert_eq!(b.close, Some(End::Greeted));
    let b = Dialogue::new(Mode::Greet450, "mx01.example.org", "4.7.1 Later").banner();
    assert_eq!(b.text, "450 4.7.1 Later\r\n");
    assert_eq!(b.close, Some(End::Greeted));
}

#[test]
fn out_of_order_and_odd_commands_never_accept_or_bounce() {
    let mut d = rcpt450();
    // RCPT without MAIL, MAIL without HELO: still 450 and 250, never 5xx.
    expect(&mut d, "RCPT TO:<a@example.org>", 450);
    expect(&mut d, "MAIL FROM:<>", 250);
    assert_eq!(d.mail_from.as_deref(), Some(""));
    expect(&mut d, "MAIL FROM:<again@example.net>", 250);
    expect(&mut d, "HELO real.example", 250);
    expect(&mut d, "HELO", 250);
    assert_eq!(
        d.helo.as_deref(),
        Some("real.example"),
        "a bare HELO keeps the evidence"
    );
    expect(&mut d, "MAIL FROM:<not an address", 451);
    expect(&mut d, "RCPT TO:garbage", 450);
    expect(&mut d, "STARTTLS", 454);
    expect(&mut d, "AUTH PLAIN AGFiYwBkZWY=", 502);
    expect(&mut d, "VRFY root", 252);
    expect(&mut d, "XYZZY", 502);
    let bdat = expect(&mut d, "BDAT 1000 LAST", 503);
    assert_eq!(bdat.close, Some(End::Bdat));
}

#[test]
fn a_recipient_the_parser_refuses_is_still_recorded() {
    for (line, path) in [
        ("RCPT TO:<user@[192.0.2.1]>\r\n", "user@[192.0.2.1]"),
        ("RCPT TO: user@example.org junk\r\n", "user@example.org"),
        (
            "RCPT TO:<\u{1}x@example.org> NOTIFY=bogus\r\n",
            "?x@example.org",
        ),
        ("RCPT\r\n", ""),
    ] {
        let mut d = rcpt450();
        let reply = d.command(line.as_bytes());
        assert_eq!(reply.code(), 450, "{line:?}");
        assert_eq!(d.stage, Stage::Rcpt);
        assert_eq!(d.first_rcpt.as_deref(), Some(path), "{line:?}");
    }
    // The first recipient stays the first.
    let mut d = rcpt450();
    expect(&mut d, "RCPT TO:<first@example.org>", 450);
    expect(&mut d, "RCPT TO:<x@[192.0.2.1]>", 450);
    assert_eq!(d.first_rcpt.as_deref(), Some("first@example.org"));
}

#[test]
fn evidence_is_sanitised_and_bounded() {
    let mut d = rcpt450();
    let long = format!("EHLO {}\u{7}[1.2.3.4]\r\n", "x".repeat(1000));
    d.command(long.as_bytes());
    let helo = d.helo.unwrap();
    assert_eq!(helo.len(), 256);
    assert!(helo.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    assert_eq!(evidence("a\r\nb\u{1b}[31m"), "a??b?[31m");
}

/// Commands, well-formed or not, as a bot or fuzzer might send them.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        Just("EHLO"),
        Just("HELO"),
        Just("MAIL FROM:"),
        Just("RCPT TO:"),
        Just("DATA"),
        Just("BDAT"),
        Just("RSET"),
        Just("NOOP"),
        Just("QUIT"),
        Just("rcpt to:"),
        Just("mail from:"),
        Just("STARTTLS"),
        Just("AUTH"),
        Just(""),
        Just("VRFY"),
    ];
    (
        verb,
        "[ -~]{0,40}",
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(v, arg, junk)| {
            let mut line = format!("{v}{arg}").into_bytes();
            line.extend(junk);
            line
        })
}

proptest! {
    #[test]
    fn never_accepts_mail_and_never_bounces(lines in proptest::collection::vec(command_line(), 1..30)) {
        for mode in [Mode::Rcpt450, Mode::Greet421, Mode::Greet450] {
            let mut d = Dialogue::new(mode, "mx01.example.org", "4.7.1 Try again later");
            let banner = d.banner().code();
            prop_assert!((200..500).contains(&banner), "banner {banner}");
            for line in &lines {
                let reply = d.command(line);
                let code = reply.code();
                prop_assert!((200..600).contains(&code), "bad code {code}");
                // The command word, as a server reads it.
                let verb: String = String::from_utf8_lossy(line)
                    .chars().take_while(char::is_ascii_alphabetic).collect::<String>()
                    .to_ascii_uppercase();
                if matches!(verb.as_str(), "RCPT" | "DATA" | "BDAT") {
                    prop_assert!(code >= 400, "{verb} got {code}: {line:?}");
                }
                if matches!(verb.as_str(), "EHLO" | "HELO" | "MAIL" | "RCPT") {
                    prop_assert!(code < 500, "{verb} got {code}: {line:?}");
                }
                prop_assert!(reply.text.ends_with("\r\n"));
            }
        }
    }
}

#[test]
fn label_names_match_the_json_names() {
    use crate::smtp::dialogue::{End, Stage};
    for s in Stage::ALL {
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    // Every reason (`End::ALL` is what /metrics registers at 0).
    for e in End::ALL {
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            format!("\"{}\"", e.as_str())
        );
    }
}
