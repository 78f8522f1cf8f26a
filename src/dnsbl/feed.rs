//! Keeps a [`List`] equal to the published bans in the state store.
//!
//! The store counts every change to its bans (`Store::bans_changes`), so a
//! poll that finds the count unchanged reads nothing else. When it moved,
//! the decisions recorded in the history since the last poll name the
//! targets that changed, and only those rows are read again and put into
//! the set (or taken out): a ban is answerable within one poll, without
//! rebuilding a set of millions. Only when that trail is broken (the first
//! poll, the history trimmed past the last entry read, a burst larger than
//! [`HISTORY_BATCH`], another `publish`) are all bans read again, into a new
//! set swapped in at once. Bans that end are not answered from their end
//! on (the set keeps each ban's end), and are dropped by a sweep every
//! [`SWEEP`].
//!
//! `nolist run` runs [`spawn`] with a connection of its own and the
//! writer's nudge, which it moves when a commit changed the bans: a ban the
//! engine decides is listed within milliseconds. `nolist serve` reopens
//! the store of `state_dir` at every poll, read-only (a store that does
//! not exist yet is an empty list).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::set::Builder;
use super::{List, Listing};
use crate::clock::unix_now;
use crate::store::{BanSummary, Store, StoreError};

/// History entries read at most in one poll; more, and all bans are read.
pub const HISTORY_BATCH: usize = 10_000;

/// How often ended bans are dropped from the set.
pub const SWEEP: Duration = Duration::from_secs(60);

/// How often a nudge is looked for.
const NUDGE_POLL: Duration = Duration::from_millis(20);

/// What the feed knows of the store.
#[derive(Debug, Default)]
pub struct Follower {
    /// The publish bits the set was read with.
    publish: u8,
    /// The store's change count when last read; `None`: read everything.
    changes: Option<i64>,
    /// The last history entry applied.
    history: i64,
    swept: Option<Instant>,
}

impl Follower {
    /// A follower that reads everything at its first sync.
    pub fn new() -> Follower {
        Follower::default()
    }

    /// Brings `list` up to date with `store` at `now`.
    pub fn sync(&mut self, store: &Store, list: &List, now: i64) -> Result<(), StoreError> {
        let publish = list.publish();
        if publish != self.publish {
            self.publish = publish;
            self.changes = None;
        }
        if publish == 0 {
            self.clear(list);
            return Ok(());
        }
        if self.swept.is_none_or(|t| t.elapsed() >= SWEEP) {
            self.swept = Some(Instant::now());
            let freed = {
                let mut set = list.write();
                set.sweep(now);
                set.take_freed()
            };
            give_back(freed);
        }
        let changes = store.bans_changes()?;
        if Some(changes) == self.changes {
            return Ok(());
        }
        if self.changes.is_some() && self.follow(store, list, now)? {
            self.changes = Some(changes);
            return Ok(());
        }
        let last = store.history_last()?;
        let mut builder = Builder::new();
        store.ban_summaries(now, |net, ban| {
            if List::publishes(publish, ban.source) {
                builder.push(net, listing(ban));
            }
        })?;
        let mut set = builder.finish();
        let freed = set.take_freed();
        let old = std::mem::replace(&mut *list.write(), set);
        let freed = freed + old.bytes();
        drop(old);
        give_back(freed);
        self.history = last;
        self.changes = Some(changes);
        Ok(())
    }

    /// Applies the targets the history names since the last entry read;
    /// false when the trail is broken and everything must be read.
    fn follow(&mut self, store: &Store, list: &List, now: i64) -> Result<bool, StoreError> {
        let rows = store.ban_history_after(self.history, HISTORY_BATCH)?;
        let Some(&(first, _)) = rows.first() else {
            // The count moved without a decision: ended bans removed
            // (already unanswered), unless the history went backwards
            // (another store in its place).
            return Ok(store.history_last()? >= self.history);
        };
        if first != self.history + 1 || rows.len() >= HISTORY_BATCH {
            return Ok(false);
        }
        // Each target once, with the ban it has now (read with the trail).
        let mut updates: Vec<(IpNet, Option<Listing>)> = rows
            .iter()
            .filter_map(|(_, t)| *t)
            .map(|(target, ban)| {
                let ban = ban.filter(|b| b.until > now && List::publishes(self.publish, b.source));
                (target, ban.map(listing))
            })
            .collect();
        updates.sort_unstable_by_key(|u| u.0);
        updates.dedup_by_key(|u| u.0);
        let mut set = list.write();
        for (target, listing) in updates {
            match listing {
                Some(l) => set.insert(target, l),
                None => set.remove(target),
            }
        }
        let freed = set.take_freed();
        drop(set);
        give_back(freed);
        self.history = rows.last().map_or(self.history, |r| r.0);
        Ok(true)
    }

