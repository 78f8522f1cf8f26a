//! A fleet node's part of `nolist run` (config `fleet`). `crate::fleet` has
//! the message format, the transport and the gate; `docs/fleet.md` the
//! design and its trade-offs.
//!
//! - The engine task holds a [`Node`]: it turns this node's evidence and
//!   engine bans into outbox messages, committed by the writer in the same
//!   transaction as the batch they came with (local first); it applies
//!   other nodes' messages; and it keeps the gate, the engine's judge limit.
//! - The publisher thread sends the outbox to the engine in sequence order,
//!   then this node's watermark (an MTA node's: how far its logs are read
//!   and committed). When the engine lost data (a new epoch, or it holds a
//!   lower sequence number than it acknowledged) it queues this node's bans
//!   and remembered deliveries again. It also keeps the fleet's reports.
//! - The consumer task reads the shared log from the cursor kept in the
//!   store, checks every entry, drops its own and repeated ones, and hands
//!   the rest to the engine task; it bootstraps from the compacted state
//!   when it has no cursor, fell behind the trim, or the epoch changed,
//!   handing the state over part by part as it is read. The engine task
//!   takes a part's IPv4 engine bans over at once and passes them to
//!   enforcement ahead of the store, and, once the state is read, to the
//!   writer sorted by address (`Node::take_state`, `Node::state_read`).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::sinks::Ahead;
use super::sources::{Evidence, Origin};
use super::writer::{AdoptedBans, Write, Writer};
use crate::bans::policy::network_of;
use crate::bans::{Action, Decision, Engine};
use crate::clock::unix_now;
use crate::config::provider::Secret;
use crate::config::value::MAX_BAN;
use crate::config::{Config, Fleet, NodeName};
use crate::fleet::event::{self, BanSource, Body, Message, Skip};
use crate::fleet::gate::Gate;
use crate::fleet::transport::{
    Compact, Cursor, NodeReport, Outgoing, Publish, Read, ReceivedBody, StateEntry, Transport,
    TransportError,
};
use crate::store::{BanRecord, FleetState, FleetWrite, Source, Store};
use crate::watch::Kind;

/// Outbox messages per publish.
const PUBLISH_BATCH: usize = 2000;
/// Log entries per read.
const READ_BATCH: usize = 2000;
/// Compacted-state entries per hand-over to the engine task: with its
/// queue of [`FLEET_BACKLOG`](super::lifecycle) hand-overs, what waits for
/// the engine during a bootstrap stays a few megabytes.
const STATE_PART: usize = 2000;
/// The longest a read waits for the first entry.
const READ_WAIT: Duration = Duration::from_secs(1);
/// An MTA node's watermark is published at least this often (it is also
/// how the others know the node is alive).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often this node reports itself and reads the fleet's reports.
const REPORT: Duration = Duration::from_secs(5);
/// Reports are kept this long by the engine (a node gone for longer
/// disappears from `status`).
const REPORT_KEPT: Duration = Duration::from_secs(7 * 86_400);
/// Waits between attempts while the engine is unreachable.
const RETRY: Duration = Duration::from_secs(1);
/// Decoy hits kept in the outbox while the engine is away; older ones go.
const OUTBOX_HITS: u64 = 1_000_000;

/// What the writer, the engine task and the fleet's tasks share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// This node's watermark as committed (0: none yet).
    pub watermark: AtomicI64,
    /// Wakes the publisher after a commit that queued messages.
    pub wake: Notify,
    /// Judgements held back by the gate.
    pub held_back: AtomicUsize,
    /// How far the consumer is behind the shared log, in seconds.
    pub lag: AtomicI64,
    /// The last bootstrap whose bans the writer has stored (see
    /// [`super::sinks::Ahead`]).
    pub bootstrapped: Arc<AtomicU64>,
}

/// One thing another node said, in log order.
#[derive(Debug)]
pub(crate) enum Item {
    /// A message.
    Message(Message),
    /// An MTA node's watermark.
    Watermark(NodeName, i64),
}

/// What the consumer hands the engine task.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Entries of the shared log, the cursor after them, and the last
    /// sequence number now applied per node.
    Batch {
        items: Vec<Item>,
        cursor: String,
        applied: Vec<(String, u64)>,
    },
    /// Part of the compacted state (bootstrap), checked, as it is read.
    State(Vec<Item>),
    /// The end of the compacted state (read whole or not).
    StateEnd,
}

/// The engine task's part of a step for the fleet.
#[derive(Debug, Default)]
pub(crate) struct FleetStep {
    /// What the writer commits besides the engine's batch.
    pub write: FleetWrite,
    /// Other nodes' engine bans taken over (not published again).
    pub adopted: Vec<Decision>,
    /// This node's watermark after the batch, when it moved.
    pub watermark: Option<i64>,
    /// A bootstrap's IPv4 engine bans, once it is read: for the writer as
    /// one [`Write::Adopted`].
    pub adopt: Option<Adopt>,
}

/// What a bootstrap took over of the compacted state's IPv4 engine bans.
#[derive(Debug)]
pub(crate) struct Adopt {
    pub bootstrap: u64,
    /// Address and end, sorted by address.
    pub bans: AdoptedBans,
    /// Those the engine lifted (or banned anew) while the state was read,
    /// which enforcement had ahead of the store: for it to enforce as the
    /// store has them.
    pub recheck: Vec<IpAddr>,
}

