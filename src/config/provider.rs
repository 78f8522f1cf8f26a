//! The `provider` table (top level, and per domain): where `diff` and
//! `apply` find the zone. One flat table with `kind` and the keys of every
//! backend; a key that the chosen kind does not use is an error at its own
//! position, and so is a missing secret. The result is the providers
//! crate's [`Settings`]. Secrets are never written in the config: only the
//! name of an environment variable or a file that holds them.

use std::path::{Path, PathBuf};

use nolist_providers::{HttpSettings, Kind, SecretSource, Settings, powerdns, zonefile};
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
        };
        Ok(Provider { settings, at })
    }
}
