//! DNS providers for nolist: read the RRsets nolist owns in a zone, and
//! replace them, at PowerDNS, a BIND primary (RFC 2136), Cloudflare, deSEC,
//! Hetzner, or in a directory of zone files.
//!
//! The crate knows nothing about plans or configs. The main crate computes
//! which RRsets it owns ([`Key`]), what they should hold ([`RrSet`]) and the
//! [`Change`]s, and hands them to a [`Provider`] built from [`Settings`]
//! with [`build`]. Each backend is one module. This crate is nolist's only
//! HTTP client (through its `http` module: one client with the timeouts,
//! retries and error mapping every HTTP backend shares); the main crate's
//! one HTTP server is its `/metrics` endpoint.
//!
//! # Why not the `dns-update` crate
//!
//! `dns-update` (Stalwart's) speaks RFC 2136 and 70-odd provider APIs, which
//! would cover the long tail. It is not used, not even behind a feature,
//! because it cannot keep what `diff` and `apply` promise:
//!
//! - it creates, updates and deletes records by name but cannot list a
//!   zone's records, so it cannot implement [`Provider::read`]: no diff, no
//!   `--max-changes` guard, no read-back after `apply`;
//! - it replaces an RRset by deleting and adding records in separate
//!   requests (for RFC 2136 too), so an `apply` would pass through a partial
//!   or empty MX RRset, where every backend here sends one transaction (one
//!   UPDATE, one PATCH, one batch, one bulk PUT);
//! - most of its endpoints are fixed, so its backends could not be pointed
//!   at a local mock, and every HTTP backend here has a configurable base URL
//!   and a contract test;
//! - it would bring a second HTTP stack and error model next to `http`
//!   (retries, `Retry-After`, the 401/404/4xx mapping would differ per
//!   provider).
//!
//! A provider from the long tail is one module here: `read` and `apply` on
//! the shared HTTP client, a [`Settings`] variant, a [`Kind`], its keys in
//! the main crate's `provider` table, and a wiremock contract test.
//! Reconsider if `dns-update` gains a listing call and atomic replaces.

pub mod cloudflare;
pub mod desec;
mod error;
pub mod hetzner;
mod http;
pub mod powerdns;
mod record;
pub mod rfc2136;
mod secret;
pub mod zonefile;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use error::ProviderError;
pub use record::{Change, Key, Rdata, RecordType, RrSet, absolute};
pub use secret::{Secret, SecretSource};

/// A DNS provider: where a zone's records live.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The backend's config name (`powerdns`, `zonefile`, …).
    fn kind(&self) -> Kind;

    /// The current RRsets of `zone` among `keys`; an RRset that does not
    /// exist is left out. `zone` is absolute (`example.org.`).
    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError>;

    /// Makes each RRset named by `changes` hold exactly its `after` (none:
    /// deleted), in one transaction where the backend has one. Nothing
    /// outside `changes` is touched.
    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError>;
}

/// The backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Zone files in a directory.
    Zonefile,
    /// The PowerDNS Authoritative HTTP API.
    PowerDns,
    /// Dynamic UPDATE (RFC 2136) with TSIG to a primary.
    Rfc2136,
    /// The Cloudflare v4 API.
    Cloudflare,
    /// The deSEC API.
    Desec,
    /// The Hetzner Cloud DNS API.
    Hetzner,
}

impl Kind {
    /// Every kind, in config order.
    pub const ALL: [Kind; 6] = [
        Kind::Zonefile,
        Kind::PowerDns,
        Kind::Rfc2136,
        Kind::Cloudflare,
        Kind::Desec,
        Kind::Hetzner,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Zonefile => "zonefile",
            Kind::PowerDns => "powerdns",
            Kind::Rfc2136 => "rfc2136",
            Kind::Cloudflare => "cloudflare",
            Kind::Desec => "desec",
            Kind::Hetzner => "hetzner",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated provider configuration (the main crate's config builds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settings {
    /// `kind: zonefile`.
    Zonefile(zonefile::Settings),
    /// `kind: powerdns`.
    PowerDns(powerdns::Settings),
    /// `kind: rfc2136`.
    Rfc2136(rfc2136::Settings),
    /// `kind: cloudflare`.
    Cloudflare(cloudflare::Settings),
    /// `kind: desec`.
    Desec(desec::Settings),
    /// `kind: hetzner`.
    Hetzner(hetzner::Settings),
}

impl Settings {
    /// The backend.
    pub fn kind(&self) -> Kind {
        match self {
            Settings::Zonefile(_) => Kind::Zonefile,
            Settings::PowerDns(_) => Kind::PowerDns,
            Settings::Rfc2136(_) => Kind::Rfc2136,
            Settings::Cloudflare(_) => Kind::Cloudflare,
            Settings::Desec(_) => Kind::Desec,
            Settings::Hetzner(_) => Kind::Hetzner,
        }
    }
}

/// What every HTTP backend is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// The API's base URL (no trailing slash needed).
    pub url: String,
    /// Where the token or API key comes from.
    pub secret: SecretSource,
    /// Limit for one request, connect included.
    pub timeout: Duration,
    /// Further attempts after a 429, a 5xx (idempotent requests only) or a
    /// transport error.
    pub retries: u32,
    /// The first pause between attempts; it doubles each time (a
    /// `Retry-After` header replaces it).
    pub backoff: Duration,
}

impl HttpSettings {
    /// The defaults for `url` and `secret`: 30 s timeout, 3 retries, 500 ms backoff.
    pub fn new(url: impl Into<String>, secret: SecretSource) -> HttpSettings {
        HttpSettings {
            url: url.into(),
            secret,
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Builds the provider `settings` describe, reading its secret (from the
/// environment or a file) now.
pub fn build(settings: &Settings) -> Result<Box<dyn Provider>, ProviderError> {
    Ok(match settings {
        Settings::Zonefile(s) => Box::new(zonefile::Zonefile::new(s.clone())),
        Settings::PowerDns(s) => Box::new(powerdns::PowerDns::new(s)?),
        Settings::Rfc2136(s) => Box::new(rfc2136::Rfc2136::new(s)?),
        Settings::Cloudflare(s) => Box::new(cloudflare::Cloudflare::new(s)?),
        Settings::Desec(s) => Box::new(desec::Desec::new(s)?),
        Settings::Hetzner(s) => Box::new(hetzner::Hetzner::new(s)?),
    })
}

/// A path for messages.
fn shown(path: &std::path::Path) -> String {
    path.display().to_string()
}
