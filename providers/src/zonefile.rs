//! `zonefile`: the zone lives in a master file, `DIR/<zone>.zone`, kept in
//! git and loaded by BIND, NSD or Knot. Reading parses the file with
//! hickory's master-file parser. Applying edits the text: the entries of
//! the changed RRsets are removed, their new records are written (with an
//! absolute owner, TTL and class) where the RRset's first entry was, or at
//! the end of the file for a new RRset, and the SOA serial is raised by one.
//! Every other line stays byte for byte, with one exception: a line whose
//! owner was inherited from a removed entry gets that owner written in
//! front, so it keeps meaning what it meant. The file is replaced durably
//! (`nolist_durable`: temporary file, fsync, rename, fsync of the
//! directory). `$INCLUDE`d files are read but never edited.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hickory_proto::rr::{Name as DnsName, RData, RecordType as DnsType};
use hickory_proto::serialize::txt::Parser;

use crate::{Change, Key, Kind, Provider, ProviderError, Rdata, RecordType, RrSet, absolute};

/// `kind: zonefile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The directory of the zone files (`<zone>.zone`, e.g. `example.org.zone`).
    pub dir: PathBuf,
}

/// The zone-file backend.
#[derive(Debug)]
pub struct Zonefile {
    settings: Settings,
}

impl Zonefile {
    /// A backend for the files in `settings.dir`.
    pub fn new(settings: Settings) -> Zonefile {
        Zonefile { settings }
    }

    /// The file of `zone`.
    pub fn path(&self, zone: &str) -> PathBuf {
        let name = absolute(zone);
        self.settings
            .dir
            .join(format!("{}.zone", name.trim_end_matches('.')))
    }

    fn load(&self, zone: &str) -> Result<(PathBuf, String), ProviderError> {
        let path = self.path(zone);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ProviderError::ZoneMissing {
                provider: "zonefile".into(),
                zone: absolute(zone),
                message: format!("{} does not exist", path.display()),
            }),
            Err(e) => Err(file_error(&path, e)),
        }
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::File {
        path: crate::shown(path),
        message: e.to_string(),
    }
}

#[async_trait]
impl Provider for Zonefile {
    fn kind(&self) -> Kind {
        Kind::Zonefile
    }

    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError> {
        let (path, text) = self.load(zone)?;
        read_text(&text, &path, zone, keys)
    }

    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError> {
        let (path, text) = self.load(zone)?;
        let edited = edit(&text, zone, changes);
        // Refuse to write what we could not read back.
        read_text(&edited, &path, zone, &[]).map_err(|e| {
            file_error(
                &path,
                format!("the edited zone does not parse ({e}); not written"),
            )
        })?;
        nolist_durable::write_atomically(&path, edited.as_bytes()).map_err(|e| file_error(&path, e))
    }
}

