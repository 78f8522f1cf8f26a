//! Shared pieces of the contract tests: settings pointing at a wiremock
//! server, with the token in a file and a short backoff.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use nolist_providers::{Change, HttpSettings, Key, Rdata, RecordType, RrSet, SecretSource};

/// The token every mock expects.
pub const TOKEN: &str = "test-token-123";

/// Settings for `url` with [`TOKEN`] in a file (kept alive by the returned dir).
pub fn settings(url: &str) -> (HttpSettings, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let mut s = HttpSettings::new(url, SecretSource::File(path));
    s.timeout = Duration::from_secs(5);
    s.retries = 2;
    s.backoff = Duration::from_millis(10);
    (s, dir)
}

/// The keys nolist owns in example.org in these tests.
pub fn keys() -> Vec<Key> {
    vec![
        Key::new("example.org", RecordType::Mx),
        Key::new("mx01.example.org", RecordType::A),
        Key::new("mx01.example.org", RecordType::Aaaa),
    ]
}

/// An RRset.
pub fn set(name: &str, ttl: u32, records: &[Rdata]) -> RrSet {
    RrSet {
        key: Key::new(name, records[0].rtype()),
        ttl,
        records: records.iter().cloned().collect(),
    }
}

/// The planned MX RRset: 10 mx01, 20 mx02, TTL 3600.
pub fn planned_mx() -> RrSet {
    set(
        "example.org",
        3600,
        &[
            Rdata::mx(10, "mx01.example.org"),
            Rdata::mx(20, "mx02.example.org"),
        ],
    )
}

/// The planned A of mx01.
pub fn planned_a() -> RrSet {
    set(
        "mx01.example.org",
        3600,
        &[Rdata::A("192.0.2.10".parse().unwrap())],
    )
}

/// A change from `before` to `after` of `key`.
pub fn change(key: Key, before: Option<RrSet>, after: Option<RrSet>) -> Change {
    Change { key, before, after }
}

/// Asserts that `result` failed with an error of the kind `is` accepts,
/// whose text contains `needle`.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, nolist_providers::ProviderError>,
    is: fn(&nolist_providers::ProviderError) -> bool,
    needle: &str,
) {
    let e = result.expect_err("expected an error");
    assert!(is(&e), "wrong kind: {e:?}");
    assert!(
        e.to_string().contains(needle),
        "{e} does not mention {needle:?}"
    );
}

/// `METHOD /path?query` of every request the server got, in order.
pub async fn request_lines(server: &wiremock::MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let query = r.url.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("{} {}{query}", r.method, r.url.path())
        })
        .collect()
}
