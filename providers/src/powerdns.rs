//! `powerdns`: the PowerDNS Authoritative HTTP API
//! (<https://doc.powerdns.com/authoritative/http-api/zone.html>).
//! Reading is `GET /api/v1/servers/{server_id}/zones/{zone}`; applying is
//! one `PATCH` of the same URL with one rrset per change (`changetype:
//! REPLACE` with all its records, or `DELETE`), which PowerDNS applies in
//! one transaction. The API key goes in `X-API-Key`.

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::http::Http;
use crate::record::rrsets_from_text;
use crate::{Change, HttpSettings, Key, Kind, Provider, ProviderError, RrSet, absolute};

/// `kind: powerdns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Base URL (the webserver, e.g. `http://127.0.0.1:8081`), key, limits.
    pub http: HttpSettings,
    /// The server id in the API path (`localhost` for a single server).
    pub server_id: String,
}

/// The default base URL: PowerDNS's webserver on the same host.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8081";

/// The PowerDNS backend.
#[derive(Debug)]
pub struct PowerDns {
    http: Http,
    server_id: String,
}

impl PowerDns {
    /// Reads the API key and sets up the client.
    pub fn new(settings: &Settings) -> Result<PowerDns, ProviderError> {
        Ok(PowerDns {
            http: Http::new("powerdns", &settings.http, "x-api-key", "")?,
            server_id: settings.server_id.clone(),
        })
    }

    fn zone_path(&self, zone: &str) -> String {
        format!(
            "/api/v1/servers/{}/zones/{}",
            self.server_id,
            absolute(zone)
        )
    }
}

#[derive(Deserialize)]
struct ZoneDoc {
    rrsets: Vec<PdnsRrSet>,
}

#[derive(Deserialize)]
struct PdnsRrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: u32,
    records: Vec<PdnsRecord>,
}

#[derive(Deserialize)]
struct PdnsRecord {
    content: String,
    #[serde(default)]
    disabled: bool,
}

#[async_trait]
impl Provider for PowerDns {
    fn kind(&self) -> Kind {
        Kind::PowerDns
    }

    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError> {
        let reply = self
            .http
            .send(Method::GET, &self.zone_path(zone), None, true)
            .await
            .map_err(|e| e.zone_missing("powerdns", zone))?;
        let doc: ZoneDoc = reply.json("powerdns")?;
        rrsets_from_text(
            "powerdns",
            keys,
            doc.rrsets.into_iter().map(|s| {
                let contents = s
                    .records
                    .into_iter()
                    .filter(|r| !r.disabled)
                    .map(|r| r.content)
                    .collect();
                (s.name, s.rtype, s.ttl, contents)
            }),
        )
    }

    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError> {
        let body = patch_body(changes);
        self.http
            .send(Method::PATCH, &self.zone_path(zone), Some(&body), true)
            .await
            .map_err(|e| e.zone_missing("powerdns", zone))?;
        Ok(())
    }
}

/// The PATCH body: one rrset per change.
pub fn patch_body(changes: &[Change]) -> serde_json::Value {
    let rrsets: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| match &c.after {
            Some(set) => json!({
                "name": c.key.name,
                "type": c.key.rtype.as_str(),
                "ttl": set.ttl,
                "changetype": "REPLACE",
                "records": set.records.iter()
                    .map(|r| json!({"content": r.to_string(), "disabled": false}))
                    .collect::<Vec<_>>(),
            }),
            None => json!({
                "name": c.key.name,
                "type": c.key.rtype.as_str(),
                "changetype": "DELETE",
            }),
        })
        .collect();
    json!({ "rrsets": rrsets })
}
