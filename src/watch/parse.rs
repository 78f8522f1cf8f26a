//! MTA log lines to evidence: a delivery through a real MX, or a hit on a
//! classic (Postfix) decoy. Parsing is anchored to the fields the MTA
//! writes itself, at their fixed positions; text a client controls (HELO,
//! sender, recipient, message-id, subject) is never searched for an
//! address. Where it comes before the address (Exim's sender and HELO), it
//! is skipped by the rules the MTA writes it with, and a line that could be
//! read two ways yields nothing. When a line does not match exactly, it
//! yields nothing: an unparsed line loses a little evidence, a misparsed
//! one could frame an innocent address or exempt the wrong one.
//!
//! The envelope of a decoy reject line (`from=<…> to=<…>`) is client text
//! too: it is read only as a fingerprint for retry recognition
//! ([`Envelope`]), never as an address, and only where the line can be read
//! one way.

use std::net::IpAddr;

use crate::bans::Envelope;

use super::time::{Tz, Zone, parse_exim, parse_rfc3339, parse_syslog};
use crate::config::MtaFormat;

/// What a line proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A message from this client got past RCPT at a real MX.
    Delivery,
    /// This client was turned away by the (classic) decoy.
    DecoyHit,
}

/// One piece of evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// When, in Unix seconds.
    pub at: i64,
    /// The client address.
    pub ip: IpAddr,
    /// What it proves.
    pub kind: Kind,
    /// A decoy hit's envelope (MAIL FROM and RCPT TO), as a fingerprint
    /// for retry recognition, when the line shows one unambiguously.
    pub envelope: Option<Envelope>,
}

/// How to recognise a classic Postfix decoy.
#[derive(Clone, Debug)]
pub struct DecoySpec {
    /// Syslog name prefix of the decoy smtpd, e.g. `postfix/decoy`
    /// (`-o syslog_name=postfix/decoy` in master.cf).
    pub syslog_name: String,
    /// The decoy's reply text (e.g. `450 4.7.1 Try again later`), recognised
    /// in reject lines of any smtpd.
    pub reply: Option<String>,
}

impl Default for DecoySpec {
    fn default() -> Self {
        DecoySpec {
            syslog_name: "postfix/decoy".into(),
            reply: None,
        }
    }
}

/// Parses lines of one log. Local stamps are read in its time zone, the
/// year of classic syslog stamps from its reference time, and a repeated
/// local hour by the line before (see [`super::time`]).
pub struct LineParser {
    format: MtaFormat,
    decoy_tag: Vec<u8>,
    decoy_reply: Option<Vec<u8>>,
    reference: i64,
    /// Where a repeated local time of the first line is looked for: now,
    /// when the log is followed live; else the earlier instant.
    first_near: i64,
    zone: Box<dyn Zone + Send>,
    last_at: Option<i64>,
    /// Whether the line just parsed had a readable stamp (`last_at`).
    stamped: bool,
    unstamped: u64,
}

impl LineParser {
    /// A parser for `format` logs read at `now` (Unix seconds), in the
    /// host's local time zone.
    pub fn new(format: MtaFormat, decoy: &DecoySpec, now: i64) -> LineParser {
        LineParser::with_zone(format, decoy, now, Box::new(Tz::system()))
    }

    /// As [`LineParser::new`], with an explicit zone for local stamps.
    pub fn with_zone(
        format: MtaFormat,
        decoy: &DecoySpec,
        now: i64,
        zone: Box<dyn Zone + Send>,
    ) -> LineParser {
        let mut tag = decoy.syslog_name.trim_end_matches('/').as_bytes().to_vec();
        tag.push(b'/');
        LineParser {
            format,
            decoy_tag: tag,
            // An empty reply text would match every reject line.
            decoy_reply: decoy
                .reply
                .as_ref()
                .filter(|r| !r.trim().is_empty())
                .map(|r| r.as_bytes().to_vec()),
            reference: now,
            first_near: i64::MIN,
            zone,
            last_at: None,
            stamped: false,
            unstamped: 0,
        }
    }

    /// The evidence in one line (without its newline), if any.
    pub fn parse(&mut self, line: &[u8]) -> Option<LogEvent> {
        self.stamped = false;
        match self.format {
            MtaFormat::Postfix => self.postfix(line),
            MtaFormat::Exim => self.exim(line),
        }
    }

