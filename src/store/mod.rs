//! The state store: one SQLite database in `state_dir` holding bans,
//! delivery memory, log checkpoints and a bounded history of decisions.
//!
//! WAL mode lets `nolist bans` and `nolist status` read (and change) it
//! while the daemon runs. Every change is one transaction; the schema is
//! versioned with `PRAGMA user_version` and migrated forward on open. The
//! commands that only read ([`Store::open_read_only`]) create, migrate and
//! write nothing. Only this module touches the state directory: the
//! database, and the served DNS serials ([`serials`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::bans::{Action, Decision};

mod fleet;
pub mod serials;

pub use fleet::{FleetState, FleetWrite, OutboxRow};

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "nolist.db";
/// Decisions kept in the history table.
pub const HISTORY_ROWS: i64 = 100_000;
/// Decisions kept at most while enforcement has not read them
/// ([`Store::keep_history_after`]): a fleet bootstrap writes millions in
/// seconds, and a trail trimmed before enforcement followed it makes
/// enforcement read every ban again, more than once.
pub const HISTORY_MOST: i64 = 2_500_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("{path}: cannot create the state directory: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// There is no database file.
    #[error(
        "no nolist store at {path} (`nolist run` or `nolist bans add` creates it; is state_dir or --state-dir right?)"
    )]
    Missing {
        /// The database.
        path: PathBuf,
    },
    /// The file is empty, or an SQLite database without nolist's tables.
    #[error(
        "{path} is not a nolist store (it is empty or has no nolist tables); `nolist run` or `nolist bans add` makes one"
    )]
    NotAStore {
        /// The database.
        path: PathBuf,
    },
    /// The database file could not be examined.
    #[error("{path}: {source}")]
    Io {
        /// The database.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The database was written by a newer nolist.
    #[error("{path}: schema version {found} is newer than this nolist understands ({known})")]
    TooNew {
        /// The database.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

/// Who put a ban in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The ban engine.
    Engine,
    /// An operator (`nolist bans add`).
    Manual,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Engine => "engine",
            Source::Manual => "manual",
        }
    }
}

/// One ban, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BanRecord {
    /// The banned address or network.
    pub target: IpNet,
    /// Since when (Unix seconds).
    pub since: i64,
    /// Until when (Unix seconds).
    pub until: i64,
    /// Why.
    pub reason: String,
    /// Decoy hits behind it.
    pub hits: u32,
    /// The how-manieth ban of this target.
    pub offence: u32,
    /// Engine or operator.
    pub source: Source,
}

/// What a published blocklist needs of a ban (`Store::ban_summaries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanSummary {
    /// Until when (Unix seconds).
    pub until: i64,
    /// Decoy hits behind it.
    pub hits: u32,
    /// The how-manieth ban of this target.
    pub offence: u32,
    /// Engine or operator.
    pub source: Source,
}

/// A row of `target, until, hits, offence, source`; `None` when the target
/// does not parse.
fn summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(IpNet, BanSummary)>> {
    Ok(ban_at(row, 0)?.and_then(|(net, ban)| Some((net, ban?))))
}

/// The columns `target, until, hits, offence, source` of `row` from
/// column `first` on: the target (`None` when it does not parse) and its
/// ban (`None` when `until` is NULL: an outer join found none).
fn ban_at(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<Option<(IpNet, Option<BanSummary>)>> {
    let net = match row.get_ref(first)? {
        rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<IpNet>().ok()),
        _ => None,
    };
    let Some(net) = net else {
        return Ok(None);
    };
    let Some(until) = row.get(first + 1)? else {
        return Ok(Some((net, None)));
    };
    let source = match row.get_ref(first + 4)? {
        rusqlite::types::ValueRef::Text(b"manual") => Source::Manual,
        _ => Source::Engine,
    };
    let ban = BanSummary {
        until,
        hits: row.get(first + 2)?,
        offence: row.get(first + 3)?,
        source,
    };
    Ok(Some((net, Some(ban))))
}

/// A history entry as [`Store::ban_history_after`] reads it: its number,
/// and the target it names with the ban on it now.
pub type Trailed = (i64, Option<(IpNet, Option<BanSummary>)>);