/// The RRsets among `keys` in master-file `text` of `zone`.
pub fn read_text(
    text: &str,
    path: &Path,
    zone: &str,
    keys: &[Key],
) -> Result<Vec<RrSet>, ProviderError> {
    let origin: DnsName = absolute(zone)
        .parse()
        .map_err(|e| file_error(path, format!("zone name {zone}: {e}")))?;
    let (_, rrsets) = Parser::new(text, Some(path.to_owned()), Some(origin))
        .parse()
        .map_err(|e| file_error(path, e))?;
    let wanted: BTreeSet<&Key> = keys.iter().collect();
    let mut out = Vec::new();
    for set in rrsets.values() {
        let Some(rtype) = own_type(set.record_type()) else {
            continue;
        };
        let key = Key::new(&set.name().to_ascii(), rtype);
        if !wanted.contains(&key) {
            continue;
        }
        let mut records = BTreeSet::new();
        let mut ttl = u32::MAX;
        for r in set.records_without_rrsigs() {
            ttl = ttl.min(r.ttl);
            records.insert(match &r.data {
                RData::A(a) => Rdata::A(a.0),
                RData::AAAA(a) => Rdata::Aaaa(a.0),
                RData::MX(mx) => Rdata::mx(mx.preference, &mx.exchange.to_ascii()),
                _ => continue,
            });
        }
        if !records.is_empty() {
            out.push(RrSet { key, ttl, records });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn own_type(t: DnsType) -> Option<RecordType> {
    match t {
        DnsType::MX => Some(RecordType::Mx),
        DnsType::A => Some(RecordType::A),
        DnsType::AAAA => Some(RecordType::Aaaa),
        _ => None,
    }
}

/// One entry of a master file: its physical lines, owner, type and (for
/// the SOA) where the serial is.
#[derive(Debug)]
struct Entry {
    /// First and last line index (inclusive).
    lines: (usize, usize),
    /// The owner, absolute and lowercase.
    owner: String,
    /// True when the owner field was blank (inherited from the entry before).
    inherited: bool,
    /// The type, uppercase.
    rtype: String,
    /// For the SOA: (line, byte range) of the serial.
    serial: Option<(usize, std::ops::Range<usize>)>,
}

/// A token: line index, byte range in that line.
type Token = (usize, std::ops::Range<usize>);

/// Splits master-file `lines` into entries (directives and blank lines are
/// not entries), following `$ORIGIN`, parentheses, quotes and comments.
fn entries(lines: &[&str], zone: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut origin = absolute(zone);
    let mut last_owner = origin.clone();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let mut tokens: Vec<Token> = Vec::new();
        let mut depth = 0usize;
        loop {
            tokenize(lines[i], i, &mut tokens, &mut depth);
            if depth == 0 || i + 1 == lines.len() {
                break;
            }
            i += 1;
        }
        let end = i;
        i += 1;
        let text = |t: &Token| &lines[t.0][t.1.clone()];
        let Some(first) = tokens.first() else {
            continue;
        };
        let first_text = text(first);
        if first_text.starts_with('$') {
            if first_text.eq_ignore_ascii_case("$ORIGIN")
                && let Some(o) = tokens.get(1)
            {
                origin = qualify(text(o), &origin);
            }
            continue;
        }
        let inherited = lines[start].starts_with([' ', '\t']);
        let mut rest = tokens.iter();
        let owner = if inherited {
            last_owner.clone()
        } else {
            let o = rest.next().map(text).unwrap_or_default();
            qualify(o, &origin)
        };
        last_owner = owner.clone();
        // TTL and class, in either order, then the type.
        let mut rtype = String::new();
        let mut after_type = Vec::new();
        for t in rest.by_ref() {
            let word = text(t);
            let is_ttl = word.starts_with(|c: char| c.is_ascii_digit());
            let is_class = ["IN", "CH", "HS", "CS"]
                .iter()
                .any(|c| word.eq_ignore_ascii_case(c));
            if !is_ttl && !is_class {
                rtype = word.to_ascii_uppercase();
                break;
            }
        }
        after_type.extend(rest.cloned());
        let serial = (rtype == "SOA")
            .then(|| after_type.get(2).cloned())
            .flatten();
        out.push(Entry {
            lines: (start, end),
            owner,
            inherited,
            rtype,
            serial,
        });
    }
    out
}

/// Appends the tokens of `line` (outside comments; parentheses counted, not
/// returned; quoted strings as one token).
fn tokenize(line: &str, index: usize, tokens: &mut Vec<Token>, depth: &mut usize) {
    let bytes = line.as_bytes();
    let mut j = 0;
    while j < bytes.len() {
        match bytes[j] {
            b';' => break,
            b'(' => {
                *depth += 1;
                j += 1;
            }
            b')' => {
                *depth = depth.saturating_sub(1);
                j += 1;
            }
            b' ' | b'\t' | b'\r' => j += 1,
            b'"' => {
                let start = j;
                j += 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                j = (j + 1).min(bytes.len());
                tokens.push((index, start..j));
            }
            _ => {
                let start = j;
                while j < bytes.len()
                    && !matches!(bytes[j], b' ' | b'\t' | b'\r' | b';' | b'(' | b')')
                {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let j2 = j.min(bytes.len());
                tokens.push((index, start..j2));
                j = j2;
            }
        }
    }
}

/// `name` made absolute against `origin` (`@` is the origin).
fn qualify(name: &str, origin: &str) -> String {
    if name == "@" {
        origin.to_owned()
    } else if name.ends_with('.') {
        absolute(name)
    } else {
        absolute(&format!("{name}.{origin}"))
    }
}

/// The master-file `text` of `zone` with `changes` applied and the SOA
/// serial raised by one (see the module documentation). Pure.
pub fn edit(text: &str, zone: &str, changes: &[Change]) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let plain: Vec<&str> = lines
        .iter()
        .map(|l| l.trim_end_matches(['\n', '\r']))
        .collect();
    let entries = entries(&plain, zone);
    let changed: BTreeMap<(String, String), &Change> = changes
        .iter()
        .map(|c| ((c.key.name.clone(), c.key.rtype.as_str().to_owned()), c))
        .collect();
    let mut written: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out = String::with_capacity(text.len() + 256);
    let mut last_owner: Option<String> = None;
    let mut next_line = 0;
    for entry in &entries {
        // Lines between entries (blank, comments, directives) stay as they are.
        for line in &lines[next_line..entry.lines.0] {
            out.push_str(line);
        }
        next_line = entry.lines.1 + 1;
        let id = (entry.owner.clone(), entry.rtype.clone());
        if let Some(change) = changed.get(&id) {
            if written.insert(id)
                && let Some(after) = &change.after
            {
                out.push_str(&records_text(after));
                last_owner = Some(after.key.name.clone());
            }
            continue;
        }
        let mut kept: Vec<String> = lines[entry.lines.0..=entry.lines.1]
            .iter()
            .map(|l| (*l).to_owned())
            .collect();
        let mut shift = 0;
        if entry.inherited && last_owner.as_deref() != Some(entry.owner.as_str()) {
            kept[0].insert_str(0, &entry.owner);
            shift = entry.owner.len();
        }
        if let Some((line, range)) = &entry.serial {
            let index = line - entry.lines.0;
            let offset = if index == 0 { shift } else { 0 };
            bump_serial(&mut kept[index], range.start + offset..range.end + offset);
        }
        out.extend(kept);
        last_owner = Some(entry.owner.clone());
    }
    for line in &lines[next_line.min(lines.len())..] {
        out.push_str(line);
    }
    let mut tail = String::new();
    for change in changes {
        let id = (
            change.key.name.clone(),
            change.key.rtype.as_str().to_owned(),
        );
        if written.contains(&id) {
            continue;
        }
        if let Some(after) = &change.after {
            tail.push_str(&records_text(after));
        }
    }
    if !tail.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&tail);
    }
    out
}

/// Raises the serial at `range` of `line` by one (RFC 1982 arithmetic,
/// never 0); leaves a serial it cannot read alone.
fn bump_serial(line: &mut String, range: std::ops::Range<usize>) {
    if let Some(serial) = line.get(range.clone()).and_then(|t| t.parse::<u32>().ok()) {
        let next = match serial.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        line.replace_range(range, &next.to_string());
    }
}

/// An RRset as master-file lines with absolute owner, TTL and class.
fn records_text(set: &RrSet) -> String {
    set.records
        .iter()
        .map(|r| {
            format!(
                "{}\t{}\tIN\t{}\t{}\n",
                set.key.name, set.ttl, set.key.rtype, r
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
