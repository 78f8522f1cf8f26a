//! The decoy responder: accepts connections on the decoy addresses, runs
//! one bounded session each, and reports every session as one
//! [`SessionEvent`] to the ban engine's channel.
//!
//! Nothing here may stall the accept loop: over-limit clients get `421`
//! with a non-blocking write and are dropped, and events are offered to a
//! bounded channel with `try_send` (what does not fit is counted, not waited
//! for).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dialogue::{Dialogue, End, Stage};
use super::session::{self, Limits};
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

    /// Offers an event; a full or closed channel counts it as dropped.
    pub fn offer(&self, event: SessionEvent) {
        metrics::counter!(crate::metrics::SESSIONS, "stage" => event.stage.as_str(), "end" => event.end.as_str())
            .increment(1);
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
    /// Sessions at once per client address.
    pub max_per_ip: usize,
}

/// Counts sessions per client address; a slot is released on drop.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
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

/// Binds a listener on each address.
pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        out.push(listener);
    }
    Ok(out)
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

/// The running responder: one accept loop per listen address, all sharing
/// the limits, the per-IP table and the settings. Addresses can be added
/// and closed, and the settings replaced, while it runs (SIGHUP).
pub struct Responder {
    shared: watch::Sender<Shared>,
    per_ip: Arc<PerIp>,
    events: EventSink,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    loops: BTreeMap<SocketAddr, CancellationToken>,
}

impl Responder {
    /// A responder without listeners yet. Cancelling `shutdown` stops every
    /// accept loop and tells open sessions `421`.
    pub fn new(
        settings: Arc<Settings>,
        events: EventSink,
        shutdown: CancellationToken,
    ) -> Responder {
        Responder {
            shared: watch::Sender::new(Shared::new(settings)),
            per_ip: Arc::new(PerIp::default()),
            events,
            shutdown,
            tracker: TaskTracker::new(),
            loops: BTreeMap::new(),
        }
    }

    /// Starts accepting on `listener`, known as `key` (the configured
    /// address, which differs from the bound one for port 0); returns the
    /// bound address.
    pub fn listen(&mut self, key: SocketAddr, listener: TcpListener) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let stop = self.shutdown.child_token();
        self.tracker.spawn(accept_loop(
            listener,
            self.shared.subscribe(),
            self.events.clone(),
            self.per_ip.clone(),
            stop.clone(),
            self.shutdown.clone(),
            self.tracker.clone(),
        ));
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
    /// at most `drain`.
    pub async fn drain(self, drain: Duration) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        let _ = tokio::time::timeout(drain, self.tracker.wait()).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: watch::Receiver<Shared>,
    events: EventSink,
    per_ip: Arc<PerIp>,
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
        let slot = slots.try_acquire_owned().ok();
        let ip_slot = per_ip.acquire(client.ip(), settings.max_per_ip);
        let (Some(slot), Some(ip_slot)) = (slot, ip_slot) else {
            // Never wait on an over-limit client: one non-blocking write, then drop.
            let _ = stream.try_write(b"421 4.7.0 Too many connections, try again later\r\n");
            events.offer(event(
                client,
                local,
                SystemTime::now(),
                Duration::ZERO,
                None,
                End::Overloaded,
            ));
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
