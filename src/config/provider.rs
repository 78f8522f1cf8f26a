//! The `provider` table (top level, and per domain): where `diff` and
//! `apply` find the zone. One flat table with `kind` and the keys of every
//! backend; a key that the chosen kind does not use is an error at its own
//! position, and so is a missing secret. The result is plain config values
//! ([`Settings`]); the providers crate's own settings are built from them at
//! the edge (`crate::sync`, compiled with the `providers` feature), where the
//! backends' defaults (their API URLs, HTTP timeouts and retries) live.
//! Without that feature a `provider` table still loads, it is only unused.
//! Secrets are never written in the config: only the name of an environment
//! variable or a file that holds them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::{loc, relative_to_config};
use super::{ConfigError, Duration, Loc};

type Sp<T> = Spanned<T>;

/// A validated `provider` table and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The backend and its keys.
    pub settings: Settings,
    /// The position of its `kind`.
    pub at: Loc,
}

/// The backends (`kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `zonefile`: zone files in a directory.
    Zonefile,
    /// `powerdns`: the PowerDNS Authoritative HTTP API.
    PowerDns,
    /// `rfc2136`: dynamic UPDATE with TSIG to a primary.
    Rfc2136,
    /// `cloudflare`: the Cloudflare v4 API.
    Cloudflare,
    /// `desec`: the deSEC API.
    Desec,
    /// `hetzner`: the Hetzner Cloud DNS API.
    Hetzner,
}

impl Kind {
    /// Every kind, in the order error messages list them.
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

/// A validated provider table: the kind and the keys it uses. Paths are
/// relative to the config file's directory already; a key left out is
/// `None` where the backend has a default of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settings {
    /// `kind: zonefile`.
    Zonefile {
        /// `dir`: the directory of the zone files.
        dir: PathBuf,
    },
    /// `kind: powerdns`.
    PowerDns {
        /// `url`, `api_key_env`/`api_key_file`, `timeout`, `retries`.
        api: Api,
        /// `server_id` (`localhost` when not given).
        server_id: String,
    },
    /// `kind: rfc2136`.
    Rfc2136 {
        /// `server`: the primary's address.
        server: SocketAddr,
        /// `key_file`, or `key_name` with `key_algorithm` and `key_secret_env`.
        key: TsigKey,
        /// `timeout` (10 s when not given).
        timeout: std::time::Duration,
    },
    /// `kind: cloudflare`.
    Cloudflare {
        /// `url`, `token_env`/`token_file`, `timeout`, `retries`.
        api: Api,
        /// `zone_id` (looked up by name when not given).
        zone_id: Option<String>,
    },
    /// `kind: desec`.
    Desec {
        /// `url`, `token_env`/`token_file`, `timeout`, `retries`.
        api: Api,
    },
    /// `kind: hetzner`.
    Hetzner {
        /// `url`, `token_env`/`token_file`, `timeout`, `retries`.
        api: Api,
    },
}

impl Settings {
    /// The backend.
    pub fn kind(&self) -> Kind {
        match self {
            Settings::Zonefile { .. } => Kind::Zonefile,
            Settings::PowerDns { .. } => Kind::PowerDns,
            Settings::Rfc2136 { .. } => Kind::Rfc2136,
            Settings::Cloudflare { .. } => Kind::Cloudflare,
            Settings::Desec { .. } => Kind::Desec,
            Settings::Hetzner { .. } => Kind::Hetzner,
        }
    }
}

/// The keys of an HTTP API backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    /// `url` (http:// or https://); the backend's own when not given.
    pub url: Option<String>,
    /// Where the token or API key comes from.
    pub secret: Secret,
    /// `timeout` (at least 1 s) for one request.
    pub timeout: Option<std::time::Duration>,
    /// `retries`: further attempts after a transient failure.
    pub retries: Option<u32>,
}

/// Where a secret comes from (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// `*_env`: the value of this environment variable.
    Env(String),
    /// `*_file`: the content of this file.
    File(PathBuf),
}

/// Where an RFC 2136 backend's TSIG key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TsigKey {
    /// `key_file`: a BIND key file, which names its own algorithm.
    File(PathBuf),
    /// `key_name`, `key_algorithm` and `key_secret_env` (the base64 secret).
    Env {
        /// The key's name, as the server knows it.
        name: String,
        /// The HMAC (hmac-sha256 when not given).
        algorithm: TsigAlgorithm,
        /// The variable that holds the base64 secret.
        secret_env: String,
    },
}

