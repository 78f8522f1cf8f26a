//! The decoy responder: accepts connections on the decoy addresses, runs
//! one bounded session each, and reports every session as one
//! [`SessionEvent`] to the ban engine's channel.
//!
//! Nothing here may stall the accept loop: over-limit clients get `421`
//! with a non-blocking write and are dropped, and events are offered to a
//! bounded channel with `try_send` (what does not fit is counted, not waited
//! for).
//!
//! A client whose network is retry-exempt (a real MTA that retried, see
//! `crate::bans::retry`) gets `421` at the greeting from its next
//! connection on, in every mode, and is closed: every sender family falls
//! back to the next MX from a 4xx greeting, except stock qmail. Its
//! connections are counted as sessions (end `passed`), never as decoy hits.
//!
//! The responder runs on threads of its own (`responder.threads`, default
//! one), each a single-threaded runtime with its own listening socket per
//! address (`SO_REUSEPORT` when there are several, so the kernel spreads the
//! connections): a session never migrates between threads, and a flood of
//! decoy connections takes at most that many cores from the DNS server, the
//! ban engine and the MTA beside it. No work stealing also means no
//! cross-thread wake-up per session, which a multi-threaded runtime pays in
//! CPU per session (measured in `bench/README.md`, responder).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dialogue::{Dialogue, End, Stage};
use super::session::{self, Limits};
use crate::bans::Passed;
use crate::config::Mode;

/// What one session revealed, for the ban engine and the log.
#[derive(Clone, Debug, Serialize)]
pub struct SessionEvent {
    /// The client.
    pub client: SocketAddr,
    /// The decoy address it connected to.
    pub local: SocketAddr,
    /// When it connected.
    #[serde(serialize_with = "rfc3339")]
    pub started: SystemTime,
    /// How long the session lasted.
    pub duration_ms: u64,
    /// The furthest stage reached.
    pub stage: Stage,
    /// EHLO/HELO name.
    pub helo: Option<String>,
    /// MAIL FROM address.
    pub mail_from: Option<String>,
    /// First RCPT TO address.
    pub first_rcpt: Option<String>,
    /// Commands sent.
    pub commands: u32,
    /// How it ended.
    pub end: End,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Where events go: a bounded channel that never blocks the sender.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<SessionEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink holding up to `capacity` undelivered events, and its receiver.
    pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<SessionEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            EventSink {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Counts a session in the metrics without offering it to the engine
    /// (a retry-exempt client let through is no decoy hit).
    pub fn count(&self, event: &SessionEvent) {
        metrics::counter!(crate::metrics::SESSIONS, "stage" => event.stage.as_str(), "end" => event.end.as_str())
            .increment(1);
    }

    /// Offers an event; a full or closed channel counts it as dropped.
    ///
    /// On a responder thread the event joins that thread's batch, which
    /// leaves 10 ms after its first event or when it holds 256 events
    /// (`BATCH_DELAY`, `BATCH_MAX`): under a flood the engine is woken a hundred times a
    /// second, not once per session, and an idle responder arms no timer.
    pub fn offer(&self, event: SessionEvent) {
        self.count(&event);
        let mut event = Some(event);
        let queued = BATCH.with_borrow_mut(|batch| {
            let batch = batch.as_mut()?;
            batch.extend(event.take());
            Some(batch.len())
        });
        match (queued, event) {
            (None, Some(event)) => self.send(event),
            (Some(1), _) => {
                let sink = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(BATCH_DELAY).await;
                    sink.flush();
                });
            }
            (Some(n), _) if n >= BATCH_MAX => self.flush(),
            _ => {}
        }
    }

    /// Sends this thread's batch now.
    fn flush(&self) {
        let batch = BATCH.with_borrow_mut(|b| b.as_mut().map(std::mem::take));
        for event in batch.into_iter().flatten() {
            self.send(event);
        }
    }

    fn send(&self, event: SessionEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::EVENTS_DROPPED).increment(1);
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

thread_local! {
    /// A responder thread's events on their way to the engine; `None` on
    /// every other thread (their events are sent at once).
    static BATCH: RefCell<Option<Vec<SessionEvent>>> = const { RefCell::new(None) };
}

/// How long an event may wait in its thread's batch.
const BATCH_DELAY: Duration = Duration::from_millis(10);

/// Events in a batch that make it leave at once.
const BATCH_MAX: usize = 256;

/// Everything a session needs, shared by all of them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The mode (`refuse` never reaches the responder).
    pub mode: Mode,
    /// Banner and EHLO name.
    pub hostname: Arc<str>,
    /// Text after `450`.
    pub reply: Arc<str>,
    /// Per-session limits.
    pub limits: Limits,
    /// Sessions at once.
    pub max_connections: usize,
    /// Sessions at once per client: per IPv4 address, per IPv6 network of
    /// `v6_prefix` bits (see [`client_key`]).
    pub max_per_ip: usize,
    /// The IPv6 network size that counts as one client for `max_per_ip`:
    /// the ban policy's (`bans.networks.ipv6`, default 64).
    pub v6_prefix: u8,
}

