//! A corpus of Postfix and Exim lines, written from their documented
//! formats, each with the evidence it must (or must not) yield.

use super::*;
use crate::watch::time::Utc;

const NOW: i64 = 1_795_867_201; // 2026-11-28T12:00:01Z

fn parser(format: MtaFormat, reply: Option<&str>) -> LineParser {
    let decoy = DecoySpec {
        syslog_name: "postfix/decoy".into(),
        reply: reply.map(str::to_owned),
    };
    LineParser::with_zone(format, &decoy, NOW, Box::new(Utc))
}

fn ev(at: i64, ip: &str, kind: Kind) -> Option<LogEvent> {
    Some(LogEvent {
        at,
        ip: ip.parse().unwrap(),
        kind,
        envelope: None,
    })
}

/// Checks the time, client and kind of a line's evidence (its envelope is
/// checked by the tests of retry fingerprints).
#[track_caller]
fn check(p: &mut LineParser, line: &str, want: Option<LogEvent>) {
    let strip = |e: Option<LogEvent>| e.map(|e| (e.at, e.ip, e.kind));
    assert_eq!(strip(p.parse(line.as_bytes())), strip(want), "{line}");
}

/// The envelope fingerprint of a decoy line, which must be a decoy hit
/// from `client`.
#[track_caller]
fn envelope_of(line: &str, client: &str) -> Option<Envelope> {
    let mut p = parser(MtaFormat::Postfix, None);
    let e = p
        .parse(line.as_bytes())
        .unwrap_or_else(|| panic!("no evidence in {line}"));
    assert_eq!(
        (e.ip, e.kind),
        (client.parse().unwrap(), Kind::DecoyHit),
        "{line}"
    );
    e.envelope
}

const DECOY: &str = "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 4.7.1 ";

#[test]
fn the_envelope_of_a_decoy_reject_line_is_a_fingerprint() {
    let line = |reply: &str| format!("{DECOY}{reply}");
    let want = Some(Envelope::of(b"a@b.example", b"u@example.org"));
    assert_eq!(
        envelope_of(
            &line("Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<bot>"),
            "203.0.113.9"
        ),
        want
    );
    // Case does not matter, the HELO and the reply text do not count.
    assert_eq!(
        envelope_of(
            &line(
                "<U@example.org>: Recipient address rejected: later; from=<A@B.Example> to=<U@EXAMPLE.ORG> proto=SMTP helo=<other>"
            ),
            "203.0.113.9"
        ),
        want
    );
    // Another recipient, another envelope; the null sender is one too.
    let other = envelope_of(
        &line("Try later; from=<a@b.example> to=<v@example.org> proto=ESMTP helo=<bot>"),
        "203.0.113.9",
    );
    assert!(other.is_some() && other != want);
    assert_eq!(
        envelope_of(
            &line("x; from=<> to=<u@example.org> proto=ESMTP helo=<h>"),
            "203.0.113.9"
        ),
        Some(Envelope::of(b"", b"u@example.org"))
    );
    // A line cut short after the recipient.
    assert_eq!(
        envelope_of(
            &line("Try later; from=<a@b.example> to=<u@example.org>"),
            "203.0.113.9"
        ),
        want
    );
    // No envelope: a CONNECT reject, a MAIL reject without a recipient.
    assert_eq!(envelope_of(&line("no; proto=SMTP"), "203.0.113.9"), None);
    assert_eq!(
        envelope_of(&line("no; from=<a@b> proto=ESMTP helo=<h>"), "203.0.113.9"),
        None
    );
}

#[test]
fn hostile_envelopes_never_yield_an_address_or_a_second_reading() {
    // Addresses in the envelope stay text: the client is the one Postfix wrote.
    let e = envelope_of(
        &format!(
            "{DECOY}x; from=<client=x[1.2.3.4]@evil> to=<[5.6.7.8]@example.org> proto=ESMTP helo=<client=ok.example[8.8.8.8]>"
        ),
        "203.0.113.9",
    );
    assert_eq!(
        e,
        Some(Envelope::of(
            b"client=x[1.2.3.4]@evil",
            b"[5.6.7.8]@example.org"
        ))
    );
    // Separators smuggled into the envelope: the line reads two ways, so
    // it has no envelope (it is still a hit from the real client).
    for reply in [
        "x; from=<a> to=<b> proto=ESMTP helo=<h>; from=<c> to=<d> proto=ESMTP helo=<h2>",
        "x; from=<a> to=<b> to=<c> proto=ESMTP helo=<h>",
        "x; from=<a> to=<b> proto=x> proto=ESMTP helo=<h>",
        "x; from=<a; from=<b> to=<c> proto=ESMTP helo=<h>",
        "x; from=<a> to=<b",
        "x; from=<a> to=<b> proto=",
    ] {
        let line = format!("{DECOY}{reply}");
        let e = envelope_of(&line, "203.0.113.9");
        if reply.ends_with("proto=") {
            assert_eq!(e, Some(Envelope::of(b"a", b"b")), "{line}");
        } else {
            assert_eq!(e, None, "{line}");
        }
    }
}

