//! The `provider` table (top level, and per domain): where `diff` and
//! `apply` find the zone. One flat table with `kind` and the keys of every
//! backend; a key that the chosen kind does not use is an error at its own
//! position, and so is a missing secret. The result is the providers
//! crate's [`Settings`]. Secrets are never written in the config: only the
//! name of an environment variable or a file that holds them.

use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use nolist_providers::{
    HttpSettings, Kind, SecretSource, Settings, cloudflare, desec, hetzner, powerdns, rfc2136,
    zonefile,
};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::{loc, relative_to_config};
use super::{ConfigError, Duration, Loc};

type Sp<T> = Spanned<T>;

/// A validated `provider` table and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// What the providers crate builds the backend from.
    pub settings: Settings,
    /// The position of its `kind`.
    pub at: Loc,
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
            (Some(env), None) => Ok(SecretSource::Env(env.value)),
            (None, Some(file)) => Ok(SecretSource::File(relative_to_config(path, file.value))),
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
        let http = |url: Option<Sp<String>>,
                    default: &str,
                    secret,
                    timeout: Option<Sp<Duration>>,
                    retries: Option<Sp<u32>>| {
            let url = match url {
                Some(u) if u.value.starts_with("http://") || u.value.starts_with("https://") => {
                    u.value
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
                None => default.to_owned(),
            };
            let mut settings = HttpSettings::new(url, secret);
            if let Some(t) = timeout {
                if t.value.as_secs() == 0 {
                    return Err(ConfigError::at(
                        path,
                        loc(&t),
                        "`timeout` must be at least 1s",
                    ));
                }
                settings.timeout = t.value.0;
            }
            if let Some(r) = retries {
                settings.retries = r.value;
            }
            Ok(settings)
        };
        let timeout = |t: Option<Sp<Duration>>, default: u64| match t {
            Some(t) if t.value.as_secs() == 0 => Err(ConfigError::at(
                path,
                loc(&t),
                "`timeout` must be at least 1s",
            )),
            Some(t) => Ok(t.value.0),
            None => Ok(std::time::Duration::from_secs(default)),
        };
        let settings = match kind {
            Kind::Zonefile => {
                let dir = self.dir.ok_or_else(|| required("dir"))?;
                Settings::Zonefile(zonefile::Settings {
                    dir: relative_to_config(path, dir.value),
                })
            }
            Kind::PowerDns => {
                let key = secret(
                    self.api_key_env,
                    self.api_key_file,
                    ["api_key_env", "api_key_file"],
                )?;
                Settings::PowerDns(powerdns::Settings {
                    http: http(
                        self.url,
                        powerdns::DEFAULT_URL,
                        key,
                        self.timeout,
                        self.retries,
                    )?,
                    server_id: self
                        .server_id
                        .map_or_else(|| "localhost".to_owned(), |s| s.value),
                })
            }
            Kind::Cloudflare | Kind::Desec | Kind::Hetzner => {
                let token = secret(self.token_env, self.token_file, ["token_env", "token_file"])?;
                let default = match kind {
                    Kind::Cloudflare => cloudflare::DEFAULT_URL,
                    Kind::Desec => desec::DEFAULT_URL,
                    _ => hetzner::DEFAULT_URL,
                };
                let http = http(self.url, default, token, self.timeout, self.retries)?;
                match kind {
                    Kind::Cloudflare => Settings::Cloudflare(cloudflare::Settings {
                        http,
                        zone_id: self.zone_id.map(|z| z.value),
                    }),
                    Kind::Desec => Settings::Desec(desec::Settings { http }),
                    _ => Settings::Hetzner(hetzner::Settings { http }),
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
                        rfc2136::KeySource::File(relative_to_config(path, file.value))
                    }
                    (None, Some(name), Some(env)) => {
                        let algorithm = match self.key_algorithm {
                            None => rfc2136::Algorithm::HmacSha256,
                            Some(a) => rfc2136::Algorithm::parse(&a.value).ok_or_else(|| {
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
                        rfc2136::KeySource::Env {
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
                Settings::Rfc2136(rfc2136::Settings {
                    server,
                    key,
                    timeout: timeout(self.timeout, 10)?,
                })
            }
        };
        Ok(Provider { settings, at })
    }
}
