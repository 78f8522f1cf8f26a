//! The `provider` table (top level, and per domain): where `diff` and
//! `apply` find the zone. One flat table with `kind` and the keys of every
//! backend; a key that the chosen kind does not use is an error at its own
//! position, and so is a missing secret. The result is the providers
//! crate's [`Settings`]. Secrets are never written in the config: only the
//! name of an environment variable or a file that holds them.

use std::path::{Path, PathBuf};

use nolist_providers::{Kind, Settings, zonefile};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::{loc, relative_to_config};
use super::{ConfigError, Loc};

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
}

/// The keys every kind accepts besides `kind`.
fn keys_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Zonefile => &["dir"],
    }
}

impl RawProvider {
    /// The keys given, with their positions, in table order of the struct.
    fn present(&self) -> Vec<(&'static str, Loc)> {
        let mut out = Vec::new();
        if let Some(v) = &self.dir {
            out.push(("dir", loc(v)));
        }
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
        let settings = match kind {
            Kind::Zonefile => {
                let dir = self.dir.ok_or_else(|| required("dir"))?;
                Settings::Zonefile(zonefile::Settings {
                    dir: relative_to_config(path, dir.value),
                })
            }
        };
        Ok(Provider { settings, at })
    }
}
