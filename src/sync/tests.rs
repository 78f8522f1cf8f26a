//! The change set: the plan's RRsets against a provider's, record by record.

use std::path::Path;

use nolist_providers::{Key, Rdata, RecordType, RrSet};

use super::*;
use crate::config;
use crate::plan::Plan;

const CONFIG: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20], ipv6: [\"2001:db8::20\"] }
      - { host: mail.example.net, preference: 30 }
dns:
  soa: { mname: ns1.example.org, rname: hostmaster@example.org }
  ns: [{ host: ns1.example.org, ipv4: [192.0.2.53] }]
";

fn planned() -> Desired {
    let cfg = config::parse(CONFIG, Path::new("t.yaml")).unwrap();
    desired(&Plan::build(&cfg).zones[0]).unwrap()
}

fn set(name: &str, ttl: u32, records: &[Rdata]) -> RrSet {
    RrSet {
        key: Key::new(name, records[0].rtype()),
        ttl,
        records: records.iter().cloned().collect(),
    }
}

#[test]
fn desired_is_the_owned_mx_and_addresses_without_soa_ns_or_glue() {
    let d = planned();
    assert_eq!(d.zone, "example.org.");
    let keys: Vec<String> = d.keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        keys,
        [
            "example.org. MX",
            "mx01.example.org. A",
            "mx01.example.org. AAAA",
            "mx02.example.org. A",
            "mx02.example.org. AAAA",
        ]
    );
    let sets: Vec<String> = d
        .rrsets
        .iter()
        .flat_map(|s| {
            s.records
                .iter()
                .map(move |r| format!("{} {} {r}", s.key, s.ttl))
        })
        .collect();
    assert_eq!(
        sets,
        [
            "example.org. MX 3600 10 mx01.example.org.",
            "example.org. MX 3600 20 mx02.example.org.",
            "example.org. MX 3600 30 mail.example.net.",
            "mx01.example.org. A 3600 192.0.2.10",
            "mx02.example.org. A 3600 192.0.2.20",
            "mx02.example.org. AAAA 3600 2001:db8::20",
        ]
    );
}

#[test]
fn in_sync_means_no_changes() {
    let d = planned();
    assert!(changes(&d, &d.rrsets).is_empty());
}

#[test]
fn every_kind_of_drift_is_one_line() {
    let d = planned();
    let current = vec![
        // MX: one record missing, one extra, TTL 300.
        set(
            "example.org",
            300,
            &[
                Rdata::mx(10, "mx01.example.org"),
                Rdata::mx(20, "mx02.example.org"),
                Rdata::mx(5, "old.example.org"),
            ],
        ),
        // mx01 A matches; mx01 has an AAAA nolist does not plan.
        set(
            "mx01.example.org",
            3600,
            &[Rdata::A("192.0.2.10".parse().unwrap())],
        ),
        set(
            "mx01.example.org",
            3600,
            &[Rdata::Aaaa("2001:db8::99".parse().unwrap())],
        ),
        // mx02 AAAA missing; mx02 A wrong.
        set(
            "mx02.example.org",
            3600,
            &[Rdata::A("192.0.2.21".parse().unwrap())],
        ),
        // Not owned: ignored even though it is passed in.
        set(
            "www.example.org",
            60,
            &[Rdata::A("192.0.2.80".parse().unwrap())],
        ),
    ];
    let c = changes(&d, &current);
    let text: Vec<String> = lines(&c).iter().map(report::line_text).collect();
    assert_eq!(
        text,
        [
            "- example.org. MX 5 old.example.org.",
            "~ example.org. MX 10 mx01.example.org. (300 → 3600)",
            "~ example.org. MX 20 mx02.example.org. (300 → 3600)",
            "+ example.org. MX 30 mail.example.net.",
            "- mx01.example.org. AAAA 2001:db8::99",
            "- mx02.example.org. A 192.0.2.21",
            "+ mx02.example.org. A 192.0.2.20",
            "+ mx02.example.org. AAAA 2001:db8::20",
        ]
    );
    // The AAAA of mx01 is deleted: its change has no `after`.
    let aaaa = c
        .iter()
        .find(|c| c.key == Key::new("mx01.example.org", RecordType::Aaaa))
        .unwrap();
    assert!(aaaa.after.is_none() && aaaa.before.is_some());
}