/// A row of `id, names a ban, target, until, hits, offence, source`.
fn trailed(row: &rusqlite::Row<'_>) -> rusqlite::Result<Trailed> {
    let id = row.get(0)?;
    if !row.get::<_, bool>(1)? {
        return Ok((id, None));
    }
    Ok((id, ban_at(row, 2)?))
}

/// Counts for `nolist status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Bans in force.
    pub active_bans: i64,
    /// Of which manual.
    pub manual_bans: i64,
    /// Networks with a remembered delivery.
    pub delivering_networks: i64,
    /// Networks exempt because one of their clients retried.
    pub retry_exempt_networks: i64,
    /// Decisions in the history.
    pub decisions: i64,
    /// The latest decisions, newest first.
    pub recent: Vec<HistoryRow>,
    /// Log checkpoints.
    pub checkpoints: Vec<CheckpointRow>,
}

/// One past decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// When.
    pub at: i64,
    /// `ban` or `unban`.
    pub action: String,
    /// What.
    pub target: String,
    /// Why.
    pub reason: String,
}

/// One log checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointRow {
    /// The log file.
    pub path: String,
    /// The tailer's state (JSON).
    pub state: String,
    /// When it was saved.
    pub updated: i64,
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The last history entry enforcement has read, when it follows the
    /// history (see [`Store::keep_history_after`]).
    followed: Option<Arc<AtomicI64>>,
}

