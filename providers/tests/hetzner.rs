//! Contract tests for the `hetzner` backend against a local mock of the
//! Hetzner Cloud DNS API, built from its documented requests and responses
//! (<https://docs.hetzner.cloud/reference/cloud#zones>,
//! <https://docs.hetzner.cloud/reference/cloud#zone-rrsets>,
//! <https://docs.hetzner.cloud/reference/cloud#zone-actions>: page/per_page
//! pagination with `meta.pagination`, actions, `{"error": {"code",
//! "message"}}` bodies, 429 `rate_limit_exceeded`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use nolist_providers::hetzner::{Hetzner, Settings};
use nolist_providers::{Provider, ProviderError, Rdata};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn provider(server: &MockServer) -> (Hetzner, tempfile::TempDir) {
    let (http, dir) = settings(&server.uri());
    (Hetzner::new(&Settings { http }).unwrap(), dir)
}

fn bearer() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn page(rrsets: serde_json::Value, page: u32, next: Option<u32>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "rrsets": rrsets,
        "meta": {"pagination": {"page": page, "per_page": 100, "previous_page": null,
                                "next_page": next, "last_page": 2, "total_entries": 3}}
    }))
}

fn rrset(name: &str, rtype: &str, ttl: Option<u32>, values: &[&str]) -> serde_json::Value {
    json!({"id": format!("{name}/{rtype}"), "name": name, "type": rtype, "ttl": ttl,
           "labels": {}, "protection": {"change": false},
           "records": values.iter().map(|v| json!({"value": v, "comment": ""})).collect::<Vec<_>>(),
           "zone": 42})
}

fn action(id: u64, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"action": {
        "id": id, "command": "set_records", "status": status, "progress": 100,
        "started": "2026-01-01T00:00:00Z", "finished": null, "resources": [{"id": 42, "type": "zone"}], "error": null}}))
}

async fn mount_zone(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/zones/example.org"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"zone": {
            "id": 42, "name": "example.org", "mode": "primary", "ttl": 7200, "status": "ok"}})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/example.org/rrsets"))
        .and(query_param("page", "1"))
        .and(bearer())
        .respond_with(page(
            json!([rrset("@", "MX", None, &["10 mx02.example.org."])]),
            1,
            Some(2),
        ))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/example.org/rrsets"))
        .and(query_param("page", "2"))
        .and(bearer())
        .respond_with(page(
            json!([
                rrset("mx01", "A", Some(300), &["192.0.2.10"]),
                rrset("www", "A", Some(60), &["192.0.2.80"])
            ]),
            2,
            None,
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn read_pages_and_takes_the_zone_ttl_for_unset_ttls() {
    let server = MockServer::start().await;
    mount_zone(&server).await;
    let (h, _dir) = provider(&server);
    let sets = h.read("example.org.", &keys()).await.unwrap();
    assert_eq!(
        sets,
        [
            set("example.org", 7200, &[Rdata::mx(10, "mx02.example.org")]),
            set(
                "mx01.example.org",
                300,
                &[Rdata::A("192.0.2.10".parse().unwrap())]
            ),
        ]
    );
    let lines = request_lines(&server).await;
    assert_eq!(
        lines,
        [
            "GET /zones/example.org",
            "GET /zones/example.org/rrsets?type=MX&type=A&type=AAAA&per_page=100&page=1",
            "GET /zones/example.org/rrsets?type=MX&type=A&type=AAAA&per_page=100&page=2",
        ]
    );
}

#[tokio::test]
async fn apply_sends_one_request_per_rrset_and_waits_for_running_actions() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/zones/example.org/rrsets/@/MX/actions/set_records"))
        .and(bearer())
        .and(body_json(json!({"records": [{"value": "10 mx01.example.org."}, {"value": "20 mx02.example.org."}]})))
        .respond_with(action(1, "running"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/actions/1"))
        .respond_with(action(1, "success"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/example.org/rrsets/@/MX/actions/change_ttl"))
        .and(body_json(json!({"ttl": 3600})))
        .respond_with(action(2, "success"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/example.org/rrsets"))
        .and(body_json(
            json!({"name": "mx01", "type": "A", "ttl": 3600, "records": [{"value": "192.0.2.10"}]}),
        ))
        .respond_with(action(3, "success"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/zones/example.org/rrsets/mx01/AAAA"))
        .respond_with(action(4, "success"))
        .expect(1)
        .mount(&server)
        .await;
    let (h, _dir) = provider(&server);
    let old_mx = set("example.org", 7200, &[Rdata::mx(10, "mx02.example.org")]);
    let stray = set(
        "mx01.example.org",
        300,
        &[Rdata::Aaaa("2001:db8::99".parse().unwrap())],
    );
    h.apply(
        "example.org.",
        &[
            change(planned_mx().key, Some(old_mx), Some(planned_mx())),
            change(planned_a().key, None, Some(planned_a())),
            change(stray.key.clone(), Some(stray), None),
        ],
    )
    .await
    .unwrap();
    let lines = request_lines(&server).await;
    assert_eq!(
        lines,
        [
            "POST /zones/example.org/rrsets/@/MX/actions/set_records",
            "GET /zones/actions/1",
            "POST /zones/example.org/rrsets/@/MX/actions/change_ttl",
            "POST /zones/example.org/rrsets",
            "DELETE /zones/example.org/rrsets/mx01/AAAA",
        ]
    );
}

#[tokio::test]
async fn errors_rate_limits_and_server_errors() {
    let server = MockServer::start().await;
    let err = |code: &str, message: &str| json!({"error": {"code": code, "message": message, "details": {}}});
    Mock::given(method("GET"))
        .and(path("/zones/example.net"))
        .respond_with(ResponseTemplate::new(404).set_body_json(err("not_found", "Zone not found")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/bad.example"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(err("unauthorized", "unable to authenticate")),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/example.org/rrsets"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(err("invalid_input", "invalid input in field 'records'")),
        )
        .mount(&server)
        .await;
    // The zone: first a 500, then a 429 with Retry-After, then the answer.
    Mock::given(method("GET"))
        .and(path("/zones/example.org"))
        .respond_with(ResponseTemplate::new(500).set_body_json(err("server_error", "try again")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/example.org"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(err(
                    "rate_limit_exceeded",
                    "limit of 3600 requests per hour reached",
                )),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_zone(&server).await;

    let (h, _dir) = provider(&server);
    assert_error(
        h.read("example.net.", &keys()).await,
        |e| matches!(e, ProviderError::ZoneMissing { .. }),
        "not_found: Zone not found",
    );
    assert_error(
        h.read("bad.example.", &keys()).await,
        |e| matches!(e, ProviderError::Credentials { .. }),
        "",
    );
    assert_error(
        h.apply(
            "example.org.",
            &[change(planned_a().key, None, Some(planned_a()))],
        )
        .await,
        |e| matches!(e, ProviderError::Rejected { .. }),
        "invalid_input: invalid input in field 'records'",
    );
    let start = Instant::now();
    assert_eq!(h.read("example.org.", &keys()).await.unwrap().len(), 2);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    let zone_gets = request_lines(&server)
        .await
        .iter()
        .filter(|l| *l == "GET /zones/example.org")
        .count();
    assert_eq!(zone_gets, 3, "500, 429, then 200");
}
