//! Zone building: base-zone merging, conflicts, and serials across reloads.

use std::path::Path;

use super::*;
use crate::config;
use crate::plan::Plan;

const CONFIG: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
dns:
  soa: { mname: ns1.example.net, rname: hostmaster@example.org, serial: 100 }
  ns: [ns1.example.net]
";

fn zone(yaml: &str) -> Zone {
    let cfg = config::parse(yaml, Path::new("t.yaml")).unwrap();
    Plan::build(&cfg).zones.remove(0)
}

fn with_base(yaml: &str, base: &str) -> Result<ZoneData, ZoneError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.zone");
    std::fs::write(&path, base).unwrap();
    ZoneData::build(&zone(yaml), Some(&path))
}

#[test]
fn planned_zone_alone() {
    let data = ZoneData::build(&zone(CONFIG), None).unwrap();
    assert_eq!(data.serial, 100);
    assert_eq!(data.origin.to_string(), "example.org.");
    assert_eq!(data.rrsets().len(), 5); // SOA, NS, MX, A mx01, A mx02
}

#[test]
fn base_zone_records_are_added() {
    let base = "$ORIGIN example.org.\n$TTL 300\nwww IN A 192.0.2.80\n@ IN TXT \"v=spf1 mx -all\"\n";
    let data = with_base(CONFIG, base).unwrap();
    let names: Vec<String> = data.names().iter().map(|n| n.to_string()).collect();
    assert!(names.contains(&"www.example.org.".to_owned()), "{names:?}");
    assert_eq!(data.rrsets().len(), 7);
}

#[test]
fn base_zone_may_not_redefine_owned_rrsets() {
    let base = "$ORIGIN example.org.\n@ 300 IN MX 5 evil.example.net.\nmx02 300 IN AAAA 2001:db8::2\nmx01 300 IN TXT \"ok\"\n";
    let Err(ZoneError::Conflict { conflicts, .. }) = with_base(CONFIG, base) else {
        panic!("conflict not reported")
    };
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    assert!(conflicts[0].contains("example.org. MX"), "{conflicts:?}");
    assert!(
        conflicts[1].contains("mx02.example.org. AAAA"),
        "{conflicts:?}"
    );
}

#[test]
fn base_zone_cname_at_owned_name_and_foreign_names_conflict() {
    let base = "$ORIGIN example.org.\nmx01 300 IN CNAME elsewhere.example.net.\nwww.example.com. 300 IN A 192.0.2.1\n";
    let Err(ZoneError::Conflict { conflicts, .. }) = with_base(CONFIG, base) else {
        panic!("conflict not reported")
    };
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
}

#[test]
fn base_zone_supplies_soa_and_ns_when_the_config_does_not() {
    let fragment = CONFIG.split("dns:").next().unwrap();
    assert!(matches!(
        ZoneData::build(&zone(fragment), None),
        Err(ZoneError::Incomplete { .. })
    ));
    let base = "$ORIGIN example.org.\n@ 3600 IN SOA ns1.example.net. h.example.org. 42 3600 900 1209600 300\n@ 3600 IN NS ns1.example.net.\n";
    let data = with_base(fragment, base).unwrap();
    assert_eq!(data.serial, 42);
}

#[test]
fn broken_and_missing_base_zones_are_errors() {
    assert!(matches!(
        with_base(CONFIG, "$ORIGIN example.org.\nwww IN A not-an-address\n"),
        Err(ZoneError::Parse { .. })
    ));
    let missing = ZoneData::build(&zone(CONFIG), Some(Path::new("/nonexistent/base.zone")));
    assert!(matches!(missing, Err(ZoneError::Read { .. })));
}

#[test]
fn serial_is_kept_when_nothing_changed_and_bumped_when_it_did() {
    let first = ZoneData::build(&zone(CONFIG), None).unwrap();
    let same = ZoneData::build(&zone(CONFIG), None)
        .unwrap()
        .succeed(Some(first.served()));
    assert_eq!(same.serial, 100);
    let changed = ZoneData::build(
        &zone(&CONFIG.replace("preference: 20", "preference: 30")),
        None,
    )
    .unwrap()
    .succeed(Some(same.served()));
    assert_eq!(changed.serial, 101);
    // A configured serial ahead of the served one wins.
    let ahead = ZoneData::build(
        &zone(
            &CONFIG
                .replace("serial: 100", "serial: 2026112801")
                .replace("preference: 20", "preference: 40"),
        ),
        None,
    )
    .unwrap()
    .succeed(Some(changed.served()));
    assert_eq!(ahead.serial, 2026112801);
    // The SOA record carries the served serial.
    let soa = ahead
        .rrsets()
        .into_values()
        .find(|r| r.record_type() == RecordType::SOA)
        .unwrap();
    let RData::SOA(data) = &soa.records_without_rrsigs().next().unwrap().data else {
        panic!()
    };
    assert_eq!(data.serial, 2026112801);
    // A configured serial raised with nothing else changed is served too.
    let raised = ZoneData::build(&zone(&CONFIG.replace("serial: 100", "serial: 150")), None)
        .unwrap()
        .succeed(Some(first.served()));
    assert_eq!(raised.serial, 150);
}

