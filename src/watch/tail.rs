//! Follows one MTA log file by path, like `tail -F`, and hands out every
//! complete line exactly once, with a checkpoint that lets a restarted
//! daemon carry on where it stopped. This is the only place that reads
//! the live logs; the parsers and the ban policy see lines, never files.
//!
//! # What a [`Tailer`] guarantees
//!
//! - **Complete lines only.** A line is delivered without its `\n` (and
//!   without one `\r` before it). A partial last line is held until its
//!   newline arrives; the [`Checkpoint`] never moves past it.
//! - **Rename rotation** (`mv log log.1; create log`). When the path names
//!   a new file, the old one has already been read to its current end in
//!   the same poll; its descriptor is then kept open and drained on every
//!   poll until it has yielded nothing for
//!   [`TailOptions::retire_after_idle_polls`] polls in a row, so lines the
//!   MTA (or syslog daemon) still writes there before it reopens the log
//!   are not lost. The new file is read from offset 0. A partial line left
//!   at the end of a file that is closed this way is dropped and counted in
//!   [`PollStats::unterminated`].
//! - **Copytruncate** (same file, emptied in place). Detected when the file
//!   is shorter than our read offset, or when the bytes just before our
//!   offset are no longer the ones we read there (the file was truncated
//!   and grew back past our offset between two polls). Reading restarts at
//!   offset 0; a partial line we held is dropped (`unterminated`). Lines
//!   appended after our last poll and before the truncation exist only in
//!   the copy, which we do not read: that loss is inherent to copytruncate.
//! - **A missing file** (deleted or renamed away, not yet recreated) is
//!   waited for, not an error ([`PollStats::missing`]). A file we already
//!   hold open is still read while its name is gone.
//! - **Bounded memory.** A line longer than [`TailOptions::max_line`] bytes
//!   (not counting its `\n`) is **dropped**, never delivered truncated: the
//!   parsers anchor on fixed fields, and a cut line is evidence we would
//!   rather lose than misread. Dropped lines are counted in
//!   [`PollStats::overlong`], and the checkpoint moves past them. Per file
//!   we hold at most `max_line` bytes of partial line plus one read buffer.
//!
//! # Checkpoints and restarts
//!
//! [`Tailer::checkpoint`] names the followed file (device and inode) and the
//! offset just after the last complete line delivered, plus a hash of the
//! (up to) 64 bytes before that offset. The caller persists it after it has
//! processed the lines of a poll. [`Tailer::resume`] with that checkpoint
//! decides at its first poll that finds the path:
//!
//! - same device and inode, at least `offset` bytes long, and the bytes
//!   before `offset` hash the same: reading continues at `offset` — nothing
//!   lost, nothing delivered twice ([`ResumeOutcome::Exact`]);
//! - same device and inode but shorter, or the bytes before `offset`
//!   changed (truncated while we were down, or the inode number was reused
//!   by a new file): read from 0 ([`ResumeOutcome::Truncated`]);
//! - a different file (rotated while we were down): read the new file from
//!   0 ([`ResumeOutcome::NewFile`]). We do not go looking for the rotated
//!   file (`log.1`, `log-20261128`, compressed…): lines written to the old
//!   file after our last checkpoint are lost, and how many is unknown.
//!
//! Likewise, a restart forgets rotated-away files that were still being
//! drained: what was written to them after the last checkpoint is lost.
//! Put together: **while the tailer runs and polls at least once between
//! two rotations (or truncations), nothing is lost**; a restart loses only
//! what went into a file that is no longer at the path, and never delivers
//! a line twice.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::hash::fnv1a;

/// The checkpoint format written by this version.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Default [`TailOptions::max_line`]: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Default [`TailOptions::retire_after_idle_polls`].
pub const DEFAULT_RETIRE_AFTER_IDLE_POLLS: u32 = 10;

/// How many bytes before an offset identify the content there.
const WINDOW: usize = 64;

/// Bytes read per `pread`.
const READ_BUFFER: usize = 64 * 1024;

