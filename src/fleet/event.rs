//! The messages nodes exchange, and their checks. A message comes from the
//! engine, which anyone with write access to it can fill: everything is
//! checked before it reaches the ban engine, and what fails is skipped with
//! a reason (logged and counted by the caller), never a crash and never a
//! ban. The format is JSON with a version, small enough to read in
//! `redis-cli XRANGE`:
//!
//! ```json
//! {"v":1,"node":"mx1","seq":7,"kind":"hit","ip":"192.0.2.7","at":1764800000,"seen":"network"}
//! {"v":1,"node":"mx2","seq":3,"kind":"delivery","ip":"198.51.100.4","at":1764800002}
//! {"v":1,"node":"mx1","seq":8,"kind":"ban","target":"192.0.2.7/32","until":1764886400,"hits":3,"offence":1,"source":"engine"}
//! {"v":1,"node":"mx3","seq":2,"kind":"unban","target":"192.0.2.7/32"}
//! ```

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::bans::{Envelope, Seen};
use crate::config::NodeName;
use crate::config::value::MAX_BAN;

/// The message format this nolist writes and reads.
pub const VERSION: u32 = 1;

/// The longest payload read; a longer one is skipped unparsed.
pub const MAX_PAYLOAD: usize = 2048;

/// Who put a ban in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanSource {
    /// A node's ban engine.
    Engine,
    /// An operator (`nolist bans add` on some node).
    Manual,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A decoy hit seen by the sending node.
    Hit {
        /// The client.
        ip: IpAddr,
        /// When (Unix seconds).
        at: i64,
        /// What it revealed for retry recognition.
        seen: Seen,
    },
    /// A delivery through a real MX, from the sending node's MTA log.
    Delivery {
        /// The client.
        ip: IpAddr,
        /// When (Unix seconds).
        at: i64,
    },
    /// A ban put in place on the sending node.
    Ban {
        /// The address or network.
        target: IpNet,
        /// When it ends (Unix seconds).
        until: i64,
        /// Decoy hits behind it.
        hits: u32,
        /// Which ban of the target it is.
        offence: u32,
        /// Engine or operator.
        source: BanSource,
    },
    /// A ban lifted by an operator on the sending node.
    Unban {
        /// The address or network.
        target: IpNet,
    },
}

/// One message: who sent it, its place in the sender's sequence, and what
/// it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sending node.
    pub node: NodeName,
    /// The sender's sequence number (from 1, without gaps per node).
    pub seq: u64,
    /// What it says.
    pub body: Body,
}

/// Why a message was skipped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Longer than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Written by a nolist with another format.
    #[error("message format version {0} is not {VERSION} (a newer nolist on another node?)")]
    Version(u64),
    /// A value outside what nolist ever sends.
    #[error("{0}")]
    Invalid(String),
}

/// The JSON shape: every field optional, so that a missing one is a
/// clear [`Skip`] rather than a parser message.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Wire {
    // The header: left out of an outbox body (`encode_body`), where it is
    // still unknown; required when a message is read.
    #[serde(skip_serializing_if = "is_zero")]
    v: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    node: String,
    #[serde(skip_serializing_if = "is_zero")]
    seq: u64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offence: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<BanSource>,
}

fn seen_text(seen: Seen) -> Option<String> {
    match seen {
        Seen::Nothing => None,
        Seen::Network => Some("network".into()),
        Seen::Envelope(e) => Some(format!("envelope:{:016x}", e.0)),
    }
}

fn seen_of(text: Option<&str>) -> Result<Seen, Skip> {
    match text {
        None => Ok(Seen::Nothing),
        Some("network") => Ok(Seen::Network),
        Some(t) => t
            .strip_prefix("envelope:")
            .filter(|h| h.len() == 16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map(|h| Seen::Envelope(Envelope(h)))
            .ok_or_else(|| Skip::Invalid(format!("`seen` is {t:?}"))),
    }
}

/// The message as JSON.
pub fn encode(m: &Message) -> String {
    let w = Wire {
        v: u64::from(VERSION),
        node: m.node.as_str().to_owned(),
        seq: m.seq,
        ..wire(&m.body)
    };
    serde_json::to_string(&w).unwrap_or_default()
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The body's fields, without the header.
fn wire(body: &Body) -> Wire {
    let mut w = Wire::default();
    match body {
        Body::Hit { ip, at, seen } => {
            w.kind = "hit".into();
            (w.ip, w.at, w.seen) = (Some(ip.to_string()), Some(*at), seen_text(*seen));
        }
        Body::Delivery { ip, at } => {
            w.kind = "delivery".into();
            (w.ip, w.at) = (Some(ip.to_string()), Some(*at));
        }
        Body::Ban {
            target,
            until,
            hits,
            offence,
            source,
        } => {
            w.kind = "ban".into();
            w.target = Some(target.to_string());
            (w.until, w.hits, w.offence, w.source) =
                (Some(*until), Some(*hits), Some(*offence), Some(*source));
        }
        Body::Unban { target } => {
            w.kind = "unban".into();
            w.target = Some(target.to_string());
        }
    }
    w
}

impl Body {
    /// The `kind` of the message.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hit { .. } => "hit",
            Body::Delivery { .. } => "delivery",
            Body::Ban { .. } => "ban",
            Body::Unban { .. } => "unban",
        }
    }
}

