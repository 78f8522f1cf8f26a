use super::*;

fn id(text: &str) -> StreamId {
    StreamId::parse(text).unwrap()
}

fn state(last: &str, deleted: &str) -> Option<StreamState> {
    Some(StreamState {
        last: id(last),
        deleted: id(deleted),
        origin: None,
    })
}

#[test]
fn stream_ids_order_by_time_then_number() {
    assert!(id("5-10") < id("10-0"), "numeric, not textual");
    assert!(id("10-1") < id("10-2"));
    assert_eq!(id("0-0"), StreamId::START);
    assert_eq!(id("1733250000000-7").to_string(), "1733250000000-7");
    assert_eq!(id("18446744073709551615-0").ms, u64::MAX);
}

#[test]
fn only_full_decimal_ids_parse() {
    for bad in [
        "",
        "-",
        "12",
        "12-",
        "-3",
        "1-2-3",
        "a-1",
        "1-+2",
        " 1-2",
        "18446744073709551616-0",
    ] {
        assert_eq!(StreamId::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn no_stream_is_a_gap_for_a_reader_that_read_before() {
    assert!(!gap(StreamId::START, None));
    assert!(gap(id("5-0"), None));
}

#[test]
fn a_trimmed_entry_after_the_cursor_is_a_gap() {
    // Nothing trimmed yet.
    assert!(!gap(id("0-0"), state("9-0", "0-0")));
    assert!(!gap(id("4-0"), state("9-0", "0-0")));
    // Trimmed up to 5-0: a reader at 5-0 or later saw it all.
    assert!(!gap(id("5-0"), state("9-0", "5-0")));
    assert!(!gap(id("7-3"), state("9-0", "5-0")));
    // A reader behind it did not, even one at the very beginning.
    assert!(gap(id("4-9"), state("9-0", "5-0")));
    assert!(gap(id("0-0"), state("9-0", "5-0")));
}

#[test]
fn a_cursor_from_another_stream_is_a_gap() {
    // The stream was recreated (data lost) and holds less than the reader
    // saw: ids never go back within one stream.
    assert!(gap(id("9-1"), state("9-0", "0-0")));
    assert!(!gap(id("9-0"), state("9-0", "0-0")));
    // Or it was recreated and has grown past the cursor since: its first
    // entry is newer than what the reader saw.
    let recreated = Some(StreamState {
        last: id("20-0"),
        deleted: id("0-0"),
        origin: Some(id("15-0")),
    });
    assert!(gap(id("9-0"), recreated));
    assert!(!gap(id("15-0"), recreated));
    assert!(!gap(id("17-2"), recreated));
    // A reader that never read anything missed nothing of it.
    assert!(!gap(StreamId::START, recreated));
}

fn outgoing(compact: Compact) -> Outgoing {
    Outgoing {
        seq: 42,
        payload: "{\"v\":1}".into(),
        compact,
    }
}

#[test]
fn each_compact_change_has_its_script_code() {
    let net: ipnet::IpNet = "192.0.2.0/24".parse().unwrap();
    let cases = [
        (Compact::Nothing, ["-", "", "0"]),
        (
            Compact::Delivery {
                network: net,
                at: 1_764_800_000,
            },
            ["d", "192.0.2.0/24", "1764800000"],
        ),
        (
            Compact::Ban {
                target: net,
                until: 1_764_886_400,
                manual: false,
            },
            ["b", "192.0.2.0/24", "1764886400"],
        ),
        (
            Compact::Ban {
                target: "2001:db8::7/128".parse().unwrap(),
                until: 1_764_886_400,
                manual: true,
            },
            ["m", "2001:db8::7/128", "1764886400"],
        ),
        (Compact::Unban { target: net }, ["u", "192.0.2.0/24", "0"]),
    ];
    for (compact, [kind, key, score]) in cases {
        let args = message_args(&outgoing(compact));
        assert_eq!(args, [kind, key, score, "{\"v\":1}", "42"]);
    }
}

#[test]
fn scores_are_read_as_integers_whatever_their_form() {
    assert_eq!(integer("1764800000"), Some(1_764_800_000));
    assert_eq!(integer("-3"), Some(-3));
    assert_eq!(integer("1.7648e9"), Some(1_764_800_000));
    assert_eq!(integer("inf"), Some(i64::MAX));
    assert_eq!(integer("-inf"), Some(i64::MIN));
    assert_eq!(integer("nan"), None);
    assert_eq!(integer("soon"), None);
    assert_eq!(integer(""), None);
}

#[test]
fn errors_are_classified_by_what_the_caller_can_do() {
    use std::io;
    let io_err = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
    assert!(matches!(classify(&io_err), TransportError::Unreachable(_)));
    let auth = RedisError::from((ErrorKind::AuthenticationFailed, "bad"));
    assert!(matches!(classify(&auth), TransportError::Refused(_)));
    let perm = RedisError::from((
        ErrorKind::Server(ServerErrorKind::NoPerm),
        "NOPERM this user has no permissions to run the 'xadd' command",
    ));
    assert!(matches!(classify(&perm), TransportError::Refused(_)));
    let wrongpass = RedisError::from((
        ErrorKind::Extension,
        "WRONGPASS invalid username-password pair or user is disabled.",
    ));
    assert!(matches!(classify(&wrongpass), TransportError::Refused(_)));
    let in_script = RedisError::from((
        ErrorKind::Server(ServerErrorKind::ResponseError),
        "The user executing the script can't run this command or subcommand script: ..., on @user_script:75.",
    ));
    assert!(matches!(classify(&in_script), TransportError::Refused(_)));
    let other = RedisError::from((ErrorKind::UnexpectedReturnType, "not an integer"));
    assert!(matches!(classify(&other), TransportError::Protocol(_)));
}

#[test]
fn a_shown_url_has_no_password() {
    assert_eq!(
        redacted("redis://nolist:s3cret@198.18.5.1:6379/0"),
        "redis://nolist@198.18.5.1:6379/0"
    );
    assert_eq!(redacted("rediss://:s3cret@host/2"), "rediss://@host/2");
    assert_eq!(
        redacted("redis://198.18.5.1:6379/0"),
        "redis://198.18.5.1:6379/0"
    );
    assert_eq!(redacted("redis://u@h"), "redis://u@h");
    assert_eq!(redacted("s3cret"), "(not a URL)");
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn the_read_reply_is_parsed_into_entries() {
    let reply = Value::Array(vec![
        bulk("9-0"),
        bulk(""),
        bulk("2-0"),
        bulk("1-0"),
        Value::Array(vec![
            Value::Array(vec![bulk("3-0"), bulk("p"), bulk("{}")]),
            Value::Array(vec![
                bulk("4-1"),
                bulk("w"),
                bulk("1764800000"),
                bulk("mx2"),
            ]),
            Value::Array(vec![bulk("5-0"), bulk("?")]),
        ]),
    ]);
    let (state, entries) = read_reply(reply).unwrap().unwrap();
    assert_eq!(
        state,
        StreamState {
            last: id("9-0"),
            deleted: id("2-0"),
            origin: Some(id("1-0")),
        }
    );
    let cursors: Vec<&str> = entries.iter().map(|e| e.cursor.0.as_str()).collect();
    assert_eq!(cursors, ["3-0", "4-1", "5-0"]);
    assert_eq!(entries[0].body, ReceivedBody::Message(b"{}".to_vec()));
    assert_eq!(
        entries[1].body,
        ReceivedBody::Watermark {
            node: "mx2".into(),
            at: "1764800000".into()
        }
    );
    assert_eq!(entries[2].body, ReceivedBody::Unknown);
    assert_eq!(read_reply(Value::Nil), Ok(None));
}

#[test]
fn the_newest_deletion_counts_whoever_made_it() {
    let reply = |xdel: &str, trimmed: &str| {
        let v = Value::Array(vec![
            bulk("9-0"),
            bulk(xdel),
            bulk(trimmed),
            bulk(""),
            Value::Array(vec![]),
        ]);
        read_reply(v).unwrap().unwrap().0
    };
    assert_eq!(reply("", "").deleted, StreamId::START);
    assert_eq!(reply("7-0", "3-0").deleted, id("7-0"));
    assert_eq!(reply("0-0", "3-0").deleted, id("3-0"));
    assert_eq!(reply("", "3-0").origin, None);
    let short = Value::Array(vec![bulk("9-0")]);
    assert!(read_reply(short).is_err());
}

#[test]
fn the_documented_acl_names_exactly_the_commands_nolist_uses() {
    let docs = include_str!("../../../../docs/fleet.md");
    let line = docs
        .lines()
        .find(|l| l.trim_start().starts_with("ACL SETUSER nolist"))
        .expect("an ACL example in docs/fleet.md");
    let documented: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with('+'))
        .collect();
    let used: Vec<&str> = crate::fleet::redis::ACL_COMMANDS
        .split_whitespace()
        .collect();
    assert_eq!(documented, used);
}