    /// Follows the log live at `now` (the wall clock): the reference time
    /// for syslog years moves to `now`, and a first line in a repeated
    /// local hour is read as the instant not before `now` (less the skew).
    pub fn set_reference(&mut self, now: i64) {
        self.reference = now;
        self.first_near = now;
    }

    /// The time stamp of the line just parsed, evidence or not, if it had
    /// a readable one (as written: not checked against any clock).
    pub fn line_time(&self) -> Option<i64> {
        self.last_at.filter(|_| self.stamped)
    }

    /// Lines whose time stamp could not be read in this format so far (a
    /// wrong `mta.format`, or a log that is not the MTA's).
    pub fn unstamped(&self) -> u64 {
        self.unstamped
    }

    fn counted<T>(&mut self, stamp: Option<T>) -> Option<T> {
        if stamp.is_none() {
            self.unstamped += 1;
        }
        stamp
    }

    fn stamp(&mut self, at: i64) -> i64 {
        self.last_at = Some(at);
        self.stamped = true;
        at
    }

    /// Where a repeated local time is looked for: after the line before.
    fn near(&self) -> i64 {
        self.last_at.unwrap_or(self.first_near)
    }

    fn postfix(&mut self, line: &[u8]) -> Option<LogEvent> {
        let stamp = if line.first()?.is_ascii_digit() {
            parse_rfc3339(line)
        } else {
            parse_syslog(line, self.reference, self.zone.as_ref(), self.near())
        };
        let (at, used) = self.counted(stamp)?;
        let at = self.stamp(at);
        let mut c = Cursor::new(&line[used..]);
        c.expect(b" ")?;
        c.word()?; // the host that logged
        c.expect(b" ")?;
        let tag = c.until_any(b"[:")?;
        if c.peek() == Some(b'[') {
            c.until(b']')?;
            c.expect(b"]")?;
        }
        c.expect(b": ")?;
        if !tag.ends_with(b"/smtpd") {
            return None;
        }
        let decoy = tag.starts_with(&self.decoy_tag);
        let msg = c.rest();
        if msg.starts_with(b"NOQUEUE: reject: ") || reject_with_queue_id(msg) {
            let ip = reject_client(msg)?;
            let hit = decoy
                || self
                    .decoy_reply
                    .as_ref()
                    .is_some_and(|r| reply_of(msg).is_some_and(|t| t.starts_with(r)));
            return hit.then(|| LogEvent {
                at,
                ip,
                kind: Kind::DecoyHit,
                envelope: reject_envelope(msg),
            });
        }
        if decoy {
            return None;
        }
        let ip = client_equals(msg)?;
        Some(LogEvent {
            at,
            ip,
            kind: Kind::Delivery,
            envelope: None,
        })
    }

    fn exim(&mut self, line: &[u8]) -> Option<LogEvent> {
        if line.is_empty() {
            return None;
        }
        let stamp = if line.get(10) == Some(&b'T') {
            parse_rfc3339(line)
        } else {
            parse_exim(line, self.zone.as_ref(), self.near())
        };
        let (at, used) = self.counted(stamp)?;
        let at = self.stamp(at);
        let mut c = Cursor::new(&line[used..]);
        c.expect(b" ")?;
        if c.peek() == Some(b'[') {
            c.until(b']')?; // [pid] with log_selector +pid
            c.expect(b"] ")?;
        }
        let id = c.word()?;
        if !is_exim_id(id) {
            return None;
        }
        c.expect(b" <= ")?;
        c.exim_sender()?;
        // `DS` (log_selector +dnssec) when the host name was DNSSEC-verified.
        let _ = c.expect(b" DS");
        c.expect(b" H=")?;
        let ip = exim_host(c.rest())?;
        Some(LogEvent {
            at,
            ip,
            kind: Kind::Delivery,
            envelope: None,
        })
    }
}

