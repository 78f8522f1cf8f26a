//! The log writer: batching, dropping when full, and the throttle of hickory's warnings.

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