/// The bootstrap the engine task is taking over (its number is
/// `Node::bootstraps`).
#[derive(Debug)]
struct Adopting {
    /// The IPv4 engine bans taken over: address and end, as read.
    bans: Vec<(u32, i64)>,
    /// Whether `bans` is sorted.
    sorted: bool,
}

impl FleetStep {
    /// Whether there is nothing for the writer.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty()
            && self.adopted.is_empty()
            && self.watermark.is_none()
            && self.adopt.is_none()
    }
}

/// The fleet as the engine task sees it.
pub(crate) struct Node {
    me: NodeName,
    gate: Gate,
    /// This node's logs and how far each is read (an MTA node's).
    logs: HashMap<String, i64>,
    log_count: usize,
    silent: BTreeSet<NodeName>,
    v4: u8,
    v6: u8,
    shared: Arc<Shared>,
    received: metrics::Counter,
    refused: metrics::Counter,
    /// Where a bootstrap's bans go ahead of the store (the configured
    /// backend's enforcement), bootstraps so far, and the one being read.
    ahead: Option<std::sync::mpsc::SyncSender<Ahead>>,
    bootstraps: u64,
    adopting: Option<Adopting>,
}

impl Node {
    /// The engine task's fleet state for `config` (which has a fleet).
    pub fn new(config: &Config, fleet: &Fleet, shared: Arc<Shared>) -> Node {
        Node {
            me: fleet.node.clone(),
            gate: Gate::new(fleet, unix_now()),
            logs: HashMap::new(),
            log_count: config.mta.logs.len(),
            silent: BTreeSet::new(),
            v4: config.bans.networks.ipv4.0,
            v6: config.bans.networks.ipv6.0,
            shared,
            received: metrics::counter!(crate::metrics::FLEET_MESSAGES, "direction" => "received"),
            refused: metrics::counter!(crate::metrics::FLEET_REFUSED),
            ahead: None,
            bootstraps: 0,
            adopting: None,
        }
    }

    /// Hands a bootstrap's bans to enforcement through `ahead` as they are
    /// taken over, before the writer stores them.
    pub fn with_ahead(mut self, ahead: std::sync::mpsc::SyncSender<Ahead>) -> Node {
        self.ahead = Some(ahead);
        self
    }

    /// Where bans go ahead of the store, if anywhere.
    pub fn ahead(&self) -> Option<std::sync::mpsc::SyncSender<Ahead>> {
        self.ahead.clone()
    }

    /// The IPv4 engine bans of the bootstrap being read (sorted), which
    /// the store does not hold yet.
    pub fn adopting(&mut self) -> &[(u32, i64)] {
        match self.adopting.as_mut() {
            Some(a) => {
                if !a.sorted {
                    a.bans.sort_unstable();
                    a.sorted = true;
                }
                &a.bans
            }
            None => &[],
        }
    }

    /// This node's evidence, as messages for the outbox; an MTA node's
    /// log progress moves its own watermark.
    pub fn local(&mut self, evidence: &Evidence, now: i64, step: &mut FleetStep) {
        for e in evidence.events.iter().filter(|e| event::is_client(e.ip)) {
            let body = match e.kind {
                Kind::DecoyHit => Body::Hit {
                    ip: e.ip,
                    at: e.at,
                    seen: e.seen,
                },
                Kind::Delivery => Body::Delivery { ip: e.ip, at: e.at },
            };
            step.write
                .outbox
                .push((body.kind(), event::encode_body(&body)));
        }
        if let Origin::Log {
            path,
            read_to: Some(at),
            ..
        } = &evidence.origin
        {
            self.logs.insert(path.clone(), *at);
            if self.logs.len() >= self.log_count
                && let Some(low) = self.logs.values().min().copied()
            {
                self.gate.mark(&self.me, low, now);
                step.watermark = Some(low);
            }
        }
    }

    /// This engine's bans, as messages for the outbox.
    pub fn decided(&self, decisions: &[Decision], step: &mut FleetStep) {
        for d in decisions.iter().filter(|d| d.action == Action::Ban) {
            let body = Body::Ban {
                target: IpNet::from(d.ip),
                until: d.until.unwrap_or(d.at),
                hits: d.hits,
                offence: d.offence,
                source: BanSource::Engine,
            };
            step.write.outbox.push(("ban", event::encode_body(&body)));
        }
    }

    /// Applies what the consumer brought: evidence to the engine (its
    /// decisions into `decisions`), bans and unbans to the step.
    pub fn apply(
        &mut self,
        engine: &mut Engine,
        inbound: Inbound,
        now: i64,
        decisions: &mut Vec<Decision>,
        deliveries: &mut Vec<(IpNet, i64)>,
        step: &mut FleetStep,
    ) {
        let items = match inbound {
            Inbound::Batch {
                items,
                cursor,
                applied,
            } => {
                step.write.cursor = Some(cursor);
                step.write.applied.extend(applied);
                items
            }
            Inbound::State(items) => {
                return self.take_state(engine, items, now, decisions, deliveries, step);
            }
            Inbound::StateEnd => return self.state_read(engine, step),
        };
        for item in items {
            self.item(engine, item, now, decisions, deliveries, step);
        }
    }