proptest::proptest! {
    /// Any bytes in the envelope: never a panic, the client is always the
    /// one Postfix wrote.
    #[test]
    fn random_envelopes_never_panic_or_move_the_client(
        from in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        to in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        let mut line = DECOY.as_bytes().to_vec();
        line.extend_from_slice(b"x; from=<");
        line.extend_from_slice(&from);
        line.extend_from_slice(b"> to=<");
        line.extend_from_slice(&to);
        line.extend_from_slice(b"> proto=ESMTP helo=<");
        line.extend_from_slice(&tail);
        let mut p = parser(MtaFormat::Postfix, None);
        let e = p.parse(&line).unwrap();
        proptest::prop_assert_eq!(e.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        proptest::prop_assert_eq!(e.kind, Kind::DecoyHit);
    }
}

#[test]
fn postfix_deliveries() {
    let mut p = parser(MtaFormat::Postfix, None);
    let d = Kind::Delivery;
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[4242]: 3F2A1B2C3D: client=mail-ed1.example.com[192.0.2.33]",
        ev(NOW, "192.0.2.33", d),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[4242]: 4Xk2Lw1Q9yzB7cT: client=unknown[198.51.100.7], sasl_method=PLAIN, sasl_username=u",
        ev(NOW, "198.51.100.7", d),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=v6.example.net[2001:db8::25]",
        ev(NOW, "2001:db8::25", d),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=v6.example.net[IPv6:2001:db8::26]:44123",
        ev(NOW, "2001:db8::26", d),
    );
    check(
        &mut p,
        "2026-11-28T13:00:01.123456+01:00 mx2 postfix/smtpd[99]: 3F2A1B2C3D: client=a.example[192.0.2.34]",
        ev(NOW, "192.0.2.34", d),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix-in/submission/smtpd[7]: 3F2A1B2C3D: client=a.example[192.0.2.35]",
        ev(NOW, "192.0.2.35", d),
    );
}

#[test]
fn postfix_lines_that_prove_nothing() {
    let mut p = parser(MtaFormat::Postfix, None);
    for line in [
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: connect from mail.example.com[192.0.2.33]",
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: disconnect from mail.example.com[192.0.2.33] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        "Nov 28 12:00:01 mx2 postfix/postscreen[2]: CONNECT from [192.0.2.9]:5555 to [192.0.2.20]:25",
        "Nov 28 12:00:01 mx2 postfix/postscreen[2]: PASS NEW [192.0.2.9]:5555",
        "Nov 28 12:00:01 mx2 postfix/cleanup[3]: 3F2A1B2C3D: message-id=<x@client=evil[6.6.6.6]>",
        "Nov 28 12:00:01 mx2 postfix/qmgr[4]: 3F2A1B2C3D: from=<a@b.example>, size=1, nrcpt=2 (queue active)",
        "Nov 28 12:00:01 mx2 postfix/smtp[5]: 3F2A1B2C3D: to=<x@y.example>, relay=y.example[192.0.2.99]:25, status=sent",
        // A reject at the real MX is not a decoy hit, and not a delivery.
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 554 5.7.1 Relay access denied; from=<a@b> to=<c@d> proto=ESMTP helo=<x>",
        "",
        "garbage",
        "Nov 28 12:00:01",
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=no-brackets",
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a.example[192.0.2.999]",
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a.example[192.0.2.1]trailing",
    ] {
        check(&mut p, line, None);
    }
}