/// The TSIG algorithms nolist signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// The config spelling, case-insensitive, with or without a final dot.
    fn parse(s: &str) -> Option<TsigAlgorithm> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    kind: Sp<String>,
    #[serde(default)]
    dir: Option<Sp<PathBuf>>,
    #[serde(default)]
    url: Option<Sp<String>>,
    #[serde(default)]
    server_id: Option<Sp<String>>,
    #[serde(default)]
    api_key_env: Option<Sp<String>>,
    #[serde(default)]
    api_key_file: Option<Sp<PathBuf>>,
    #[serde(default)]
    token_env: Option<Sp<String>>,
    #[serde(default)]
    token_file: Option<Sp<PathBuf>>,
    #[serde(default)]
    zone_id: Option<Sp<String>>,
    #[serde(default)]
    server: Option<Sp<SocketAddr>>,
    #[serde(default)]
    key_file: Option<Sp<PathBuf>>,
    #[serde(default)]
    key_name: Option<Sp<String>>,
    #[serde(default)]
    key_algorithm: Option<Sp<String>>,
    #[serde(default)]
    key_secret_env: Option<Sp<String>>,
    #[serde(default)]
    timeout: Option<Sp<Duration>>,
    #[serde(default)]
    retries: Option<Sp<u32>>,
}

/// The keys every kind accepts besides `kind`.
fn keys_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Zonefile => &["dir"],
        Kind::PowerDns => &[
            "url",
            "server_id",
            "api_key_env",
            "api_key_file",
            "timeout",
            "retries",
        ],
        Kind::Cloudflare => &[
            "url",
            "token_env",
            "token_file",
            "zone_id",
            "timeout",
            "retries",
        ],
        Kind::Desec | Kind::Hetzner => &["url", "token_env", "token_file", "timeout", "retries"],
        Kind::Rfc2136 => &[
            "server",
            "key_file",
            "key_name",
            "key_algorithm",
            "key_secret_env",
            "timeout",
        ],
    }
}

impl RawProvider {
    /// The keys given, with their positions, in table order of the struct.
    fn present(&self) -> Vec<(&'static str, Loc)> {
        let mut out = Vec::new();
        let mut add = |key, at: Option<Loc>| {
            if let Some(at) = at {
                out.push((key, at));
            }
        };
        add("dir", self.dir.as_ref().map(loc));
        add("url", self.url.as_ref().map(loc));
        add("server_id", self.server_id.as_ref().map(loc));
        add("api_key_env", self.api_key_env.as_ref().map(loc));
        add("api_key_file", self.api_key_file.as_ref().map(loc));
        add("token_env", self.token_env.as_ref().map(loc));
        add("token_file", self.token_file.as_ref().map(loc));
        add("zone_id", self.zone_id.as_ref().map(loc));
        add("server", self.server.as_ref().map(loc));
        add("key_file", self.key_file.as_ref().map(loc));
        add("key_name", self.key_name.as_ref().map(loc));
        add("key_algorithm", self.key_algorithm.as_ref().map(loc));
        add("key_secret_env", self.key_secret_env.as_ref().map(loc));
        add("timeout", self.timeout.as_ref().map(loc));
        add("retries", self.retries.as_ref().map(loc));
        out
    }