    /// Takes over a part of the compacted state: the IPv4 engine bans (all
    /// but a few of a large state) are the engine's at once, go to
    /// enforcement ahead of the store and wait for the end of the state to
    /// be stored in address order (see [`state_read`](Node::state_read));
    /// the rest is applied as messages are.
    fn take_state(
        &mut self,
        engine: &mut Engine,
        items: Vec<Item>,
        now: i64,
        decisions: &mut Vec<Decision>,
        deliveries: &mut Vec<(IpNet, i64)>,
        step: &mut FleetStep,
    ) {
        if self.adopting.is_none() {
            self.bootstraps += 1;
            self.adopting = Some(Adopting {
                bans: Vec::new(),
                sorted: true,
            });
        }
        let bootstrap = self.bootstraps;
        let from = state_node();
        let mut ahead = Vec::new();
        for item in items {
            let Some((addr, until)) = compact_ban(&item) else {
                self.item(engine, item, now, decisions, deliveries, step);
                continue;
            };
            self.received.increment(1);
            let ip = IpAddr::V4(addr);
            if !self.admits(engine, &from, &IpNet::from(ip), until, now)
                || !engine.adopt_ban(ip, until, 0, 1)
            {
                continue;
            }
            if let Some(adopting) = self.adopting.as_mut() {
                adopting.bans.push((u32::from(addr), until));
                adopting.sorted = false;
            }
            ahead.push((ip, until));
        }
        if ahead.is_empty() {
            return;
        }
        if let Some(tx) = &self.ahead {
            match tx.try_send(Ahead::Bans {
                bootstrap,
                hosts: ahead,
            }) {
                Ok(()) => {}
                // Enforcement is behind: these come through the store.
                Err(std::sync::mpsc::TrySendError::Full(_)) => {
                    tracing::debug!(
                        "fleet: enforcement is behind the bootstrap; a part waits for the store"
                    );
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => self.ahead = None,
            }
        }
    }

    /// The compacted state is read: what was taken over goes to the writer,
    /// sorted by address; a ban the engine no longer holds as it took it
    /// over (lifted, expired or banned anew meanwhile) is left out and
    /// rechecked by enforcement. Sorted first, so the engine's table is
    /// looked up in address order (millions, each near the last).
    fn state_read(&mut self, engine: &Engine, step: &mut FleetStep) {
        let Some(Adopting { mut bans, .. }) = self.adopting.take().filter(|a| !a.bans.is_empty())
        else {
            return;
        };
        bans.sort_unstable();
        let mut recheck = Vec::new();
        bans.retain(|&(addr, until)| {
            let ip = IpAddr::V4(addr.into());
            let held = engine.ban_until(ip) == Some(until);
            if !held {
                recheck.push(ip);
            }
            held
        });
        tracing::info!(
            bans = bans.len(),
            changed = recheck.len(),
            "fleet: the compacted state's bans are taken over; the store records them"
        );
        step.adopt = Some(Adopt {
            bootstrap: self.bootstraps,
            bans: Arc::new(bans),
            recheck,
        });
    }

    /// Whether a ban of `target` from `node` until `until` may be taken
    /// over here: still in force, and not of a network a local list
    /// covers (refused, counted and logged).
    fn admits(
        &self,
        engine: &Engine,
        node: &NodeName,
        target: &IpNet,
        until: i64,
        now: i64,
    ) -> bool {
        if until <= now {
            return false;
        }
        if engine.protects(target) {
            self.refused.increment(1);
            tracing::warn!(%node, %target, "fleet: refused a ban of a network bans.ignore, bans.allow or a planned MX covers here");
            return false;
        }
        true
    }

    /// Applies one item of the shared log or the compacted state.
    fn item(
        &mut self,
        engine: &mut Engine,
        item: Item,
        now: i64,
        decisions: &mut Vec<Decision>,
        deliveries: &mut Vec<(IpNet, i64)>,
        step: &mut FleetStep,
    ) {
        match item {
            Item::Watermark(node, at) => {
                if self.gate.mark(&node, at, now) {
                    tracing::info!(%node, "fleet: MTA node's watermark moves again");
                }
            }
            Item::Message(m) => {
                self.received.increment(1);
                self.message(engine, m, now, decisions, deliveries, step);
            }
        }
    }

    fn message(
        &mut self,
        engine: &mut Engine,
        m: Message,
        now: i64,
        decisions: &mut Vec<Decision>,
        deliveries: &mut Vec<(IpNet, i64)>,
        step: &mut FleetStep,
    ) {
        let node = m.node;
        match m.body {
            Body::Hit { ip, at, seen } => engine.hit_seen(ip, at, seen, decisions),
            Body::Delivery { ip, at } => {
                engine.delivery(ip, at, decisions);
                deliveries.push((network_of(ip, self.v4, self.v6), at));
            }
            Body::Ban {
                target,
                until,
                hits,
                offence,
                source,
            } => {
                if !self.admits(engine, &node, &target, until, now) {
                    return;
                }
                let host = crate::store::host_of(&target);
                match (source, host) {
                    (BanSource::Engine, Some(ip)) => {
                        if engine.adopt_ban(ip, until, hits, offence) {
                            step.adopted
                                .push(adopted(ip, now, until, hits, offence, &node));
                        }
                    }
                    _ => {
                        let manual = source == BanSource::Manual;
                        step.write.bans.push(BanRecord {
                            target,
                            since: now,
                            until,
                            reason: if manual {
                                format!("banned by hand on fleet node {node}")
                            } else {
                                format!("banned by fleet node {node}")
                            },
                            hits,
                            offence,
                            source: if manual {
                                Source::Manual
                            } else {
                                Source::Engine
                            },
                        });
                    }
                }
            }
            Body::Unban { target } => {
                if let Some(ip) = crate::store::host_of(&target) {
                    engine.forget_ban(ip);
                }
                step.write
                    .unbans
                    .push((target, format!("lifted by hand on fleet node {node}")));
            }
        }
    }

    /// Sets the engine's judge limit from the gate; logs MTA nodes that go
    /// silent.
    pub fn gate(&mut self, engine: &mut Engine, now: i64) {
        engine.set_judge_limit(self.gate.limit(now));
        let silent: BTreeSet<NodeName> = self.gate.silent(now).into_iter().collect();
        for node in silent.difference(&self.silent) {
            tracing::warn!(%node, "fleet: MTA node is silent (its watermark has not moved for fleet.silent_after); new bans wait for it");
        }
        self.silent = silent;
        self.shared
            .held_back
            .store(engine.held_back(), Ordering::Relaxed);
    }

    /// Exports the gate's state.
    pub fn export(&self, now: i64) {
        metrics::gauge!(crate::metrics::FLEET_HELD_BACK)
            .set(self.shared.held_back.load(Ordering::Relaxed) as f64);
        for (node, mark) in self.gate.marks() {
            if mark.at > 0 {
                metrics::gauge!(crate::metrics::FLEET_WATERMARK_LAG, "node" => node.to_string())
                    .set((now - mark.at) as f64);
            }
        }
    }
}

/// The address and end of an item that is an engine ban of one IPv4
/// address as the compacted state has them (no hits, first offence).
fn compact_ban(item: &Item) -> Option<(std::net::Ipv4Addr, i64)> {
    match item {
        Item::Message(Message {
            body:
                Body::Ban {
                    target: IpNet::V4(net),
                    until,
                    hits: 0,
                    offence: 1,
                    source: BanSource::Engine,
                },
            ..
        }) if net.prefix_len() == 32 => Some((net.addr(), *until)),
        _ => None,
    }
}

/// An engine ban of another node, as this engine's decision.
pub(crate) fn adopted(
    ip: IpAddr,
    now: i64,
    until: i64,
    hits: u32,
    offence: u32,
    node: &NodeName,
) -> Decision {
    Decision {
        action: Action::Ban,
        ip,
        at: now,
        until: Some(until),
        reason: format!("banned by fleet node {node} ({hits} decoy hits)"),
        hits,
        first_hit: None,
        last_hit: None,
        offence,
        network: None,
    }
}

/// The messages that put this node's state into the engine again: its bans
/// in force and its deliveries remembered since `since`.
pub(crate) fn republish(store: &Store, now: i64, since: i64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match store.bans(now) {
        Ok(bans) => out.extend(bans.into_iter().map(|b| {
            let body = Body::Ban {
                target: b.target,
                until: b.until,
                hits: b.hits,
                offence: b.offence,
                source: match b.source {
                    Source::Manual => BanSource::Manual,
                    Source::Engine => BanSource::Engine,
                },
            };
            ("ban", event::encode_body(&body))
        })),
        Err(e) => tracing::warn!(error = %e, "fleet: reading bans to publish again failed"),
    }
    match store.deliveries(since) {
        Ok(nets) => out.extend(nets.into_iter().map(|(net, at)| {
            let body = Body::Delivery { ip: net.addr(), at };
            ("delivery", event::encode_body(&body))
        })),
        Err(e) => tracing::warn!(error = %e, "fleet: reading deliveries to publish again failed"),
    }
    out
}

/// What the engine needs from files and the environment, read once at
/// start: the password and the certificate authorities.
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    password: Option<String>,
    ca: Option<Vec<u8>>,
}