#[test]
fn hostile_client_text_never_becomes_the_client() {
    let mut p = parser(MtaFormat::Postfix, None);
    // HELO, sender and recipient full of addresses: the client is the one Postfix wrote.
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 4.7.1 Try later; from=<client=x[1.2.3.4]@evil> to=<[5.6.7.8]@example.org> proto=ESMTP helo=<client=ok.example[8.8.8.8]>",
        ev(NOW, "203.0.113.9", Kind::DecoyHit),
    );
    // A message-id or subject cannot start a line's message.
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/cleanup[3]: 3F2A1B2C3D: client=fake[9.9.9.9]",
        None,
    );
    // Nor can a client name with brackets or spaces.
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a[1.1.1.1] b[2.2.2.2]",
        None,
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a b[2.2.2.2]",
        None,
    );
}

#[test]
fn postfix_decoy_hits() {
    let mut p = parser(MtaFormat::Postfix, None);
    let h = Kind::DecoyHit;
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 4.7.1 <u@example.org>: Recipient address rejected: Try again later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<bot>",
        ev(NOW, "203.0.113.9", h),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: CONNECT from bot.example[2001:db8::bad]: 450 4.7.1 Client host rejected: try again later; proto=SMTP",
        ev(NOW, "2001:db8::bad", h),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: 3F2A1B2C3D: reject: RCPT from unknown[203.0.113.10]: 450 4.7.1 later; from=<a@b> to=<c@d>",
        ev(NOW, "203.0.113.10", h),
    );
    // The decoy's own client= lines (if any) are not deliveries.
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: 3F2A1B2C3D: client=unknown[203.0.113.9]",
        None,
    );
    // Recognised by reply text when the decoy has no syslog name of its own.
    let mut p = parser(MtaFormat::Postfix, Some("450 4.7.1 please try again later"));
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.11]: 450 4.7.1 please try again later; from=<a@b> to=<c@d>",
        ev(NOW, "203.0.113.11", h),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.12]: 554 5.7.1 Relay access denied; from=<a@b> to=<c@d>",
        None,
    );
}

#[test]
fn exim_deliveries() {
    let mut p = parser(MtaFormat::Exim, None);
    let d = Kind::Delivery;
    check(
        &mut p,
        "2026-11-28 12:00:01 1tPxyz-000ABC-12 <= a@b.example H=mail.b.example (helo.b.example) [192.0.2.1]:54321 P=esmtps X=TLS1.3 S=2345 id=x@y",
        ev(NOW, "192.0.2.1", d),
    );
    check(
        &mut p,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= <> H=(bouncer.example) [192.0.2.2] P=esmtp S=900",
        ev(NOW, "192.0.2.2", d),
    );
    check(
        &mut p,
        "2026-11-28 12:00:01 [4242] 1abcDE-000123-AB <= a@b.example H=[2001:db8::2] P=esmtp",
        ev(NOW, "2001:db8::2", d),
    );
    check(
        &mut p,
        "2026-11-28 13:00:01 +0100 1abcDE-000123-AB <= a@b.example H=m.b.example [192.0.2.3]:25 P=esmtp",
        ev(NOW, "192.0.2.3", d),
    );
    check(
        &mut p,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= \"odd sender\"@b.example H=m.b.example [192.0.2.4] P=esmtp",
        ev(NOW, "192.0.2.4", d),
    );
}

#[test]
fn exim_lines_that_prove_nothing() {
    let mut p = parser(MtaFormat::Exim, None);
    for line in [
        "2026-11-28 12:00:01 1abcDE-000123-AB <= root@localhost U=root P=local S=300",
        "2026-11-28 12:00:01 1abcDE-000123-AB => x@y.example R=dnslookup T=remote_smtp H=mx.y.example [192.0.2.9]",
        "2026-11-28 12:00:01 1abcDE-000123-AB Completed",
        "2026-11-28 12:00:01 H=(bot) [192.0.2.66] F=<a@b> rejected RCPT <c@d>: relay not permitted",
        // A sender that smuggles an H= field: the real H= must come right after the sender.
        "2026-11-28 12:00:01 1abcDE-000123-AB <= \"x H=evil [6.6.6.6]\"@b.example U=root P=local",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m.example [192.0.2.5]junk",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m.example [192.0.2.5]:25x P=esmtp",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m.example [192.0.2.5] p=esmtp",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m.example (x) P=esmtp",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m(x) [192.0.2.5] P=esmtp",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m.example  [192.0.2.5] P=esmtp",
        // The fakereject (`(=`) and an unterminated quote.
        "2026-11-28 12:00:01 1abcDE-000123-AB (= a@b H=(x) [192.0.2.5] P=esmtp",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= \"a@b H=(x) [192.0.2.5] P=esmtp",
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b X=1 H=(x) [192.0.2.5] P=esmtp",
    ] {
        check(&mut p, line, None);
    }
}

