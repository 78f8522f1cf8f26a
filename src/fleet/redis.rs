//! The fleet's engine on Redis 6.2 or later (tested with 7.0), or Valkey: the
//! [`Transport`] as one stream, a few compacted keys beside it, and small
//! Lua scripts that change them together.
//!
//! Keys, with prefix `P` (the `{P}` hash tag keeps them in one Redis
//! Cluster slot, so one script may touch them all):
//! - `{P}:events`: the stream. A message entry has `p` (payload), `n`
//!   (node) and `s` (seq) for a human reading `XRANGE`; a watermark entry
//!   `w` (time) and `n`. Trimmed by age (`keep`, on the server's clock, as
//!   the entry ids) and length (`max_events`);
//! - `{P}:events:trimmed`: the newest entry id trimmed away, and
//!   `{P}:events:origin`: the stream's first entry id. With them a reader
//!   learns that it missed entries ([`Read::Gap`]): Redis 7.0's
//!   `max-deleted-entry-id` counts XDEL only, not XTRIM, and a stream begun
//!   anew after a data loss has ids after every old cursor;
//! - `{P}:seq`: hash node → highest seq published (publishing is
//!   idempotent by it);
//! - `{P}:bans`, `{P}:bans:manual`: sorted sets target → until (engine
//!   bans, operators' bans), the latest expiry wins, pruned once ended;
//! - `{P}:deliveries`: sorted set network → last delivery, the latest wins,
//!   pruned below the caller's horizon;
//! - `{P}:watermarks`: hash node → watermark, only ever raised;
//! - `{P}:epoch`: a random value set once; another one means the engine
//!   lost its data;
//! - `{P}:nodes`, `{P}:nodes:until`: hash node → report JSON, sorted set
//!   node → expiry (ms, server clock).
//!
//! The scripts are files beside this one (`redis/*.lua`), each commented.
//! Two connections: one for commands, each bounded by a response timeout,
//! and one for the blocking wait of [`Transport::read`], so that a reader
//! waiting never holds up a publish. A connection that failed is dropped
//! and made anew on the next call: a restarted server is reconnected to
//! without help, and while it is down every call fails fast with
//! [`TransportError::Unreachable`].
//!
//! Memory: the engine's is bounded by the state in force plus the log's
//! trim; this side's by [`MAX_READ`] entries per read, values cut at
//! [`MAX_PAYLOAD`] + 1 bytes by the server, and [`CHUNK`] entries per
//! snapshot chunk.

mod wire;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisResult, Script, Value};
use tokio::sync::{Mutex, mpsc};

use super::event::MAX_PAYLOAD;
use super::transport::{Cursor, NodeReport, Publish, Read, StateEntry, Transport, TransportError};
pub use wire::StreamId;
use wire::{classify, gap};

/// The longest wait for a connection (TCP, TLS, AUTH) to be ready.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest wait for the answer to one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one call of the transport takes, beyond a read's own wait:
/// a connection, and a script sent twice (EVALSHA, then SCRIPT LOAD).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Entries of the compacted state per snapshot chunk (and per scan step).
pub const CHUNK: usize = 10_000;
/// The most entries one read returns, whatever the caller asks.
pub const MAX_READ: usize = 10_000;
/// A compacted state member longer than this (a target, a network, a node
/// name) is nothing nolist wrote: left out of snapshots.
const LONGEST_MEMBER: usize = 64;
/// Likewise for a score or a watermark.
const LONGEST_VALUE: usize = 32;
/// The most node reports returned, and the longest one.
const MAX_REPORTS: usize = 256;
const LONGEST_REPORT: usize = 64 * 1024;

/// The commands this transport sends, its scripts included, as an ACL
/// rule: an engine user limited to nolist's keys is
/// `ACL SETUSER nolist on >PASSWORD ~{PREFIX}:* resetchannels -@all`
/// followed by these (`select` for a URL naming a database other than 0).
pub const ACL_COMMANDS: &str = "+ping +select +eval +evalsha +script|load +xread +exists \
    +xinfo|stream +xrange +xrevrange +xlen +xadd +xtrim +hget +hset +hdel +hscan +zadd +zrem \
    +zremrangebyscore +zrangebyscore +zscan +set +get +time";

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/publish.lua")));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/read.lua")));
static SCAN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/scan.lua")));
static EPOCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/epoch.lua")));
static REPORT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/report.lua")));
static REPORTS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/reports.lua")));