/// The client address in Exim's host field (what follows `H=`):
/// `[IP]`, `NAME [IP]`, `(HELO) [IP]` or `NAME (HELO) [IP]`, each `[IP]`
/// maybe with `:PORT`. NAME is a verified DNS name (no spaces, brackets or
/// parentheses), but the HELO is whatever the client sent when Exim takes
/// junk (`helo_accept_junk_hosts`): `x) [203.0.113.66] (y` makes
/// `H=(x) [203.0.113.66] (y) [198.51.100.5]`. So after `(`, every `) [IP]`
/// that could close the field is a candidate; the real one is always among
/// them, so a single candidate is the client and more than one prove
/// nothing.
fn exim_host(field: &[u8]) -> Option<IpAddr> {
    let mut c = Cursor::new(field);
    if !matches!(c.peek()?, b'[' | b'(') {
        c.host_name()?;
        c.expect(b" ")?;
    }
    if c.peek() == Some(b'[') {
        return c.exim_address();
    }
    c.expect(b"(")?;
    let mut rest = c.rest();
    let mut found = None;
    while let Some(pos) = rest.iter().position(|&b| b == b')') {
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix(b" ")
            && let Some(ip) = Cursor::new(after).exim_address()
        {
            if found.is_some() {
                return None;
            }
            found = Some(ip);
        }
    }
    found
}

/// `QUEUEID: reject: ` at the start of a Postfix message.
fn reject_with_queue_id(msg: &[u8]) -> bool {
    let mut c = Cursor::new(msg);
    c.word_until(b':').is_some_and(is_queue_id) && c.expect(b": reject: ").is_some()
}

/// The client of `NOQUEUE: reject: STAGE from name[ip]: ...`.
fn reject_client(msg: &[u8]) -> Option<IpAddr> {
    let mut c = Cursor::new(msg);
    c.until(b':')?;
    c.expect(b": reject: ")?;
    let stage = c.word()?;
    if !stage.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    c.expect(b" from ")?;
    c.client_name()?;
    let ip = c.bracketed_ip()?;
    c.expect(b":")?;
    Some(ip)
}

/// The envelope of a reject line, whose reply ends in
/// `; from=<FROM> to=<TO> proto=PROTO helo=<HELO>` (Postfix's
/// `log_whatsup`). FROM, TO, HELO and the reply before them may all hold
/// client text, so each separator must occur exactly once after the
/// client field: a line that could be split two ways has no envelope (it is
/// still a decoy hit). Linear in the line's length.
fn reject_envelope(msg: &[u8]) -> Option<Envelope> {
    let reply = reply_of(msg)?;
    let from_at = only(reply, b"; from=<")? + b"; from=<".len();
    let rest = &reply[from_at..];
    let to_at = only(rest, b"> to=<")?;
    let from = &rest[..to_at];
    let rest = &rest[to_at + b"> to=<".len()..];
    // Postfix always writes `proto=`; a line cut short before it ends the
    // recipient with the line.
    let to = match only(rest, b"> proto=") {
        Some(end) => &rest[..end],
        None if !contains(rest, b"> proto=") => rest.strip_suffix(b">")?,
        None => return None,
    };
    Some(Envelope::of(from, to))
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Where `needle` occurs in `hay`, when it occurs exactly once.
fn only(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut found = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle);
    let (first, _) = found.next()?;
    found.next().is_none().then_some(first)
}

/// The reply text of a reject line: what follows `name[ip]: `.
fn reply_of(msg: &[u8]) -> Option<&[u8]> {
    let mut c = Cursor::new(msg);
    c.until(b']')?;
    c.expect(b"]: ")?;
    Some(c.rest())
}

/// The client of `QUEUEID: client=name[ip]`.
fn client_equals(msg: &[u8]) -> Option<IpAddr> {
    let mut c = Cursor::new(msg);
    if !is_queue_id(c.word_until(b':')?) {
        return None;
    }
    c.expect(b": client=")?;
    c.client_name()?;
    let ip = c.bracketed_ip()?;
    c.port();
    (c.rest().is_empty() || c.rest().starts_with(b", ")).then_some(ip)
}

/// A queue id as Postfix makes it (`mail_queue.h`), so that `NOQUEUE`,
/// `warning` and other words in that place are not taken for one. The
/// classic form is upper-case hex: five digits of microseconds, then the
/// inode number (`3F2A1B2C3D`). The long form (`enable_long_queue_ids`) is
/// seconds and microseconds (ten or more characters), `z`, then the inode
/// number (no `z`), in an alphabet of letters and digits without vowels
/// (`4Xk2Lw1Q9yzB7cT`).
fn is_queue_id(id: &[u8]) -> bool {
    let classic = (6..=21).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b));
    classic || is_long_queue_id(id)
}

/// The long form of [`is_queue_id`].
fn is_long_queue_id(id: &[u8]) -> bool {
    let safe = |b: &u8| b.is_ascii_alphanumeric() && !b"AEIOUaeiou".contains(b);
    let split = id.iter().rposition(|&b| b == b'z');
    id.len() <= 32 && split.is_some_and(|z| z >= 10 && z + 1 < id.len()) && id.iter().all(safe)
}