#[test]
fn exim_junk_helo_is_never_the_client() {
    let mut p = parser(MtaFormat::Exim, None);
    let line = |host: &str| {
        format!("2026-11-28 12:00:01 1abcDE-000123-AB <= a@b.example H={host} P=esmtp S=900")
    };
    let real = ev(NOW, "198.51.100.5", Kind::Delivery);
    // The only `) [IP]` that can close the field is the real one.
    for host in [
        "(x) [203.0.113.66] (y) [198.51.100.5]:25",
        "(x) [203.0.113.66] (y) [198.51.100.5]",
        "(x) [203.0.113.66]) [198.51.100.5]:25",
        "(x) [203.0.113.66]:25(y) [198.51.100.5]:25",
        "(x) [203.0.113.66] p=esmtp (y) [198.51.100.5]:25",
        "m.b.example (x) [203.0.113.66] (y) [198.51.100.5]:25",
        "(x [203.0.113.66] y) [198.51.100.5]",
        "(a b) [198.51.100.5]:25",
        "(a(b) [198.51.100.5]:25",
        "() [198.51.100.5]:25",
        "([198.51.100.5]) [198.51.100.5]:25",
        "([IPv6:2001:db8::5]) [198.51.100.5]:25",
    ] {
        check(&mut p, &line(host), real);
    }
    // A HELO that copies the end of the field: two candidates, no evidence.
    for host in [
        "(x) [203.0.113.66] P=esmtp (y) [198.51.100.5]:25",
        "(x) [203.0.113.66]:25 U=root P=esmtp (y) [198.51.100.5]:25",
        "(x) [198.51.100.5] P=esmtp (y) [198.51.100.5]",
        "m.b.example (x) [203.0.113.66] I=[192.0.2.1]:25 (y) [198.51.100.5]:25",
    ] {
        check(&mut p, &line(host), None);
    }
    // Text after the field can only add candidates, never pick one.
    check(
        &mut p,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=(x) [198.51.100.5] P=esmtp T=\"(y) [203.0.113.66] Hello\"",
        None,
    );
    check(
        &mut p,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=(x) [198.51.100.5] P=esmtp T=\"(y) [203.0.113.66] hello\"",
        real,
    );
    // Without a HELO the field has no client text: later text is not searched.
    check(
        &mut p,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=m.b.example [198.51.100.5] P=esmtp T=\"(y) [203.0.113.66] Hi\"",
        real,
    );
}

#[test]
fn exim_sender_is_read_with_its_quotes_and_escapes() {
    let mut p = parser(MtaFormat::Exim, None);
    let real = ev(NOW, "198.51.100.5", Kind::Delivery);
    for sender in [
        r#""a\"b H=[6.6.6.6] x"@b.example"#,
        r#""a b H=(x) [6.6.6.6] P=esmtp"@b.example"#,
        r"a\ H=\[6.6.6.6\]@b.example",
        r#"a\"\ H=[6.6.6.6]@b.example"#,
        "<>",
    ] {
        check(
            &mut p,
            &format!(
                "2026-11-28 12:00:01 1abcDE-000123-AB <= {sender} H=(x) [198.51.100.5]:25 P=esmtp S=1"
            ),
            real,
        );
    }
    // log_selector +dnssec: `DS` before the field.
    check(
        &mut p,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b DS H=m.b.example [198.51.100.5]:25 P=esmtp",
        real,
    );
}

