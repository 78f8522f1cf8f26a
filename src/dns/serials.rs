//! The served SOA serials kept across restarts, for zones that secondaries
//! copy (`dns.serve.axfr_allow`): a secondary ignores a zone whose serial
//! went backwards, so a restart must never serve a lower serial than the
//! last run did. One small JSON file in the state directory, replaced
//! atomically (temporary file + rename).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::zone::Served;

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

/// What an earlier run served; empty when nothing was kept yet.
pub fn load(path: &Path) -> Result<BTreeMap<String, Served>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let kept: Kept = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if kept.version != VERSION {
        return Err(format!(
            "{}: version {} is not {VERSION}",
            path.display(),
            kept.version
        ));
    }
    Ok(kept.zones)
}

/// Records what is served now (zones no longer served are forgotten).
pub fn save(path: &Path, zones: BTreeMap<String, Served>) -> Result<(), String> {
    let fail = |e: io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let text = serde_json::to_string_pretty(&Kept {
        version: VERSION,
        zones,
    })
    .map_err(|e| e.to_string())?;
    nolist_durable::write_atomically(path, format!("{text}\n").as_bytes()).map_err(fail)
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
        assert!(load(&path).unwrap_err().contains("version 9"));
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).unwrap_err().contains("serials.json"));
    }
}
