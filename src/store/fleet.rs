//! The fleet's part of the store (config `fleet`): the outbox of this
//! node's own messages, written in the same transaction as the evidence
//! and decisions behind them and deleted once the engine has them; and the
//! node's fleet state (what the engine acknowledged, its epoch, the log
//! cursor and the last sequence number applied per node, the latest
//! reports of the fleet's nodes for `nolist status`). Bodies are opaque
//! here: their format is `crate::fleet::event`'s.

use std::collections::BTreeMap;

use ipnet::IpNet;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{
    BanRecord, Store, StoreError, cached, commit_tx, history, in_tx, trim_history, upsert_ban,
};
use crate::bans::Decision;

/// One unpublished message of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its sequence number.
    pub seq: u64,
    /// Its kind (`hit`, `delivery`, `ban`, `unban`).
    pub kind: String,
    /// Its body.
    pub body: String,
}

/// The node's fleet state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetState {
    /// The engine's epoch when last connected.
    pub epoch: Option<String>,
    /// Where this node reads the shared log on from.
    pub cursor: Option<String>,
    /// The highest sequence number of this node the engine acknowledged.
    pub published: u64,
    /// The last sequence number applied, per node.
    pub applied: BTreeMap<String, u64>,
    /// The latest report of each node (JSON), as the engine had them.
    pub reports: BTreeMap<String, String>,
}

/// What a fleet node's batch adds to the engine's: messages for the
/// outbox, operators' bans and unbans from other nodes, and how far the
/// shared log was read.
#[derive(Clone, Debug, Default)]
pub struct FleetWrite {
    /// `(kind, body)` of this node's new messages.
    pub outbox: Vec<(&'static str, String)>,
    /// Bans from other nodes kept as they are (operators' bans, network
    /// bans).
    pub bans: Vec<BanRecord>,
    /// Bans lifted by operators on other nodes, with the reason.
    pub unbans: Vec<(IpNet, String)>,
    /// The log cursor after the messages behind this batch.
    pub cursor: Option<String>,
    /// The last sequence number applied of each node that sent any.
    pub applied: Vec<(String, u64)>,
}

impl FleetWrite {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
            && self.bans.is_empty()
            && self.unbans.is_empty()
            && self.cursor.is_none()
            && self.applied.is_empty()
    }

    /// Appends `other` (a later batch) to this one.
    pub fn append(&mut self, other: FleetWrite) {
        self.outbox.extend(other.outbox);
        self.bans.extend(other.bans);
        self.unbans.extend(other.unbans);
        if other.cursor.is_some() {
            self.cursor = other.cursor;
        }
        self.applied.extend(other.applied);
    }
}

