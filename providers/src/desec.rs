//! `desec`: the deSEC API (<https://desec.readthedocs.io/en/latest/dns/rrsets.html>),
//! with `Authorization: Token …`. Reading lists the domain's RRsets with
//! `GET /domains/{zone}/rrsets/?cursor=` and follows the `Link: …;
//! rel="next"` header (deSEC paginates at 500 RRsets and answers 400 to a
//! request without `cursor` beyond that). Applying is one bulk `PUT
//! /domains/{zone}/rrsets/` with every changed RRset (an empty `records`
//! deletes one), which deSEC applies atomically; RRsets not in the request
//! are untouched. Subnames are relative, the apex is `""`.

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::http::Http;
use crate::record::rrsets_from_text;
use crate::{Change, HttpSettings, Key, Kind, Provider, ProviderError, RrSet, absolute};

/// `kind: desec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Base URL, token, limits.
    pub http: HttpSettings,
}

/// The API's base URL.
pub const DEFAULT_URL: &str = "https://desec.io/api/v1";

/// The deSEC backend.
#[derive(Debug)]
pub struct Desec {
    http: Http,
}

#[derive(Deserialize)]
struct DesecRrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: u32,
    records: Vec<String>,
}

impl Desec {
    /// Reads the token and sets up the client.
    pub fn new(settings: &Settings) -> Result<Desec, ProviderError> {
        Ok(Desec {
            http: Http::new("desec", &settings.http, "authorization", "Token ")?,
        })
    }

    fn path(zone: &str) -> String {
        format!("/domains/{}/rrsets/", absolute(zone).trim_end_matches('.'))
    }
}

/// The bulk PUT body: one RRset per change. Pure.
pub fn bulk_body(zone: &str, changes: &[Change]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            let subname = match c.key.relative_to(zone).as_deref() {
                Some("@") | None => String::new(),
                Some(sub) => sub.to_owned(),
            };
            let (ttl, records) = match (&c.after, &c.before) {
                (Some(a), _) => (a.ttl, a.records.iter().map(ToString::to_string).collect()),
                (None, Some(b)) => (b.ttl, Vec::new()),
                (None, None) => (3600, Vec::new()),
            };
            json!({"subname": subname, "type": c.key.rtype.as_str(), "ttl": ttl, "records": records})
        })
        .collect();
    serde_json::Value::Array(items)
}

#[async_trait]
impl Provider for Desec {
    fn kind(&self) -> Kind {
        Kind::Desec
    }

    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError> {
        let mut all = Vec::new();
        let mut next = Some(format!("{}?cursor=", Self::path(zone)));
        while let Some(url) = next {
            let reply = self
                .http
                .send(Method::GET, &url, None, true)
                .await
                .map_err(|e| e.zone_missing("desec", zone))?;
            let page: Vec<DesecRrSet> = reply.json("desec")?;
            all.extend(page);
            next = reply.next_link();
        }
        rrsets_from_text(
            "desec",
            keys,
            all.into_iter().map(|s| (s.name, s.rtype, s.ttl, s.records)),
        )
    }

    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError> {
        let body = bulk_body(zone, changes);
        self.http
            .send(Method::PUT, &Self::path(zone), Some(&body), true)
            .await
            .map_err(|e| e.zone_missing("desec", zone))?;
        Ok(())
    }
}
