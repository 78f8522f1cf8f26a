//! `cloudflare`: the Cloudflare v4 API, with an API token (`Authorization:
//! Bearer`). The zone id comes from the config or from `GET
//! /zones?name=ZONE`
//! (<https://developers.cloudflare.com/api/resources/zones/methods/list/>);
//! records are listed page by page with `GET
//! /zones/{id}/dns_records?per_page=100&page=N` until `result_info.total_pages`
//! (<https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/list/>);
//! a change set is one `POST /zones/{id}/dns_records/batch` (deletes,
//! patches, posts), which Cloudflare runs in one database transaction
//! (<https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/batch/>).
//! Cloudflare keeps one TTL per record; the lowest is the RRset's, and a
//! TTL of 1 ("automatic") never matches a planned TTL. Names go without the
//! trailing dot, MX preferences in `priority`.

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::http::Http;
use crate::{
    Change, HttpSettings, Key, Kind, Provider, ProviderError, Rdata, RecordType, RrSet, absolute,
};

/// `kind: cloudflare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Base URL, token, limits.
    pub http: HttpSettings,
    /// The zone's id; looked up by name when not given.
    pub zone_id: Option<String>,
}

/// The API's base URL.
pub const DEFAULT_URL: &str = "https://api.cloudflare.com/client/v4";

/// Records per page (the API's maximum for this endpoint is larger; 100 is safe).
const PER_PAGE: u32 = 100;

/// The Cloudflare backend.
#[derive(Debug)]
pub struct Cloudflare {
    http: Http,
    zone_id: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Deserialize)]
struct ResultInfo {
    #[serde(default)]
    total_pages: Option<u32>,
}

#[derive(Deserialize)]
struct ZoneRef {
    id: String,
}

/// One record as the API lists it.
#[derive(Clone, Debug, Deserialize)]
struct CfRecord {
    id: String,
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    content: String,
    ttl: u32,
    #[serde(default)]
    priority: Option<u16>,
}

impl CfRecord {
    /// The record as nolist sees it, if it is of a type nolist owns.
    fn parsed(&self) -> Result<Option<(Key, Rdata)>, ProviderError> {
        let Some(rtype) = RecordType::parse(&self.rtype) else {
            return Ok(None);
        };
        let data = match rtype {
            RecordType::Mx => Rdata::mx(self.priority.unwrap_or(0), &self.content),
            _ => Rdata::parse(rtype, &self.content).map_err(|e| ProviderError::Protocol {
                provider: "cloudflare".into(),
                message: e.to_string(),
            })?,
        };
        Ok(Some((Key::new(&self.name, rtype), data)))
    }
}

/// The body of a new record.
fn record_body(key: &Key, ttl: u32, data: &Rdata) -> serde_json::Value {
    let name = key.name.trim_end_matches('.');
    match data {
        Rdata::Mx {
            preference,
            exchange,
        } => json!({
            "type": "MX",
            "name": name,
            "content": exchange.trim_end_matches('.'),
            "priority": preference,
            "ttl": ttl,
        }),
        other => json!({
            "type": key.rtype.as_str(),
            "name": name,
            "content": other.to_string(),
            "ttl": ttl,
            "proxied": false,
        }),
    }
}

impl Cloudflare {
    /// Reads the token and sets up the client.
    pub fn new(settings: &Settings) -> Result<Cloudflare, ProviderError> {
        Ok(Cloudflare {
            http: Http::new("cloudflare", &settings.http, "authorization", "Bearer ")?,
            zone_id: settings.zone_id.clone(),
        })
    }

    /// The zone's id: configured, or looked up by name.
    async fn zone_id(&self, zone: &str) -> Result<String, ProviderError> {
        if let Some(id) = &self.zone_id {
            return Ok(id.clone());
        }
        let name = absolute(zone);
        let name = name.trim_end_matches('.');
        let reply = self
            .http
            .send(Method::GET, &format!("/zones?name={name}"), None, true)
            .await
            .map_err(|e| e.zone_missing("cloudflare", zone))?;
        let zones: Envelope<Vec<ZoneRef>> = reply.json("cloudflare")?;
        zones
            .result
            .into_iter()
            .next()
            .map(|z| z.id)
            .ok_or_else(|| ProviderError::ZoneMissing {
                provider: "cloudflare".into(),
                zone: absolute(zone),
                message: "no zone of that name in this account".into(),
            })
    }

    /// Every record of the zone, all pages.
    async fn list(&self, zone: &str, id: &str) -> Result<Vec<CfRecord>, ProviderError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let path = format!("/zones/{id}/dns_records?per_page={PER_PAGE}&page={page}");
            let reply = self
                .http
                .send(Method::GET, &path, None, true)
                .await
                .map_err(|e| e.zone_missing("cloudflare", zone))?;
            let doc: Envelope<Vec<CfRecord>> = reply.json("cloudflare")?;
            let last = doc
                .result_info
                .and_then(|i| i.total_pages)
                .is_none_or(|total| page >= total);
            let empty = doc.result.is_empty();
            out.extend(doc.result);
            if last || empty {
                return Ok(out);
            }
            page += 1;
        }
    }
}

/// The batch body that makes the records of `changes` what they say, given
/// the zone's current `records`: deletes for records that go, patches for
/// records that stay with another TTL, posts for new ones. Pure.
fn batch_body(
    changes: &[Change],
    records: &[CfRecord],
) -> Result<serde_json::Value, ProviderError> {
    let mut deletes = Vec::new();
    let mut patches = Vec::new();
    let mut posts = Vec::new();
    for change in changes {
        let mut kept = BTreeSet::new();
        for r in records {
            let Some((key, data)) = r.parsed()? else {
                continue;
            };
            if key != change.key {
                continue;
            }
            match &change.after {
                Some(after) if after.records.contains(&data) && !kept.contains(&data) => {
                    if r.ttl != after.ttl {
                        patches.push(json!({"id": r.id, "ttl": after.ttl}));
                    }
                    kept.insert(data);
                }
                _ => deletes.push(json!({"id": r.id})),
            }
        }
        if let Some(after) = &change.after {
            for data in after.records.difference(&kept) {
                posts.push(record_body(&change.key, after.ttl, data));
            }
        }
    }
    Ok(json!({"deletes": deletes, "patches": patches, "posts": posts}))
}

#[async_trait]
impl Provider for Cloudflare {
    fn kind(&self) -> Kind {
        Kind::Cloudflare
    }

    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError> {
        let id = self.zone_id(zone).await?;
        let mut sets: std::collections::BTreeMap<Key, RrSet> = Default::default();
        for r in self.list(zone, &id).await? {
            let Some((key, data)) = r.parsed()? else {
                continue;
            };
            if !keys.contains(&key) {
                continue;
            }
            let set = sets.entry(key.clone()).or_insert_with(|| RrSet {
                key,
                ttl: r.ttl,
                records: BTreeSet::new(),
            });
            set.ttl = set.ttl.min(r.ttl);
            set.records.insert(data);
        }
        Ok(sets.into_values().collect())
    }

    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError> {
        let id = self.zone_id(zone).await?;
        let records = self.list(zone, &id).await?;
        let body = batch_body(changes, &records)?;
        // Not idempotent (posts): a 5xx is not retried, a 429 is.
        self.http
            .send(
                Method::POST,
                &format!("/zones/{id}/dns_records/batch"),
                Some(&body),
                false,
            )
            .await
            .map_err(|e| e.zone_missing("cloudflare", zone))?;
        Ok(())
    }
}