    /// Empties `list` and forgets what was read.
    fn clear(&mut self, list: &List) {
        if !list.read().is_empty() {
            let old = std::mem::take(&mut *list.write());
            let freed = old.bytes();
            drop(old);
            give_back(freed);
        }
        self.changes = None;
    }
}

/// Freed set memory worth handing back to the system.
const GIVE_BACK: usize = 1 << 20;

/// Hands the heap's free pages back to the system after the set freed
/// `freed` bytes, if that is [`GIVE_BACK`] or more. glibc keeps large freed
/// blocks for reuse, so a set rebuilt or merged would otherwise leave the
/// process at its peak: `bench/dnsbl` measured 19.4 MiB of RSS per million
/// entries after the first read of 1,010,000 bans without this (and
/// without the [`Builder`]), 13.7 MiB with it, for a set of 11.9 MiB.
fn give_back(freed: usize) {
    if freed >= GIVE_BACK {
        crate::daemon::zones::release_freed_memory();
    }
}

fn listing(ban: BanSummary) -> Listing {
    Listing::new(ban.until, ban.hits, ban.offence)
}

/// How the feed reaches the store.
pub enum Access {
    /// A connection of its own (`nolist run`: the store exists).
    Open(Store),
    /// The store in this state directory, opened read-only at every poll
    /// (`nolist serve`: another process writes it, or nobody yet).
    Reopen(PathBuf),
}

/// Starts the feed thread: it syncs `list` every `every`, and at once when
/// `nudge` moves, until `shutdown`. Failures are logged, once each until
/// the feed works again; the list keeps what it had.
pub fn spawn(
    list: Arc<List>,
    access: Access,
    nudge: Option<Arc<AtomicU64>>,
    every: Duration,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let spawned = std::thread::Builder::new()
        .name("nolist-dnsbl".into())
        .spawn(move || {
            let mut follower = Follower::new();
            let mut logged: Option<String> = None;
            let mut nudged = nudge.as_ref().map(|n| n.load(Ordering::Acquire));
            let listed = metrics::gauge!(crate::metrics::DNSBL_LISTED);
            while !shutdown.is_cancelled() {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    poll(&mut follower, &access, &list)
                }))
                .unwrap_or_else(|_| {
                    Err("the DNSBL feed panicked; it goes on at the next poll".into())
                });
                #[allow(clippy::cast_precision_loss)] // a count of listings
                listed.set(list.read().len() as f64);
                match outcome {
                    Ok(()) => {
                        if logged.take().is_some() {
                            tracing::info!(
                                listed = list.read().len(),
                                "dnsbl: reading the bans again"
                            );
                        }
                    }
                    Err(message) if logged.as_ref() != Some(&message) => {
                        tracing::warn!("dnsbl: {message}");
                        logged = Some(message);
                    }
                    Err(_) => {}
                }
                let deadline = Instant::now() + every;
                while Instant::now() < deadline && !shutdown.is_cancelled() {
                    let now = nudge.as_ref().map(|n| n.load(Ordering::Acquire));
                    if now != nudged {
                        nudged = now;
                        break;
                    }
                    std::thread::sleep(
                        NUDGE_POLL.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
        });
    spawned.expect("the system refused to start a thread")
}

