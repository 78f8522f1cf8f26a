//! Contract tests for the `cloudflare` backend against a local mock of the
//! Cloudflare v4 API, built from its documented requests and responses:
//! zones list <https://developers.cloudflare.com/api/resources/zones/methods/list/>,
//! DNS records list <https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/list/>,
//! batch <https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/batch/>.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nolist_providers::cloudflare::{Cloudflare, Settings};
use nolist_providers::{Provider, ProviderError, Rdata};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn provider(server: &MockServer, zone_id: Option<&str>) -> (Cloudflare, tempfile::TempDir) {
    let (http, dir) = settings(&server.uri());
    let settings = Settings {
        http,
        zone_id: zone_id.map(str::to_owned),
    };
    (Cloudflare::new(&settings).unwrap(), dir)
}

fn ok(result: serde_json::Value, page: u32, total_pages: u32) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "success": true, "errors": [], "messages": [],
        "result": result,
        "result_info": {"page": page, "per_page": 100, "count": 2, "total_count": 3, "total_pages": total_pages}
    }))
}

fn record(
    id: &str,
    name: &str,
    rtype: &str,
    content: &str,
    ttl: u32,
    priority: Option<u16>,
) -> serde_json::Value {
    let mut r = json!({"id": id, "zone_id": "zone-1", "zone_name": "example.org", "name": name, "type": rtype,
                       "content": content, "proxiable": false, "proxied": false, "ttl": ttl});
    if let Some(p) = priority {
        r["priority"] = json!(p);
    }
    r
}

/// The zone lookup and two pages of records.
async fn mount_zone(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/zones"))
        .and(query_param("name", "example.org"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ok(
            json!([{"id": "zone-1", "name": "example.org", "status": "active"}]),
            1,
            1,
        ))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/zone-1/dns_records"))
        .and(query_param("page", "1"))
        .and(query_param("per_page", "100"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ok(
            json!([
                record("r1", "example.org", "MX", "mx02.example.org", 300, Some(10)),
                record("r2", "mx01.example.org", "A", "192.0.2.10", 1, None),
            ]),
            1,
            2,
        ))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/zone-1/dns_records"))
        .and(query_param("page", "2"))
        .respond_with(ok(
            json!([
                record("r3", "example.org", "TXT", "\"v=spf1 mx -all\"", 3600, None),
                record("r4", "www.example.org", "A", "192.0.2.80", 3600, None),
            ]),
            2,
            2,
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn read_looks_the_zone_up_and_follows_every_page() {
    let server = MockServer::start().await;
    mount_zone(&server).await;
    let (cf, _dir) = provider(&server, None);
    let sets = cf.read("example.org.", &keys()).await.unwrap();
    assert_eq!(
        sets,
        [
            set("example.org", 300, &[Rdata::mx(10, "mx02.example.org")]),
            set(
                "mx01.example.org",
                1,
                &[Rdata::A("192.0.2.10".parse().unwrap())]
            ),
        ]
    );
    let urls = request_lines(&server).await;
    assert_eq!(
        urls,
        [
            "GET /zones?name=example.org",
            "GET /zones/zone-1/dns_records?per_page=100&page=1",
            "GET /zones/zone-1/dns_records?per_page=100&page=2",
        ]
    );
}

#[tokio::test]
async fn apply_is_one_batch_of_deletes_patches_and_posts() {
    let server = MockServer::start().await;
    mount_zone(&server).await;
    Mock::given(method("POST"))
        .and(path("/zones/zone-1/dns_records/batch"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({
            "deletes": [{"id": "r1"}],
            "patches": [{"id": "r2", "ttl": 3600}],
            "posts": [
                {"type": "MX", "name": "example.org", "content": "mx01.example.org", "priority": 10, "ttl": 3600},
                {"type": "MX", "name": "example.org", "content": "mx02.example.org", "priority": 20, "ttl": 3600},
            ],
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "errors": [], "messages": [], "result": {}})))
        .expect(1)
        .mount(&server)
        .await;
    let (cf, _dir) = provider(&server, None);
    let current = cf.read("example.org.", &keys()).await.unwrap();
    let changes = [
        change(
            planned_mx().key,
            Some(current[0].clone()),
            Some(planned_mx()),
        ),
        change(planned_a().key, Some(current[1].clone()), Some(planned_a())),
    ];
    cf.apply("example.org.", &changes).await.unwrap();
}

#[tokio::test]
async fn a_configured_zone_id_skips_the_lookup_and_an_unknown_name_is_missing() {
    let server = MockServer::start().await;
    mount_zone(&server).await;
    let (cf, _dir) = provider(&server, Some("zone-1"));
    cf.read("example.org.", &keys()).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.url.path() != "/zones"));

    Mock::given(method("GET"))
        .and(path("/zones"))
        .and(query_param("name", "example.net"))
        .respond_with(ok(json!([]), 1, 0))
        .mount(&server)
        .await;
    let (cf, _dir) = provider(&server, None);
    assert_error(
        cf.read("example.net.", &keys()).await,
        |e| matches!(e, ProviderError::ZoneMissing { .. }),
        "",
    );
}

#[tokio::test]
async fn errors_are_mapped_with_the_apis_message() {
    let server = MockServer::start().await;
    let body = |code: u32, message: &str| json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null});
    Mock::given(method("GET"))
        .and(path("/zones/bad-token/dns_records"))
        .respond_with(ResponseTemplate::new(403).set_body_json(body(10000, "Authentication error")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/gone/dns_records"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(body(7003, "Could not route to /zones/gone/dns_records")),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/zone-1/dns_records/batch"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(body(9005, "Content for A record is invalid.")),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/zone-1/dns_records"))
        .respond_with(ok(json!([]), 1, 1))
        .mount(&server)
        .await;

    let (cf, _dir) = provider(&server, Some("bad-token"));
    assert_error(
        cf.read("example.org.", &keys()).await,
        |e| matches!(e, ProviderError::Credentials { .. }),
        "10000: Authentication error",
    );

    let (cf, _dir) = provider(&server, Some("gone"));
    assert_error(
        cf.read("example.org.", &keys()).await,
        |e| matches!(e, ProviderError::ZoneMissing { .. }),
        "",
    );

    let (cf, _dir) = provider(&server, Some("zone-1"));
    assert_error(
        cf.apply(
            "example.org.",
            &[change(planned_a().key, None, Some(planned_a()))],
        )
        .await,
        |e| matches!(e, ProviderError::Rejected { .. }),
        "9005: Content for A record is invalid.",
    );
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_and_a_failed_batch_is_not_repeated() {
    let server = MockServer::start().await;
    // First answer 429 with Retry-After: 1, then the page.
    Mock::given(method("GET"))
        .and(path("/zones/zone-1/dns_records"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1").set_body_json(
            json!({"success": false, "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}]}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/zone-1/dns_records"))
        .respond_with(ok(json!([]), 1, 1))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/zone-1/dns_records/batch"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .mount(&server)
        .await;
    let (cf, _dir) = provider(&server, Some("zone-1"));
    let start = Instant::now();
    assert!(cf.read("example.org.", &keys()).await.unwrap().is_empty());
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );

    assert_error(
        cf.apply(
            "example.org.",
            &[change(planned_a().key, None, Some(planned_a()))],
        )
        .await,
        |e| matches!(e, ProviderError::Failed { .. }),
        "",
    );
    let batches = request_lines(&server)
        .await
        .iter()
        .filter(|l| l.ends_with("/batch"))
        .count();
    assert_eq!(batches, 1, "a POST batch must not be sent twice");
}