/// Tuning for a [`Tailer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailOptions {
    /// Longest line delivered, in bytes without the `\n`; longer lines are
    /// dropped and counted in [`PollStats::overlong`].
    pub max_line: usize,
    /// A rotated-away file is closed once this many polls in a row read
    /// nothing from it. At a 1-second poll interval, the default gives the
    /// MTA 10 seconds to reopen its log after a rotation.
    pub retire_after_idle_polls: u32,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            max_line: DEFAULT_MAX_LINE,
            retire_after_idle_polls: DEFAULT_RETIRE_AFTER_IDLE_POLLS,
        }
    }
}

/// Where to resume reading one log file: which file, and the offset just
/// after the last complete line delivered. Serialized (JSON in the state
/// store) with `"version": 1`; other versions are refused when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version, always [`CHECKPOINT_VERSION`].
    #[serde(deserialize_with = "version_1")]
    version: u32,
    /// Device of the file (`st_dev`).
    pub dev: u64,
    /// Inode of the file (`st_ino`).
    pub ino: u64,
    /// Offset just after the last complete line delivered.
    pub offset: u64,
    /// FNV-1a (64-bit) hash of the up to 64 bytes before `offset`: tells a
    /// file truncated and regrown, or a reused inode number, from ours.
    pub tail_hash: u64,
}

impl Checkpoint {
    /// The format version ([`CHECKPOINT_VERSION`]).
    pub fn version(&self) -> u32 {
        self.version
    }
}

fn version_1<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == CHECKPOINT_VERSION {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "unsupported checkpoint version {v} (this nolist reads version {CHECKPOINT_VERSION})"
        )))
    }
}

/// How a checkpoint given to [`Tailer::resume`] was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// The file is the checkpoint's: reading continued at its offset.
    Exact,
    /// The checkpoint's file was truncated (or its inode number reused)
    /// while we were down: read from 0. Lines may have been lost.
    Truncated,
    /// The path names another file (rotated while we were down): read it
    /// from 0. Lines written to the old file after the checkpoint are lost.
    NewFile,
}

/// What one [`Tailer::poll`] did (or, from [`Tailer::totals`], all polls).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollStats {
    /// Lines delivered.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines longer than [`TailOptions::max_line`], dropped.
    pub overlong: u64,
    /// Partial lines dropped because their file was truncated, or closed
    /// after rotation, before their newline arrived.
    pub unterminated: u64,
    /// Times the path turned out to name a new file.
    pub rotations: u64,
    /// Times a followed file was found truncated.
    pub truncations: u64,
    /// Rotated-away files closed after going idle.
    pub retired: u64,
    /// The path did not exist at (the last) poll.
    pub missing: bool,
    /// Set by the poll that applied the checkpoint given to `resume`.
    pub resume: Option<ResumeOutcome>,
}

impl PollStats {
    fn absorb(&mut self, s: &PollStats) {
        self.lines += s.lines;
        self.bytes += s.bytes;
        self.overlong += s.overlong;
        self.unterminated += s.unterminated;
        self.rotations += s.rotations;
        self.truncations += s.truncations;
        self.retired += s.retired;
        self.missing = s.missing;
        self.resume = self.resume.or(s.resume);
    }
}

/// Follows one log file by path; see the module documentation.
pub struct Tailer {
    path: PathBuf,
    opts: TailOptions,
    /// The file the path named when last looked at.
    cur: Option<Source>,
    /// Rotated-away files still drained, oldest first.
    retiring: Vec<Source>,
    /// A checkpoint not yet applied (the path has not been found yet).
    resume: Option<Checkpoint>,
    buf: Vec<u8>,
    totals: PollStats,
}