/// One sync through `access`; the error as the line to log.
fn poll(follower: &mut Follower, access: &Access, list: &List) -> Result<(), String> {
    if list.publish() == 0 {
        follower.clear(list);
        return Ok(());
    }
    let now = unix_now();
    match access {
        Access::Open(store) => follower.sync(store, list, now).map_err(|e| e.to_string()),
        Access::Reopen(dir) => match Store::open_read_only(dir) {
            Ok(store) => follower.sync(&store, list, now).map_err(|e| e.to_string()),
            Err(StoreError::Missing { path }) => {
                follower.clear(list);
                Err(format!(
                    "{}: no state store yet (`nolist run` or `nolist bans add` creates it); nothing is listed until there is one",
                    path.display()
                ))
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::store::{BanRecord, Source};

    const NOW: i64 = 1_800_000_000;

    fn ban(target: &str, until: i64, source: Source) -> BanRecord {
        BanRecord {
            target: crate::store::parse_target(target).unwrap(),
            since: NOW - 10,
            until,
            reason: "test".into(),
            hits: 3,
            offence: 1,
            source,
        }
    }

    fn listed(list: &List, ip: &str) -> bool {
        list.read()
            .lookup(ip.parse::<IpAddr>().unwrap(), NOW)
            .is_some()
    }

    #[test]
    fn follows_additions_and_removals_without_rereading() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .add_ban(&ban("192.0.2.1", NOW + 60, Source::Manual))
            .unwrap();
        let list = List::new();
        list.set_publish(super::super::ENGINE | super::super::MANUAL);
        let mut f = Follower::new();
        f.sync(&store, &list, NOW).unwrap();
        assert!(listed(&list, "192.0.2.1"));
        // A change followed through the history: the set is the same
        // object, with one more entry (a reread would build a new one, and
        // drop this marker entry that the store does not have).
        list.write().insert(
            "203.0.113.0/24".parse().unwrap(),
            Listing::new(NOW + 60, 0, 0),
        );
        store
            .add_ban(&ban("2001:db8::/64", NOW + 60, Source::Engine))
            .unwrap();
        f.sync(&store, &list, NOW).unwrap();
        assert!(listed(&list, "2001:db8::5"));
        assert!(listed(&list, "203.0.113.9"), "followed, not reread");
        store
            .remove_ban(
                &crate::store::parse_target("192.0.2.1").unwrap(),
                NOW,
                "by hand",
            )
            .unwrap();
        f.sync(&store, &list, NOW).unwrap();
        assert!(!listed(&list, "192.0.2.1"));
        // Another publish set reads everything again.
        list.set_publish(super::super::MANUAL);
        f.sync(&store, &list, NOW).unwrap();
        assert!(
            !listed(&list, "2001:db8::5"),
            "an engine ban, not published"
        );
        assert!(!listed(&list, "203.0.113.9"), "reread");
    }

    #[test]
    fn a_broken_trail_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let list = List::new();
        list.set_publish(super::super::ENGINE | super::super::MANUAL);
        let mut f = Follower::new();
        f.sync(&store, &list, NOW).unwrap();
        store
            .add_ban(&ban("192.0.2.1", NOW + 60, Source::Manual))
            .unwrap();
        // As if the history had been trimmed past what was read.
        f.history = -5;
        f.sync(&store, &list, NOW).unwrap();
        assert!(listed(&list, "192.0.2.1"));
        assert_eq!(f.history, store.history_last().unwrap());
    }

    #[test]
    fn nothing_published_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .add_ban(&ban("192.0.2.1", NOW + 60, Source::Manual))
            .unwrap();
        let list = List::new();
        list.set_publish(super::super::MANUAL);
        let mut f = Follower::new();
        f.sync(&store, &list, NOW).unwrap();
        assert!(listed(&list, "192.0.2.1"));
        list.set_publish(0);
        f.sync(&store, &list, NOW).unwrap();
        assert!(list.read().is_empty());
    }

    /// The writer's nudge makes a committed ban answerable within 100 ms,
    /// though the feed's own poll is a minute away.
    #[test]
    fn a_nudge_lists_a_ban_without_waiting_for_the_poll() {
        // The poll is a minute away: only the nudge can list the bans in
        // this test's (generous) time. How fast it is, bench/dnsbl says.
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Store::open(dir.path()).unwrap();
        let list = List::new();
        list.set_publish(super::super::ENGINE | super::super::MANUAL);
        let nudge = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let thread = spawn(
            list.clone(),
            Access::Open(Store::open(dir.path()).unwrap()),
            Some(nudge.clone()),
            Duration::from_secs(60),
            shutdown.clone(),
        );
        let now = unix_now();
        let listed = |ip: &str| list.read().lookup(ip.parse().unwrap(), now).is_some();
        for (i, ip) in ["192.0.2.1", "192.0.2.2", "2001:db8::3"].iter().enumerate() {
            // Past the first sync (which reads everything) and idle.
            std::thread::sleep(Duration::from_millis(100));
            writer.add_ban(&ban(ip, now + 600, Source::Engine)).unwrap();
            let committed = Instant::now();
            nudge.fetch_add(1, Ordering::Release);
            while !listed(ip) {
                assert!(
                    committed.elapsed() < Duration::from_secs(20),
                    "ban {i} not listed: the nudge was not taken"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        shutdown.cancel();
        thread.join().unwrap();
    }

    #[test]
    fn a_missing_store_is_an_empty_list_and_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let list = List::new();
        list.set_publish(super::super::ENGINE);
        let mut f = Follower::new();
        let err = poll(&mut f, &Access::Reopen(dir.path().join("none")), &list).unwrap_err();
        assert!(err.contains("no state store yet"), "{err}");
        assert!(list.read().is_empty());
    }
}