/// Exim message ids: `1abcDE-000123-AB` or `1tPxyz-000ABCdefGH-1234`.
fn is_exim_id(id: &[u8]) -> bool {
    id.len() >= 16
        && id.iter().filter(|&&b| b == b'-').count() == 2
        && id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// A forward-only reader over one line.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Cursor { rest }
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn skip(&mut self, n: usize) {
        self.rest = self.rest.get(n..).unwrap_or_default();
    }

    fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn expect(&mut self, lit: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(lit)?;
        Some(())
    }

    /// Everything before `byte` (not consumed); `None` if absent.
    fn until(&mut self, byte: u8) -> Option<&'a [u8]> {
        let pos = self.rest.iter().position(|&b| b == byte)?;
        let (head, tail) = self.rest.split_at(pos);
        self.rest = tail;
        Some(head)
    }

    fn until_any(&mut self, bytes: &[u8]) -> Option<&'a [u8]> {
        let pos = self.rest.iter().position(|b| bytes.contains(b))?;
        let (head, tail) = self.rest.split_at(pos);
        self.rest = tail;
        Some(head)
    }

    /// A non-empty run of non-space bytes.
    fn word(&mut self) -> Option<&'a [u8]> {
        self.run(|b| b != b' ')
    }

    /// The non-empty run of bytes at the start that satisfy `keep`.
    fn run(&mut self, keep: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        let end = self
            .rest
            .iter()
            .position(|&b| !keep(b))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (head, tail) = self.rest.split_at(end);
        self.rest = tail;
        Some(head)
    }

    /// A non-empty run before `stop` with no spaces.
    fn word_until(&mut self, stop: u8) -> Option<&'a [u8]> {
        let head = self.until(stop)?;
        (!head.is_empty() && !head.contains(&b' ')).then_some(head)
    }

    /// A host name as the MTAs write it: a verified DNS name, or Postfix's
    /// `unknown` (letters, digits, `.`, `-`, `_`) — never spaces, brackets
    /// or parentheses.
    fn host_name(&mut self) -> Option<&'a [u8]> {
        self.run(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    }

    /// The client name Postfix writes right before `[ip]`.
    fn client_name(&mut self) -> Option<&'a [u8]> {
        let name = self.host_name()?;
        (self.peek() == Some(b'[')).then_some(name)
    }

    /// `[ip]` or `[IPv6:ip]`; an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`,
    /// a dual-stack socket's view of an IPv4 client) is the IPv4 address.
    fn bracketed_ip(&mut self) -> Option<IpAddr> {
        self.expect(b"[")?;
        let inner = self.until(b']')?;
        self.expect(b"]")?;
        let inner = inner.strip_prefix(b"IPv6:").unwrap_or(inner);
        let ip: IpAddr = std::str::from_utf8(inner).ok()?.parse().ok()?;
        Some(ip.to_canonical())
    }

    /// An optional `:PORT` (decimal digits).
    fn port(&mut self) {
        if let Some(after) = self.rest.strip_prefix(b":") {
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                self.rest = &after[digits..];
            }
        }
    }

    /// Exim's client address at the end of its host field: `[ip]`, maybe
    /// `:PORT`, then the end of the line or a space and the next field Exim
    /// writes (`I=`, `TFO`, `U=`, `Ci=`, `P=`: an upper-case letter).
    fn exim_address(&mut self) -> Option<IpAddr> {
        let ip = self.bracketed_ip()?;
        self.port();
        match self.rest {
            [] => Some(ip),
            [b' ', next, ..] if next.is_ascii_uppercase() => Some(ip),
            _ => None,
        }
    }

    /// Skips the envelope sender as Exim writes it: its address parser keeps
    /// quotes and backslash pairs, so a space is part of the sender only when
    /// quoted (`"a b"@x`) or escaped (`a\ b@x`); the first other space ends
    /// it. `None` when empty or a quote is left open.
    fn exim_sender(&mut self) -> Option<()> {
        let mut quoted = false;
        let mut i = 0;
        while let Some(&b) = self.rest.get(i) {
            match b {
                b'\\' => i += 1,
                b'"' => quoted = !quoted,
                b' ' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        if i == 0 || quoted {
            return None;
        }
        self.skip(i);
        Some(())
    }
}

#[cfg(test)]
mod tests;