/// The engine's key names for one prefix.
struct Keys {
    events: String,
    epoch: String,
    seq: String,
    bans: String,
    manual: String,
    deliveries: String,
    watermarks: String,
    trimmed: String,
    origin: String,
    nodes: String,
    nodes_until: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        let key = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            events: key("events"),
            epoch: key("epoch"),
            seq: key("seq"),
            bans: key("bans"),
            manual: key("bans:manual"),
            deliveries: key("deliveries"),
            watermarks: key("watermarks"),
            trimmed: key("events:trimmed"),
            origin: key("events:origin"),
            nodes: key("nodes"),
            nodes_until: key("nodes:until"),
        }
    }
}

/// One connection to the engine, made when first needed and made anew
/// after it failed.
struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    /// The connection and its generation, so that a call that saw an old
    /// one fail does not drop a newer one.
    slot: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
}

impl Link {
    fn new(client: Client, response_timeout: Option<Duration>) -> Link {
        Link {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(response_timeout),
            slot: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The connection, made now if there is none (at most one attempt at a
    /// time: callers meanwhile wait for its outcome).
    async fn get(&self) -> Result<(u64, MultiplexedConnection), TransportError> {
        let mut slot = self.slot.lock().await;
        if let Some((g, c)) = &*slot {
            return Ok((*g, c.clone()));
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| classify(&e))?;
        let g = self.generation.fetch_add(1, Ordering::Relaxed);
        *slot = Some((g, conn.clone()));
        Ok((g, conn))
    }

    /// Drops connection `g` if it is still the current one.
    async fn forget(&self, g: u64) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|(h, _)| *h == g) {
            *slot = None;
        }
    }

    /// Runs `f` on the connection within `limit`. After any failure the
    /// connection is dropped: the next call starts on a fresh one, which
    /// is how a restarted server is found again.
    async fn run<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, TransportError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let work = async {
            // A connection that could not be made has nothing to forget.
            let (g, conn) = self.get().await?;
            match f(conn).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    self.forget(g).await;
                    Err(classify(&e))
                }
            }
        };
        let outcome = tokio::time::timeout(limit, work).await;
        match outcome {
            Ok(r) => r,
            Err(_) => {
                // Whatever connection was in use may be stuck: drop it.
                *self.slot.lock().await = None;
                Err(TransportError::Unreachable(format!(
                    "no answer within {}s",
                    limit.as_secs()
                )))
            }
        }
    }
}

