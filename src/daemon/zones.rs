//! The zones `serve` and `run` answer from: the plan's records merged into
//! each domain's base zone, with serials that never go backwards for a
//! secondary (kept in the state store's `serials.json`), swapped into a
//! running [`Authority`] on reload.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dns::{Authority, Snapshot, TcpLimits, ZoneData, ZoneError};
use crate::dnsbl::{self, List, Served};
use crate::plan::Plan;
use crate::store::serials;

/// The zones of `plan` (with their base zones) ready to serve, each with
/// its serial following what was served before: by this process
/// (`previous`), or, for zones secondaries copy (`dns.serve.axfr_allow` set),
/// by an earlier run, as kept in `STATE_DIR/serials.json`, which is then
/// updated. A state that cannot be read or written is a warning: the zones
/// are served, with serials that may not survive a restart.
pub fn snapshot(
    config: &Config,
    plan: &Plan,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, ZoneError> {
    let axfr_allow = config
        .dns
        .serve
        .as_ref()
        .map(|s| s.axfr_allow.clone())
        .unwrap_or_default();
    let kept_at = (!axfr_allow.is_empty()).then(|| serials::file(&config.state_dir));
    let kept = kept_at.as_deref().map_or_else(BTreeMap::new, |path| {
        serials::load(path).unwrap_or_else(|e| {
            tracing::warn!("served serials: {e}; starting from the configured ones");
            BTreeMap::new()
        })
    });
    let served: HashMap<_, _> = previous
        .map(|p| p.zones().iter().map(|z| (&z.origin, z.served())).collect())
        .unwrap_or_default();
    let mut zones = Vec::with_capacity(plan.zones.len());
    for (zone, domain) in plan.zones.iter().zip(&config.domains) {
        let data = ZoneData::build(zone, domain.base_zone.as_deref())?;
        let before = served
            .get(&data.origin)
            .copied()
            .or_else(|| kept.get(&data.origin.to_string()).copied());
        zones.push(data.succeed(before));
    }
    if let Some(path) = kept_at {
        let served = zones
            .iter()
            .map(|z| (z.origin.to_string(), z.served()))
            .collect();
        if let Err(e) = serials::save(&path, served) {
            tracing::warn!(
                "served serials: {e}; a restart may serve lower serials, which secondaries ignore"
            );
        }
    }
    Snapshot::new(zones, axfr_allow)
}

/// `snapshot` serving the blocklist zone of `dns.dnsbl` too (when
/// configured), answered from `list`. The list publishes what the config
/// says once [`publish`] is called, after the swap.
pub fn with_dnsbl(
    snapshot: Snapshot,
    config: &Config,
    list: &Arc<List>,
) -> Result<Snapshot, ZoneError> {
    let (Some(bl), Some(soa)) = (&config.dns.dnsbl, &config.dns.soa) else {
        return Ok(snapshot);
    };
    let zone = dnsbl::Zone::new(bl, soa, &config.dns.ns)?;
    Ok(snapshot.with_dnsbl(Served {
        zone,
        list: list.clone(),
    }))
}

/// Makes `list` hold the bans `config` publishes (none without
/// `dns.dnsbl`): its feed rereads them when that changed.
pub fn publish(list: &List, config: &Config) {
    list.set_publish(dnsbl::publish_bits(config.dns.dnsbl.as_ref()));
}

/// How often the blocklist's feed looks at the state store (the daemon's
/// writer also nudges it at every change of the bans).
pub const DNSBL_POLL: Duration = Duration::from_secs(1);

/// The TCP limits of `dns.serve` (defaults without it).
pub fn tcp_limits(config: &Config) -> TcpLimits {
    config.dns.serve.as_ref().map_or(
        TcpLimits {
            max_connections: 256,
            idle_timeout: Duration::from_secs(10),
        },
        |s| TcpLimits {
            max_connections: s.tcp_max_connections.get(),
            idle_timeout: s.tcp_idle_timeout.0,
        },
    )
}

/// Serves `snapshot` from now on, and says what changed. Each zone is
/// logged at debug level only: one line per zone is ten thousand lines a
/// reload for a hosting provider. The old snapshot is freed as soon as the
/// last query using it finishes, and what is freed by then goes back to the
/// system.
pub fn swap_in(authority: &Authority, snapshot: Snapshot) -> Changes {
    let previous = authority.current();
    let changes = Changes::between(previous.zones(), snapshot.zones());
    authority.swap(snapshot);
    drop(previous);
    release_freed_memory();
    changes
}

/// What a reload changed, compared zone by zone (by origin); displayed as
/// "N zones (K changed, R removed)".
#[derive(Debug, PartialEq, Eq)]
pub struct Changes {
    /// Zones served now.
    zones: usize,
    /// Zones new, or served with other content or another serial.
    changed: usize,
    /// Zones no longer served.
    removed: usize,
}

impl Changes {
    /// Compares the zones served before with the new ones, logging each
    /// zone at debug level.
    fn between(before: &[ZoneData], after: &[ZoneData]) -> Changes {
        let served: HashMap<_, _> = before.iter().map(|z| (&z.origin, z.served())).collect();
        let mut changed = 0;
        let mut kept = 0;
        for zone in after {
            let old = served.get(&zone.origin);
            let is_changed = old != Some(&zone.served());
            changed += usize::from(is_changed);
            kept += usize::from(old.is_some());
            tracing::debug!(zone = %zone.origin, serial = zone.serial, changed = is_changed, "reloaded zone");
        }
        Changes {
            zones: after.len(),
            changed,
            removed: served.len() - kept,
        }
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} changed", zone_count(self.zones), self.changed)?;
        if self.removed > 0 {
            write!(f, ", {} removed", self.removed)?;
        }
        f.write_str(")")
    }
}

