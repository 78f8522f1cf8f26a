//! The tailer against real files: one test per case of the module
//! documentation, then a model-based property test (random write / partial
//! line / rotate / delete / copytruncate / restart / poll sequences checked
//! poll by poll against a small model of the documented semantics) and a
//! property that nothing is lost while the tailer runs.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;

fn dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.log");
    (dir, path)
}

fn append(path: &Path, bytes: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes.as_bytes())
        .unwrap();
}

fn poll(t: &mut Tailer) -> (Vec<String>, PollStats) {
    let mut lines = Vec::new();
    let stats = t
        .poll(&mut |l: &[u8]| lines.push(String::from_utf8(l.to_vec()).unwrap()))
        .unwrap();
    (lines, stats)
}

fn lines(t: &mut Tailer) -> Vec<String> {
    poll(t).0
}

fn opts(max_line: usize, retire_after_idle_polls: u32) -> TailOptions {
    TailOptions {
        max_line,
        retire_after_idle_polls,
    }
}

#[test]
fn partial_line_is_held_until_its_newline() {
    let (_d, path) = dir();
    append(&path, "one\ntw");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["one"]);
    assert_eq!(
        t.checkpoint().unwrap().offset,
        4,
        "not past the partial line"
    );
    append(&path, "o");
    assert_eq!(lines(&mut t), Vec::<String>::new());
    assert_eq!(t.checkpoint().unwrap().offset, 4);
    append(&path, "\r\nthree\n\n");
    assert_eq!(lines(&mut t), ["two", "three", ""], "\\r\\n stripped");
    assert_eq!(t.checkpoint().unwrap().offset, 16);
    let (l, stats) = poll(&mut t);
    assert!(l.is_empty());
    assert_eq!(stats.bytes, 0);
    assert_eq!(t.totals().lines, 4);
}

#[test]
fn lines_split_across_small_reads() {
    let (_d, path) = dir();
    append(&path, "alpha\nbravo\r\ncharlie\nde");
    let mut t = Tailer::new(&path);
    t.buf = vec![0; 3];
    assert_eq!(lines(&mut t), ["alpha", "bravo", "charlie"]);
    append(&path, "lta\n");
    assert_eq!(lines(&mut t), ["delta"]);
    assert_eq!(t.checkpoint().unwrap().offset, 27);
}

#[test]
fn rotation_reads_the_old_tail_then_the_new_file() {
    let (d, path) = dir();
    append(&path, "1\n");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["1"]);
    // Written after our last poll, then rotated away.
    append(&path, "2\n3");
    fs::rename(&path, d.path().join("mail.log.1")).unwrap();
    append(&path, "4\n");
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["2", "4"]);
    assert_eq!(stats.rotations, 1);
    let cp = t.checkpoint().unwrap();
    assert_eq!(cp.ino, fs::metadata(&path).unwrap().ino());
    assert_eq!(cp.offset, 2);
}

#[test]
fn rotated_file_is_drained_until_idle() {
    let (d, path) = dir();
    let old = d.path().join("mail.log.1");
    append(&path, "1\n");
    let mut t = Tailer::with_options(&path, None, opts(DEFAULT_MAX_LINE, 2));
    assert_eq!(lines(&mut t), ["1"]);
    fs::rename(&path, &old).unwrap();
    append(&path, "new 1\n");
    assert_eq!(lines(&mut t), ["new 1"]);
    // The MTA has not reopened its log yet: it still writes the old file.
    append(&old, "2\n");
    append(&path, "new 2\n");
    assert_eq!(lines(&mut t), ["2", "new 2"]);
    append(&old, "unfinished");
    assert_eq!(lines(&mut t), Vec::<String>::new());
    let (_, stats) = poll(&mut t); // idle 1
    assert_eq!(stats.retired, 0);
    let (_, stats) = poll(&mut t); // idle 2: closed
    assert_eq!(stats.retired, 1);
    assert_eq!(
        stats.unterminated, 1,
        "the partial line is dropped, and counted"
    );
    append(&old, " line\n");
    assert_eq!(
        lines(&mut t),
        Vec::<String>::new(),
        "closed: no longer read"
    );
    assert!(t.retiring.is_empty());
}