/// The fleet's engine on Redis or Valkey.
pub struct Redis {
    /// The URL without any password, for messages.
    url: String,
    prefix: String,
    keys: Keys,
    keep: Duration,
    max_events: u64,
    commands: Link,
    blocking: Link,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: only what the URL shows without one.
        f.debug_struct("Redis")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("keep", &self.keep)
            .field("max_events", &self.max_events)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A transport for `url` (`redis://[user@]host[:port][/db]`, or
    /// `rediss://` for TLS trusting the system's certificate authorities)
    /// with `password` if the engine wants one, keys under `prefix`, the
    /// log trimmed to `keep` and `max_events`. Nothing is sent yet: the
    /// first call connects, so a node starts while the engine is down.
    /// `Err(Refused)` only for a URL the client cannot use.
    pub fn connect(
        url: &str,
        password: Option<String>,
        prefix: &str,
        keep: Duration,
        max_events: u64,
    ) -> Result<Redis, TransportError> {
        Redis::connect_with_ca(url, password, prefix, keep, max_events, None)
    }

    /// Like [`Redis::connect`]; a `rediss://` URL trusts only `ca_pem` (PEM
    /// certificates) when given, instead of the system's authorities.
    pub fn connect_with_ca(
        url: &str,
        password: Option<String>,
        prefix: &str,
        keep: Duration,
        max_events: u64,
        ca_pem: Option<&[u8]>,
    ) -> Result<Redis, TransportError> {
        let shown = wire::redacted(url);
        let bad = |e: redis::RedisError| TransportError::Refused(format!("fleet.url {shown}: {e}"));
        let info = url.into_connection_info().map_err(bad)?;
        // No CLIENT SETINFO on connecting: an ACL user need not be allowed it.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        let info = info.set_redis_settings(settings);
        if url.starts_with("rediss://") {
            // rustls needs a crypto provider chosen once per process (one
            // may be in place already: providers/ installs the same).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match ca_pem {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(bad)?;
        Ok(Redis {
            url: shown.clone(),
            prefix: prefix.to_owned(),
            keys: Keys::new(prefix),
            keep,
            max_events,
            commands: Link::new(client.clone(), Some(RESPONSE_TIMEOUT)),
            blocking: Link::new(client, None),
        })
    }

    /// Runs `script` with `keys` and `args` on the command connection.
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, TransportError> {
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(*k);
        }
        for a in args {
            call.arg(*a);
        }
        self.commands
            .run(CALL_TIMEOUT, |mut c| async move {
                call.invoke_async(&mut c).await
            })
            .await
    }

    /// The stream's state and up to `max` entries after `at`, read in one
    /// step.
    async fn read_now(
        &self,
        at: StreamId,
        max: usize,
    ) -> Result<Option<(wire::StreamState, Vec<super::transport::Received>)>, TransportError> {
        let value: Value = self
            .script(
                &READ,
                &[&self.keys.events, &self.keys.trimmed, &self.keys.origin],
                &[
                    &at.to_string(),
                    &max.min(MAX_READ).to_string(),
                    &(MAX_PAYLOAD + 1).to_string(),
                ],
            )
            .await?;
        wire::read_reply(value).map_err(TransportError::Protocol)
    }

    /// Waits up to `wait` for an entry after `at` (a blocking XREAD on a
    /// connection of its own). What it returns is not used: entries are
    /// read again with the gap check, in one step.
    async fn wait_after(&self, at: StreamId, wait: Duration) -> Result<(), TransportError> {
        let ms = wait.as_millis().clamp(1, u128::from(u32::MAX)).to_string();
        let events = &self.keys.events;
        let at = at.to_string();
        self.blocking
            .run(wait + CALL_TIMEOUT, |mut c| async move {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(&ms)
                    .arg("STREAMS")
                    .arg(events)
                    .arg(&at)
                    .query_async::<Value>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }

    /// Scans one compacted key (`kind` "z" for a sorted set, "h" for a
    /// hash) into `buf`, sending a chunk to `chunks` whenever `buf` holds
    /// [`CHUNK`] entries.
    async fn scan_into(
        &self,
        (key, kind): (&str, &str),
        make: fn(String, i64) -> StateEntry,
        buf: &mut Vec<StateEntry>,
        chunks: &mpsc::Sender<Vec<StateEntry>>,
    ) -> Result<(), TransportError> {
        let (count, member, value) = (
            CHUNK.to_string(),
            LONGEST_MEMBER.to_string(),
            LONGEST_VALUE.to_string(),
        );
        let mut cursor = "0".to_owned();
        loop {
            let reply: Value = self
                .script(&SCAN, &[key], &[&cursor, &count, kind, &member, &value])
                .await?;
            let mut items = wire::strings(reply)
                .map_err(TransportError::Protocol)?
                .into_iter();
            cursor = String::from_utf8_lossy(&items.next().unwrap_or_default()).into_owned();
            while let (Some(m), Some(v)) = (items.next(), items.next()) {
                // Not text, or not a number: nothing nolist wrote; skipped.
                let (Ok(m), Some(v)) = (
                    String::from_utf8(m),
                    wire::integer(&String::from_utf8_lossy(&v)),
                ) else {
                    continue;
                };
                buf.push(make(m, v));
                if buf.len() >= CHUNK {
                    send(chunks, std::mem::take(buf)).await?;
                }
            }
            if cursor == "0" || cursor.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Hands a chunk to the snapshot's receiver.
async fn send(
    chunks: &mpsc::Sender<Vec<StateEntry>>,
    chunk: Vec<StateEntry>,
) -> Result<(), TransportError> {
    chunks
        .send(chunk)
        .await
        .map_err(|_| TransportError::Protocol("the snapshot's receiver is gone".into()))
}

/// A value for a new epoch: 128 bits from std's per-process random hash
/// keys, mixed with the time, the process and a counter (no extra crate,
/// no file to read; it only has to differ from the last one).
fn fresh_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (0..2)
        .map(|_| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u32(std::process::id());
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[async_trait]
impl Transport for Redis {
    async fn epoch(&self) -> Result<String, TransportError> {
        let value: Vec<u8> = self
            .script(&EPOCH, &[&self.keys.epoch], &[&fresh_epoch()])
            .await?;
        Ok(String::from_utf8_lossy(&value).into_owned())
    }

    async fn published(&self, node: &str) -> Result<u64, TransportError> {
        let key = &self.keys.seq;
        let value: Option<String> = self
            .commands
            .run(CALL_TIMEOUT, |mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(node)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match value {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| TransportError::Protocol(format!("seq of node {node} is {v:?}"))),
        }
    }

    async fn publish(&self, node: &str, step: &Publish) -> Result<u64, TransportError> {
        let k = &self.keys;
        let head = [
            node.to_owned(),
            step.now.to_string(),
            step.deliveries_since.to_string(),
            self.keep.as_millis().to_string(),
            self.max_events.to_string(),
            step.watermark.map(|w| w.to_string()).unwrap_or_default(),
        ];
        let messages: Vec<[String; 5]> = step.messages.iter().map(wire::message_args).collect();
        let args: Vec<&str> = head
            .iter()
            .chain(messages.iter().flatten())
            .map(String::as_str)
            .collect();
        self.script(
            &PUBLISH,
            &[
                &k.events,
                &k.seq,
                &k.bans,
                &k.manual,
                &k.deliveries,
                &k.watermarks,
                &k.trimmed,
                &k.origin,
            ],
            &args,
        )
        .await
    }

    async fn read(
        &self,
        cursor: &Cursor,
        max: usize,
        wait: Duration,
    ) -> Result<Read, TransportError> {
        // A cursor that is no stream id (a damaged local store) cannot say
        // what its reader saw: bootstrap. So for the highest id, after
        // which nothing can be read.
        let Some(at) = StreamId::parse(&cursor.0).filter(|id| id.ms < u64::MAX) else {
            return Ok(Read::Gap);
        };
        let answer = |got: Option<(wire::StreamState, _)>| match got {
            Some((state, entries)) if !gap(at, Some(state)) => Read::Entries(entries),
            None if !gap(at, None) => Read::Entries(Vec::new()),
            _ => Read::Gap,
        };
        let first = answer(self.read_now(at, max).await?);
        if !matches!(&first, Read::Entries(e) if e.is_empty()) || wait.is_zero() || max == 0 {
            return Ok(first);
        }
        self.wait_after(at, wait).await?;
        Ok(answer(self.read_now(at, max).await?))
    }

    async fn snapshot(
        &self,
        chunks: mpsc::Sender<Vec<StateEntry>>,
    ) -> Result<Cursor, TransportError> {
        // The cursor first: whatever is published while the state is read
        // is read again from the log afterwards (harmless: idempotent).
        let cursor = match self.read_now(StreamId::START, 0).await? {
            Some((state, _)) => state.last,
            None => StreamId::START,
        };
        let k = &self.keys;
        let mut buf = Vec::new();
        let keys: [(&str, &str, fn(String, i64) -> StateEntry); 4] = [
            (&k.bans, "z", StateEntry::Ban),
            (&k.manual, "z", StateEntry::ManualBan),
            (&k.deliveries, "z", StateEntry::Delivery),
            (&k.watermarks, "h", StateEntry::Watermark),
        ];
        for (key, kind, make) in keys {
            self.scan_into((key, kind), make, &mut buf, &chunks).await?;
        }
        if !buf.is_empty() {
            send(&chunks, buf).await?;
        }
        Ok(Cursor(cursor.to_string()))
    }

    async fn report(&self, report: &NodeReport, expire: Duration) -> Result<(), TransportError> {
        let _: Value = self
            .script(
                &REPORT,
                &[&self.keys.nodes, &self.keys.nodes_until],
                &[
                    &report.node,
                    &report.json,
                    &expire.as_millis().max(1).to_string(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn reports(&self) -> Result<Vec<NodeReport>, TransportError> {
        let reply: Value = self
            .script(
                &REPORTS,
                &[&self.keys.nodes, &self.keys.nodes_until],
                &[&MAX_REPORTS.to_string(), &LONGEST_REPORT.to_string()],
            )
            .await?;
        let mut items = wire::strings(reply)
            .map_err(TransportError::Protocol)?
            .into_iter();
        let mut out = Vec::new();
        while let (Some(node), Some(json)) = (items.next(), items.next()) {
            out.push(NodeReport {
                node: String::from_utf8_lossy(&node).into_owned(),
                json: String::from_utf8_lossy(&json).into_owned(),
            });
        }
        Ok(out)
    }
}