impl Secrets {
    /// Reads `fleet`'s password and CA file.
    pub fn read(fleet: &Fleet) -> Result<Secrets, String> {
        let password = match &fleet.password {
            None => None,
            Some(Secret::Env(var)) => Some(std::env::var(var).map_err(|_| {
                format!("fleet.password_env: the environment variable {var} is not set")
            })?),
            Some(Secret::File(path)) => Some(
                std::fs::read_to_string(path)
                    .map(|s| s.lines().next().unwrap_or_default().to_owned())
                    .map_err(|e| format!("fleet.password_file {}: {e}", path.display()))?,
            ),
        };
        let ca = match &fleet.ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("fleet.ca_file {}: {e}", path.display()))?,
            ),
        };
        Ok(Secrets { password, ca })
    }
}

/// The fleet's engine (connecting is lazy: the first call connects, and a
/// failed call's connection is made again by the next).
fn connect(fleet: &Fleet, secrets: &Secrets) -> Result<Box<dyn Transport>, TransportError> {
    let redis = crate::fleet::redis::Redis::connect_with_ca(
        &fleet.url,
        secrets.password.clone(),
        &fleet.prefix,
        fleet.keep.0,
        fleet.max_events,
        secrets.ca.as_deref(),
    )?;
    Ok(Box::new(redis))
}

