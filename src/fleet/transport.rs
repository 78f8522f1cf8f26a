//! The engine a fleet shares, behind one small trait: Redis (or Valkey)
//! Streams today ([`super::redis`]), another log-structured engine (NATS
//! JetStream) later. The trait moves opaque, already encoded messages and
//! the compacted state; what a message means, and whether it is valid, is
//! [`super::event`]'s business, never the transport's.
//!
//! What an engine must offer:
//! - one totally ordered, replayable log of messages, read from a cursor,
//!   trimmed by age and length (a reader that fell behind the trim is told
//!   so: [`Read::Gap`]);
//! - idempotent publishing by `(node, seq)`: a message at or below the
//!   highest sequence number the engine holds for its node is dropped;
//! - a compacted state beside the log (bans in force with their expiry,
//!   delivering networks with their last delivery, each MTA node's
//!   watermark), updated in the same atomic step as the log, pruned by
//!   time, from which a joining node bootstraps;
//! - an epoch: an identity that changes when the engine lost its data.

use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use tokio::sync::mpsc;

/// Why the engine could not be used. Every variant is temporary from the
/// fleet's point of view: the node keeps working locally and retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The engine cannot be reached, or the connection broke.
    #[error("fleet engine unreachable: {0}")]
    Unreachable(String),
    /// The engine refused the credentials or the command (ACL).
    #[error("fleet engine refused: {0}")]
    Refused(String),
    /// The engine answered something this transport does not understand.
    #[error("fleet engine answered unexpectedly: {0}")]
    Protocol(String),
}

/// A position in the log (for Redis, a stream entry id such as
/// `1733250000000-0`). [`Cursor::START`] is before the first entry. Its
/// order is the text's, not the log's (`…-10` sorts before `…-9`): compare
/// cursors for equality only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cursor(pub String);

impl Cursor {
    /// Before every entry.
    pub const START: &'static str = "0-0";

    /// The cursor before every entry.
    pub fn start() -> Cursor {
        Cursor(Cursor::START.to_owned())
    }
}

/// What one published message changes in the compacted state, told to the
/// transport beside the opaque payload so that it never parses one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compact {
    /// Nothing (a decoy hit).
    Nothing,
    /// `network` delivered through a real MX at `at`: kept while newer than
    /// the prune horizon, the latest delivery wins.
    Delivery {
        /// The delivering network.
        network: IpNet,
        /// When (Unix seconds).
        at: i64,
    },
    /// `target` is banned until `until`; the latest expiry wins.
    Ban {
        /// The banned address or network.
        target: IpNet,
        /// When the ban ends (Unix seconds).
        until: i64,
        /// Put in place by an operator (`nolist bans add`).
        manual: bool,
    },
    /// The ban of `target` was lifted by an operator.
    Unban {
        /// The address or network.
        target: IpNet,
    },
}

/// One message of this node, to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// This node's sequence number of the message (1, 2, ...).
    pub seq: u64,
    /// The encoded message ([`super::event::encode`]).
    pub payload: String,
    /// Its effect on the compacted state.
    pub compact: Compact,
}

/// One publishing step: messages (in sequence order), then optionally this
/// node's watermark, which the engine appends after them (so a reader that
/// sees the watermark has seen every delivery published before it).
#[derive(Clone, Debug, Default)]
pub struct Publish {
    /// This node's messages, ascending `seq`.
    pub messages: Vec<Outgoing>,
    /// Log time up to which every delivery of this node is published.
    pub watermark: Option<i64>,
    /// Now (Unix seconds): bans that ended before it leave the compacted
    /// state, and entries older than the log's retention leave the log.
    pub now: i64,
    /// Deliveries older than this leave the compacted state.
    pub deliveries_since: i64,
}

/// One entry read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its position; reading on from here continues after it.
    pub cursor: Cursor,
    /// What it carries, as published (a message payload, or a watermark).
    pub body: ReceivedBody,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceivedBody {
    /// A message payload, unchecked (possibly hostile: decode and validate).
    Message(Vec<u8>),
    /// A node's watermark, unchecked.
    Watermark {
        /// The node as written in the entry.
        node: String,
        /// The time as written in the entry.
        at: String,
    },
    /// An entry of a shape this transport does not know.
    Unknown,
}

/// The answer to [`Transport::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// Entries after the cursor, in log order (none if `wait` passed).
    Entries(Vec<Received>),
    /// Entries after the cursor were trimmed before this reader saw them:
    /// it must bootstrap from the compacted state.
    Gap,
}

/// One entry of the compacted state, unchecked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEntry {
    /// An engine ban: target as written, expiry.
    Ban(String, i64),
    /// An operator's ban: target as written, expiry.
    ManualBan(String, i64),
    /// A delivering network as written, its last delivery.
    Delivery(String, i64),
    /// A node as written, its watermark.
    Watermark(String, i64),
}

/// A node's report of itself, kept by the engine for `nolist status` of
/// every node (opaque JSON to the transport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// The node.
    pub node: String,
    /// Its report.
    pub json: String,
}

/// The fleet's engine.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The engine's epoch, created if it has none: a different value than
    /// the one a node saw before means the engine lost its data.
    async fn epoch(&self) -> Result<String, TransportError>;

    /// The highest sequence number the engine holds for `node` (0 for
    /// none): lower than what the node published means data was lost.
    async fn published(&self, node: &str) -> Result<u64, TransportError>;

    /// Publishes `step` for `node` atomically: messages at or below the
    /// engine's sequence number for the node are skipped. Returns the
    /// engine's sequence number for the node afterwards.
    async fn publish(&self, node: &str, step: &Publish) -> Result<u64, TransportError>;

    /// Up to `max` entries after `cursor`, waiting at most `wait` for the
    /// first one.
    async fn read(
        &self,
        cursor: &Cursor,
        max: usize,
        wait: Duration,
    ) -> Result<Read, TransportError>;

    /// Sends the compacted state in chunks to `chunks` and returns the
    /// cursor to follow the log from afterwards (taken before the state is
    /// read, so nothing published meanwhile is missed; entries seen twice
    /// are harmless, since the state is idempotent).
    async fn snapshot(
        &self,
        chunks: mpsc::Sender<Vec<StateEntry>>,
    ) -> Result<Cursor, TransportError>;

    /// Stores this node's report (kept for `expire`).
    async fn report(&self, report: &NodeReport, expire: Duration) -> Result<(), TransportError>;

    /// Every node's latest report.
    async fn reports(&self) -> Result<Vec<NodeReport>, TransportError>;
}
