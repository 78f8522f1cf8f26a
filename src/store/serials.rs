//! The served SOA serials kept across restarts, for zones that secondaries
//! copy (`dns.serve.axfr_allow`): a secondary ignores a zone whose serial
//! went backwards, so a restart must never serve a lower serial than the
//! last run did. One small JSON file in the state directory, replaced
//! atomically (`nolist_durable::write_atomically`: fsynced, then renamed).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dns::zone::Served;

/// The file in the state directory.
pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("serials.json")
}

#[derive(Serialize, Deserialize)]
struct Kept {
    version: u32,
    /// Zone apex (with the trailing dot) → what was served.
    zones: BTreeMap<String, Served>,
}

const VERSION: u32 = 1;

/// Why the kept serials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SerialsError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not what nolist writes.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What the JSON reader said.
        source: serde_json::Error,
    },
    /// Another version of the file.
    #[error("{}: version {found} is not {VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// What an earlier run served; empty when nothing was kept yet.
pub fn load(path: &Path) -> Result<BTreeMap<String, Served>, SerialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(SerialsError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let kept: Kept = serde_json::from_str(&text).map_err(|source| SerialsError::Json {
        path: path.to_owned(),
        source,
    })?;
    if kept.version != VERSION {
        return Err(SerialsError::Version {
            path: path.to_owned(),
            found: kept.version,
        });
    }
    Ok(kept.zones)
}

/// Records what is served now (zones no longer served are forgotten).
pub fn save(path: &Path, zones: BTreeMap<String, Served>) -> Result<(), SerialsError> {
    let io = |source| SerialsError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(&Kept {
        version: VERSION,
        zones,
    })
    .map_err(|source| SerialsError::Json {
        path: path.to_owned(),
        source,
    })?;
    nolist_durable::write_atomically(path, format!("{text}\n").as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir.path().join("state"));
        assert!(load(&path).unwrap().is_empty());
        let zones = BTreeMap::from([(
            "example.org.".to_owned(),
            Served {
                serial: 2026120101,
                digest: u64::MAX,
            },
        )]);
        save(&path, zones.clone()).unwrap();
        assert_eq!(load(&path).unwrap(), zones);
        std::fs::write(&path, "{\"version\": 9, \"zones\": {}}").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 9"));
        std::fs::write(&path, "not json").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("serials.json")
        );
    }
}