    pub(super) fn validate(self, path: &Path) -> Result<Provider, ConfigError> {
        let at = loc(&self.kind);
        let Some(kind) = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == self.kind.value)
        else {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(ConfigError::at(
                path,
                at,
                format!(
                    "unknown provider kind `{}`, expected one of {}",
                    self.kind.value,
                    known.join(", ")
                ),
            ));
        };
        let allowed = keys_of(kind);
        for (key, key_at) in self.present() {
            if !allowed.contains(&key) {
                return Err(ConfigError::at(
                    path,
                    key_at,
                    format!(
                        "`{key}` is not a key of provider kind `{kind}` (its keys: {})",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let required = |what: &str| {
            ConfigError::at(path, at, format!("provider kind `{kind}` needs `{what}`"))
        };
        let secret = |env: Option<Sp<String>>, file: Option<Sp<PathBuf>>, names: [&str; 2]| match (
            env, file,
        ) {
            (Some(env), None) => Ok(Secret::Env(env.value)),
            (None, Some(file)) => Ok(Secret::File(relative_to_config(path, file.value))),
            (Some(_), Some(file)) => Err(ConfigError::at(
                path,
                loc(&file),
                format!("give `{}` or `{}`, not both", names[0], names[1]),
            )),
            (None, None) => Err(ConfigError::at(
                path,
                at,
                format!(
                    "provider kind `{kind}` needs `{}` (an environment variable) or `{}` (a file) with the secret",
                    names[0], names[1]
                ),
            )),
        };
        let timeout = |t: Option<Sp<Duration>>| match t {
            Some(t) if t.value.as_secs() == 0 => Err(ConfigError::at(
                path,
                loc(&t),
                "`timeout` must be at least 1s",
            )),
            t => Ok(t.map(|t| t.value.0)),
        };
        let api = |url: Option<Sp<String>>,
                   secret,
                   t: Option<Sp<Duration>>,
                   retries: Option<Sp<u32>>| {
            let url = match url {
                Some(u) if u.value.starts_with("http://") || u.value.starts_with("https://") => {
                    Some(u.value)
                }
                Some(u) => {
                    return Err(ConfigError::at(
                        path,
                        loc(&u),
                        format!(
                            "`url` must start with http:// or https://, not {:?}",
                            u.value
                        ),
                    ));
                }
                None => None,
            };
            Ok(Api {
                url,
                secret,
                timeout: timeout(t)?,
                retries: retries.map(|r| r.value),
            })
        };
        let settings = match kind {
            Kind::Zonefile => {
                let dir = self.dir.ok_or_else(|| required("dir"))?;
                Settings::Zonefile {
                    dir: relative_to_config(path, dir.value),
                }
            }
            Kind::PowerDns => {
                let key = secret(
                    self.api_key_env,
                    self.api_key_file,
                    ["api_key_env", "api_key_file"],
                )?;
                Settings::PowerDns {
                    api: api(self.url, key, self.timeout, self.retries)?,
                    server_id: self
                        .server_id
                        .map_or_else(|| "localhost".to_owned(), |s| s.value),
                }
            }
            Kind::Cloudflare | Kind::Desec | Kind::Hetzner => {
                let token = secret(self.token_env, self.token_file, ["token_env", "token_file"])?;
                let api = api(self.url, token, self.timeout, self.retries)?;
                match kind {
                    Kind::Cloudflare => Settings::Cloudflare {
                        api,
                        zone_id: self.zone_id.map(|z| z.value),
                    },
                    Kind::Desec => Settings::Desec { api },
                    _ => Settings::Hetzner { api },
                }
            }
            Kind::Rfc2136 => {
                let server = self.server.ok_or_else(|| required("server"))?.value;
                let key = match (self.key_file, self.key_name, self.key_secret_env) {
                    (Some(file), None, None) => {
                        if let Some(alg) = &self.key_algorithm {
                            return Err(ConfigError::at(
                                path,
                                loc(alg),
                                "`key_algorithm` goes with `key_name` and `key_secret_env`; a `key_file` names its own",
                            ));
                        }
                        TsigKey::File(relative_to_config(path, file.value))
                    }
                    (None, Some(name), Some(env)) => {
                        let algorithm = match self.key_algorithm {
                            None => TsigAlgorithm::HmacSha256,
                            Some(a) => TsigAlgorithm::parse(&a.value).ok_or_else(|| {
                                ConfigError::at(
                                    path,
                                    loc(&a),
                                    format!(
                                        "unknown TSIG algorithm `{}`, expected hmac-sha256 or hmac-sha512",
                                        a.value
                                    ),
                                )
                            })?,
                        };
                        TsigKey::Env {
                            name: name.value,
                            algorithm,
                            secret_env: env.value,
                        }
                    }
                    (Some(_), Some(other), _) | (Some(_), None, Some(other)) => {
                        return Err(ConfigError::at(
                            path,
                            loc(&other),
                            "give `key_file`, or `key_name` with `key_secret_env`, not both",
                        ));
                    }
                    (None, None, Some(other)) | (None, Some(other), None) => {
                        return Err(ConfigError::at(
                            path,
                            loc(&other),
                            "`key_name` and `key_secret_env` go together",
                        ));
                    }
                    (None, None, None) => {
                        return Err(required(
                            "key_file` (a BIND key file), or `key_name` and `key_secret_env",
                        ));
                    }
                };
                Settings::Rfc2136 {
                    server,
                    key,
                    timeout: timeout(self.timeout)?.unwrap_or(std::time::Duration::from_secs(10)),
                }
            }
        };
        Ok(Provider { settings, at })
    }
}