impl Tailer {
    /// Follows `path` from the start of whatever file it names.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_options(path, None, TailOptions::default())
    }

    /// Follows `path`, continuing from `checkpoint` if it still applies
    /// (see the module documentation). Does no I/O until the first poll.
    pub fn resume(path: impl Into<PathBuf>, checkpoint: Option<Checkpoint>) -> Self {
        Self::with_options(path, checkpoint, TailOptions::default())
    }

    /// [`Tailer::resume`] with explicit options.
    pub fn with_options(
        path: impl Into<PathBuf>,
        checkpoint: Option<Checkpoint>,
        opts: TailOptions,
    ) -> Self {
        Tailer {
            path: path.into(),
            opts,
            cur: None,
            retiring: Vec::new(),
            resume: checkpoint,
            buf: Vec::new(),
            totals: PollStats::default(),
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads everything available now, up to each file's current end,
    /// calling `out` once per complete line. Order: rotated-away files
    /// (oldest first), then the file followed so far, then the new file
    /// at the path if it changed.
    ///
    /// On error, lines already passed to `out` stay delivered and the
    /// checkpoint accounts for them; the next poll retries.
    pub fn poll(&mut self, out: &mut impl FnMut(&[u8])) -> io::Result<PollStats> {
        let mut stats = PollStats::default();
        let result = self.poll_into(out, &mut stats);
        self.totals.absorb(&stats);
        if stats.truncations > 0 {
            tracing::info!(path = %self.path.display(), "log truncated; read it again from the start");
        }
        result.map(|()| stats)
    }

    /// Where a restarted tailer should continue: the followed file and the
    /// end of the last complete line delivered from it. `None` until a file
    /// has been found (or the checkpoint given to `resume`, while its path
    /// is still missing).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        match &self.cur {
            Some(src) => Some(Checkpoint {
                version: CHECKPOINT_VERSION,
                dev: src.id.dev,
                ino: src.id.ino,
                offset: src.committed,
                tail_hash: src.committed_tail.hash(),
            }),
            None => self.resume,
        }
    }

    /// Sums over every poll so far (`missing`: the last poll's).
    pub fn totals(&self) -> PollStats {
        self.totals
    }

    fn poll_into(&mut self, out: &mut impl FnMut(&[u8]), stats: &mut PollStats) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; READ_BUFFER];
        }
        let max_line = self.opts.max_line;

        let mut i = 0;
        while i < self.retiring.len() {
            let src = &mut self.retiring[i];
            // A rotated-away file that fails to read is given up, rather
            // than stopping the file at the path from being read.
            let done = match src.drain(&mut self.buf, max_line, out, stats) {
                Ok(n) => {
                    src.idle_polls = if n == 0 { src.idle_polls + 1 } else { 0 };
                    src.idle_polls >= self.opts.retire_after_idle_polls
                }
                Err(error) => {
                    tracing::warn!(path = %self.path.display(), %error, "cannot read rotated-away log file; closing it");
                    true
                }
            };
            if done {
                let src = self.retiring.remove(i);
                if src.has_partial() {
                    stats.unterminated += 1;
                }
                stats.retired += 1;
                tracing::debug!(path = %self.path.display(), ino = src.id.ino, "closed rotated-away log file");
            } else {
                i += 1;
            }
        }

        if let Some(src) = &mut self.cur {
            src.drain(&mut self.buf, max_line, out, stats)?;
        }

        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                stats.missing = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if self.cur.as_ref().is_some_and(|s| s.id == FileId::of(&meta)) {
            return Ok(());
        }
        if !meta.is_file() {
            // Opening a FIFO would block; anything else is a config error.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.path.display()),
            ));
        }
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                stats.missing = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The identity of what we opened, not of what we stat'ed.
        let meta = file.metadata()?;
        let id = FileId::of(&meta);
        if self.cur.as_ref().is_some_and(|s| s.id == id) {
            return Ok(());
        }
        let mut src = Source::new(file, id);
        if let Some(cp) = self.resume {
            // Kept until applied: an error here must not lose it.
            let outcome = src.apply(&cp, meta.len())?;
            self.resume = None;
            match outcome {
                ResumeOutcome::Exact => {
                    tracing::debug!(path = %self.path.display(), offset = cp.offset, "resumed log at checkpoint");
                }
                _ => tracing::warn!(
                    path = %self.path.display(),
                    ?outcome,
                    "log changed while stopped; reading it from the start, lines may have been lost"
                ),
            }
            stats.resume = Some(outcome);
        }
        if let Some(old) = self.cur.replace(src) {
            tracing::info!(path = %self.path.display(), "log rotated; following the new file");
            stats.rotations += 1;
            self.retiring.push(old);
        }
        if let Some(src) = &mut self.cur {
            src.drain(&mut self.buf, max_line, out, stats)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("path", &self.path)
            .field("checkpoint", &self.checkpoint())
            .field("retiring", &self.retiring.len())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// A file's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// One open file and our position in it.
#[derive(Debug)]
struct Source {
    file: File,
    id: FileId,
    /// Bytes consumed (delivered, held as a partial line, or skipped).
    read_off: u64,
    /// End of the last complete line: the checkpoint offset.
    committed: u64,
    /// The bytes read, split into lines.
    lines: Lines,
    /// The bytes just before `read_off`.
    read_tail: Window,
    /// The bytes just before `committed`.
    committed_tail: Window,
    /// Polls in a row that read nothing (for rotated-away files).
    idle_polls: u32,
}

impl Source {
    fn new(file: File, id: FileId) -> Self {
        Source {
            file,
            id,
            read_off: 0,
            committed: 0,
            lines: Lines::default(),
            read_tail: Window::default(),
            committed_tail: Window::default(),
            idle_polls: 0,
        }
    }

    /// Back to offset 0, forgetting any partial line.
    fn reset(&mut self) {
        self.read_off = 0;
        self.committed = 0;
        self.lines = Lines::default();
        self.read_tail = Window::default();
        self.committed_tail = Window::default();
    }

    fn has_partial(&self) -> bool {
        self.lines.has_partial()
    }

    /// Positions at `cp` if it describes this file as it is now.
    fn apply(&mut self, cp: &Checkpoint, size: u64) -> io::Result<ResumeOutcome> {
        if (cp.dev, cp.ino) != (self.id.dev, self.id.ino) {
            return Ok(ResumeOutcome::NewFile);
        }
        if cp.offset > size {
            return Ok(ResumeOutcome::Truncated);
        }
        let len = cp.offset.min(WINDOW as u64) as usize;
        let mut bytes = [0; WINDOW];
        let got = read_full_at(&self.file, &mut bytes[..len], cp.offset - len as u64)?;
        if got < len || fnv1a(&bytes[..len]) != cp.tail_hash {
            return Ok(ResumeOutcome::Truncated);
        }
        let mut tail = Window::default();
        tail.push(&bytes[..len]);
        self.read_off = cp.offset;
        self.committed = cp.offset;
        self.read_tail = tail;
        self.committed_tail = tail;
        Ok(ResumeOutcome::Exact)
    }

    /// Reads from `read_off` to the end the file has now; returns the
    /// number of bytes read.
    fn drain(
        &mut self,
        buf: &mut [u8],
        max_line: usize,
        out: &mut impl FnMut(&[u8]),
        stats: &mut PollStats,
    ) -> io::Result<u64> {
        let size = self.file.metadata()?.len();
        if self.truncated(size)? {
            stats.truncations += 1;
            if self.has_partial() {
                stats.unterminated += 1;
            }
            self.reset();
        }
        let mut total = 0;
        while self.read_off < size {
            let want = (size - self.read_off).min(buf.len() as u64) as usize;
            let n = match self.file.read_at(&mut buf[..want], self.read_off) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(&buf[..n], max_line, out, stats);
            total += n as u64;
        }
        Ok(total)
    }

    /// Whether the file no longer holds what we read from it.
    fn truncated(&self, size: u64) -> io::Result<bool> {
        if size < self.read_off {
            return Ok(true);
        }
        if !self.still_at(self.committed, &self.committed_tail)? {
            return Ok(true);
        }
        if self.read_off > self.committed && !self.still_at(self.read_off, &self.read_tail)? {
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the bytes ending at `end` are still `window`'s.
    fn still_at(&self, end: u64, window: &Window) -> io::Result<bool> {
        let want = window.bytes();
        if want.is_empty() {
            return Ok(true);
        }
        let mut got = [0; WINDOW];
        let got = &mut got[..want.len()];
        let n = read_full_at(&self.file, got, end - want.len() as u64)?;
        Ok(n == want.len() && got == want)
    }

    /// Splits freshly read bytes into lines.
    fn consume(
        &mut self,
        data: &[u8],
        max_line: usize,
        out: &mut impl FnMut(&[u8]),
        stats: &mut PollStats,
    ) {
        let base = self.read_off;
        if let Some(end) = self.lines.feed(data, max_line, out, stats) {
            self.committed = base + end as u64 + 1;
            let mut tail = self.read_tail;
            tail.push(&data[..=end]);
            self.committed_tail = tail;
        }
        self.read_tail.push(data);
        self.read_off = base + data.len() as u64;
        stats.bytes += data.len() as u64;
    }
}

/// Splits a byte stream into lines: the one line-reading path of `run`
/// (through [`Tailer`]) and `replay`, so both see the same lines. A line
/// longer than `max_line` bytes (without its `\n`) is dropped and counted
/// in [`PollStats::overlong`], never delivered cut; a trailing `\r` is
/// removed. At most `max_line` bytes of a partial line are held.
#[derive(Debug, Default)]
pub struct Lines {
    /// The partial line read so far (at most `max_line` bytes).
    pending: Vec<u8>,
    /// The current line went over `max_line`: skip to its newline.
    skipping: bool,
}

impl Lines {
    /// Feeds the next bytes of the stream, calling `out` once per complete
    /// line and counting in `stats.lines` and `stats.overlong`. Returns the
    /// index in `data` of its last `\n`, if it has one.
    pub fn feed(
        &mut self,
        data: &[u8],
        max_line: usize,
        out: &mut impl FnMut(&[u8]),
        stats: &mut PollStats,
    ) -> Option<usize> {
        let mut start = 0;
        let mut last_newline = None;
        while let Some(rel) = data[start..].iter().position(|&b| b == b'\n') {
            let end = start + rel;
            let piece = &data[start..end];
            if self.skipping {
                self.skipping = false;
                stats.overlong += 1;
            } else if self.pending.len() + piece.len() > max_line {
                self.pending.clear();
                stats.overlong += 1;
            } else if self.pending.is_empty() {
                out(strip_cr(piece));
                stats.lines += 1;
            } else {
                self.pending.extend_from_slice(piece);
                out(strip_cr(&self.pending));
                stats.lines += 1;
                self.pending.clear();
            }
            last_newline = Some(end);
            start = end + 1;
        }
        let rest = &data[start..];
        if !self.skipping && !rest.is_empty() {
            if self.pending.len() + rest.len() > max_line {
                self.skipping = true;
                self.pending = Vec::new();
            } else {
                self.pending.extend_from_slice(rest);
            }
        }
        last_newline
    }

    /// Ends the stream (a whole file, as `replay` reads it): a last line
    /// without its `\n` is delivered, or counted as overlong. (A followed
    /// log never ends: the tailer waits for the newline instead.)
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8]), stats: &mut PollStats) {
        if self.skipping {
            stats.overlong += 1;
        } else if !self.pending.is_empty() {
            out(strip_cr(&self.pending));
            stats.lines += 1;
        }
        *self = Lines::default();
    }

    /// Whether part of a line is held (or being skipped).
    pub fn has_partial(&self) -> bool {
        self.skipping || !self.pending.is_empty()
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The last (up to) [`WINDOW`] bytes of a stream.
#[derive(Clone, Copy, Debug)]
struct Window {
    buf: [u8; WINDOW],
    len: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buf: [0; WINDOW],
            len: 0,
        }
    }
}

impl Window {
    fn push(&mut self, data: &[u8]) {
        if data.len() >= WINDOW {
            self.buf.copy_from_slice(&data[data.len() - WINDOW..]);
            self.len = WINDOW;
        } else {
            let keep = self.len.min(WINDOW - data.len());
            self.buf.copy_within(self.len - keep..self.len, 0);
            self.buf[keep..keep + data.len()].copy_from_slice(data);
            self.len = keep + data.len();
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn hash(&self) -> u64 {
        fnv1a(self.bytes())
    }
}

#[cfg(test)]
mod tests;
