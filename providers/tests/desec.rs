//! Contract tests for the `desec` backend against a local mock of the deSEC
//! API, built from its documented requests and responses
//! (<https://desec.readthedocs.io/en/latest/dns/rrsets.html>: listing with
//! `cursor` pagination and `Link` headers, bulk `PUT`, error bodies;
//! <https://desec.readthedocs.io/en/latest/rate-limits.html>: 429 with
//! `Retry-After`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use nolist_providers::desec::{Desec, Settings};
use nolist_providers::{Provider, ProviderError, Rdata};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const RRSETS: &str = "/domains/example.org/rrsets/";

fn provider(server: &MockServer) -> (Desec, tempfile::TempDir) {
    let (http, dir) = settings(&server.uri());
    (Desec::new(&Settings { http }).unwrap(), dir)
}

fn rrset(subname: &str, rtype: &str, ttl: u32, records: &[&str]) -> serde_json::Value {
    let name = if subname.is_empty() {
        "example.org.".to_owned()
    } else {
        format!("{subname}.example.org.")
    };
    json!({"created": "2026-01-01T00:00:00Z", "domain": "example.org", "subname": subname, "name": name,
           "type": rtype, "records": records, "ttl": ttl, "touched": "2026-01-01T00:00:00Z"})
}

#[tokio::test]
async fn read_follows_the_cursor_links() {
    let server = MockServer::start().await;
    let next = format!("<{}{RRSETS}?cursor=page2>; rel=\"next\"", server.uri());
    Mock::given(method("GET"))
        .and(path(RRSETS))
        .and(query_param("cursor", ""))
        .and(header("authorization", format!("Token {TOKEN}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Link", next.as_str())
                .set_body_json(json!([
                    rrset("", "MX", 3600, &["10 mx02.example.org."]),
                    rrset("", "NS", 3600, &["ns1.desec.io.", "ns2.desec.org."]),
                ])),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RRSETS))
        .and(query_param("cursor", "page2"))
        .and(header("authorization", format!("Token {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            rrset("mx01", "A", 3600, &["192.0.2.10"]),
            rrset("www", "A", 3600, &["192.0.2.80"]),
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let (d, _dir) = provider(&server);
    let sets = d.read("example.org.", &keys()).await.unwrap();
    assert_eq!(
        sets,
        [
            set("example.org", 3600, &[Rdata::mx(10, "mx02.example.org")]),
            set(
                "mx01.example.org",
                3600,
                &[Rdata::A("192.0.2.10".parse().unwrap())]
            ),
        ]
    );
}

#[tokio::test]
async fn apply_is_one_bulk_put_and_an_empty_records_list_deletes() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(RRSETS))
        .and(header("authorization", format!("Token {TOKEN}").as_str()))
        .and(body_json(json!([
            {"subname": "", "type": "MX", "ttl": 3600, "records": ["10 mx01.example.org.", "20 mx02.example.org."]},
            {"subname": "mx01", "type": "AAAA", "ttl": 600, "records": []},
        ])))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([rrset("", "MX", 3600, &["10 mx01.example.org.", "20 mx02.example.org."])])))
        .expect(1)
        .mount(&server)
        .await;
    let (d, _dir) = provider(&server);
    let stray = set(
        "mx01.example.org",
        600,
        &[Rdata::Aaaa("2001:db8::99".parse().unwrap())],
    );
    d.apply(
        "example.org.",
        &[
            change(planned_mx().key, None, Some(planned_mx())),
            change(stray.key.clone(), Some(stray), None),
        ],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn errors_and_rate_limits() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/domains/example.net/rrsets/"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/domains/bad.example/rrsets/"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid token."})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(RRSETS))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!([{"ttl": ["Ensure this value is greater than or equal to 3600."]}]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RRSETS))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(
                    json!({"detail": "Request was throttled. Expected available in 1 second."}),
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RRSETS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    let (d, _dir) = provider(&server);
    assert_error(
        d.read("example.net.", &keys()).await,
        |e| matches!(e, ProviderError::ZoneMissing { .. }),
        "Not found.",
    );
    assert_error(
        d.read("bad.example.", &keys()).await,
        |e| matches!(e, ProviderError::Credentials { .. }),
        "Invalid token.",
    );
    let low = set("example.org", 60, &[Rdata::mx(10, "mx01.example.org")]);
    assert_error(
        d.apply("example.org.", &[change(low.key.clone(), None, Some(low))])
            .await,
        |e| matches!(e, ProviderError::Rejected { .. }),
        "greater than or equal to 3600",
    );
    let start = Instant::now();
    assert!(d.read("example.org.", &keys()).await.unwrap().is_empty());
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
}

#[tokio::test]
async fn a_slow_api_times_out_and_debug_never_shows_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RRSETS))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let (mut http, _dir) = settings(&server.uri());
    http.timeout = Duration::from_millis(200);
    http.retries = 0;
    let d = Desec::new(&Settings { http }).unwrap();
    assert!(!format!("{d:?}").contains(TOKEN), "{d:?}");
    let start = Instant::now();
    assert_error(
        d.read("example.org.", &keys()).await,
        |e| matches!(e, ProviderError::Unreachable { .. }),
        "timed out",
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}