/// Schema migrations; entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE bans (
        target  TEXT PRIMARY KEY,
        since   INTEGER NOT NULL,
        until   INTEGER NOT NULL,
        reason  TEXT NOT NULL,
        hits    INTEGER NOT NULL DEFAULT 0,
        offence INTEGER NOT NULL DEFAULT 1,
        source  TEXT NOT NULL
    );
    CREATE INDEX bans_until ON bans(until);
    CREATE TABLE deliveries (
        network TEXT PRIMARY KEY,
        last    INTEGER NOT NULL
    );
    CREATE TABLE checkpoints (
        path    TEXT PRIMARY KEY,
        state   TEXT NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE TABLE history (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        until   INTEGER,
        reason  TEXT NOT NULL
    );
",
    "
    -- What a backend without read-back (bans.enforce.command) applied.
    CREATE TABLE enforced (
        backend TEXT NOT NULL,
        target  TEXT NOT NULL,
        PRIMARY KEY (backend, target)
    );
",
    "
    -- Each client's engine ban count and when its latest ban ends, kept for
    -- bans.remember after that (escalation survives the ban's expiry and a
    -- restart).
    CREATE TABLE offences (
        target  TEXT PRIMARY KEY,
        offence INTEGER NOT NULL,
        until   INTEGER NOT NULL
    );
    INSERT INTO offences (target, offence, until)
        SELECT target, offence, until FROM bans WHERE source = 'engine';
",
    "
    -- Networks exempt from bans because one of their clients retried
    -- (bans.retry), with the time of that retry and the client; kept for
    -- bans.remember, like deliveries.
    CREATE TABLE retries (
        network TEXT PRIMARY KEY,
        at      INTEGER NOT NULL,
        client  TEXT NOT NULL
    );
",
    "
    -- How many times a row of bans was inserted, changed or deleted, kept
    -- by triggers in the writing transaction, whoever writes (the daemon,
    -- `nolist bans` in another process): enforcement reads this one row to
    -- know whether the bans changed, instead of reading them all whenever
    -- any table changed. (IF NOT EXISTS: a store taken back to an older
    -- version by hand keeps what it has.)
    CREATE TABLE IF NOT EXISTS bans_changes (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        n  INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO bans_changes (id, n) VALUES (0, 0);
    CREATE TRIGGER IF NOT EXISTS bans_inserted AFTER INSERT ON bans
        BEGIN UPDATE bans_changes SET n = n + 1; END;
    CREATE TRIGGER IF NOT EXISTS bans_updated AFTER UPDATE ON bans
        BEGIN UPDATE bans_changes SET n = n + 1; END;
    CREATE TRIGGER IF NOT EXISTS bans_deleted AFTER DELETE ON bans
        BEGIN UPDATE bans_changes SET n = n + 1; END;
",
    "
    -- The fleet (config `fleet`): this node's own messages not yet
    -- published (the outbox; AUTOINCREMENT keeps sequence numbers rising
    -- across processes and deletions), and the node's fleet state (last
    -- sequence number the engine acknowledged, engine epoch, log cursor,
    -- last sequence number applied per node, other nodes' reports).
    CREATE TABLE IF NOT EXISTS outbox (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS fleet_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
",
    "
    -- A fleet node bootstraps millions of bans: each one inserted at a
    -- random place of three large B-trees (bans, bans_until, offences) made
    -- a commit rewrite most of their pages. An engine ban now keeps its
    -- offence count in its own row while it is in force; the count goes to
    -- offences when the row leaves or is replaced, by triggers, whoever
    -- deletes it (expiry, an unban, `nolist bans remove`). Nothing needs
    -- the bans ordered by end any more: the index goes.
    DROP INDEX IF EXISTS bans_until;
    CREATE TRIGGER IF NOT EXISTS bans_offence_deleted AFTER DELETE ON bans
        WHEN OLD.source = 'engine'
        BEGIN
            INSERT INTO offences (target, offence, until) VALUES (OLD.target, OLD.offence, OLD.until)
            ON CONFLICT(target) DO UPDATE SET offence = max(offence, excluded.offence),
                until = max(until, excluded.until);
        END;
    CREATE TRIGGER IF NOT EXISTS bans_offence_replaced AFTER UPDATE ON bans
        WHEN OLD.source = 'engine'
        BEGIN
            INSERT INTO offences (target, offence, until) VALUES (OLD.target, OLD.offence, OLD.until)
            ON CONFLICT(target) DO UPDATE SET offence = max(offence, excluded.offence),
                until = max(until, excluded.until);
        END;
",
];

/// Puts the database in WAL mode. The switch of a new store takes an
/// exclusive lock, and SQLite answers BUSY at once, without the busy
/// timeout, when another connection reads at that moment (processes
/// opening a new store together): retried for up to 5 s.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// The schema version of the store at `path`, refused when it is newer
/// than this build knows.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    Ok(version)
}

impl Store {
    /// The database file of the store in `state_dir`.
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join(DB_FILE)
    }

    /// Opens (creating and migrating as needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        set_wal(&conn).map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        // Each step reads the version under the write lock (an immediate
        // transaction): another process opening the new store at the same
        // moment has either applied a migration or not begun it.
        while schema_version(&conn, &path)? < MIGRATIONS.len() as i64 {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql)?;
            let version = schema_version(&tx, &path)?;
            if let Some(migration) = MIGRATIONS.get(usize::try_from(version).unwrap_or(0)) {
                tx.execute_batch(migration).map_err(sql)?;
                tx.pragma_update(None, "user_version", version + 1)
                    .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
        }
        Ok(Store {
            conn,
            path,
            followed: None,
        })
    }

    /// Opens the store in `state_dir` for reading only (`nolist bans list`,
    /// `nolist status`): nothing is created, migrated or written, so a user
    /// who may only read it, or a read-only mount, can. A missing or empty
    /// file is an error, never a new store.
    ///
    /// SQLite reads a WAL database through its `-shm` index, which a
    /// reader would have to create when no writer has the store open. So a
    /// store at rest (no `-wal` file, which the last writer to close
    /// removes) is opened as immutable and needs no index; a live one is
    /// read through the daemon's WAL and index, seeing what it committed.
    /// (A writer that opens, writes and closes the store within the
    /// moment of one read can go unseen by that read.)
    pub fn open_read_only(state_dir: &Path) -> Result<Store, StoreError> {
        let path = Store::file(state_dir);
        let size = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path });
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        if size == 0 {
            return Err(StoreError::NotAStore { path });
        }
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let conn = if Path::new(&wal).exists() {
            Connection::open_with_flags(&path, flags)
        } else {
            Connection::open_with_flags(
                format!("file:{}?immutable=1", uri_path(&path)),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )
        }
        .map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        let version = schema_version(&conn, &path)?;
        if version == 0 {
            return Err(StoreError::NotAStore { path });
        }
        Ok(Store {
            conn,
            path,
            followed: None,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Puts a ban in place (replacing one on the same target).
    pub fn add_ban(&mut self, ban: &BanRecord) -> Result<(), StoreError> {
        in_tx(&mut self.conn, |tx| {
            upsert_ban(tx, ban)?;
            history(
                tx,
                ban.since,
                "ban",
                &ban.target.to_string(),
                Some(ban.until),
                &ban.reason,
            )
        })
        .map_err(|e| self.err(e))
    }

    /// Lifts the ban on `target`; false when there was none.
    pub fn remove_ban(
        &mut self,
        target: &IpNet,
        at: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        in_tx(&mut self.conn, |tx| {
            let removed = tx.execute(
                "DELETE FROM bans WHERE target = ?1",
                params![target.to_string()],
            )?;
            if removed > 0 {
                history(tx, at, "unban", &target.to_string(), None, reason)?;
            }
            Ok(removed > 0)
        })
        .map_err(|e| self.err(e))
    }

    /// Records the engine's decisions in one transaction.
    pub fn apply(&mut self, decisions: &[Decision]) -> Result<(), StoreError> {
        let floor = self.history_floor();
        in_tx(&mut self.conn, |tx| {
            apply_decisions(tx, decisions)?;
            trim_history(tx, floor)
        })
        .map_err(|e| self.err(e))
    }

    /// Trims the history this connection writes no further than entry
    /// `followed` (the last one enforcement read, moved as it reads; at
    /// most [`HISTORY_MOST`] entries kept): what enforcement has not read
    /// yet stays, so it follows the bans rather than read them all.
    pub fn keep_history_after(&mut self, followed: Arc<AtomicI64>) {
        self.followed = Some(followed);
    }

    /// The last history entry that trimming may remove for enforcement.
    fn history_floor(&self) -> i64 {
        self.followed
            .as_ref()
            .map_or(i64::MAX, |f| f.load(Ordering::Acquire))
    }

    /// The daemon's write: decisions, remembered deliveries and a log
    /// checkpoint, all in one transaction, so the checkpoint never runs
    /// ahead of what was recorded.
    pub fn commit(
        &mut self,
        decisions: &[Decision],
        deliveries: &[(IpNet, i64)],
        checkpoint: Option<(&str, &str)>,
        now: i64,
    ) -> Result<(), StoreError> {
        let floor = self.history_floor();
        in_tx(&mut self.conn, |tx| {
            commit_tx(tx, decisions, deliveries, checkpoint, now)?;
            trim_history(tx, floor)
        })
        .map_err(|e| self.err(e))
    }

    /// The bans in force at `now`, soonest to expire first.
    pub fn bans(&self, now: i64) -> Result<Vec<BanRecord>, StoreError> {
        self.bans_where("until > ?1", now, "ORDER BY until, target")
    }

    /// The bans of the rows that `condition` (with `?1` = `param`) selects,
    /// in the order `order` names (SQL).
    fn bans_where(
        &self,
        condition: &str,
        param: i64,
        order: &str,
    ) -> Result<Vec<BanRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT target, since, until, reason, hits, offence, source FROM bans WHERE {condition} {order}"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![param], |r| {
                let target: String = r.get(0)?;
                let source: String = r.get(6)?;
                Ok((
                    target,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    source,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (target, since, until, reason, hits, offence, source) =
                row.map_err(|e| self.err(e))?;
            // Rows this version did not write are skipped, not fatal.
            let Ok(target) = target.parse::<IpNet>() else {
                continue;
            };
            out.push(BanRecord {
                target,
                since,
                until,
                reason,
                hits,
                offence,
                source: if source == "manual" {
                    Source::Manual
                } else {
                    Source::Engine
                },
            });
        }
        Ok(out)
    }

    /// The engine's bans in force at `now` (what a restart gives back to
    /// the engine), without reading the operators' bans; in no order.
    pub fn engine_bans(&self, now: i64) -> Result<Vec<BanRecord>, StoreError> {
        self.bans_where("until > ?1 AND source = 'engine'", now, "")
    }

    /// Forgets bans that ended before `now`.
    pub fn expire(&mut self, now: i64) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM bans WHERE until <= ?1", params![now])
            .map_err(|e| self.err(e))
    }

    /// Offence counts of clients whose engine ban left the store (it
    /// ended, was lifted, or an operator's replaced it) and ends at or
    /// after `since`: target, count, end of that ban. A ban in force keeps
    /// its count in its own row ([`Store::engine_bans`]).
    pub fn offences(&self, since: i64) -> Result<Vec<(IpNet, u32, i64)>, StoreError> {
        let rows = self.net_rows(
            "SELECT target, offence, until FROM offences WHERE until >= ?1 ORDER BY target",
            since,
            |r| Ok((r.get::<_, u32>(1)?, r.get::<_, i64>(2)?)),
        )?;
        Ok(rows
            .into_iter()
            .map(|(net, (n, until))| (net, n, until))
            .collect())
    }

    /// Forgets offence counts whose latest ban ended before `before`.
    pub fn prune_offences(&mut self, before: i64) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM offences WHERE until < ?1", params![before])
            .map_err(|e| self.err(e))
    }

    /// Forgets deliveries older than `before` (they no longer clear anyone).
    pub fn prune_deliveries(&mut self, before: i64) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM deliveries WHERE last < ?1", params![before])
            .map_err(|e| self.err(e))
    }

    /// Networks exempt because a client retried at or after `since`, with
    /// the time of that retry.
    pub fn retries(&self, since: i64) -> Result<Vec<(IpNet, i64)>, StoreError> {
        self.net_rows(
            "SELECT network, at FROM retries WHERE at >= ?1",
            since,
            |r| r.get(1),
        )
    }

    /// Forgets retry exemptions older than `before`.
    pub fn prune_retries(&mut self, before: i64) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM retries WHERE at < ?1", params![before])
            .map_err(|e| self.err(e))
    }

    /// Networks that delivered at or after `since`, with their latest delivery.
    pub fn deliveries(&self, since: i64) -> Result<Vec<(IpNet, i64)>, StoreError> {
        self.net_rows(
            "SELECT network, last FROM deliveries WHERE last >= ?1",
            since,
            |r| r.get(1),
        )
    }

    /// The checkpoint of one log file.
    pub fn checkpoint(&self, path: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT state FROM checkpoints WHERE path = ?1",
                params![path],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Lets this connection keep up to `bytes` of the database in memory
    /// (SQLite's page cache, 2 MB by default; it grows only as pages are
    /// read). A connection that writes or looks up single bans among
    /// millions (a fleet bootstrap) otherwise reads most B-tree pages from
    /// the kernel again for each: three times slower at a million bans.
    pub fn cache(&self, bytes: usize) -> Result<(), StoreError> {
        let kib = i64::try_from(bytes / 1024).unwrap_or(i64::MAX);
        // Negative: a size in KiB rather than in pages.
        self.conn
            .pragma_update(None, "cache_size", -kib)
            .map_err(|e| self.err(e))
    }

    /// The targets of the bans in force at `now` and when each ends: what
    /// enforcement needs, without the rest of the record.
    pub fn ban_targets(&self, now: i64) -> Result<Vec<(IpNet, i64)>, StoreError> {
        self.net_rows(
            "SELECT target, until FROM bans WHERE until > ?1",
            now,
            |r| r.get(1),
        )
    }

    /// The rows of `sql` (one parameter, `?1`), whose first column is an
    /// address or network and the rest what `rest` reads. A row whose first
    /// column this nolist cannot parse is skipped, never guessed at.
    fn net_rows<T>(
        &self,
        sql: &str,
        param: i64,
        rest: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<(IpNet, T)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![param]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        // Parsed from SQLite's own buffer: no string per row (millions of
        // bans are read this way).
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let net = match row.get_ref(0).map_err(|e| self.err(e))? {
                rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.parse::<IpNet>().ok()),
                _ => None,
            };
            if let Some(net) = net {
                out.push((net, rest(row).map_err(|e| self.err(e))?));
            }
        }
        Ok(out)
    }

    /// Whether the database has the table `name` (a store of an older
    /// version opened read-only is not migrated).
    fn has_table(&self, name: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// What a published blocklist needs of every ban in force at `now`,
    /// given to `each` row by row (millions are read without holding
    /// their records). A row this nolist cannot parse is skipped.
    pub fn ban_summaries(
        &self,
        now: i64,
        mut each: impl FnMut(IpNet, BanSummary),
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT target, until, hits, offence, source FROM bans WHERE until > ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![now]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            if let Some(ban) = summary(row).map_err(|e| self.err(e))? {
                each(ban.0, ban.1);
            }
        }
        Ok(())
    }

    /// The ban and unban decisions recorded after history entry `after`,
    /// at most `limit`, oldest first: each entry's number and, for a ban or
    /// an unban, its target and the ban on that target now, if any (read
    /// in the same statement: one pass over the page, not a query per
    /// target). The first entry is not `after + 1` when the history was
    /// trimmed past it meanwhile; other entries (retry exemptions, and a
    /// target this nolist cannot read) keep their place with no target.
    pub fn ban_history_after(&self, after: i64, limit: usize) -> Result<Vec<Trailed>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT h.id, h.action IN ('ban', 'unban'), h.target, b.until, b.hits,
                        b.offence, b.source
                 FROM history h LEFT JOIN bans b ON b.target = h.target
                 WHERE h.id > ?1 ORDER BY h.id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let entry = trailed(row).map_err(|e| self.err(e))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// When the ban of `target` ends, if the store holds one (ended or
    /// not).
    pub fn ban_until(&self, target: &IpNet) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT until FROM bans WHERE target = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![target.to_string()], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// The last history entry (0 when there is none).
    pub fn history_last(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM history", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// How many bans are in force at `now` (engine and manual).
    pub fn count_bans(&self, now: i64) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached("SELECT count(*) FROM bans WHERE until > ?1")
            .and_then(|mut stmt| stmt.query_row([now], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// A number that changes whenever a ban is added, changed or removed,
    /// by this connection or another (see the `bans_changes` migration).
    pub fn bans_changes(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("SELECT n FROM bans_changes")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// SQLite's `data_version`: it changes when another connection commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "data_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// What the enforcement backend `backend` applied, as last saved.
    pub fn enforced(&self, backend: &str) -> Result<Vec<IpNet>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT target FROM enforced WHERE backend = ?1 ORDER BY target")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![backend], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            // A row this nolist cannot read is skipped, never guessed at.
            if let Ok(net) = row.map_err(|e| self.err(e))?.parse() {
                out.push(net);
            }
        }
        Ok(out)
    }

    /// Replaces what `backend` applied, in one transaction.
    pub fn set_enforced(&mut self, backend: &str, targets: &[IpNet]) -> Result<(), StoreError> {
        in_tx(&mut self.conn, |tx| {
            tx.execute("DELETE FROM enforced WHERE backend = ?1", params![backend])?;
            let mut insert =
                tx.prepare("INSERT OR IGNORE INTO enforced (backend, target) VALUES (?1, ?2)")?;
            for t in targets {
                insert.execute(params![backend, t.to_string()])?;
            }
            Ok(())
        })
        .map_err(|e| self.err(e))
    }

    /// Counts and recent history.
    pub fn status(&self, now: i64, recent: usize) -> Result<Status, StoreError> {
        let count = |sql: &str| -> Result<i64, StoreError> {
            self.conn
                .query_row(sql, params![now], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let mut status = Status {
            active_bans: count("SELECT count(*) FROM bans WHERE until > ?1")?,
            manual_bans: count("SELECT count(*) FROM bans WHERE until > ?1 AND source = 'manual'")?,
            delivering_networks: count("SELECT count(*) FROM deliveries WHERE ?1 IS NOT NULL")?,
            // A store of an older version, read without migrating, has none.
            retry_exempt_networks: if self.has_table("retries")? {
                count("SELECT count(*) FROM retries WHERE ?1 IS NOT NULL")?
            } else {
                0
            },
            decisions: count("SELECT count(*) FROM history WHERE ?1 IS NOT NULL")?,
            ..Status::default()
        };
        let mut stmt = self
            .conn
            .prepare("SELECT at, action, target, reason FROM history ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![recent as i64], |r| {
                Ok(HistoryRow {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    target: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            status.recent.push(row.map_err(|e| self.err(e))?);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT path, state, updated FROM checkpoints ORDER BY path")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CheckpointRow {
                    path: r.get(0)?,
                    state: r.get(1)?,
                    updated: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            status.checkpoints.push(row.map_err(|e| self.err(e))?);
        }
        Ok(status)
    }
}

fn apply_decisions(tx: &rusqlite::Transaction<'_>, decisions: &[Decision]) -> rusqlite::Result<()> {
    let mut rest = decisions;
    while let Some(d) = rest.first() {
        // Bans in runs of BAN_ROWS, one statement each; anything else, and
        // what is left of a run, one at a time.
        let run = rest.iter().take_while(|d| d.action == Action::Ban).count();
        let whole = run - run % BAN_ROWS;
        if whole > 0 {
            for chunk in rest[..whole].chunks_exact(BAN_ROWS) {
                insert_bans(tx, chunk)?;
            }
            rest = &rest[whole..];
        } else {
            apply_decision(tx, d)?;
            rest = &rest[1..];
        }
    }
    Ok(())
}

/// Engine bans stored by one statement, and their history by another: a
/// statement on `bans` (which has triggers) journals each page it changes
/// once, so one row per statement copied a page for every ban (a fleet
/// bootstrap stores millions).
const BAN_ROWS: usize = 64;

/// The upsert of a ban: an operator's ban of the target is kept (an
/// engine ban never replaces it).
const BAN_UPSERT: &str = "ON CONFLICT(target) DO UPDATE SET since = excluded.since, until = excluded.until,
    reason = excluded.reason, hits = excluded.hits, offence = excluded.offence, source = excluded.source
    WHERE bans.source <> 'manual' OR excluded.source = 'manual'";

/// [`BAN_ROWS`] engine bans (`chunk`, every one a ban) as [`apply_decision`]
/// stores them one by one.
fn insert_bans(tx: &rusqlite::Transaction<'_>, chunk: &[Decision]) -> rusqlite::Result<()> {
    static SQL: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
        let rows = |row: &str| vec![row; BAN_ROWS].join(", ");
        (
            format!(
                "INSERT INTO bans (target, since, until, reason, hits, offence, source) VALUES {} {BAN_UPSERT} RETURNING target",
                rows("(?, ?, ?, ?, ?, ?, 'engine')")
            ),
            format!(
                "INSERT INTO history (at, action, target, until, reason) VALUES {}",
                rows("(?, 'ban', ?, ?, ?)")
            ),
        )
    });
    let texts: Vec<String> = chunk
        .iter()
        .map(|d| IpNet::from(d.ip).to_string())
        .collect();
    let mut bans = tx.prepare_cached(&SQL.0)?;
    for (i, (d, text)) in chunk.iter().zip(&texts).enumerate() {
        let at = i * 6;
        bans.raw_bind_parameter(at + 1, text)?;
        bans.raw_bind_parameter(at + 2, d.at)?;
        bans.raw_bind_parameter(at + 3, d.until.unwrap_or(d.at))?;
        bans.raw_bind_parameter(at + 4, &d.reason)?;
        bans.raw_bind_parameter(at + 5, d.hits)?;
        bans.raw_bind_parameter(at + 6, d.offence)?;
    }
    // The rows written; a target missing here kept its operator's ban.
    let mut written = std::collections::HashSet::with_capacity(chunk.len());
    let mut rows = bans.raw_query();
    while let Some(row) = rows.next()? {
        written.insert(row.get::<_, String>(0)?);
    }
    drop(rows);
    drop(bans);
    for (d, text) in chunk.iter().zip(&texts) {
        if !written.contains(text) {
            record_offence(tx, text, d.offence, d.until.unwrap_or(d.at))?;
        }
    }
    let mut history = tx.prepare_cached(&SQL.1)?;
    for (i, (d, text)) in chunk.iter().zip(&texts).enumerate() {
        let at = i * 4;
        history.raw_bind_parameter(at + 1, d.at)?;
        history.raw_bind_parameter(at + 2, text)?;
        history.raw_bind_parameter(at + 3, d.until)?;
        history.raw_bind_parameter(at + 4, &d.reason)?;
    }
    history.raw_execute().map(drop)
}

/// One decision.
fn apply_decision(tx: &rusqlite::Transaction<'_>, d: &Decision) -> rusqlite::Result<()> {
    let target = IpNet::from(d.ip);
    match d.action {
        Action::Ban => {
            let text = target.to_string();
            let ban = BanRecord {
                target,
                since: d.at,
                until: d.until.unwrap_or(d.at),
                reason: d.reason.clone(),
                hits: d.hits,
                offence: d.offence,
                source: Source::Engine,
            };
            // The count is in the ban's row while it is in force (see
            // the last migration); an operator's ban of the target keeps
            // its row, so the count goes straight to offences.
            if upsert_ban(tx, &ban)? == 0 {
                record_offence(tx, &text, ban.offence, ban.until)?;
            }
            history(tx, d.at, "ban", &text, d.until, &d.reason)?;
        }
        Action::Unban => {
            cached(
                tx,
                "DELETE FROM bans WHERE target = ?1 AND source = 'engine'",
                params![target.to_string()],
            )?;
            history(tx, d.at, "unban", &target.to_string(), None, &d.reason)?;
        }
        Action::RetryExempt => {
            let network = d.network.unwrap_or(target).to_string();
            cached(tx,

                "INSERT INTO retries (network, at, client) VALUES (?1, ?2, ?3)
                 ON CONFLICT(network) DO UPDATE SET at = max(at, excluded.at), client = excluded.client",
                params![network, d.at, d.ip.to_string()],
            )?;
            history(tx, d.at, "retry", &network, d.until, &d.reason)?;
        }
    }
    Ok(())
}

/// Runs `f` in one transaction: all of it is committed, or none.
/// The engine's batch: its decisions, the deliveries to remember, and the
/// checkpoint of the log lines behind them.
fn commit_tx(
    tx: &rusqlite::Transaction<'_>,
    decisions: &[Decision],
    deliveries: &[(IpNet, i64)],
    checkpoint: Option<(&str, &str)>,
    now: i64,
) -> rusqlite::Result<()> {
    apply_decisions(tx, decisions)?;
    for (net, at) in deliveries {
        cached(
            tx,
            "INSERT INTO deliveries (network, last) VALUES (?1, ?2)
             ON CONFLICT(network) DO UPDATE SET last = max(last, excluded.last)",
            params![net.to_string(), at],
        )?;
    }
    if let Some((path, state)) = checkpoint {
        cached(
            tx,
            "INSERT INTO checkpoints (path, state, updated) VALUES (?1, ?2, ?3)
             ON CONFLICT(path) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            params![path, state, now],
        )?;
    }
    Ok(())
}

fn in_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.transaction()?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Raises the remembered offence count of `target` (never lowers it).
fn record_offence(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    offence: u32,
    until: i64,
) -> rusqlite::Result<()> {
    cached(
        tx,
        "INSERT INTO offences (target, offence, until) VALUES (?1, ?2, ?3)
         ON CONFLICT(target) DO UPDATE SET offence = max(offence, excluded.offence),
             until = max(until, excluded.until)",
        params![target, offence, until],
    )
    .map(drop)
}

/// Inserts or replaces the ban on its target, unless that would replace
/// an operator's ban with the engine's; returns the rows written (0 or 1).
fn upsert_ban(tx: &rusqlite::Transaction<'_>, ban: &BanRecord) -> rusqlite::Result<usize> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO bans (target, since, until, reason, hits, offence, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {BAN_UPSERT}"
        )
    });
    cached(
        tx,
        &SQL,
        params![
            ban.target.to_string(),
            ban.since,
            ban.until,
            ban.reason,
            ban.hits,
            ban.offence,
            ban.source.as_str()
        ],
    )
}