/// Who a client is for the per-client limit: its IPv4 address (an
/// IPv4-mapped IPv6 peer counts as that address), or its IPv6 network of
/// `v6_prefix` bits. One host holds a whole /64, so counting IPv6 per
/// address would let it open as many sessions as it likes.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

/// Counts sessions per client (see [`client_key`]); a slot is released on drop.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for the client known as `key`, unless it holds `max` already.
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Binds `threads` listening sockets on each address (one per responder
/// thread; port 0 is resolved by the first, the others share its port).
/// Nothing is registered with a runtime yet: [`Responder::listen`] does that
/// on the threads that will accept.
pub fn bind(addrs: &[SocketAddr], threads: usize) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    addrs
        .iter()
        .map(|addr| {
            let mut at = *addr;
            (0..threads.max(1))
                .map(|_| {
                    let socket = listen_socket(at, threads > 1).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                    })?;
                    at = socket.local_addr()?;
                    Ok(socket)
                })
                .collect()
        })
        .collect()
}

fn listen_socket(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As every server does: a restart can bind while old connections linger.
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Connections the kernel queues per listening socket before accept (it
/// caps this at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

/// One responder thread: a single-threaded runtime that runs until `stop`,
/// then sends what is left in its batch of events.
struct Worker {
    handle: Handle,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(index: usize, events: EventSink) -> io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nolist-smtp-{index}"))
            .spawn(move || {
                BATCH.set(Some(Vec::new()));
                runtime.block_on(until.cancelled());
                events.flush();
            })?;
        Ok(Worker {
            handle,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    /// Stops the thread (its runtime drops whatever still runs on it).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What every new session uses; replaced as a whole on reload.
#[derive(Clone)]
struct Shared {
    settings: Arc<Settings>,
    /// `settings.max_connections` permits. A reload that changes the limit
    /// brings a new semaphore: sessions already open keep the old one.
    slots: Arc<Semaphore>,
}

impl Shared {
    fn new(settings: Arc<Settings>) -> Shared {
        let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        Shared { settings, slots }
    }
}

/// What every accept loop checks a new connection against, shared by all:
/// the retry-exempt networks, and the per-client session counts.
#[derive(Clone)]
struct Gate {
    per_ip: Arc<PerIp>,
    passed: Passed,
}

/// The running responder: one accept loop per listen address and thread,
/// all sharing the limits, the per-IP table and the settings. Addresses can
/// be added and closed, and the settings replaced, while it runs (SIGHUP).
pub struct Responder {
    workers: Vec<Worker>,
    shared: watch::Sender<Shared>,
    gate: Gate,
    events: EventSink,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    loops: BTreeMap<SocketAddr, CancellationToken>,
}

impl Responder {
    /// A responder with `threads` threads and no listeners yet. Cancelling
    /// `shutdown` stops every accept loop and tells open sessions `421`.
    /// Clients in `passed` are let through (see the module documentation).
    pub fn new(
        settings: Arc<Settings>,
        events: EventSink,
        passed: Passed,
        shutdown: CancellationToken,
        threads: usize,
    ) -> io::Result<Responder> {
        let workers = (0..threads.max(1))
            .map(|i| Worker::start(i, events.clone()))
            .collect::<io::Result<_>>()?;
        Ok(Responder {
            workers,
            shared: watch::Sender::new(Shared::new(settings)),
            gate: Gate {
                per_ip: Arc::new(PerIp::default()),
                passed,
            },
            events,
            shutdown,
            tracker: TaskTracker::new(),
            loops: BTreeMap::new(),
        })
    }

    /// The number of threads, and so of sockets [`Responder::listen`] takes
    /// per address.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Starts accepting on `sockets` (from [`bind`], one per thread), known
    /// as `key` (the configured address, which differs from the bound one
    /// for port 0); returns the bound address.
    pub fn listen(
        &mut self,
        key: SocketAddr,
        sockets: Vec<std::net::TcpListener>,
    ) -> io::Result<SocketAddr> {
        if sockets.len() != self.workers.len() {
            return Err(io::Error::other(format!(
                "{} sockets for {} responder threads",
                sockets.len(),
                self.workers.len()
            )));
        }
        let addr = sockets[0].local_addr()?;
        // Registered with each thread's runtime first, so that an error
        // leaves nothing half started.
        let listeners = self
            .workers
            .iter()
            .zip(sockets)
            .map(|(worker, socket)| {
                let _entered = worker.handle.enter();
                TcpListener::from_std(socket)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let stop = self.shutdown.child_token();
        for (worker, listener) in self.workers.iter().zip(listeners) {
            worker.handle.spawn(self.tracker.track_future(accept_loop(
                listener,
                self.shared.subscribe(),
                self.events.clone(),
                self.gate.clone(),
                stop.clone(),
                self.shutdown.clone(),
                self.tracker.clone(),
            )));
        }
        if let Some(old) = self.loops.insert(key, stop) {
            old.cancel();
        }
        Ok(addr)
    }

    /// Stops accepting on the listener known as `key` (its socket is
    /// closed); sessions already open there run to their end.
    pub fn close(&mut self, key: &SocketAddr) {
        if let Some(stop) = self.loops.remove(key) {
            stop.cancel();
        }
    }

    /// The keys of the listeners, sorted.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.loops.keys().copied().collect()
    }

    /// New settings for the sessions that start from now on.
    pub fn update(&self, settings: Arc<Settings>) {
        self.shared.send_modify(|shared| {
            if shared.settings.max_connections == settings.max_connections {
                shared.settings = settings;
            } else {
                *shared = Shared::new(settings);
            }
        });
    }

    /// Waits, after `shutdown` was cancelled, for open sessions to finish,
    /// at most `drain`; then stops the threads.
    pub async fn drain(mut self, drain: Duration) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        let _ = tokio::time::timeout(drain, self.tracker.wait()).await;
        let threads: Vec<_> = self
            .workers
            .iter_mut()
            .filter_map(|w| {
                w.stop.cancel();
                w.thread.take()
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: watch::Receiver<Shared>,
    events: EventSink,
    gate: Gate,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // A listener on a specific address knows every connection's local
    // address; only a wildcard listener has to ask the kernel per connection.
    let fixed_local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = fixed_local.unwrap_or_else(|| stream.local_addr().unwrap_or(client));
        let Shared { settings, slots } = shared.borrow().clone();
        if gate.passed.contains(client.ip(), crate::clock::unix_now()) {
            // One non-blocking write, as for an over-limit client: the
            // socket is new, so the reply fits, and the close sends a FIN.
            let reply = format!(
                "421 4.7.0 {} Service not available, try the next MX\r\n",
                settings.hostname
            );
            let _ = stream.try_write(reply.as_bytes());
            events.count(&turned_away(client, local, End::Passed));
            continue;
        }
        let slot = slots.try_acquire_owned().ok();
        let ip_slot = gate.per_ip.acquire(
            client_key(client.ip(), settings.v6_prefix),
            settings.max_per_ip,
        );
        let (Some(slot), Some(ip_slot)) = (slot, ip_slot) else {
            // Never wait on an over-limit client: one non-blocking write, then drop.
            let _ = stream.try_write(b"421 4.7.0 Too many connections, try again later\r\n");
            events.offer(turned_away(client, local, End::Overloaded));
            continue;
        };
        let events = events.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slots = (slot, ip_slot);
            session_task(stream, client, local, &settings, &events, &shutdown).await;
        });
    }
}

/// The event of a client turned away at the accept: at a limit
/// (`Overloaded`), or let through after a retry (`Passed`).
fn turned_away(client: SocketAddr, local: SocketAddr, end: End) -> SessionEvent {
    event(client, local, SystemTime::now(), Duration::ZERO, None, end)
}

async fn session_task(
    mut stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    settings: &Settings,
    events: &EventSink,
    shutdown: &CancellationToken,
) {
    let started = SystemTime::now();
    let clock = tokio::time::Instant::now();
    let mut dialogue = Dialogue::new(
        settings.mode,
        settings.hostname.clone(),
        settings.reply.clone(),
    );
    let open = metrics::gauge!(crate::metrics::SESSIONS_OPEN);
    open.increment(1);
    let end = session::run(&mut stream, &mut dialogue, &settings.limits, shutdown).await;
    // Closed before the bookkeeping: the last reply leaves with the FIN.
    drop(stream);
    open.decrement(1);
    let e = event(client, local, started, clock.elapsed(), Some(dialogue), end);
    tracing::info!(
        client = %e.client,
        local = %e.local,
        stage = ?e.stage,
        helo = e.helo.as_deref().unwrap_or(""),
        mail_from = e.mail_from.as_deref().unwrap_or(""),
        rcpt = e.first_rcpt.as_deref().unwrap_or(""),
        commands = e.commands,
        end = ?e.end,
        "decoy session"
    );
    events.offer(e);
}

fn event(
    client: SocketAddr,
    local: SocketAddr,
    started: SystemTime,
    elapsed: Duration,
    dialogue: Option<Dialogue>,
    end: End,
) -> SessionEvent {
    let (stage, helo, mail_from, first_rcpt, commands) = match dialogue {
        Some(d) => (d.stage, d.helo, d.mail_from, d.first_rcpt, d.commands),
        None => (Stage::Connect, None, None, None, 0),
    };
    SessionEvent {
        client,
        local,
        started,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        stage,
        helo,
        mail_from,
        first_rcpt,
        commands,
        end,
    }
}

#[cfg(test)]
mod tests;