/// Everything the publisher and the consumer need.
#[derive(Clone)]
pub(crate) struct Tasks {
    pub fleet: Fleet,
    pub secrets: Secrets,
    pub state_dir: PathBuf,
    pub initial: FleetState,
    pub remember: Arc<AtomicI64>,
    pub v4: u8,
    pub v6: u8,
    pub shared: Arc<Shared>,
    pub shutdown: CancellationToken,
}

/// Logs an engine failure once per outage.
struct Outage {
    since: Option<Instant>,
    what: &'static str,
    errors: metrics::Counter,
}

impl Outage {
    fn new(what: &'static str) -> Outage {
        Outage {
            since: None,
            what,
            errors: metrics::counter!(crate::metrics::FLEET_ERRORS),
        }
    }

    fn failed(&mut self, e: &TransportError) {
        self.errors.increment(1);
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(error = %e, "fleet: {}: the engine is unreachable; working locally and retrying", self.what);
        }
    }

    fn ok(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                after_s = since.elapsed().as_secs(),
                "fleet: {}: the engine is back",
                self.what
            );
        }
    }
}

/// Sleeps `d`, or less at shutdown.
async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Starts the publisher on a thread of its own (it reads the outbox with
/// blocking SQLite calls); `epochs` tells the consumer the engine's epoch.
pub(crate) fn spawn_publisher(
    tasks: Tasks,
    writer: Writer,
    epochs: watch::Sender<Option<String>>,
) -> std::thread::JoinHandle<()> {
    super::spawn("nolist-publish", move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "fleet: cannot start the publisher");
                return;
            }
        };
        runtime.block_on(publisher(tasks, writer, epochs));
    })
}

/// Sends `write` to the writer; false when it is gone.
fn send(writer: &Writer, write: Write) -> bool {
    writer.send(write).is_ok()
}

