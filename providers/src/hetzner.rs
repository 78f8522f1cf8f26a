//! `hetzner`: the Hetzner Cloud DNS API
//! (<https://docs.hetzner.cloud/reference/cloud#zone-rrsets>), with
//! `Authorization: Bearer`. Reading asks `GET /zones/{zone}` (the zone's
//! default TTL; 404: the zone is missing) and lists `GET
//! /zones/{zone}/rrsets?type=MX&type=A&type=AAAA&per_page=100&page=N`
//! following `meta.pagination.next_page`. The API changes one RRset per
//! request, so a change set is **not** atomic here: per RRset, `POST
//! /zones/{zone}/rrsets` creates, `…/rrsets/{name}/{type}/actions/set_records`
//! and `…/actions/change_ttl` update, `DELETE …/rrsets/{name}/{type}`
//! deletes. Each returns an action, which is polled at `GET
//! /zones/actions/{id}` until it is no longer `running`. Names are
//! relative (`@` is the apex), values in master-file form.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::http::Http;
use crate::record::rrsets_from_text;
use crate::{Change, HttpSettings, Key, Kind, Provider, ProviderError, RrSet, absolute};

/// `kind: hetzner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Base URL, token, limits.
    pub http: HttpSettings,
}

/// The API's base URL.
pub const DEFAULT_URL: &str = "https://api.hetzner.cloud/v1";

/// How often a running action is asked again.
const POLL: Duration = Duration::from_millis(500);

/// The Hetzner backend.
#[derive(Debug)]
pub struct Hetzner {
    http: Http,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ZoneDoc {
    zone: ZoneInfo,
}

#[derive(Deserialize)]
struct ZoneInfo {
    ttl: u32,
}

#[derive(Deserialize)]
struct RrSetPage {
    rrsets: Vec<HzRrSet>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    pagination: Pagination,
}

#[derive(Deserialize)]
struct Pagination {
    next_page: Option<u32>,
}

#[derive(Deserialize)]
struct HzRrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: Option<u32>,
    records: Vec<HzRecord>,
}

#[derive(Deserialize)]
struct HzRecord {
    value: String,
}

#[derive(Deserialize)]
struct ActionDoc {
    action: Action,
}

#[derive(Deserialize)]
struct Action {
    id: u64,
    status: String,
    #[serde(default)]
    error: Option<ActionError>,
}

#[derive(Deserialize)]
struct ActionError {
    message: String,
}

impl Hetzner {
    /// Reads the token and sets up the client.
    pub fn new(settings: &Settings) -> Result<Hetzner, ProviderError> {
        Ok(Hetzner {
            http: Http::new("hetzner", &settings.http, "authorization", "Bearer ")?,
            timeout: settings.http.timeout,
        })
    }

    fn zone_path(zone: &str) -> String {
        format!("/zones/{}", absolute(zone).trim_end_matches('.'))
    }

    /// One mutating request; waits for the action it starts.
    async fn act(
        &self,
        zone: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<(), ProviderError> {
        let reply = self
            .http
            .send(method, path, body, idempotent)
            .await
            .map_err(|e| e.zone_missing("hetzner", zone))?;
        let mut action = reply.json::<ActionDoc>("hetzner")?.action;
        let deadline = Instant::now() + self.timeout;
        while action.status == "running" {
            if Instant::now() > deadline {
                return Err(ProviderError::Failed {
                    provider: "hetzner".into(),
                    message: format!(
                        "action {} still running after {:?}",
                        action.id, self.timeout
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
            let reply = self
                .http
                .send(
                    Method::GET,
                    &format!("/zones/actions/{}", action.id),
                    None,
                    true,
                )
                .await
                .map_err(|e| e.zone_missing("hetzner", zone))?;
            action = reply.json::<ActionDoc>("hetzner")?.action;
        }
        if action.status == "error" {
            return Err(ProviderError::Failed {
                provider: "hetzner".into(),
                message: format!(
                    "action {} failed: {}",
                    action.id,
                    action
                        .error
                        .map_or_else(|| "no reason given".into(), |e| e.message)
                ),
            });
        }
        Ok(())
    }
}

fn values(set: &RrSet) -> serde_json::Value {
    json!(
        set.records
            .iter()
            .map(|r| json!({"value": r.to_string()}))
            .collect::<Vec<_>>()
    )
}

#[async_trait]
impl Provider for Hetzner {
    fn kind(&self) -> Kind {
        Kind::Hetzner
    }

    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError> {
        let zone_path = Self::zone_path(zone);
        let info: ZoneDoc = self
            .http
            .send(Method::GET, &zone_path, None, true)
            .await
            .map_err(|e| e.zone_missing("hetzner", zone))?
            .json("hetzner")?;
        let origin = absolute(zone);
        let mut all = Vec::new();
        let mut page = Some(1);
        while let Some(n) = page {
            let path = format!("{zone_path}/rrsets?type=MX&type=A&type=AAAA&per_page=100&page={n}");
            let doc: RrSetPage = self
                .http
                .send(Method::GET, &path, None, true)
                .await
                .map_err(|e| e.zone_missing("hetzner", zone))?
                .json("hetzner")?;
            page = doc
                .meta
                .and_then(|m| m.pagination.next_page)
                .filter(|p| *p > n);
            all.extend(doc.rrsets);
        }
        rrsets_from_text(
            "hetzner",
            keys,
            all.into_iter().map(|s| {
                let name = if s.name == "@" {
                    origin.clone()
                } else {
                    format!("{}.{origin}", s.name)
                };
                let ttl = s.ttl.unwrap_or(info.zone.ttl);
                (
                    name,
                    s.rtype,
                    ttl,
                    s.records.into_iter().map(|r| r.value).collect(),
                )
            }),
        )
    }

    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError> {
        let zone_path = Self::zone_path(zone);
        for change in changes {
            let name = change
                .key
                .relative_to(zone)
                .ok_or_else(|| ProviderError::Rejected {
                    provider: "hetzner".into(),
                    message: format!("{} is outside the zone", change.key.name),
                })?;
            let rtype = change.key.rtype.as_str();
            let rrset = format!("{zone_path}/rrsets/{name}/{rtype}");
            match (&change.before, &change.after) {
                (None, Some(after)) => {
                    let body = json!({"name": name, "type": rtype, "ttl": after.ttl, "records": values(after)});
                    self.act(
                        zone,
                        Method::POST,
                        &format!("{zone_path}/rrsets"),
                        Some(&body),
                        false,
                    )
                    .await?;
                }
                (Some(before), Some(after)) => {
                    if before.records != after.records {
                        let body = json!({"records": values(after)});
                        let path = format!("{rrset}/actions/set_records");
                        self.act(zone, Method::POST, &path, Some(&body), true)
                            .await?;
                    }
                    if before.ttl != after.ttl {
                        let body = json!({"ttl": after.ttl});
                        let path = format!("{rrset}/actions/change_ttl");
                        self.act(zone, Method::POST, &path, Some(&body), true)
                            .await?;
                    }
                }
                (Some(_), None) => self.act(zone, Method::DELETE, &rrset, None, true).await?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}