#[test]
fn copytruncate_restarts_from_zero() {
    let (d, path) = dir();
    append(&path, "1\n2\n");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["1", "2"]);
    fs::copy(&path, d.path().join("mail.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let (l, stats) = poll(&mut t);
    assert!(l.is_empty());
    assert_eq!(stats.truncations, 1);
    assert_eq!(t.checkpoint().unwrap().offset, 0);
    append(&path, "3\n");
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["3"]);
    assert_eq!(stats.truncations, 0);
}

#[test]
fn copytruncate_then_regrowth_past_our_offset_is_detected() {
    let (_d, path) = dir();
    append(&path, "Nov 28 12:00:01 first\nNov 28 12:00:02 sec");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["Nov 28 12:00:01 first"]);
    // Truncated, and grown back past our offset before the next poll.
    let f = OpenOptions::new().append(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    append(
        &path,
        "Nov 28 13:00:00 after rotation, a longer line\nnext\n",
    );
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["Nov 28 13:00:00 after rotation, a longer line", "next"]);
    assert_eq!(stats.truncations, 1);
    assert_eq!(stats.unterminated, 1, "the held partial line is dropped");
}

#[test]
fn missing_file_is_waited_for() {
    let (d, path) = dir();
    let mut t = Tailer::new(&path);
    let (l, stats) = poll(&mut t);
    assert!(l.is_empty());
    assert!(stats.missing);
    assert_eq!(t.checkpoint(), None);
    append(&path, "hello\n");
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["hello"]);
    assert!(!stats.missing);

    // Renamed away, written once more, recreated later.
    append(&path, "last words\n");
    fs::rename(&path, d.path().join("mail.log.1")).unwrap();
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["last words"], "the open file is still read");
    assert!(stats.missing);
    append(&path, "reborn\n");
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["reborn"]);
    assert_eq!(stats.rotations, 1);
}

#[test]
fn not_a_regular_file_is_an_error() {
    let (d, _) = dir();
    let mut t = Tailer::new(d.path());
    let err = t.poll(&mut |_: &[u8]| {}).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn overlong_lines_are_dropped_and_counted() {
    let (_d, path) = dir();
    let mut t = Tailer::with_options(&path, None, opts(8, 10));
    append(&path, "12345678\n123456789\nok\n");
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["12345678", "ok"], "exactly max_line is kept");
    assert_eq!(stats.overlong, 1);

    // Growing across polls: never held beyond the cap.
    append(&path, "abcdef");
    assert!(lines(&mut t).is_empty());
    append(&path, "ghijklmnop");
    assert!(lines(&mut t).is_empty());
    assert!(t.cur.as_ref().unwrap().lines.pending.is_empty());
    assert!(t.cur.as_ref().unwrap().lines.skipping);
    append(&path, &"x".repeat(100_000));
    assert!(lines(&mut t).is_empty());
    assert!(t.cur.as_ref().unwrap().lines.pending.capacity() <= 8);
    append(&path, "\nafter\n");
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["after"]);
    assert_eq!(stats.overlong, 1);
    assert_eq!(t.totals().overlong, 2);
    // The checkpoint moves past a dropped line.
    assert_eq!(
        t.checkpoint().unwrap().offset,
        fs::metadata(&path).unwrap().len()
    );
}

#[test]
fn resume_continues_exactly_at_the_checkpoint() {
    let (_d, path) = dir();
    append(&path, "1\n2\n3");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["1", "2"]);
    let cp = t.checkpoint().unwrap();
    drop(t);
    append(&path, "a\n4\n5");

    // Through the store's JSON form.
    let json = serde_json::to_string(&cp).unwrap();
    assert!(json.contains(r#""version":1"#), "{json}");
    let cp: Checkpoint = serde_json::from_str(&json).unwrap();

    let mut t = Tailer::resume(&path, Some(cp));
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["3a", "4"], "nothing lost, nothing twice");
    assert_eq!(stats.resume, Some(ResumeOutcome::Exact));
    append(&path, "\n");
    assert_eq!(lines(&mut t), ["5"]);
}