#[test]
fn the_digest_ignores_the_serial_and_nothing_else() {
    let a = ZoneData::build(&zone(CONFIG), None).unwrap().served();
    let b = ZoneData::build(&zone(&CONFIG.replace("serial: 100", "serial: 7")), None)
        .unwrap()
        .served();
    let c = ZoneData::build(
        &zone(&CONFIG.replace("preference: 20", "preference: 21")),
        None,
    )
    .unwrap()
    .served();
    assert_eq!(a.digest, b.digest);
    assert_ne!(a.digest, c.digest);
    // Deterministic: it is kept in the state and compared after a restart.
    assert_eq!(
        a.digest,
        ZoneData::build(&zone(CONFIG), None)
            .unwrap()
            .served()
            .digest
    );
}

#[test]
fn serial_arithmetic_wraps() {
    assert!(serial_gt(1, u32::MAX));
    assert!(serial_gt(5, 4));
    assert!(!serial_gt(4, 5));
    assert!(!serial_gt(7, 7));
}

#[test]
fn records_read_back_from_the_compact_form_as_built() {
    let base = "$ORIGIN example.org.\n$TTL 300\nwww IN A 192.0.2.80\nwww IN AAAA 2001:db8::80\n@ IN TXT \"v=spf1 mx -all\"\n_sip._tcp IN SRV 10 5 5060 sip.example.org.\n@ IN CAA 0 issue \"ca.example.net\"\nalias IN CNAME www\n";
    let data = with_base(CONFIG, base).unwrap();
    let lines: Vec<String> = data.records().map(|r| r.to_string()).collect();
    assert_eq!(lines.len(), 12, "{lines:#?}");
    assert!(
        lines[0].contains("SOA") && lines[0].contains(" 100 "),
        "{lines:#?}"
    );
    for expected in [
        "www.example.org. 300 IN AAAA 2001:db8::80",
        "example.org. 300 IN TXT v=spf1 mx -all",
        "_sip._tcp.example.org. 300 IN SRV 10 5 5060 sip.example.org.",
        "alias.example.org. 300 IN CNAME www.example.org.",
        "example.org. 300 IN CAA 0 issue \"ca.example.net\"",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected}: {lines:#?}"
        );
    }
    // About 50 bytes a record, where hickory's `Record` alone takes 280.
    assert!(data.wire.len() < 12 * 60, "{} bytes", data.wire.len());
}

#[test]
fn the_handler_holds_each_rrset_in_exactly_the_room_it_needs() {
    let data = ZoneData::build(&zone(CONFIG), None).unwrap();
    let mut handler = data.handler(AxfrPolicy::Deny).unwrap();
    let rrsets = std::mem::take(handler.records_get_mut());
    assert_eq!(rrsets.len(), 5);
    for rrset in rrsets.into_values() {
        let parts = Arc::try_unwrap(rrset).unwrap().into_parts();
        assert_eq!(parts.records.capacity(), parts.records.len());
    }
}

/// hickory's refusal is a typed error that reads as hickory's sentence.
#[test]
fn a_zone_hickory_refuses_is_a_handler_error() {
    let mut data = ZoneData::build(&zone(CONFIG), None).unwrap();
    // The same zone without its SOA (the first record): `build` never makes
    // one, but the handler must not depend on that.
    let without_soa: Vec<Record> = data.records().skip(1).collect();
    data.wire = encode(&data.origin, &without_soa).unwrap();
    let Err(error) = data.handler(AxfrPolicy::Deny) else {
        panic!("a zone without SOA was accepted");
    };
    assert!(matches!(error, ZoneError::Handler(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "SOA record must be present: example.org."
    );
    let snapshot = crate::dns::Snapshot::new(vec![data], Vec::new());
    assert!(matches!(snapshot, Err(ZoneError::Handler(_))));
}

#[test]
fn a_truncated_wire_form_reads_back_as_an_error() {
    let data = ZoneData::build(&zone(CONFIG), None).unwrap();
    let cut = &data.wire[..data.wire.len() - 1];
    let read: Vec<Result<Record, ProtoError>> = decode(cut).collect();
    let (last, whole) = read.split_last().unwrap();
    assert_eq!(whole.len(), data.records().count() - 1);
    assert!(whole.iter().all(Result::is_ok));
    assert_eq!(last.as_ref().unwrap_err().to_string(), "truncated record");
}
