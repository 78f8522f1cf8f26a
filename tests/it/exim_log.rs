//! The Exim parser against lines a real Exim writes (see `util::exim`):
//! a client's HELO and sender never pick the address that gets the credit
//! for a delivery, and a line whose HELO copies Exim's own fields proves
//! nothing.

use std::net::IpAddr;

use crate::util::exim::{Exim, Session};
use nolist::config::MtaFormat;
use nolist::watch::{DecoySpec, Kind, LineParser};

/// The client a delivery line credits, if any (checking the stamp on the way).
fn credited(line: &str) -> Option<IpAddr> {
    let now = nolist::clock::unix_now();
    let mut parser = LineParser::new(MtaFormat::Exim, &DecoySpec::default(), now);
    let event = parser.parse(line.as_bytes());
    let at = parser
        .line_time()
        .unwrap_or_else(|| panic!("no stamp read: {line}"));
    assert!((at - now).abs() < 300, "stamp {at} vs now {now}: {line}");
    event.map(|e| {
        assert_eq!(e.kind, Kind::Delivery, "{line}");
        e.ip
    })
}

/// A session from `peer` with `helo` and a plain sender.
fn from<'a>(peer: &'a str, helo: &'a str) -> Session<'a> {
    Session {
        peer,
        host_name: None,
        helo,
        sender: "a@b.example",
    }
}

/// Receives `session`, checks that Exim wrote `shape` in its line, and
/// returns what the parser credits.
#[track_caller]
fn receive(exim: &Exim, session: &Session, shape: &str) -> Option<IpAddr> {
    let line = exim.receive(session);
    assert!(line.contains(shape), "exim wrote {line:?}, not {shape:?}");
    let ip = credited(&line);
    eprintln!("{line}\n  -> {ip:?}");
    ip
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn junk_helo_never_becomes_the_client() {
    let Some(exim) = Exim::new("+incoming_port") else {
        return;
    };
    let real = ip("198.51.100.5");
    // Issue #13's line: the address in the HELO would get the credit.
    let s = from("198.51.100.5.2525", "x) [203.0.113.66] (y");
    let shape = "H=(x) [203.0.113.66] (y) [198.51.100.5]:2525 P=esmtp";
    assert_eq!(receive(&exim, &s, shape), real);
    let s = from("198.51.100.5.2525", "x) [203.0.113.66]:25(y");
    let shape = "H=(x) [203.0.113.66]:25(y) [198.51.100.5]:2525 P=";
    assert_eq!(receive(&exim, &s, shape), real);
    // A verified host name before the HELO.
    let s = Session {
        host_name: Some("mail.b.example"),
        ..from("198.51.100.5.2525", "x) [203.0.113.66] (y")
    };
    let shape = "H=mail.b.example (x) [203.0.113.66] (y) [198.51.100.5]:2525 P=";
    assert_eq!(receive(&exim, &s, shape), real);
    // A HELO that copies the end of the field: which one is real is
    // anyone's guess, so the line proves nothing.
    let s = from("198.51.100.5.2525", "x) [203.0.113.66]:25 P=esmtp (y");
    let shape = "H=(x) [203.0.113.66]:25 P=esmtp (y) [198.51.100.5]:2525 P=esmtp";
    assert_eq!(receive(&exim, &s, shape), None);

    // Without the port in the field.
    let Some(exim) = Exim::new("-incoming_port") else {
        return;
    };
    let s = from("198.51.100.5", "x) [203.0.113.66] (y");
    assert_eq!(
        receive(&exim, &s, "H=(x) [203.0.113.66] (y) [198.51.100.5] P="),
        real
    );
    let s = from("198.51.100.5", "x) [203.0.113.66] P=esmtp (y");
    let shape = "H=(x) [203.0.113.66] P=esmtp (y) [198.51.100.5] P=esmtp";
    assert_eq!(receive(&exim, &s, shape), None);
}

#[test]
fn ordinary_lines_credit_the_client() {
    let Some(exim) = Exim::new("+incoming_port") else {
        return;
    };
    let s = from("198.51.100.5.2525", "mail.b.example");
    let shape = "H=(mail.b.example) [198.51.100.5]:2525 P=";
    assert_eq!(receive(&exim, &s, shape), ip("198.51.100.5"));
    // An address literal as HELO, as clients without a name send.
    let s = from("198.51.100.5.2525", "[198.51.100.5]");
    let shape = "H=([198.51.100.5]) [198.51.100.5]:2525 P=";
    assert_eq!(receive(&exim, &s, shape), ip("198.51.100.5"));
    let s = Session {
        host_name: Some("mail.b.example"),
        ..from("198.51.100.5.2525", "mail.b.example")
    };
    let shape = "H=mail.b.example [198.51.100.5]:2525 P=";
    assert_eq!(receive(&exim, &s, shape), ip("198.51.100.5"));
    let s = from("2001:db8::5.2525", "[IPv6:2001:db8::5]");
    let shape = "H=([IPv6:2001:db8::5]) [2001:db8::5]:2525 P=";
    assert_eq!(receive(&exim, &s, shape), ip("2001:db8::5"));
    // An IPv4 client seen on a dual-stack socket is the IPv4 address.
    let s = from("::ffff:198.51.100.7", "mail.b.example");
    let shape = "H=(mail.b.example) [::ffff:198.51.100.7] P=";
    assert_eq!(receive(&exim, &s, shape), ip("198.51.100.7"));
}

#[test]
fn sender_text_never_becomes_the_client() {
    let Some(exim) = Exim::new("+incoming_port") else {
        return;
    };
    // A quoted local part with an escaped quote, and an unquoted one with
    // escaped spaces and brackets: both look like an early `H=` field.
    for sender in [
        r#""a\"b H=[6.6.6.6] P=x"@b.example"#,
        r"a\ H=\[6.6.6.6\]@b.example",
    ] {
        let s = Session {
            sender,
            ..from("198.51.100.5.2525", "mail.b.example")
        };
        let shape = format!("<= {sender} H=(mail.b.example) [198.51.100.5]:2525 P=");
        assert_eq!(receive(&exim, &s, &shape), ip("198.51.100.5"));
    }
}