#[test]
fn checkpoint_versions_other_than_1_are_refused() {
    let good = r#"{"version":1,"dev":1,"ino":2,"offset":3,"tail_hash":4}"#;
    let cp: Checkpoint = serde_json::from_str(good).unwrap();
    assert_eq!((cp.version(), cp.dev, cp.ino, cp.offset), (1, 1, 2, 3));
    let v2 = good.replace(r#""version":1"#, r#""version":2"#);
    let err = serde_json::from_str::<Checkpoint>(&v2).unwrap_err();
    assert!(
        err.to_string().contains("unsupported checkpoint version 2"),
        "{err}"
    );
    let extra = good.replace('}', r#","x":0}"#);
    assert!(serde_json::from_str::<Checkpoint>(&extra).is_err());
    let missing = r#"{"dev":1,"ino":2,"offset":3,"tail_hash":4}"#;
    assert!(serde_json::from_str::<Checkpoint>(missing).is_err());
}

#[test]
fn resume_after_truncation_while_down() {
    let (_d, path) = dir();
    append(&path, "a long first line\nsecond\n");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t).len(), 2);
    let cp = t.checkpoint().unwrap();
    drop(t);

    // Shorter than the checkpoint.
    fs::write(&path, "x\n").unwrap();
    let mut t = Tailer::resume(&path, Some(cp));
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["x"]);
    assert_eq!(stats.resume, Some(ResumeOutcome::Truncated));

    // Truncated and grown back past the checkpoint: the bytes before the
    // offset tell.
    fs::write(&path, "a long first line\nsecond\n").unwrap();
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t).len(), 2);
    let cp = t.checkpoint().unwrap();
    drop(t);
    fs::write(&path, "another first line\nand more after it\n").unwrap();
    let mut t = Tailer::resume(&path, Some(cp));
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["another first line", "and more after it"]);
    assert_eq!(stats.resume, Some(ResumeOutcome::Truncated));
}

#[test]
fn resume_after_rotation_while_down_reads_the_new_file() {
    let (d, path) = dir();
    append(&path, "old 1\n");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["old 1"]);
    let cp = t.checkpoint().unwrap();
    drop(t);
    append(&path, "old 2 (lost)\n");
    fs::rename(&path, d.path().join("mail.log.1")).unwrap();
    append(&path, "new 1\n");
    let mut t = Tailer::resume(&path, Some(cp));
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["new 1"]);
    assert_eq!(stats.resume, Some(ResumeOutcome::NewFile));
}

#[test]
fn resume_waits_for_a_missing_file_and_keeps_the_checkpoint() {
    let (d, path) = dir();
    append(&path, "1\n");
    let mut t = Tailer::new(&path);
    assert_eq!(lines(&mut t), ["1"]);
    let cp = t.checkpoint().unwrap();
    drop(t);
    fs::rename(&path, d.path().join("away")).unwrap();
    let mut t = Tailer::resume(&path, Some(cp));
    let (l, stats) = poll(&mut t);
    assert!(l.is_empty() && stats.missing);
    assert_eq!(t.checkpoint(), Some(cp), "still what to persist");
    // The same file comes back under its name.
    append(&d.path().join("away"), "2\n");
    fs::rename(d.path().join("away"), &path).unwrap();
    let (l, stats) = poll(&mut t);
    assert_eq!(l, ["2"]);
    assert_eq!(stats.resume, Some(ResumeOutcome::Exact));
}

#[test]
fn window_keeps_the_last_bytes() {
    let mut w = Window::default();
    w.push(b"abc");
    w.push(b"");
    assert_eq!(w.bytes(), b"abc");
    let long: Vec<u8> = (0..100u8).collect();
    w.push(&long[..62]);
    assert_eq!(w.bytes().len(), WINDOW);
    assert_eq!(&w.bytes()[..4], b"bc\x00\x01");
    w.push(&long);
    assert_eq!(w.bytes(), &long[100 - WINDOW..]);
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

// ---------------------------------------------------------------------------
// Model-based property tests.
//
// Every line the writer produces is `SEQ:FILLER:SEQ` with a unique SEQ, and
// a partial line always starts with `SEQ:`. Lines stay under 64 bytes, so
// the bytes before any offset we held identify the content there: the
// model may assume truncation is always detected.

#[derive(Clone, Debug)]
enum Op {
    /// Complete lines (finishing a pending partial line first).
    Write {
        n: usize,
        crlf: bool,
    },
    /// Start, or extend, a partial line.
    Partial(String),
    /// Finish the partial line, if any.
    Finish {
        crlf: bool,
    },
    /// `mv log log.rN; create log`; the writer reopens now, or later.
    Rotate {
        reopen: bool,
    },
    /// The writer reopens the path (creating it if missing).
    Reopen,
    /// `rm log` (the writer keeps writing the unlinked file).
    Delete,
    /// `cp log log.cN; truncate log` as one step.
    CopyTruncate,
    Poll,
    /// Drop the tailer; resume from the last checkpoint saved after a poll.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..4usize, any::<bool>()).prop_map(|(n, crlf)| Op::Write { n, crlf }),
        2 => "[a-z0-9]{1,8}".prop_map(Op::Partial),
        1 => any::<bool>().prop_map(|crlf| Op::Finish { crlf }),
        1 => any::<bool>().prop_map(|reopen| Op::Rotate { reopen }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Delete),
        1 => Just(Op::CopyTruncate),
        5 => Just(Op::Poll),
        1 => Just(Op::Restart),
    ]
}

