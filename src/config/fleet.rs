//! The `fleet` section: several `nolist run` nodes sharing evidence and
//! bans through a Redis (or Valkey) engine. Without it nothing changes.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::provider::Secret;
use super::raw::{loc, relative_to_config};
use super::{ConfigError, Duration};

type Sp<T> = Spanned<T>;

/// What to do about an MTA node that has gone silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSilentMta {
    /// Keep holding back new bans until its watermark moves again (fail
    /// open: the decoy still temp-fails every session, nothing is lost).
    #[default]
    Wait,
    /// After `silent_after`, judge without it (a sender that delivered
    /// only through that node may then be banned).
    Proceed,
}

/// A fleet node's name: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter
/// or digit (it is part of every message and of the engine's keys).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

/// Why a node name is not one.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a node name (1 to 63 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit)"
)]
pub struct BadNodeName(pub String);

impl NodeName {
    /// Checks `s`.
    pub fn parse(s: &str) -> Result<NodeName, BadNodeName> {
        let ok = (1..=63).contains(&s.len())
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(NodeName(s.to_owned()))
        } else {
            Err(BadNodeName(s.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `fleet` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// `url`: `redis://[user@]host[:port][/db]` or `rediss://` (TLS); never
    /// with a password in it.
    pub url: String,
    /// `node`: this node's unique name.
    pub node: NodeName,
    /// `password_env` / `password_file`: the engine's password, if any.
    pub password: Option<Secret>,
    /// `ca_file`: with `rediss://`, the certificate authorities (PEM) the
    /// engine's certificate must chain to, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// `mta_nodes`: the nodes whose delivery evidence must be complete
    /// (their watermark past a hit's judgement time) before any node bans.
    pub mta_nodes: Vec<NodeName>,
    /// `prefix`: the engine's keys are `{prefix}:...` (one hash slot).
    pub prefix: String,
    /// `keep`: how long the shared log keeps messages; a node away longer
    /// bootstraps from the compacted state.
    pub keep: Duration,
    /// `max_events`: the shared log's length cap, whatever `keep` says.
    pub max_events: u64,
    /// `silent_after`: a node with no report for this long is silent
    /// (logged, shown by `status`, exported).
    pub silent_after: Duration,
    /// `on_silent_mta`: whether a silent MTA node still holds back bans.
    pub on_silent_mta: OnSilentMta,
}

impl Fleet {
    /// Whether this node follows a real MTA's log for the fleet.
    pub fn is_mta_node(&self) -> bool {
        self.mta_nodes.contains(&self.node)
    }
}

fn default_prefix() -> String {
    "nolist".into()
}
fn default_keep() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_events() -> u64 {
    1_000_000
}
fn default_silent_after() -> Duration {
    Duration::from_secs(120)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    url: Sp<String>,
    node: Sp<String>,
    #[serde(default)]
    password_env: Option<Sp<String>>,
    #[serde(default)]
    password_file: Option<Sp<PathBuf>>,
    #[serde(default)]
    ca_file: Option<Sp<PathBuf>>,
    #[serde(default)]
    mta_nodes: Vec<Sp<String>>,
    #[serde(default)]
    prefix: Option<Sp<String>>,
    #[serde(default)]
    keep: Option<Sp<Duration>>,
    #[serde(default)]
    max_events: Option<Sp<u64>>,
    #[serde(default = "default_silent_after")]
    silent_after: Duration,
    #[serde(default)]
    on_silent_mta: OnSilentMta,
}

impl RawFleet {
    /// Checks the section; `follows_logs` is whether `mta.logs` names any.
    pub(super) fn validate(self, path: &Path, follows_logs: bool) -> Result<Fleet, ConfigError> {
        let err = |at, m: String| ConfigError::at(path, at, m);
        let url = self.url.value.trim().to_owned();
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| {
                err(
                    loc(&self.url),
                    format!("fleet.url `{url}` must start with redis:// or rediss:// (TLS)"),
                )
            })?;
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((user, _)) = authority.rsplit_once('@')
            && user.contains(':')
        {
            return Err(err(
                loc(&self.url),
                "fleet.url must not contain a password: use password_env or password_file".into(),
            ));
        }
        if authority.rsplit('@').next().is_none_or(str::is_empty) {
            return Err(err(
                loc(&self.url),
                format!("fleet.url `{url}` names no host"),
            ));
        }
        let name =
            |s: &Sp<String>| NodeName::parse(&s.value).map_err(|e| err(loc(s), e.to_string()));
        let node = name(&self.node)?;
        let mut mta_nodes = Vec::new();
        for n in &self.mta_nodes {
            let parsed = name(n)?;
            if mta_nodes.contains(&parsed) {
                return Err(err(
                    loc(n),
                    format!("fleet.mta_nodes names `{parsed}` twice"),
                ));
            }
            mta_nodes.push(parsed);
        }
        let listed = mta_nodes.contains(&node);
        if follows_logs && !listed {
            return Err(err(
                loc(&self.node),
                format!(
                    "node `{node}` follows MTA logs (mta.logs) but is not in fleet.mta_nodes: its deliveries would not hold back the fleet's bans"
                ),
            ));
        }
        if listed && !follows_logs {
            return Err(err(
                loc(&self.node),
                format!(
                    "node `{node}` is in fleet.mta_nodes but follows no MTA log (mta.logs is empty): it would hold back every ban of the fleet"
                ),
            ));
        }
        let prefix = match self.prefix {
            Some(p)
                if p.value.is_empty()
                    || !p.value.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
                    }) =>
            {
                return Err(err(
                    loc(&p),
                    format!(
                        "fleet.prefix `{}` must be non-empty and of a-z, A-Z, 0-9, `.`, `_`, `-`, `:`",
                        p.value
                    ),
                ));
            }
            Some(p) => p.value,
            None => default_prefix(),
        };
        let password = match (self.password_env, self.password_file) {
            (Some(_), Some(file)) => {
                return Err(err(
                    loc(&file),
                    "give fleet.password_env or fleet.password_file, not both".into(),
                ));
            }
            (Some(env), None) => Some(Secret::Env(env.value)),
            (None, Some(file)) => Some(Secret::File(relative_to_config(path, file.value))),
            (None, None) => None,
        };
        let ca_file = match self.ca_file {
            Some(f) if !url.starts_with("rediss://") => {
                return Err(err(
                    loc(&f),
                    "fleet.ca_file needs a rediss:// (TLS) fleet.url".into(),
                ));
            }
            Some(f) => Some(relative_to_config(path, f.value)),
            None => None,
        };
        let keep = match self.keep {
            Some(k) if k.value.as_secs() < 60 => {
                return Err(err(
                    loc(&k),
                    "fleet.keep must be at least 1m (a node restarting would bootstrap every time)"
                        .into(),
                ));
            }
            Some(k) => k.value,
            None => default_keep(),
        };
        let max_events = match self.max_events {
            Some(m) if m.value < 1000 => {
                return Err(err(loc(&m), "fleet.max_events must be at least 1000 (a node restarting would bootstrap every time)".into()));
            }
            Some(m) => m.value,
            None => default_max_events(),
        };
        Ok(Fleet {
            url,
            node,
            password,
            ca_file,
            mta_nodes,
            prefix,
            keep,
            max_events,
            silent_after: self.silent_after,
            on_silent_mta: self.on_silent_mta,
        })
    }
}
