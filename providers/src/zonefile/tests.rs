//! The zone-file editor: owned RRsets replaced, everything else kept byte
//! for byte, the serial raised.

use std::path::Path;

use super::*;

const ZONE: &str = "\
; example.org, kept in git
$ORIGIN example.org.
$TTL 3600
@\tIN SOA ns1.example.net. hostmaster.example.org. (
\t\t2026010101 ; serial
\t\t3600 900 1209600 3600 )
\tIN NS ns1.example.net.
@ 300 IN MX 10 old-decoy.example.org.
  300 IN MX 20 mx02 ; the real one
www   IN A 192.0.2.80
mx02  IN A 192.0.2.21
      IN TXT \"kept: inherits mx02\"
@     IN TXT \"v=spf1 mx -all\"
";

fn rrset(name: &str, ttl: u32, records: &[Rdata]) -> RrSet {
    let rtype = records[0].rtype();
    RrSet {
        key: Key::new(name, rtype),
        ttl,
        records: records.iter().cloned().collect(),
    }
}

fn change(before: Option<RrSet>, after: Option<RrSet>, key: Key) -> Change {
    Change { key, before, after }
}

fn keys() -> Vec<Key> {
    vec![
        Key::new("example.org", RecordType::Mx),
        Key::new("mx01.example.org", RecordType::A),
        Key::new("mx02.example.org", RecordType::A),
        Key::new("mx02.example.org", RecordType::Aaaa),
    ]
}

fn read(text: &str) -> Vec<RrSet> {
    read_text(text, Path::new("t.zone"), "example.org.", &keys()).unwrap()
}

#[test]
fn reads_only_the_owned_rrsets() {
    let sets = read(ZONE);
    let names: Vec<String> = sets.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(names, ["example.org. MX", "mx02.example.org. A"]);
    assert_eq!(sets[0].ttl, 300);
    assert!(
        sets[0]
            .records
            .contains(&Rdata::mx(20, "mx02.example.org."))
    );
}

#[test]
fn edit_replaces_owned_rrsets_and_keeps_every_other_line() {
    let mx = rrset(
        "example.org",
        3600,
        &[
            Rdata::mx(10, "mx01.example.org"),
            Rdata::mx(20, "mx02.example.org"),
        ],
    );
    let a01 = rrset(
        "mx01.example.org",
        3600,
        &[Rdata::A("192.0.2.10".parse().unwrap())],
    );
    let a02 = rrset(
        "mx02.example.org",
        3600,
        &[Rdata::A("192.0.2.20".parse().unwrap())],
    );
    let changes = [
        change(None, Some(mx.clone()), mx.key.clone()),
        change(None, Some(a01.clone()), a01.key.clone()),
        change(None, Some(a02.clone()), a02.key.clone()),
    ];
    let out = edit(ZONE, "example.org.", &changes);
    let expected = "\
; example.org, kept in git
$ORIGIN example.org.
$TTL 3600
@\tIN SOA ns1.example.net. hostmaster.example.org. (
\t\t2026010102 ; serial
\t\t3600 900 1209600 3600 )
\tIN NS ns1.example.net.
example.org.\t3600\tIN\tMX\t10 mx01.example.org.
example.org.\t3600\tIN\tMX\t20 mx02.example.org.
www   IN A 192.0.2.80
mx02.example.org.\t3600\tIN\tA\t192.0.2.20
      IN TXT \"kept: inherits mx02\"
@     IN TXT \"v=spf1 mx -all\"
mx01.example.org.\t3600\tIN\tA\t192.0.2.10
";
    assert_eq!(out, expected);
    let sets = read(&out);
    assert_eq!(sets, vec![mx, a01, a02]);
}

#[test]
fn a_line_that_inherited_a_removed_owner_gets_it_written() {
    let key = Key::new("mx02.example.org", RecordType::A);
    let before = read(ZONE).into_iter().find(|s| s.key == key);
    let out = edit(ZONE, "example.org.", &[change(before, None, key)]);
    assert!(!out.contains("192.0.2.21"), "{out}");
    assert!(
        out.contains("\nmx02.example.org.      IN TXT \"kept: inherits mx02\"\n"),
        "{out}"
    );
    // The TXT record still belongs to mx02, as hickory reads it.
    let origin: DnsName = "example.org.".parse().unwrap();
    let (_, sets) = Parser::new(out.as_str(), None, Some(origin))
        .parse()
        .unwrap();
    assert!(
        sets.values()
            .any(|s| s.name().to_ascii() == "mx02.example.org." && s.record_type() == DnsType::TXT)
    );
}

#[test]
fn serial_on_the_soa_line_and_wrap_around() {
    let text =
        "example.org. 3600 IN SOA ns1 h 4294967295 1 1 1 1\nexample.org. IN NS ns1.example.net.\n";
    let out = edit(text, "example.org", &[]);
    assert_eq!(
        out,
        "example.org. 3600 IN SOA ns1 h 1 1 1 1 1\nexample.org. IN NS ns1.example.net.\n"
    );
}

#[test]
fn a_file_without_a_final_newline_gets_one_before_new_records() {
    let a = rrset(
        "mx01.example.org",
        60,
        &[Rdata::A("192.0.2.10".parse().unwrap())],
    );
    let out = edit(
        "$ORIGIN example.org.\n@ 60 IN SOA ns1 h 7 1 1 1 1",
        "example.org",
        &[change(None, Some(a.clone()), a.key.clone())],
    );
    assert_eq!(
        out,
        "$ORIGIN example.org.\n@ 60 IN SOA ns1 h 8 1 1 1 1\nmx01.example.org.\t60\tIN\tA\t192.0.2.10\n"
    );
}

#[test]
fn relative_names_follow_origin_directives() {
    let text = "$ORIGIN example.org.\n@ 60 IN SOA ns1 h 7 1 1 1 1\n$ORIGIN sub.example.org.\nmx01 IN A 192.0.2.1\n";
    let key = Key::new("mx01.sub.example.org", RecordType::A);
    let out = edit(text, "example.org", &[change(None, None, key)]);
    assert_eq!(
        out,
        "$ORIGIN example.org.\n@ 60 IN SOA ns1 h 8 1 1 1 1\n$ORIGIN sub.example.org.\n"
    );
}
