//! The log writer behind `tracing`: formatted lines go into one bounded
//! buffer, and a thread of its own writes that buffer to stderr in batches.
//!
//! A producer (a decoy session, a DNS worker) only takes a mutex and copies
//! its line: it never waits on stderr, and a line that does not fit in
//! [`CAPACITY`] is dropped and counted. The thread sleeps until a line
//! arrives, lets [`LINGER`] pass so that a burst leaves in one `write`, and
//! writes whatever has gathered. A flood of decoy sessions costs a few
//! dozen writes and wake-ups a second, not one of each per line.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines waiting for stderr at most; more are dropped.
const CAPACITY: usize = 2 << 20;

/// How long the first line of a batch waits for others to join it.
const LINGER: Duration = Duration::from_millis(20);

/// How long dropping the [`Log`] waits for the last batch to be written
/// (a stalled stderr must not hang the exit).
const FINAL_WAIT: Duration = Duration::from_secs(1);

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

/// The running writer. Dropping it writes what is pending (waiting at most
/// [`FINAL_WAIT`]).
pub(crate) struct Log {
    shared: Arc<Shared>,
}

impl Log {
    /// Starts the thread that writes to `out`.
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
        Ok(Log { shared })
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
}