/// The body alone, as the outbox keeps it until its sequence number is
/// known: `{"kind":...}`.
pub fn encode_body(body: &Body) -> String {
    serde_json::to_string(&wire(body)).unwrap_or_default()
}

/// The message of `node` numbered `seq` whose body is `body` (from
/// [`encode_body`]).
pub fn with_header(node: &NodeName, seq: u64, body: &str) -> String {
    let rest = body.strip_prefix('{').unwrap_or(body);
    format!(r#"{{"v":{VERSION},"node":"{node}","seq":{seq},{rest}"#)
}

/// Reads and checks a message received at `now` (Unix seconds).
pub fn decode(payload: &[u8], now: i64) -> Result<Message, Skip> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Skip::TooLarge(payload.len()));
    }
    // The version first, so that a newer format is named as such.
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| Skip::Malformed(e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => return Err(Skip::Version(v)),
        None => return Err(Skip::Malformed("no version `v`".into())),
    }
    let w: Wire = serde_json::from_value(value).map_err(|e| Skip::Malformed(e.to_string()))?;
    let node = NodeName::parse(&w.node).map_err(|e| Skip::Invalid(e.to_string()))?;
    if w.seq == 0 {
        return Err(Skip::Invalid("`seq` must be at least 1".into()));
    }
    let need = |what: &str| Skip::Malformed(format!("a `{}` message needs `{what}`", w.kind));
    let body = match w.kind.as_str() {
        "hit" | "delivery" => {
            let ip = client(w.ip.as_deref().ok_or_else(|| need("ip"))?)?;
            let at = time(w.at.ok_or_else(|| need("at"))?, now)?;
            if w.kind == "hit" {
                let seen = seen_of(w.seen.as_deref())?;
                Body::Hit { ip, at, seen }
            } else {
                Body::Delivery { ip, at }
            }
        }
        "ban" => {
            let target = target(w.target.as_deref().ok_or_else(|| need("target"))?)?;
            let until = w.until.ok_or_else(|| need("until"))?;
            let longest = now.saturating_add(i64::try_from(MAX_BAN.as_secs()).unwrap_or(i64::MAX));
            if until > longest {
                return Err(Skip::Invalid(format!(
                    "ban until {until} is beyond the longest ban nolist keeps"
                )));
            }
            Body::Ban {
                target,
                until,
                hits: w.hits.unwrap_or(0),
                offence: w.offence.unwrap_or(1).max(1),
                source: w.source.ok_or_else(|| need("source"))?,
            }
        }
        "unban" => Body::Unban {
            target: target(w.target.as_deref().ok_or_else(|| need("target"))?)?,
        },
        other => return Err(Skip::Invalid(format!("unknown kind {other:?}"))),
    };
    Ok(Message {
        node,
        seq: w.seq,
        body,
    })
}

/// Whether a message may carry `ip` as a client (what [`decode`] accepts):
/// a node does not publish hits from loopback (a health check) that every
/// other node would have to skip.
pub fn is_client(ip: IpAddr) -> bool {
    client_addr(ip).is_ok()
}

/// A client address: unicast, not loopback or unspecified (nolist never
/// sends others); an IPv4-mapped address as its IPv4 address.
fn client(text: &str) -> Result<IpAddr, Skip> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| Skip::Invalid(format!("{text:?} is not an IP address")))?;
    client_addr(ip)
}

/// `ip` as [`client`] takes it.
fn client_addr(ip: IpAddr) -> Result<IpAddr, Skip> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(Skip::Invalid(format!("{ip} is not a client address")));
    }
    Ok(ip)
}

/// A ban target: an address or a network no wider than `/8` (IPv4) or
/// `/32` (IPv6), the widest `nolist bans add` takes without `--force`
/// (a forced wider one stays on the node where it was forced).
pub fn target(text: &str) -> Result<IpNet, Skip> {
    let net: IpNet = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => client(text).map(IpNet::from)?,
    };
    let widest = if net.addr().is_ipv4() { 8 } else { 32 };
    if net.prefix_len() < widest {
        return Err(Skip::Invalid(format!(
            "ban target {net} is wider than /{widest}"
        )));
    }
    client_addr(net.addr())?;
    Ok(net.trunc())
}

/// A time no earlier than 2000 and no later than `now` (a stamp from the
/// future counts as now, as for local evidence: `crate::clock`).
fn time(at: i64, now: i64) -> Result<i64, Skip> {
    const Y2000: i64 = 946_684_800;
    if at < Y2000 {
        return Err(Skip::Invalid(format!("time {at} is before the year 2000")));
    }
    Ok(at.min(now))
}

#[cfg(test)]
mod tests;