fn history(
    tx: &rusqlite::Transaction<'_>,
    at: i64,
    action: &str,
    target: &str,
    until: Option<i64>,
    reason: &str,
) -> rusqlite::Result<()> {
    cached(
        tx,
        "INSERT INTO history (at, action, target, until, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, action, target, until, reason],
    )
    .map(drop)
}

/// Runs `sql` through the connection's statement cache: the writer runs
/// the same few statements for every ban, and preparing one costs more than
/// running it (a bootstrap stores millions).
fn cached(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

/// Keeps the history bounded: the last [`HISTORY_ROWS`] entries, and
/// those after entry `floor` up to [`HISTORY_MOST`].
fn trim_history(tx: &rusqlite::Transaction<'_>, floor: i64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM history WHERE id <= (SELECT max(min(last - ?1, ?2), last - ?3)
             FROM (SELECT max(id) AS last FROM history))",
        params![HISTORY_ROWS, floor, HISTORY_MOST],
    )
    .map(drop)
}

/// `path` for an SQLite `file:` URI: every byte but letters, digits and
/// `/-._~` percent-encoded (so `?`, `#` and `%` in a directory name stay
/// part of the path).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a ban target: an address (`/32`, `/128`) or a network with zero host bits.
pub fn parse_target(text: &str) -> Result<IpNet, crate::config::value::CidrError> {
    text.parse::<crate::config::Cidr>().map(|c| c.0)
}

/// The address a target stands for when it is a single host.
pub fn host_of(target: &IpNet) -> Option<IpAddr> {
    (target.prefix_len() == target.max_prefix_len()).then(|| target.addr())
}

#[cfg(test)]
mod tests;
