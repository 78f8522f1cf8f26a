//! The log writer behind `tracing`: formatted lines go into one bounded
//! buffer, and a thread of its own writes that buffer to stderr in batches.
//!
//! A producer (a decoy session, a DNS worker) only takes a mutex and copies
//! its line: it never waits on stderr, and a line that does not fit in
//! [`CAPACITY`] is dropped and counted. The thread sleeps until a line
//! arrives, lets [`LINGER`] pass so that a burst leaves in one `write`, and
//! writes whatever has gathered. A flood of decoy sessions costs a few
//! dozen writes and wake-ups a second, not one of each per line. (Why not
//! `tracing-appender`: its channel and writer thread cost a decoy session
//! several times more server CPU per log line; the figure is in
//! `bench/README.md`.)
//!
//! The DNS library (hickory) warns once per odd query (an EDNS version it
//! does not speak, …), so a flood of such queries would be a flood of
//! lines. A [`Throttle`] lets the first of those warnings in each
//! [`SUMMARY_INTERVAL`] through and counts the rest; a thread of its own
//! logs the count as one line at the end of the interval, and dropping the
//! [`Log`] logs what is left.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Event, Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter};

/// Bytes of log lines waiting for stderr at most; more are dropped.
const CAPACITY: usize = 2 << 20;

/// How long the first line of a batch waits for others to join it.
const LINGER: Duration = Duration::from_millis(20);

/// How long dropping the [`Log`] waits for the last batch to be written
/// (a stalled stderr must not hang the exit).
const FINAL_WAIT: Duration = Duration::from_secs(1);

/// How often the count of held-back library warnings is logged.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

struct State {
    pending: Vec<u8>,
    /// No more lines will come: write what is pending and stop.
    closed: bool,
    /// The thread has written its last batch.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    dropped: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running writer. Dropping it logs the held-back count of its
/// [`Throttle`] and writes what is pending (waiting at most [`FINAL_WAIT`]).
pub(crate) struct Log {
    shared: Arc<Shared>,
    throttle: Throttle,
}

impl Log {
    /// Starts the thread that writes to `out`, and the one that reports
    /// what the [`Throttle`] held back.
    pub(crate) fn start<W: Write + Send + 'static>(out: W) -> io::Result<Log> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::new(),
                closed: false,
                finished: false,
            }),
            changed: Condvar::new(),
            dropped: AtomicUsize::new(0),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("nolist-log".into())
            .spawn(move || write_batches(&thread, out))?;
        let throttle = Throttle::default();
        let (reporter, held) = (shared.clone(), throttle.clone());
        // Without this thread the counts are still logged at exit.
        let _ = std::thread::Builder::new()
            .name("nolist-log-summary".into())
            .spawn(move || report_every_interval(&reporter, &held));
        Ok(Log { shared, throttle })
    }

    /// The filter that holds back the DNS library's per-query warnings;
    /// this log reports what it held back.
    pub(crate) fn throttle(&self) -> Throttle {
        self.throttle.clone()
    }

    /// What `tracing_subscriber` writes each formatted line to.
    pub(crate) fn writer(&self) -> Lines {
        Lines(self.shared.clone())
    }

    /// Lines dropped so far because stderr did not keep up.
    pub(crate) fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.throttle.report();
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.changed.notify_all();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(state, FINAL_WAIT, |s| !s.finished);
    }
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closed {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        if !state.closed {
            drop(state);
            std::thread::sleep(LINGER);
            state = shared.lock();
        }
        std::mem::swap(&mut batch, &mut state.pending);
        let last = state.closed;
        drop(state);
        // Nowhere to report a failing stderr: the lines are lost either way.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if last {
            shared.lock().finished = true;
            shared.changed.notify_all();
            return;
        }
    }
}

/// Logs the [`Throttle`]'s count every [`SUMMARY_INTERVAL`] until the log
/// is closed.
fn report_every_interval(shared: &Shared, throttle: &Throttle) {
    let mut state = shared.lock();
    loop {
        state = match shared
            .changed
            .wait_timeout_while(state, SUMMARY_INTERVAL, |s| !s.closed)
        {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        };
        if state.closed {
            return;
        }
        // Logging goes through `Lines`, which takes this lock.
        drop(state);
        throttle.report();
        state = shared.lock();
    }
}

/// A per-layer filter for the formatting layer: warnings and errors from
/// hickory's crates pass once per interval, the rest are only counted
/// ([`Throttle::report`] logs the count). Everything else passes.
#[derive(Clone, Default)]
pub(crate) struct Throttle(Arc<Held>);

#[derive(Default)]
struct Held {
    /// One warning has been let through in this interval.
    passed: AtomicBool,
    /// Warnings held back in this interval.
    count: AtomicU64,
}

impl Throttle {
    /// Whether `metadata` is a protocol-level warning of the DNS library:
    /// one per query, so a query flood would become a log flood.
    fn applies_to(metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN && metadata.target().starts_with("hickory_")
    }

    /// Lets the first warning of the interval through; counts the others.
    fn admit(&self) -> bool {
        if self.0.passed.swap(true, Ordering::Relaxed) {
            self.0.count.fetch_add(1, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    /// Logs how many warnings were held back since the last report (if
    /// any), and starts a new interval.
    pub(crate) fn report(&self) {
        let held = self.0.count.swap(0, Ordering::Relaxed);
        self.0.passed.store(false, Ordering::Relaxed);
        if held > 0 {
            tracing::warn!(
                held,
                "held back {held} more warnings from the DNS library (hickory); only the first in each minute is logged in full"
            );
        }
    }
}

/// `callsite_enabled` keeps its default (`sometimes`): callsites the global
/// filter disables stay disabled, and with `always` tracing-subscriber would
/// skip `enabled` and let one event's `event_enabled` verdict leak into the
/// next (a debug assertion in its per-layer filter state).
impl<S> Filter<S> for Throttle {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        !Throttle::applies_to(event.metadata()) || self.admit()
    }
}

/// Hands formatted lines to the [`Log`] thread.
#[derive(Clone)]
pub(crate) struct Lines(Arc<Shared>);

impl Write for Lines {
    /// Takes `buf` whole (`tracing_subscriber` writes one line per call) or
    /// drops it whole when the buffer is full.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.0.lock();
        if state.pending.len() + buf.len() > CAPACITY {
            drop(state);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(buf.len());
        }
        let first = state.pending.is_empty();
        state.pending.extend_from_slice(buf);
        drop(state);
        if first {
            self.0.changed.notify_all();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[cfg(test)]
mod tests;
