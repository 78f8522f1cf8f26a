//! The edge between the config and the providers crate: a validated
//! `provider` table ([`crate::config::provider::Settings`]) becomes the
//! crate's [`Settings`], with the backends' own defaults (API URLs, HTTP
//! timeout and retries) for what the table left out.

use nolist_providers::{
    HttpSettings, SecretSource, Settings, cloudflare, desec, hetzner, powerdns, rfc2136, zonefile,
};

use crate::config::provider::{self as config, Api, Secret, TsigAlgorithm, TsigKey};

/// The providers crate's settings for a validated `provider` table.
pub fn settings(table: &config::Settings) -> Settings {
    match table {
        config::Settings::Zonefile { dir } => {
            Settings::Zonefile(zonefile::Settings { dir: dir.clone() })
        }
        config::Settings::PowerDns { api, server_id } => Settings::PowerDns(powerdns::Settings {
            http: http(api, powerdns::DEFAULT_URL),
            server_id: server_id.clone(),
        }),
        config::Settings::Rfc2136 {
            server,
            key,
            timeout,
        } => Settings::Rfc2136(rfc2136::Settings {
            server: *server,
            key: match key {
                TsigKey::File(path) => rfc2136::KeySource::File(path.clone()),
                TsigKey::Env {
                    name,
                    algorithm,
                    secret_env,
                } => rfc2136::KeySource::Env {
                    name: name.clone(),
                    algorithm: match algorithm {
                        TsigAlgorithm::HmacSha256 => rfc2136::Algorithm::HmacSha256,
                        TsigAlgorithm::HmacSha512 => rfc2136::Algorithm::HmacSha512,
                    },
                    secret_env: secret_env.clone(),
                },
            },
            timeout: *timeout,
        }),
        config::Settings::Cloudflare { api, zone_id } => {
            Settings::Cloudflare(cloudflare::Settings {
                http: http(api, cloudflare::DEFAULT_URL),
                zone_id: zone_id.clone(),
            })
        }
        config::Settings::Desec { api } => Settings::Desec(desec::Settings {
            http: http(api, desec::DEFAULT_URL),
        }),
        config::Settings::Hetzner { api } => Settings::Hetzner(hetzner::Settings {
            http: http(api, hetzner::DEFAULT_URL),
        }),
    }
}

/// An HTTP backend's settings: the crate's defaults, overridden by what
/// the table gives.
fn http(api: &Api, default_url: &str) -> HttpSettings {
    let secret = match &api.secret {
        Secret::Env(var) => SecretSource::Env(var.clone()),
        Secret::File(path) => SecretSource::File(path.clone()),
    };
    let mut http = HttpSettings::new(api.url.as_deref().unwrap_or(default_url), secret);
    if let Some(timeout) = api.timeout {
        http.timeout = timeout;
    }
    if let Some(retries) = api.retries {
        http.retries = retries;
    }
    http
}