async fn publisher(tasks: Tasks, writer: Writer, epochs: watch::Sender<Option<String>>) {
    let Tasks {
        fleet,
        secrets,
        state_dir,
        initial,
        remember,
        v4,
        v6,
        shared,
        shutdown,
    } = tasks;
    let store = match Store::open(&state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "fleet: the publisher cannot read the store");
            return;
        }
    };
    let me = fleet.node.clone();
    let published_counter =
        metrics::counter!(crate::metrics::FLEET_MESSAGES, "direction" => "published");
    let mut outage = Outage::new("publishing");
    let mut transport: Option<Box<dyn Transport>> = None;
    let mut epoch = initial.epoch.clone();
    let mut acknowledged = initial.published;
    let mut sent = initial.published;
    let mut watermark_sent = (0, Instant::now());
    let mut reported = Instant::now() - REPORT;
    let mut reports = Reports::new(&fleet);
    while !shutdown.is_cancelled() {
        let Some(t) = transport.as_deref() else {
            match connect(&fleet, &secrets) {
                Ok(t) => match handshake(t.as_ref(), &me, epoch.as_deref(), acknowledged).await {
                    Ok((current, lost)) => {
                        outage.ok();
                        if lost {
                            tracing::warn!(
                                "fleet: the engine lost data (a new epoch, or fewer of this node's messages than it acknowledged); queueing this node's bans and deliveries again"
                            );
                            send(&writer, Write::Republish);
                        }
                        if epoch.as_deref() != Some(current.as_str()) {
                            send(
                                &writer,
                                Write::FleetState(vec![("epoch".into(), current.clone())]),
                            );
                        }
                        epoch = Some(current.clone());
                        epochs.send_replace(Some(current));
                        transport = Some(t);
                    }
                    Err(e) => {
                        outage.failed(&e);
                        pause(RETRY, &shutdown).await;
                    }
                },
                Err(e) => {
                    outage.failed(&e);
                    pause(RETRY, &shutdown).await;
                }
            }
            continue;
        };
        let now = unix_now();
        // The watermark is read before the outbox: every delivery it
        // covers was committed before it, so it is in what is read next.
        let watermark = shared.watermark.load(Ordering::Acquire);
        let rows = match store.outbox(sent, PUBLISH_BATCH) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: reading the outbox failed");
                pause(RETRY, &shutdown).await;
                continue;
            }
        };
        let last = rows.last().map(|r| r.seq);
        let full = rows.len() == PUBLISH_BATCH;
        let messages: Vec<Outgoing> = rows
            .into_iter()
            .filter_map(|r| outgoing(&me, r.seq, &r.body, now, v4, v6))
            .collect();
        let beat = fleet.is_mta_node()
            && watermark > 0
            && !full
            && (watermark > watermark_sent.0 || watermark_sent.1.elapsed() >= HEARTBEAT);
        if last.is_some() || beat {
            let step = Publish {
                messages,
                watermark: beat.then_some(watermark),
                now,
                deliveries_since: now - remember.load(Ordering::Relaxed),
            };
            match t.publish(me.as_str(), &step).await {
                Ok(_) => {
                    outage.ok();
                    published_counter.increment(step.messages.len() as u64);
                    if beat {
                        watermark_sent = (watermark, Instant::now());
                    }
                    if let Some(last) = last {
                        sent = last;
                        acknowledged = last;
                        if !send(&writer, Write::Published(last)) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    outage.failed(&e);
                    transport = None;
                    pause(RETRY, &shutdown).await;
                    continue;
                }
            }
        }
        if reported.elapsed() >= REPORT {
            reported = Instant::now();
            let backlog = store.outbox_backlog().unwrap_or(0);
            metrics::gauge!(crate::metrics::FLEET_OUTBOX).set(backlog as f64);
            metrics::gauge!(crate::metrics::FLEET_CONSUMER_LAG)
                .set(shared.lag.load(Ordering::Relaxed) as f64);
            if backlog > OUTBOX_HITS {
                send(&writer, Write::TrimOutbox(OUTBOX_HITS));
            }
            let own = own_report(&me, now, watermark, backlog, &shared);
            if let Err(e) = reports.exchange(t, own, now, &writer).await {
                outage.failed(&e);
                transport = None;
                continue;
            }
        }
        if last.is_none() || !full {
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(HEARTBEAT) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
}

/// On (re)connecting: the engine's epoch, and whether it lost data this
/// node published (a new epoch, or a lower sequence number than it
/// acknowledged).
async fn handshake(
    t: &dyn Transport,
    me: &NodeName,
    known: Option<&str>,
    acknowledged: u64,
) -> Result<(String, bool), TransportError> {
    let epoch = t.epoch().await?;
    let held = t.published(me.as_str()).await?;
    let lost = known.is_some_and(|k| k != epoch) || held < acknowledged;
    Ok((epoch, lost))
}

/// An outbox row as a message, with its effect on the compacted state.
fn outgoing(me: &NodeName, seq: u64, body: &str, now: i64, v4: u8, v6: u8) -> Option<Outgoing> {
    let payload = event::with_header(me, seq, body);
    let compact = match event::decode(payload.as_bytes(), now) {
        Ok(m) => match m.body {
            Body::Hit { .. } => Compact::Nothing,
            Body::Delivery { ip, at } => Compact::Delivery {
                network: network_of(ip, v4, v6),
                at,
            },
            Body::Ban {
                target,
                until,
                source,
                ..
            } => Compact::Ban {
                target,
                until,
                manual: source == BanSource::Manual,
            },
            Body::Unban { target } => Compact::Unban { target },
        },
        Err(e) => {
            tracing::warn!(seq, error = %e, "fleet: an outbox message of this node does not read back; not published");
            return None;
        }
    };
    Some(Outgoing {
        seq,
        payload,
        compact,
    })
}

fn own_report(
    me: &NodeName,
    now: i64,
    watermark: i64,
    backlog: u64,
    shared: &Shared,
) -> NodeReport {
    let json = serde_json::json!({
        "node": me.as_str(),
        "at": now,
        "watermark": (watermark > 0).then_some(watermark),
        "outbox": backlog,
        "consumer_lag_s": shared.lag.load(Ordering::Relaxed),
        "held_back": shared.held_back.load(Ordering::Relaxed),
        "version": env!("CARGO_PKG_VERSION"),
    });
    NodeReport {
        node: me.to_string(),
        json: json.to_string(),
    }
}

/// The fleet's reports: sends this node's, reads everyone's into the store
/// (for `nolist status`) and the metrics, and logs nodes that go silent
/// and come back.
struct Reports {
    silent_after: i64,
    silent: BTreeSet<String>,
}

impl Reports {
    fn new(fleet: &Fleet) -> Reports {
        Reports {
            silent_after: i64::try_from(fleet.silent_after.as_secs()).unwrap_or(i64::MAX),
            silent: BTreeSet::new(),
        }
    }

    async fn exchange(
        &mut self,
        t: &dyn Transport,
        own: NodeReport,
        now: i64,
        writer: &Writer,
    ) -> Result<(), TransportError> {
        t.report(&own, REPORT_KEPT).await?;
        let mut state = Vec::new();
        for r in t.reports().await? {
            // Hostile input like any other: a name and a time, or nothing.
            let Ok(node) = NodeName::parse(&r.node) else {
                continue;
            };
            if r.json.len() > event::MAX_PAYLOAD {
                continue;
            }
            let at = serde_json::from_str::<serde_json::Value>(&r.json)
                .ok()
                .and_then(|v| v.get("at").and_then(serde_json::Value::as_i64))
                .unwrap_or(0);
            let ago = now.saturating_sub(at).max(0);
            metrics::gauge!(crate::metrics::FLEET_LAST_SEEN, "node" => node.to_string())
                .set(ago as f64);
            let name = node.to_string();
            if ago > self.silent_after {
                if self.silent.insert(name.clone()) {
                    tracing::warn!(%node, last_report_s = ago, "fleet: node is silent");
                }
            } else if self.silent.remove(&name) {
                tracing::info!(%node, "fleet: node is back");
            }
            state.push((format!("report:{name}"), r.json));
        }
        send(writer, Write::FleetState(state));
        Ok(())
    }
}

/// The cursor as kept in the store: the epoch it belongs to and the
/// position.
fn stored_cursor(epoch: &str, cursor: &Cursor) -> String {
    format!("{epoch} {}", cursor.0)
}

/// The stored cursor of `epoch`, if the store has one of it.
fn cursor_of(stored: Option<&str>, epoch: &str) -> Option<Cursor> {
    let (e, c) = stored?.split_once(' ')?;
    (e == epoch).then(|| Cursor(c.to_owned()))
}

/// Milliseconds of a Redis-style id (`1733250000000-0`), if it is one.
fn id_millis(cursor: &Cursor) -> Option<i64> {
    cursor.0.split_once('-')?.0.parse().ok()
}

/// Starts the consumer.
pub(crate) fn spawn_consumer(
    tasks: Tasks,
    inbound: mpsc::Sender<Inbound>,
    epochs: watch::Receiver<Option<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(consumer(tasks, inbound, epochs))
}

async fn consumer(
    tasks: Tasks,
    inbound: mpsc::Sender<Inbound>,
    mut epochs: watch::Receiver<Option<String>>,
) {
    let Tasks {
        fleet,
        secrets,
        initial,
        shared,
        shutdown,
        ..
    } = tasks;
    let me = fleet.node.clone();
    let mut applied: HashMap<String, u64> = initial.applied.into_iter().collect();
    let stored = initial.cursor;
    let mut outage = Outage::new("reading");
    let mut checker = Checker::default();
    let mut transport: Option<Box<dyn Transport>> = None;
    let mut following: Option<(String, Cursor)> = None;
    while !shutdown.is_cancelled() {
        // The publisher's handshake says which epoch the engine is in.
        let Some(epoch) = epochs.borrow_and_update().clone() else {
            tokio::select! {
                _ = epochs.changed() => {}
                () = shutdown.cancelled() => return,
            }
            continue;
        };
        let Some(t) = transport.as_deref() else {
            match connect(&fleet, &secrets) {
                Ok(t) => transport = Some(t),
                Err(e) => {
                    outage.failed(&e);
                    pause(RETRY, &shutdown).await;
                }
            }
            continue;
        };
        let cursor = match &following {
            Some((e, c)) if *e == epoch => c.clone(),
            _ => match cursor_of(stored.as_deref(), &epoch).filter(|_| following.is_none()) {
                Some(c) => c,
                None => match bootstrap(t, &epoch, &inbound, &mut checker).await {
                    Ok(c) => {
                        outage.ok();
                        c
                    }
                    Err(e) => {
                        outage.failed(&e);
                        transport = None;
                        pause(RETRY, &shutdown).await;
                        continue;
                    }
                },
            },
        };
        following = Some((epoch.clone(), cursor.clone()));
        let read = tokio::select! {
            r = t.read(&cursor, READ_BATCH, READ_WAIT) => r,
            () = shutdown.cancelled() => return,
        };
        match read {
            Ok(Read::Entries(entries)) => {
                outage.ok();
                let Some(last) = entries.last().map(|r| r.cursor.clone()) else {
                    shared.lag.store(0, Ordering::Relaxed);
                    continue;
                };
                let now = unix_now();
                if let Some(ms) = id_millis(&last) {
                    shared
                        .lag
                        .store((now * 1000 - ms).max(0) / 1000, Ordering::Relaxed);
                }
                let mut updates: HashMap<String, u64> = HashMap::new();
                let mut items = Vec::new();
                for r in entries {
                    if let Some(item) = checker.entry(r.body, &me, now, &mut applied) {
                        if let Item::Message(m) = &item {
                            updates.insert(m.node.to_string(), m.seq);
                        }
                        items.push(item);
                    }
                }
                following = Some((epoch.clone(), last.clone()));
                let batch = Inbound::Batch {
                    items,
                    cursor: stored_cursor(&epoch, &last),
                    applied: updates.into_iter().collect(),
                };
                if inbound.send(batch).await.is_err() {
                    return;
                }
            }
            Ok(Read::Gap) => {
                tracing::warn!(
                    "fleet: messages after this node's cursor were trimmed before it read them; bootstrapping from the compacted state"
                );
                following = Some((String::new(), Cursor::start()));
            }
            Err(e) => {
                outage.failed(&e);
                transport = None;
                pause(RETRY, &shutdown).await;
            }
        }
    }
}

/// Reads the compacted state into the engine task, part by part as it
/// comes, then says it ended (whole or not); returns the cursor to follow
/// the log from.
async fn bootstrap(
    t: &dyn Transport,
    epoch: &str,
    inbound: &mpsc::Sender<Inbound>,
    checker: &mut Checker,
) -> Result<Cursor, TransportError> {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Vec<StateEntry>>(4);
    let forward = async {
        let mut n = 0;
        while let Some(chunk) = rx.recv().await {
            let now = unix_now();
            let mut items = chunk.into_iter().filter_map(|e| checker.state(e, now));
            loop {
                let part: Vec<Item> = items.by_ref().take(STATE_PART).collect();
                if part.is_empty() {
                    break;
                }
                n += part.len();
                if inbound.send(Inbound::State(part)).await.is_err() {
                    return n;
                }
            }
        }
        n
    };
    let (cursor, n) = tokio::join!(t.snapshot(tx), forward);
    // What the engine took over is stored, whether the read ended or broke.
    let _ = inbound.send(Inbound::StateEnd).await;
    let cursor = cursor?;
    tracing::info!(entries = n, took_ms = started.elapsed().as_millis() as u64, %epoch, "fleet: bootstrapped from the compacted state");
    // The cursor is saved at once: a restart follows on from here.
    let saved = Inbound::Batch {
        items: Vec::new(),
        cursor: stored_cursor(epoch, &cursor),
        applied: Vec::new(),
    };
    let _ = inbound.send(saved).await;
    Ok(cursor)
}

/// The node the compacted state's entries come from (checked once: each
/// of millions of entries carries a copy).
pub(crate) fn state_node() -> NodeName {
    static NAME: std::sync::LazyLock<NodeName> =
        std::sync::LazyLock::new(|| NodeName::parse("compacted-state").expect("a valid name"));
    NAME.clone()
}

/// Checks what the engine hands over; counts and logs what it skips (the
/// first of each reason, then every thousandth).
#[derive(Default)]
struct Checker {
    skipped: HashMap<&'static str, u64>,
}

impl Checker {
    fn skip(&mut self, reason: &'static str, detail: &dyn std::fmt::Display) {
        metrics::counter!(crate::metrics::FLEET_SKIPPED, "reason" => reason).increment(1);
        let n = self.skipped.entry(reason).or_default();
        *n += 1;
        if *n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(
                reason,
                count = *n,
                "fleet: skipped an entry of the shared log: {detail}"
            );
        }
    }

    /// A log entry, if it is valid, new and not this node's.
    fn entry(
        &mut self,
        body: ReceivedBody,
        me: &NodeName,
        now: i64,
        applied: &mut HashMap<String, u64>,
    ) -> Option<Item> {
        match body {
            ReceivedBody::Message(payload) => match event::decode(&payload, now) {
                Ok(m) if m.node == *me => None,
                Ok(m) => {
                    let last = applied.entry(m.node.to_string()).or_default();
                    if m.seq <= *last {
                        // Published twice (a republish, an engine replay).
                        metrics::counter!(crate::metrics::FLEET_SKIPPED, "reason" => "duplicate")
                            .increment(1);
                        return None;
                    }
                    *last = m.seq;
                    Some(Item::Message(m))
                }
                Err(e) => {
                    let reason = match e {
                        Skip::TooLarge(_) => "too_large",
                        Skip::Malformed(_) => "malformed",
                        Skip::Version(_) => "version",
                        Skip::Invalid(_) => "invalid",
                    };
                    self.skip(reason, &e);
                    None
                }
            },
            ReceivedBody::Watermark { node, at } => {
                match (NodeName::parse(&node), at.parse::<i64>()) {
                    (Ok(node), Ok(at)) if node != *me => Some(Item::Watermark(node, at.min(now))),
                    (Ok(_), Ok(_)) => None,
                    _ => {
                        self.skip("invalid", &format!("watermark {node:?} {at:?}"));
                        None
                    }
                }
            }
            ReceivedBody::Unknown => {
                self.skip("malformed", &"an entry of unknown shape");
                None
            }
        }
    }

    /// An entry of the compacted state as the message it stands for.
    fn state(&mut self, entry: StateEntry, now: i64) -> Option<Item> {
        let body = match entry {
            StateEntry::Ban(target, until) => self.ban(&target, until, now, BanSource::Engine)?,
            StateEntry::ManualBan(target, until) => {
                self.ban(&target, until, now, BanSource::Manual)?
            }
            StateEntry::Delivery(network, at) => match event::target(&network) {
                Ok(network) => Body::Delivery {
                    ip: network.addr(),
                    at: at.min(now),
                },
                Err(e) => {
                    self.skip("invalid", &e);
                    return None;
                }
            },
            StateEntry::Watermark(node, at) => {
                return match NodeName::parse(&node) {
                    Ok(node) => Some(Item::Watermark(node, at.min(now))),
                    Err(e) => {
                        self.skip("invalid", &e);
                        None
                    }
                };
            }
        };
        Some(Item::Message(Message {
            node: state_node(),
            seq: 1,
            body,
        }))
    }

    fn ban(&mut self, target: &str, until: i64, now: i64, source: BanSource) -> Option<Body> {
        let longest = now.saturating_add(i64::try_from(MAX_BAN.as_secs()).unwrap_or(i64::MAX));
        match event::target(target) {
            Ok(_) if until <= now => None,
            Ok(_) if until > longest => {
                self.skip("invalid", &format!("ban of {target} until {until}"));
                None
            }
            Ok(target) => Some(Body::Ban {
                target,
                until,
                hits: 0,
                offence: 1,
                source,
            }),
            Err(e) => {
                self.skip("invalid", &e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