#[test]
fn json_has_the_schema_tag_and_a_status_per_domain() {
    let d = planned();
    let domains = vec![
        report::DomainDiff {
            domain: "example.org".into(),
            provider: nolist_providers::Kind::Zonefile,
            outcome: Ok(changes(&d, &[])),
        },
        report::DomainDiff {
            domain: "example.net".into(),
            provider: nolist_providers::Kind::Zonefile,
            outcome: Err(nolist_providers::ProviderError::ZoneMissing {
                provider: "zonefile".into(),
                zone: "example.net.".into(),
                message: "no zone file".into(),
            }),
        },
    ];
    let v: serde_json::Value = serde_json::from_str(&report::json(&domains)).unwrap();
    assert_eq!(v["schema"], "nolist.diff/1");
    assert_eq!(v["in_sync"], false);
    assert_eq!(v["domains"][0]["status"], "drift");
    assert_eq!(v["domains"][0]["changes"][0]["op"], "add");
    assert_eq!(v["domains"][0]["changes"][0]["type"], "MX");
    assert_eq!(v["domains"][1]["status"], "error");
    assert_eq!(
        v["domains"][1]["error"],
        "zone example.net. not found at zonefile: no zone file"
    );
    assert!(report::text(&domains).contains(
        "example.net (zonefile): error: zone example.net. not found at zonefile: no zone file\n"
    ));
}

/// The providers crate's settings for a config whose top-level provider
/// table is `table` (YAML flow style).
fn provider_settings(table: &str) -> nolist_providers::Settings {
    let cfg = config::parse(&format!("{CONFIG}provider: {table}\n"), Path::new("t.yaml")).unwrap();
    provider::settings(&cfg.provider.unwrap().settings)
}

#[test]
fn provider_tables_get_the_backends_defaults_at_the_edge() {
    use nolist_providers::{SecretSource, Settings, rfc2136};
    let Settings::PowerDns(p) =
        provider_settings("{ kind: powerdns, api_key_file: secrets/pdns.key, timeout: 5s }")
    else {
        panic!("powerdns")
    };
    assert_eq!(p.server_id, "localhost");
    assert_eq!(p.http.url, "http://127.0.0.1:8081");
    assert_eq!(p.http.timeout.as_secs(), 5);
    assert_eq!(p.http.retries, 3);
    assert_eq!(p.http.secret, SecretSource::File("secrets/pdns.key".into()));

    let Settings::Cloudflare(cf) =
        provider_settings("{ kind: cloudflare, token_env: CF_API_TOKEN, zone_id: abc123 }")
    else {
        panic!("cloudflare")
    };
    assert_eq!(cf.zone_id.as_deref(), Some("abc123"));
    assert_eq!(cf.http.url, "https://api.cloudflare.com/client/v4");
    assert_eq!(cf.http.timeout.as_secs(), 30);
    assert_eq!(cf.http.secret, SecretSource::Env("CF_API_TOKEN".into()));

    for (kind, default) in [
        ("desec", "https://desec.io/api/v1"),
        ("hetzner", "https://api.hetzner.cloud/v1"),
    ] {
        let http = match provider_settings(&format!("{{ kind: {kind}, token_file: t }}")) {
            Settings::Desec(d) => d.http,
            Settings::Hetzner(h) => h.http,
            other => panic!("{other:?}"),
        };
        assert_eq!((http.url.as_str(), http.retries), (default, 3));
        let settings = provider_settings(&format!(
            "{{ kind: {kind}, token_file: t, url: \"http://127.0.0.1:9/\", retries: 0 }}"
        ));
        assert_eq!(settings.kind().as_str(), kind);
        let http = match settings {
            Settings::Desec(d) => d.http,
            Settings::Hetzner(h) => h.http,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (http.url.as_str(), http.retries),
            ("http://127.0.0.1:9/", 0)
        );
    }

    let Settings::Rfc2136(r) = provider_settings(
        "{ kind: rfc2136, server: \"[::1]:5353\", key_name: k, key_algorithm: HMAC-SHA512., key_secret_env: TSIG }",
    ) else {
        panic!("rfc2136")
    };
    assert_eq!(r.server, "[::1]:5353".parse().unwrap());
    assert_eq!(r.timeout.as_secs(), 10);
    assert_eq!(
        r.key,
        rfc2136::KeySource::Env {
            name: "k".into(),
            algorithm: rfc2136::Algorithm::HmacSha512,
            secret_env: "TSIG".into()
        }
    );
    assert_eq!(
        provider_settings("{ kind: zonefile, dir: /srv/zones }"),
        Settings::Zonefile(nolist_providers::zonefile::Settings {
            dir: "/srv/zones".into()
        })
    );
}
