//! The pure parts of the Redis transport: stream ids and the gap rule, the
//! arguments of the publish script, the error classes, and the URL as it
//! may be shown. No I/O here, so every rule is tested without a server.

use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use crate::fleet::transport::{Compact, Cursor, Outgoing, Received, ReceivedBody, TransportError};

/// A stream entry id, `<ms>-<seq>`; ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// Milliseconds (the server's clock when the entry was added).
    pub ms: u64,
    /// The entry's number within its millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Before every entry (`0-0`).
    pub const START: StreamId = StreamId { ms: 0, seq: 0 };

    /// Reads `<ms>-<seq>` (both parts decimal, as Redis writes them); a
    /// bare `<ms>` is not accepted: nothing this transport stores has one.
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What the stream says about itself when a reader asks (read.lua).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// The id of the newest entry ever added (`last-generated-id`).
    pub last: StreamId,
    /// The id of the newest entry taken away (by the publish script's
    /// trim, or by hand with XDEL); `0-0` for none.
    pub deleted: StreamId,
    /// The id of the stream's first entry ever, when the publish script
    /// created the stream.
    pub origin: Option<StreamId>,
}

/// Whether a reader at `cursor` missed entries: `state` is `None` when
/// there is no stream.
///
/// - No stream: only a reader that never read anything (`0-0`) missed
///   nothing; any other cursor came from a stream that is gone (the engine
///   lost its data).
/// - An entry after the cursor was taken away (`deleted > cursor`):
///   trimming takes the oldest first, so everything up to `deleted` is
///   gone, and the reader had not seen it. This holds for `0-0` too: a
///   reader that starts at the beginning of a trimmed stream must
///   bootstrap (a snapshot hands out the newest id, never `0-0`, while a
///   stream exists).
/// - A cursor from before the stream's first entry, or beyond its newest
///   id: this stream is not the one the cursor came from (the engine lost
///   its data and a new stream began since).
pub fn gap(cursor: StreamId, state: Option<StreamState>) -> bool {
    match state {
        None => cursor != StreamId::START,
        Some(s) => {
            let before_origin = s.origin.is_some_and(|o| cursor < o) && cursor != StreamId::START;
            s.deleted > cursor || cursor > s.last || before_origin
        }
    }
}

/// The publish script's five arguments for one message (publish.lua):
/// kind code, key, score, payload, seq.
pub fn message_args(m: &Outgoing) -> [String; 5] {
    let (kind, key, score) = match &m.compact {
        Compact::Nothing => ("-", String::new(), 0),
        Compact::Delivery { network, at } => ("d", network.to_string(), *at),
        Compact::Ban {
            target,
            until,
            manual,
        } => (if *manual { "m" } else { "b" }, target.to_string(), *until),
        Compact::Unban { target } => ("u", target.to_string(), 0),
    };
    [
        kind.to_owned(),
        key,
        score.to_string(),
        m.payload.clone(),
        m.seq.to_string(),
    ]
}

/// A score or a hash value of the compacted state as an integer: Redis
/// writes whole scores without a fraction, but anyone with write access
/// may have stored `1.5e9` or `inf` (saturated; NaN and text are `None`).
pub fn integer(text: &str) -> Option<i64> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(i);
    }
    let f: f64 = text.parse().ok()?;
    // `as` saturates at the bounds, which is what an expiry of +inf means.
    (!f.is_nan()).then_some(f as i64)
}

/// Server error codes that mean "these credentials may not do this", and
/// the words of the same refusal met inside a script (reported as `ERR`).
const REFUSALS: [&str; 4] = ["NOAUTH", "WRONGPASS", "NOPERM", "can't run this command"];

/// Server error codes that mean "not now" (a server starting, a failover).
const NOT_NOW: [&str; 4] = ["LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY"];

/// The transport's error for a client error: refused credentials or
/// commands, an engine that cannot be used right now, or an answer this
/// transport does not understand.
pub fn classify(e: &RedisError) -> TransportError {
    let text = e.to_string();
    let code = e.code().unwrap_or_default();
    // The client reports a refused AUTH at connection time under its own
    // kind, with the server's code in the text.
    let refused = matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm)
    ) || REFUSALS.contains(&code)
        || REFUSALS.iter().any(|r| text.contains(r));
    if refused {
        return TransportError::Refused(text);
    }
    // Refused, reset, timed out, TLS failed: all reach the client as I/O.
    if e.is_io_error() || NOT_NOW.contains(&code) {
        TransportError::Unreachable(text)
    } else {
        TransportError::Protocol(text)
    }
}

/// A bulk string's bytes (a Lua string comes back as one).
fn bytes(v: Value) -> Result<Vec<u8>, String> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

/// An array's items.
fn items(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

/// A stream id as the engine wrote it.
fn stream_id(v: Value) -> Result<StreamId, String> {
    let b = bytes(v)?;
    let text = String::from_utf8_lossy(&b);
    StreamId::parse(&text).ok_or_else(|| format!("{text:?} is not a stream id"))
}

/// The stream's state and entries from read.lua's reply (`None`: no
/// stream). An entry's fields arrive unchecked, as bytes.
pub fn read_reply(v: Value) -> Result<Option<(StreamState, Vec<Received>)>, String> {
    if v == Value::Nil {
        return Ok(None);
    }
    let parts: [Value; 5] = items(v)?
        .try_into()
        .map_err(|_| "the read script answered an array not of five")?;
    let [last, xdel, trimmed, origin, entries] = parts;
    // An id or '' for none.
    let optional = |v: Value| match v {
        Value::BulkString(b) if b.is_empty() => Ok(None),
        v => stream_id(v).map(Some),
    };
    let last = stream_id(last)?;
    let deleted = optional(xdel)?
        .max(optional(trimmed)?)
        .unwrap_or(StreamId::START);
    let origin = optional(origin)?;
    let mut out = Vec::new();
    for e in items(entries)? {
        let mut f = items(e)?.into_iter();
        let id = stream_id(f.next().ok_or("an entry without id")?)?;
        let kind = bytes(f.next().ok_or("an entry without kind")?)?;
        let mut field = || f.next().map(bytes).transpose();
        let body = match kind.as_slice() {
            b"p" => ReceivedBody::Message(field()?.ok_or("a message without payload")?),
            b"w" => {
                let at = field()?.ok_or("a watermark without time")?;
                let node = field()?.ok_or("a watermark without node")?;
                ReceivedBody::Watermark {
                    node: String::from_utf8_lossy(&node).into_owned(),
                    at: String::from_utf8_lossy(&at).into_owned(),
                }
            }
            _ => ReceivedBody::Unknown,
        };
        out.push(Received {
            cursor: Cursor(id.to_string()),
            body,
        });
    }
    let state = StreamState {
        last,
        deleted,
        origin,
    };
    Ok(Some((state, out)))
}

/// A flat array of strings (scan.lua, reports.lua) as bytes.
pub fn strings(v: Value) -> Result<Vec<Vec<u8>>, String> {
    items(v)?.into_iter().map(bytes).collect()
}

/// `url` with any password taken out, for logs and `Debug`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{path}")
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests;