/// A file as the model knows it: content since the last truncation.
struct MFile {
    content: Vec<u8>,
    epoch: u32,
    ino: u64,
}

struct Writer {
    fid: usize,
    file: File,
    /// The unfinished line: its SEQ and length so far.
    partial: Option<(u64, usize)>,
}

/// The real files, and what the model knows about them.
struct World {
    dir: TempDir,
    path: PathBuf,
    files: Vec<MFile>,
    at_path: Option<usize>,
    writer: Option<Writer>,
    seq: u64,
    renames: u32,
    /// For each SEQ, the file its line went to.
    seq_file: Vec<usize>,
}

impl World {
    fn new() -> Self {
        let (dir, path) = dir();
        World {
            dir,
            path,
            files: Vec::new(),
            at_path: None,
            writer: None,
            seq: 0,
            renames: 0,
            seq_file: Vec::new(),
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let w = self.writer.as_mut().unwrap();
        w.file.write_all(bytes).unwrap();
        self.files[w.fid].content.extend_from_slice(bytes);
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        self.seq_file.push(self.writer.as_ref().unwrap().fid);
        seq
    }

    fn create_at_path(&mut self) {
        File::create_new(&self.path).unwrap();
        let ino = fs::metadata(&self.path).unwrap().ino();
        self.files.push(MFile {
            content: Vec::new(),
            epoch: 0,
            ino,
        });
        self.at_path = Some(self.files.len() - 1);
    }

    fn finish(&mut self, crlf: bool) {
        if let Some((seq, _)) = self.writer.as_mut().and_then(|w| w.partial.take()) {
            let cr = if crlf { "\r" } else { "" };
            self.append(format!(":{seq}{cr}\n").as_bytes());
        }
    }

    fn reopen(&mut self) {
        self.finish(false);
        if self.at_path.is_none() {
            self.create_at_path();
        }
        let file = OpenOptions::new().append(true).open(&self.path).unwrap();
        self.writer = Some(Writer {
            fid: self.at_path.unwrap(),
            file,
            partial: None,
        });
    }

    fn rename_away(&mut self, tag: &str) -> PathBuf {
        self.renames += 1;
        self.dir
            .path()
            .join(format!("mail.log.{tag}{}", self.renames))
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { n, crlf } => {
                if self.writer.is_none() {
                    self.reopen();
                }
                self.finish(*crlf);
                for _ in 0..*n {
                    let seq = self.next_seq();
                    let filler = &"abcdefghijklmnopq"[..(seq as usize * 7) % 17];
                    let cr = if *crlf { "\r" } else { "" };
                    self.append(format!("{seq}:{filler}:{seq}{cr}\n").as_bytes());
                }
            }
            Op::Partial(filler) => {
                if self.writer.is_none() {
                    self.reopen();
                }
                match self.writer.as_ref().unwrap().partial {
                    Some((_, len)) if len > 30 => self.finish(false),
                    Some((seq, len)) => {
                        self.append(filler.as_bytes());
                        self.writer.as_mut().unwrap().partial = Some((seq, len + filler.len()));
                    }
                    None => {
                        let seq = self.next_seq();
                        let start = format!("{seq}:{filler}");
                        self.append(start.as_bytes());
                        self.writer.as_mut().unwrap().partial = Some((seq, start.len()));
                    }
                }
            }
            Op::Finish { crlf } => self.finish(*crlf),
            Op::Rotate { reopen } => {
                if self.at_path.take().is_some() {
                    let to = self.rename_away("r");
                    fs::rename(&self.path, to).unwrap();
                }
                self.create_at_path();
                if *reopen {
                    self.reopen();
                }
            }
            Op::Reopen => self.reopen(),
            Op::Delete => {
                if self.at_path.take().is_some() {
                    fs::remove_file(&self.path).unwrap();
                }
            }
            Op::CopyTruncate => {
                if let Some(p) = self.at_path {
                    if self.writer.as_ref().is_some_and(|w| w.fid == p) {
                        self.finish(false);
                    }
                    let to = self.rename_away("c");
                    fs::copy(&self.path, to).unwrap();
                    OpenOptions::new()
                        .write(true)
                        .open(&self.path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    self.files[p].content.clear();
                    self.files[p].epoch += 1;
                }
            }
            Op::Poll | Op::Restart => {}
        }
    }
}

/// The model's view of one file the tailer holds.
#[derive(Clone, Copy, Debug)]
struct MOpen {
    fid: usize,
    epoch: u32,
    read: usize,
    committed: usize,
    idle: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct MCheckpoint {
    fid: usize,
    epoch: u32,
    committed: usize,
}

#[derive(Default, Debug)]
struct MPoll {
    lines: Vec<Vec<u8>>,
    overlong: u64,
    unterminated: u64,
    truncations: u64,
    rotations: u64,
    resumed_exact: Option<bool>,
}

/// The documented semantics, on the model's files.
struct Model {
    opts: TailOptions,
    cur: Option<MOpen>,
    retiring: Vec<MOpen>,
    resume: Option<MCheckpoint>,
}

impl Model {
    fn drain(&self, files: &[MFile], st: &mut MOpen, p: &mut MPoll) -> usize {
        let f = &files[st.fid];
        if st.epoch != f.epoch {
            if st.read > 0 {
                p.truncations += 1;
                if st.read > st.committed {
                    p.unterminated += 1;
                }
            }
            *st = MOpen {
                epoch: f.epoch,
                read: 0,
                committed: 0,
                ..*st
            };
        }
        let new = f.content.len() - st.read;
        for nl in (st.committed..f.content.len()).filter(|&i| f.content[i] == b'\n') {
            let line = &f.content[st.committed..nl];
            if line.len() > self.opts.max_line {
                p.overlong += 1;
            } else {
                p.lines
                    .push(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
            }
            st.committed = nl + 1;
        }
        st.read = f.content.len();
        new
    }

    fn poll(&mut self, w: &World) -> MPoll {
        let mut p = MPoll::default();
        let mut retiring = std::mem::take(&mut self.retiring);
        retiring.retain_mut(|st| {
            let n = self.drain(&w.files, st, &mut p);
            st.idle = if n == 0 { st.idle + 1 } else { 0 };
            let keep = st.idle < self.opts.retire_after_idle_polls;
            if !keep && st.read > st.committed {
                p.unterminated += 1;
            }
            keep
        });
        self.retiring = retiring;
        if let Some(mut st) = self.cur {
            self.drain(&w.files, &mut st, &mut p);
            self.cur = Some(st);
        }
        let Some(fid) = w.at_path else { return p };
        if self.cur.is_some_and(|c| c.fid == fid) {
            return p;
        }
        let epoch = w.files[fid].epoch;
        let mut st = MOpen {
            fid,
            epoch,
            read: 0,
            committed: 0,
            idle: 0,
        };
        if let Some(cp) = self.resume.take() {
            // Same inode (the number may have been reused), and either
            // nothing to check or the very content we read.
            let same_ino = w.files[cp.fid].ino == w.files[fid].ino;
            let exact = same_ino && (cp.committed == 0 || (cp.fid == fid && cp.epoch == epoch));
            if exact {
                st.read = cp.committed;
                st.committed = cp.committed;
            }
            p.resumed_exact = Some(exact);
        }
        if let Some(old) = self.cur.replace(st) {
            self.retiring.push(old);
            p.rotations += 1;
        }
        self.drain(&w.files, &mut st, &mut p);
        self.cur = Some(st);
        p
    }

    fn checkpoint(&self) -> Option<MCheckpoint> {
        match self.cur {
            Some(c) => Some(MCheckpoint {
                fid: c.fid,
                epoch: c.epoch,
                committed: c.committed,
            }),
            None => self.resume,
        }
    }
}

/// Runs `ops` against a real tailer and the model, comparing every poll;
/// returns every line delivered.
fn run(
    ops: &[Op],
    opts: TailOptions,
    chunk: usize,
) -> Result<(World, Vec<Vec<u8>>), TestCaseError> {
    let mut w = World::new();
    let path = w.path.clone();
    let start = |cp| {
        let mut t = Tailer::with_options(&path, cp, opts);
        t.buf = vec![0; chunk];
        t
    };
    let mut tailer = start(None);
    let mut model = Model {
        opts,
        cur: None,
        retiring: Vec::new(),
        resume: None,
    };
    let (mut saved, mut msaved) = (None, None);
    let mut delivered = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Poll => {
                let mut got = Vec::new();
                let stats = tailer.poll(&mut |l: &[u8]| got.push(l.to_vec())).unwrap();
                let want = model.poll(&w);
                let show = |v: &[Vec<u8>]| {
                    v.iter()
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .collect::<Vec<_>>()
                };
                prop_assert_eq!(show(&got), show(&want.lines), "lines at op {}", i);
                prop_assert_eq!(stats.overlong, want.overlong, "overlong at op {}", i);
                prop_assert_eq!(
                    stats.unterminated,
                    want.unterminated,
                    "unterminated at op {}",
                    i
                );
                prop_assert_eq!(
                    stats.truncations,
                    want.truncations,
                    "truncations at op {}",
                    i
                );
                prop_assert_eq!(stats.rotations, want.rotations, "rotations at op {}", i);
                prop_assert_eq!(
                    stats.resume.map(|r| r == ResumeOutcome::Exact),
                    want.resumed_exact,
                    "resume at op {}",
                    i
                );
                prop_assert_eq!(stats.missing, w.at_path.is_none());
                delivered.extend(got);
                saved = tailer.checkpoint();
                msaved = model.checkpoint();
                match (saved, msaved) {
                    (None, None) => {}
                    (Some(cp), Some(m)) => {
                        prop_assert_eq!(cp.ino, w.files[m.fid].ino, "checkpoint file at op {}", i);
                        prop_assert_eq!(cp.offset, m.committed as u64, "checkpoint at op {}", i);
                    }
                    (cp, m) => prop_assert!(false, "checkpoint {:?} vs model {:?}", cp, m),
                }
            }
            Op::Restart => {
                tailer = start(saved);
                model = Model {
                    opts,
                    cur: None,
                    retiring: Vec::new(),
                    resume: msaved,
                };
            }
            op => w.apply(op),
        }
    }
    Ok((w, delivered))
}

fn seq_of(line: &[u8]) -> u64 {
    let s = std::str::from_utf8(line).unwrap();
    s.split(':').next().unwrap().parse().unwrap()
}

proptest! {
    /// Every poll delivers exactly what the documented semantics say, with
    /// restarts, rotations, deletions and truncations at random points.
    #[test]
    fn tailer_matches_model(
        ops in proptest::collection::vec(op(), 1..80),
        max_line in 8usize..48,
        retire in 0u32..4,
        chunk in prop_oneof![1usize..16, Just(READ_BUFFER)],
    ) {
        run(&ops, opts(max_line, retire), chunk)?;
    }

    /// While the tailer runs and polls before every rotation, deletion and
    /// truncation, every complete line is delivered exactly once, in order
    /// within its file.
    #[test]
    fn nothing_lost_while_running(
        ops in proptest::collection::vec(op(), 1..80),
        chunk in prop_oneof![1usize..16, Just(READ_BUFFER)],
    ) {
        let mut with_polls = Vec::new();
        for op in ops {
            match op {
                Op::Restart => continue,
                Op::Rotate { .. } | Op::Delete | Op::CopyTruncate => {
                    with_polls.extend([Op::Finish { crlf: false }, Op::Poll]);
                }
                _ => {}
            }
            with_polls.push(op);
        }
        with_polls.extend([Op::Finish { crlf: false }, Op::Poll]);
        let (w, delivered) = run(&with_polls, opts(1024, u32::MAX), chunk)?;
        let mut seqs: Vec<u64> = delivered.iter().map(|l| seq_of(l)).collect();
        let mut last_in_file = vec![None; w.files.len()];
        for &s in &seqs {
            let f = w.seq_file[s as usize];
            prop_assert!(last_in_file[f] < Some(s), "line {} out of order", s);
            last_in_file[f] = Some(s);
        }
        seqs.sort_unstable();
        prop_assert_eq!(seqs, (0..w.seq).collect::<Vec<_>>());
    }
}