/// "1 zone", "2 zones".
pub fn zone_count(n: usize) -> String {
    format!("{n} zone{}", if n == 1 { "" } else { "s" })
}

/// Gives the heap pages freed since the last call back to the system.
/// glibc's malloc keeps freed memory in its heap for reuse and returns only
/// the free space at the top of it, so without this the process would hold
/// its peak for good: at the start the parsed config and plan, at a reload
/// the old and the new snapshot together (measured with 10,000 zones, before
/// this call: 188 MB after the start, 357 MB after the first reload and
/// after every later one). A no-op with other C libraries.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    /// A config with `n` classic domains, the first MX preference `pref`.
    pub(crate) fn config(n: usize, pref: u16) -> String {
        let mut yaml = String::from("domains:\n");
        for i in 1..=n {
            yaml.push_str(&format!(
                "  - name: d{i}.example
    decoy: {{ host: mx01.d{i}.example, preference: {pref}, ipv4: [192.0.2.{i}] }}
    real:
      - {{ host: mx02.d{i}.example, preference: 20, ipv4: [198.51.100.{i}] }}
"
            ));
        }
        yaml.push_str(
            "dns:
  soa: { mname: ns1.example.net, rname: hostmaster@example.net, serial: 1 }
  ns: [ns1.example.net, ns2.example.net]
",
        );
        yaml
    }

    #[test]
    fn changes_count_new_changed_and_removed_zones() {
        let build = |yaml: &str| {
            let cfg = config::parse(yaml, Path::new("t.yaml")).unwrap();
            let plan = Plan::build(&cfg);
            plan.zones
                .iter()
                .map(|z| ZoneData::build(z, None).unwrap())
                .collect::<Vec<_>>()
        };
        let three = build(&config(3, 10));
        assert_eq!(
            Changes::between(&three, &three),
            Changes {
                zones: 3,
                changed: 0,
                removed: 0
            }
        );
        let four = build(&config(4, 10));
        assert_eq!(Changes::between(&three, &four).changed, 1);
        assert_eq!(Changes::between(&four, &three).removed, 1);
        assert_eq!(
            Changes::between(&[], &three).to_string(),
            "3 zones (3 changed)"
        );
        assert_eq!(
            Changes::between(&three, &three[..1]).to_string(),
            "1 zone (0 changed, 2 removed)"
        );
    }
}
