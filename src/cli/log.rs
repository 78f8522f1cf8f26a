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
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, Registry};

    /// A writer the test can read, and stall.
    #[derive(Clone, Default)]
    struct Out {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        stall: Arc<Mutex<()>>,
    }

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _stalled = self.stall.lock().unwrap();
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_burst_leaves_in_few_writes_and_drop_writes_the_rest() {
        let out = Out::default();
        let log = Log::start(out.clone()).unwrap();
        let mut lines = log.writer();
        for i in 0..10_000 {
            lines.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(log);
        let text = String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap();
        let expected: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        assert!(out.writes.load(Ordering::Relaxed) < 100, "{:?}", out.writes);
    }

    #[test]
    fn a_stalled_output_drops_whole_lines_and_never_blocks() {
        let out = Out::default();
        let stall = out.stall.lock().unwrap();
        let log = Log::start(out.clone()).unwrap();
        let mut lines = log.writer();
        let mut line = [b'x'; 1024];
        line[1023] = b'\n';
        for _ in 0..3 * CAPACITY / 1024 {
            lines.write_all(&line).unwrap();
        }
        // The writer thread holds at most the first batch; the buffer the rest.
        assert!(log.dropped() > 0, "nothing dropped");
        drop(stall);
        drop(log);
        let written = out.bytes.lock().unwrap().clone();
        assert!(written.len() <= 2 * CAPACITY + 2048, "{}", written.len());
        assert!(
            written
                .split(|&b| b == b'\n')
                .all(|l| l.is_empty() || l.len() == 1023)
        );
    }

    /// The lines a subscriber with `throttle` writes while `f` runs.
    fn logged_with(throttle: &Throttle, f: impl FnOnce()) -> Vec<String> {
        let out = Out::default();
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(move || sink.clone())
            .with_filter(throttle.clone());
        tracing::subscriber::with_default(Registry::default().with(layer), f);
        let bytes = out.bytes.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_flood_of_library_warnings_is_one_line_and_a_count() {
        let throttle = Throttle::default();
        let lines = logged_with(&throttle, || {
            for i in 0..10_000 {
                tracing::warn!(target: "hickory_server::zone_handler::catalog", "request edns version greater than 0: {i}");
            }
            tracing::error!(target: "hickory_proto::op::message", "an error is held back too");
            tracing::warn!(target: "nolist::dns", "our own warnings pass");
            tracing::info!(target: "hickory_server::server", "below warn: passes");
            throttle.report();
            throttle.report(); // nothing more held back: no line
            tracing::warn!(target: "hickory_server::zone_handler::catalog", "next interval");
        });
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].ends_with("request edns version greater than 0: 0"));
        assert!(lines[1].contains("our own warnings pass"));
        assert!(lines[2].contains("below warn: passes"));
        assert!(
            lines[3].contains("held back 10000 more warnings from the DNS library"),
            "{}",
            lines[3]
        );
        assert!(lines[4].ends_with("next interval"));
    }

    #[test]
    fn dropping_the_log_reports_what_was_held_back() {
        let out = Out::default();
        let log = Log::start(out.clone()).unwrap();
        let throttle = log.throttle();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(log.writer())
            .with_filter(throttle);
        tracing::subscriber::with_default(Registry::default().with(layer), || {
            for _ in 0..3 {
                tracing::warn!(target: "hickory_server::zone_handler::catalog", "odd query");
            }
            drop(log);
        });
        let text = String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("odd query").count(), 1, "{text}");
        assert!(text.contains("held back 2 more warnings"), "{text}");
    }
}