#[test]
fn postfix_queue_ids_are_the_shapes_postfix_makes() {
    let mut p = parser(MtaFormat::Postfix, None);
    let line = |id: &str| {
        format!("Nov 28 12:00:01 mx2 postfix/smtpd[4242]: {id}: client=a.example[192.0.2.33]")
    };
    let d = ev(NOW, "192.0.2.33", Kind::Delivery);
    // Classic: upper-case hex, five digits of microseconds and the inode.
    // Long: base-52 seconds and microseconds, `z`, base-51 inode, no vowels
    // (the last three: 2026-11-28T12:00:01Z with microseconds and inode
    // 123456 and 1234567, 0 and 0, 999999 and 2^63).
    for id in [
        "3F2A1B2C3D",
        "0A1B2C",
        "ABCDEF0123456789ABCDE",
        "4Xk2Lw1Q9yzB7cT",
        "4jc83j0sf8z9HdB",
        "4jc83j0000z0",
        "4jc83j75plz1VSRhVblFLsV",
    ] {
        check(&mut p, &line(id), d);
    }
    for id in [
        "NOQUEUE",
        "warning",
        "3f2a1b2c3d",             // lower-case hex
        "3F2A1",                  // no inode
        "3F2A1G2C3D",             // not hex, and no `z`
        "ABCDEF0123456789ABCDEF", // longer than 64-bit inode
        "4Xk2Lw1Q9yzA7cT",        // a vowel
        "4Xk2zB7cT",              // `z` before ten time characters
        "4Xk2Lw1Q9yz",            // no inode after `z`
        "4Xk2Lw1Q9y-B7cT",
    ] {
        check(&mut p, &line(id), None);
    }
    // Not a queue id, whatever follows.
    for line in [
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: warning: client=a[192.0.2.33]",
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: NOQUEUE: client=a.example[192.0.2.33]",
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3f2a1b2c3d: client=a.example[192.0.2.33]",
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: 3f2a1b2c3d: reject: RCPT from unknown[203.0.113.10]: 450 4.7.1 later",
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: warning: reject: RCPT from unknown[203.0.113.10]: 450 4.7.1 later",
    ] {
        check(&mut p, line, None);
    }
    // What follows the address: a port, `, ` and more, or the end.
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a.example[192.0.2.33]:44123, sasl_method=PLAIN",
        d,
    );
    for tail in [":", ":x", ",", ",x", ":25,x", " x"] {
        check(
            &mut p,
            &format!(
                "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a.example[192.0.2.33]{tail}"
            ),
            None,
        );
    }
}

#[test]
fn ipv4_mapped_addresses_are_ipv4() {
    let mut p = parser(MtaFormat::Postfix, None);
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a.example[::ffff:192.0.2.40]",
        ev(NOW, "192.0.2.40", Kind::Delivery),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx2 postfix/smtpd[1]: 3F2A1B2C3D: client=a.example[IPv6:::ffff:192.0.2.42]:25",
        ev(NOW, "192.0.2.42", Kind::Delivery),
    );
    check(
        &mut p,
        "Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[::ffff:203.0.113.20]: 450 4.7.1 later",
        ev(NOW, "203.0.113.20", Kind::DecoyHit),
    );
    let mut e = parser(MtaFormat::Exim, None);
    check(
        &mut e,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=(a.example) [::ffff:192.0.2.41] P=esmtp",
        ev(NOW, "192.0.2.41", Kind::Delivery),
    );
    check(
        &mut e,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=[::ffff:c000:22b]:25 P=esmtp",
        ev(NOW, "192.0.2.43", Kind::Delivery),
    );
    // Other IPv6 addresses stay IPv6 (`::192.0.2.44` is not mapped).
    check(
        &mut e,
        "2026-11-28 12:00:01 1abcDE-000123-AB <= a@b H=[::192.0.2.44] P=esmtp",
        ev(NOW, "::192.0.2.44", Kind::Delivery),
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut p = parser(MtaFormat::Postfix, Some("450"));
    let mut e = parser(MtaFormat::Exim, None);
    let base = b"Nov 28 12:00:01 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 x".to_vec();
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut line = base.clone();
        let i = (seed % line.len() as u64) as usize;
        line[i] = (seed >> 32) as u8;
        line.truncate(((seed >> 40) as usize % (line.len() + 1)).max(1));
        let _ = p.parse(&line);
        let _ = e.parse(&line);
    }
}

#[test]
fn lines_without_a_readable_stamp_are_counted() {
    let mut p = parser(MtaFormat::Postfix, None);
    p.parse(b"Nov 28 12:00:01 mx2 postfix/qmgr[9]: 4F1C2D3E5A: removed");
    p.parse(b"2026-11-28T12:00:01Z mx2 postfix/qmgr[9]: 4F1C2D3E5A: removed");
    assert_eq!(p.unstamped(), 0);
    // An Exim line in a Postfix log, garbage, and an empty line (not counted).
    p.parse(b"2026-11-28 12:00:01 1rXYZ-000ABC-12 <= a@b.example H=x [198.51.100.7]");
    p.parse(b"\x00\xff garbage");
    p.parse(b"");
    assert_eq!(p.unstamped(), 2);
    let mut e = parser(MtaFormat::Exim, None);
    e.parse(b"Nov 28 12:00:01 mx2 postfix/smtpd[9]: connect from x[198.51.100.7]");
    assert_eq!(e.unstamped(), 1);
}
