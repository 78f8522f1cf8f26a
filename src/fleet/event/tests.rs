use super::*;

const NOW: i64 = 1_764_800_000;

fn node(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

fn roundtrip(body: Body) {
    let m = Message {
        node: node("mx1"),
        seq: 7,
        body,
    };
    assert_eq!(decode(encode(&m).as_bytes(), NOW), Ok(m));
}

#[test]
fn every_kind_survives_the_wire() {
    roundtrip(Body::Hit {
        ip: "192.0.2.7".parse().unwrap(),
        at: NOW - 5,
        seen: Seen::Nothing,
    });
    roundtrip(Body::Hit {
        ip: "2001:db8::7".parse().unwrap(),
        at: NOW,
        seen: Seen::Network,
    });
    roundtrip(Body::Hit {
        ip: "192.0.2.7".parse().unwrap(),
        at: NOW,
        seen: Seen::Envelope(Envelope(0x0123_4567_89ab_cdef)),
    });
    roundtrip(Body::Delivery {
        ip: "198.51.100.4".parse().unwrap(),
        at: NOW - 1,
    });
    roundtrip(Body::Ban {
        target: "192.0.2.0/24".parse().unwrap(),
        until: NOW + 86_400,
        hits: 3,
        offence: 2,
        source: BanSource::Manual,
    });
    roundtrip(Body::Unban {
        target: "2001:db8::/64".parse().unwrap(),
    });
}

#[test]
fn the_documented_examples_decode() {
    let docs = include_str!("../event.rs");
    let examples: Vec<&str> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("//! {"))
        .collect();
    assert_eq!(examples.len(), 4);
    for e in examples {
        let json = format!("{{{e}");
        decode(json.as_bytes(), NOW).unwrap_or_else(|s| panic!("{json}: {s}"));
    }
}

fn skip(json: &str) -> Skip {
    decode(json.as_bytes(), NOW).expect_err(json)
}

#[test]
fn hostile_messages_are_skipped_with_a_reason() {
    let big = format!(
        r#"{{"v":1,"node":"mx1","seq":1,"kind":"hit","ip":"{}"}}"#,
        "1".repeat(3000)
    );
    assert!(matches!(skip(&big), Skip::TooLarge(_)));
    assert!(matches!(skip("not json"), Skip::Malformed(_)));
    assert!(matches!(skip(r#"{"node":"mx1"}"#), Skip::Malformed(_)));
    assert_eq!(
        skip(r#"{"v":2,"node":"mx1","seq":1,"kind":"hit","ip":"192.0.2.1","at":1764800000}"#),
        Skip::Version(2)
    );
    let base = |rest: &str| format!(r#"{{"v":1,"node":"mx1","seq":1,{rest}}}"#);
    for (json, why) in [
        (
            base(r#""kind":"hit","ip":"127.0.0.1","at":1764800000"#),
            "not a client",
        ),
        (
            base(r#""kind":"hit","ip":"::ffff:127.0.0.1","at":1764800000"#),
            "not a client",
        ),
        (
            base(r#""kind":"hit","ip":"0.0.0.0","at":1764800000"#),
            "not a client",
        ),
        (
            base(r#""kind":"hit","ip":"224.0.0.1","at":1764800000"#),
            "not a client",
        ),
        (
            base(r#""kind":"hit","ip":"192.0.2.1/24","at":1764800000"#),
            "not an IP",
        ),
        (
            base(r#""kind":"hit","ip":"192.0.2.1","at":5"#),
            "before the year 2000",
        ),
        (
            base(r#""kind":"hit","ip":"192.0.2.1","at":1764800000,"seen":"envelope:zz""#),
            "`seen`",
        ),
        (
            base(r#""kind":"ban","target":"0.0.0.0/0","until":1764800000,"source":"engine""#),
            "wider than /8",
        ),
        (
            base(r#""kind":"ban","target":"2001::/16","until":1764800000,"source":"engine""#),
            "wider than /32",
        ),
        (
            base(r#""kind":"ban","target":"192.0.2.1","until":99999999999,"source":"engine""#),
            "longest ban",
        ),
        (base(r#""kind":"launch","ip":"192.0.2.1""#), "unknown kind"),
    ] {
        let s = skip(&json).to_string();
        assert!(s.contains(why), "{json}: {s}");
    }
    assert!(matches!(
        skip(r#"{"v":1,"node":"MX 1","seq":1,"kind":"hit","ip":"192.0.2.1","at":1764800000}"#),
        Skip::Invalid(_)
    ));
    assert!(matches!(
        skip(r#"{"v":1,"node":"mx1","seq":0,"kind":"hit","ip":"192.0.2.1","at":1764800000}"#),
        Skip::Invalid(_)
    ));
    assert!(matches!(
        skip(r#"{"v":1,"node":"mx1","seq":1,"kind":"hit","at":1764800000}"#),
        Skip::Malformed(_)
    ));
    assert!(matches!(
        skip(
            r#"{"v":1,"node":"mx1","seq":1,"kind":"hit","ip":"192.0.2.1","at":1764800000,"extra":1}"#
        ),
        Skip::Malformed(_)
    ));
}

#[test]
fn a_time_from_the_future_counts_as_now_and_mapped_addresses_as_ipv4() {
    let m = decode(
        br#"{"v":1,"node":"mx1","seq":1,"kind":"delivery","ip":"::ffff:192.0.2.9","at":2000000000}"#,
        NOW,
    )
    .unwrap();
    assert_eq!(
        m.body,
        Body::Delivery {
            ip: "192.0.2.9".parse().unwrap(),
            at: NOW
        }
    );
}

#[test]
fn an_outbox_body_becomes_the_message_once_numbered() {
    let body = Body::Ban {
        target: "192.0.2.7/32".parse().unwrap(),
        until: NOW + 60,
        hits: 4,
        offence: 1,
        source: BanSource::Engine,
    };
    let stored = encode_body(&body);
    assert!(stored.starts_with(r#"{"kind":"ban""#), "{stored}");
    let m = decode(with_header(&node("mx-2"), 42, &stored).as_bytes(), NOW).unwrap();
    assert_eq!((m.node.as_str(), m.seq, m.body), ("mx-2", 42, body));
}