fn set(tx: &rusqlite::Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    cached(
        tx,
        "INSERT INTO fleet_state (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn enqueue(tx: &rusqlite::Transaction<'_>, kind: &str, body: &str) -> rusqlite::Result<()> {
    cached(
        tx,
        "INSERT INTO outbox (kind, body) VALUES (?1, ?2)",
        params![kind, body],
    )?;
    Ok(())
}

impl Store {
    /// Commits an engine batch (as [`Store::commit`]) and a fleet node's
    /// additions in one transaction.
    pub fn commit_fleet(
        &mut self,
        decisions: &[Decision],
        deliveries: &[(IpNet, i64)],
        checkpoints: &[(String, String)],
        fleet: &FleetWrite,
        now: i64,
    ) -> Result<(), StoreError> {
        let floor = self.history_floor();
        in_tx(&mut self.conn, |tx| {
            commit_tx(tx, decisions, deliveries, None, now)?;
            for (path, state) in checkpoints {
                commit_tx(tx, &[], &[], Some((path, state)), now)?;
            }
            for (kind, body) in &fleet.outbox {
                enqueue(tx, kind, body)?;
            }
            for ban in &fleet.bans {
                upsert_ban(tx, ban)?;
                let target = ban.target.to_string();
                history(tx, ban.since, "ban", &target, Some(ban.until), &ban.reason)?;
            }
            for (target, reason) in &fleet.unbans {
                let target = target.to_string();
                if cached(tx, "DELETE FROM bans WHERE target = ?1", params![target])? > 0 {
                    history(tx, now, "unban", &target, None, reason)?;
                }
            }
            if let Some(cursor) = &fleet.cursor {
                set(tx, "cursor", cursor)?;
            }
            for (node, seq) in &fleet.applied {
                tx.execute(
                    "INSERT INTO fleet_state (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                    params![format!("applied:{node}"), seq.to_string()],
                )?;
            }
            trim_history(tx, floor)
        })
        .map_err(|e| self.err(e))
    }

    /// An operator's ban (as [`Store::add_ban`]) and its message for the
    /// fleet, in one transaction.
    pub fn add_ban_published(&mut self, ban: &BanRecord, body: &str) -> Result<(), StoreError> {
        in_tx(&mut self.conn, |tx| {
            upsert_ban(tx, ban)?;
            let target = ban.target.to_string();
            history(tx, ban.since, "ban", &target, Some(ban.until), &ban.reason)?;
            enqueue(tx, "ban", body)
        })
        .map_err(|e| self.err(e))
    }

    /// An operator's unban (as [`Store::remove_ban`]) and its message for
    /// the fleet (sent even when this node had no such ban: another may).
    pub fn remove_ban_published(
        &mut self,
        target: &IpNet,
        at: i64,
        reason: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        in_tx(&mut self.conn, |tx| {
            let t = target.to_string();
            let removed = tx.execute("DELETE FROM bans WHERE target = ?1", params![t])?;
            if removed > 0 {
                history(tx, at, "unban", &t, None, reason)?;
            }
            enqueue(tx, "unban", body)?;
            Ok(removed > 0)
        })
        .map_err(|e| self.err(e))
    }

    /// Queues messages again (after the engine lost data).
    pub fn enqueue(&mut self, messages: &[(&'static str, String)]) -> Result<(), StoreError> {
        in_tx(&mut self.conn, |tx| {
            for (kind, body) in messages {
                enqueue(tx, kind, body)?;
            }
            Ok(())
        })
        .map_err(|e| self.err(e))
    }

    /// Up to `limit` unpublished messages after `after`, oldest first.
    pub fn outbox(&self, after: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, kind, body FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(OutboxRow {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        kind: r.get(1)?,
                        body: r.get(2)?,
                    })
                },
            )
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Unpublished messages (an upper bound, without counting them).
    pub fn outbox_backlog(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM outbox",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// The engine acknowledged every message up to `seq`: they leave the
    /// outbox.
    pub fn published(&mut self, seq: u64) -> Result<(), StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        in_tx(&mut self.conn, |tx| {
            tx.execute("DELETE FROM outbox WHERE seq <= ?1", params![seq])?;
            tx.execute(
                "INSERT INTO fleet_state (key, value) VALUES ('published', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                params![seq.to_string()],
            )?;
            Ok(())
        })
        .map_err(|e| self.err(e))
    }

    /// Keeps at most `keep` decoy hits in the outbox (the oldest go: the
    /// engine was away long, and hits are the one kind whose loss only
    /// delays a ban); returns how many went.
    pub fn trim_outbox(&mut self, keep: u64) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        in_tx(&mut self.conn, |tx| {
            tx.execute(
                "DELETE FROM outbox WHERE kind = 'hit' AND seq <= (SELECT max(seq) FROM outbox) - ?1",
                params![keep],
            )
        })
        .map_err(|e| self.err(e))
    }

    /// Sets one fleet state value: `epoch`, `cursor`, or a node's report
    /// (`report:NODE`).
    pub fn set_fleet_state(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        in_tx(&mut self.conn, |tx| set(tx, key, value)).map_err(|e| self.err(e))
    }

    /// Forgets the log cursor and what was applied (the node bootstraps).
    pub fn reset_cursor(&mut self) -> Result<(), StoreError> {
        in_tx(&mut self.conn, |tx| {
            tx.execute(
                "DELETE FROM fleet_state WHERE key = 'cursor' OR key LIKE 'applied:%'",
                [],
            )?;
            Ok(())
        })
        .map_err(|e| self.err(e))
    }

    /// The node's fleet state.
    pub fn fleet_state(&self) -> Result<FleetState, StoreError> {
        let mut state = FleetState::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM fleet_state")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))?;
        for (key, value) in rows {
            match key.as_str() {
                "epoch" => state.epoch = Some(value),
                "cursor" => state.cursor = Some(value),
                "published" => state.published = value.parse().unwrap_or(0),
                _ => {
                    if let Some(node) = key.strip_prefix("applied:") {
                        state
                            .applied
                            .insert(node.to_owned(), value.parse().unwrap_or(0));
                    } else if let Some(node) = key.strip_prefix("report:") {
                        state.reports.insert(node.to_owned(), value);
                    }
                }
            }
        }
        Ok(state)
    }

    /// Whether the store has a fleet state at all (a read-only store of an
    /// older schema has none).
    pub fn has_fleet(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fleet_state'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Source;

    fn ban(target: &str) -> BanRecord {
        BanRecord {
            target: target.parse().unwrap(),
            since: 100,
            until: 200,
            reason: "by hand".into(),
            hits: 0,
            offence: 1,
            source: Source::Manual,
        }
    }

    #[test]
    fn the_outbox_numbers_rise_across_deletions_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Store::open(dir.path()).unwrap();
        let mut cli = Store::open(dir.path()).unwrap();
        let write = FleetWrite {
            outbox: vec![("hit", "{\"kind\":\"hit\"}".into())],
            cursor: Some("5-0".into()),
            applied: vec![("mx2".into(), 9), ("mx2".into(), 7)],
            ..FleetWrite::default()
        };
        daemon.commit_fleet(&[], &[], &[], &write, 100).unwrap();
        cli.add_ban_published(&ban("192.0.2.7/32"), "{\"kind\":\"ban\"}")
            .unwrap();
        let rows = daemon.outbox(0, 10).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.seq, r.kind.as_str()))
                .collect::<Vec<_>>(),
            [(1, "hit"), (2, "ban")]
        );
        assert_eq!(daemon.outbox_backlog().unwrap(), 2);
        daemon.published(2).unwrap();
        assert!(daemon.outbox(0, 10).unwrap().is_empty());
        assert_eq!(daemon.outbox_backlog().unwrap(), 0);
        // Deleted numbers are never given again.
        assert!(
            cli.remove_ban_published(
                &"192.0.2.7/32".parse().unwrap(),
                150,
                "by hand",
                "{\"kind\":\"unban\"}"
            )
            .unwrap()
        );
        assert_eq!(daemon.outbox(0, 10).unwrap()[0].seq, 3);
        let state = daemon.fleet_state().unwrap();
        assert_eq!(state.published, 2);
        assert_eq!(state.cursor.as_deref(), Some("5-0"));
        assert_eq!(
            state.applied.get("mx2"),
            Some(&9),
            "the highest applied wins"
        );
        daemon.reset_cursor().unwrap();
        let state = daemon.fleet_state().unwrap();
        assert_eq!((state.cursor, state.applied.len()), (None, 0));
    }

    #[test]
    fn foreign_bans_and_unbans_land_with_the_batch_and_old_hits_are_trimmed_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let write = FleetWrite {
            bans: vec![ban("192.0.2.0/24")],
            ..FleetWrite::default()
        };
        store.commit_fleet(&[], &[], &[], &write, 100).unwrap();
        assert_eq!(store.bans(150).unwrap().len(), 1);
        let write = FleetWrite {
            unbans: vec![("192.0.2.0/24".parse().unwrap(), "lifted on mx3".into())],
            ..FleetWrite::default()
        };
        store.commit_fleet(&[], &[], &[], &write, 150).unwrap();
        assert!(store.bans(150).unwrap().is_empty());
        let mut outbox: Vec<(&'static str, String)> =
            (0..10).map(|i| ("hit", format!("h{i}"))).collect();
        outbox.insert(2, ("delivery", "d".into()));
        store.enqueue(&outbox).unwrap();
        assert_eq!(store.trim_outbox(3).unwrap(), 7);
        let kept: Vec<String> = store
            .outbox(0, 20)
            .unwrap()
            .into_iter()
            .map(|r| r.body)
            .collect();
        assert_eq!(kept, ["d", "h7", "h8", "h9"]);
    }
}
