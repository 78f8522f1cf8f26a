//! Set elements written to nf_tables over netlink, without `nft`: one batch
//! (one transaction) of `NEWSETELEM`/`DELSETELEM` messages for nolist's
//! address sets. `nft` has to parse every element's text, which costs it
//! about half a second per 100,000; the kernel takes a fraction of that.
//! Only plain address keys (hash sets) are written here; tables, chains,
//! rules and interval sets stay with `nft -f -`.
//!
//! The message layout follows the kernel's `nf_tables` UAPI: a batch begin
//! and end (`NFNL_MSG_BATCH_BEGIN/END` for the nftables subsystem), and in
//! between one message per set and verb (and per 1,500 elements, so each
//! nested attribute stays below 64 KiB), each acknowledged.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
/// Elements per message: 1,500 IPv6 elements with timeouts are 60,000
/// bytes, under the 65,535 a nested attribute can hold.
const PER_MESSAGE: usize = 1500;

/// Add or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `NEWSETELEM` (existing elements are left as they are).
    Add,
    /// `DELSETELEM` (a missing element fails the whole batch).
    Delete,
}

/// One set's elements to add or delete; a timeout per element for adds.
#[derive(Clone, Debug)]
pub struct SetChange<'a> {
    /// The set in table `table` of family `inet`.
    pub set: &'a str,
    /// Add or delete.
    pub verb: Verb,
    /// The keys, with timeouts in seconds (ignored for deletes).
    pub elements: std::borrow::Cow<'a, [(IpAddr, u64)]>,
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Appends an attribute; returns nothing (its length is known).
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("attribute under 64 KiB");
    put_u16(buf, len);
    put_u16(buf, kind);
    buf.extend_from_slice(payload);
    pad(buf);
}

/// Starts a nested attribute; `end_nest` writes its length.
fn begin_nest(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    put_u16(buf, 0);
    put_u16(buf, kind | NLA_F_NESTED);
    at
}

fn end_nest(buf: &mut [u8], at: usize) {
    let len = u16::try_from(buf.len() - at).expect("nest under 64 KiB");
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Appends one netlink message (header + nfgenmsg + `body`).
fn message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: &[u8],
) {
    let len = u32::try_from(16 + 4 + body.len()).expect("message under 4 GiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    put_u16(buf, kind);
    put_u16(buf, flags);
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(body);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The whole batch (pure) and the sequence numbers of the messages that
/// the kernel acknowledges.
pub fn batch(table: &str, changes: &[SetChange<'_>], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut buf = Vec::new();
    let mut seq = first_seq;
    let mut acked = Vec::new();
    let subsys = NFNL_SUBSYS_NFTABLES;
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        subsys,
        &[],
    );
    for change in changes {
        for chunk in change.elements.chunks(PER_MESSAGE) {
            seq = seq.wrapping_add(1);
            let mut body = Vec::with_capacity(64 + chunk.len() * 40);
            attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            attr(&mut body, NFTA_SET_ELEM_LIST_SET, &cstr(change.set));
            let list = begin_nest(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS);
            for (ip, secs) in chunk {
                let elem = begin_nest(&mut body, NFTA_LIST_ELEM);
                let key = begin_nest(&mut body, NFTA_SET_ELEM_KEY);
                match ip {
                    IpAddr::V4(a) => attr(&mut body, NFTA_DATA_VALUE, &a.octets()),
                    IpAddr::V6(a) => attr(&mut body, NFTA_DATA_VALUE, &a.octets()),
                }
                end_nest(&mut body, key);
                if change.verb == Verb::Add {
                    let ms = secs.saturating_mul(1000);
                    attr(&mut body, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                }
                end_nest(&mut body, elem);
            }
            end_nest(&mut body, list);
            let (kind, flags) = match change.verb {
                Verb::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
                Verb::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
            };
            message(
                &mut buf,
                (subsys << 8) | kind,
                flags,
                seq,
                NFPROTO_INET,
                0,
                &body,
            );
            acked.push(seq);
        }
    }
    seq = seq.wrapping_add(1);
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        subsys,
        &[],
    );
    (buf, acked)
}

/// Sends the batch of `changes` to table `table` and waits for every
/// acknowledgement; the first error the kernel reports (the transaction is
/// then not applied) is returned.
pub fn apply(table: &str, changes: &[SetChange<'_>]) -> std::io::Result<()> {
    if changes.iter().all(|c| c.elements.is_empty()) {
        return Ok(());
    }
    let (bytes, acked) = batch(table, changes, 1);
    let fd = socket()?;
    // Room for the whole batch in one send, and for every reply.
    let size = libc::c_int::try_from(bytes.len() + (1 << 16)).unwrap_or(libc::c_int::MAX);
    setsockopt(fd.as_raw_fd(), libc::SO_SNDBUFFORCE, size);
    setsockopt(fd.as_raw_fd(), libc::SO_RCVBUFFORCE, 1 << 20);
    send(&fd, &bytes)?;
    let mut pending: std::collections::HashSet<u32> = acked.into_iter().collect();
    let mut reply = vec![0u8; 1 << 16];
    while !pending.is_empty() {
        let n = recv(&fd, &mut reply)?;
        for (seq, errno) in acks(&reply[..n]) {
            if errno != 0 {
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            pending.remove(&seq);
        }
    }
    Ok(())
}

/// `(sequence, errno)` of every `NLMSG_ERROR` (0 = an acknowledgement) in
/// a buffer of netlink replies (pure).
pub fn acks(mut buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < 16 || len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            let error = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            out.push((seq, error.wrapping_neg()));
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// The kernel's nftables ruleset generation: one `NFT_MSG_GETGEN` request.
/// It changes with every committed ruleset transaction (not with elements
/// that the packet path adds or that expire).
pub fn generation() -> std::io::Result<u32> {
    const NFT_MSG_GETGEN: u16 = 16;
    const NFT_MSG_NEWGEN: u16 = 15;
    let fd = socket()?;
    let mut request = Vec::with_capacity(20);
    message(
        &mut request,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
        NLM_F_REQUEST,
        1,
        0,
        0,
        &[],
    );
    send(&fd, &request)?;
    let mut reply = [0u8; 512];
    let n = recv(&fd, &mut reply)?;
    parse_generation(&reply[..n], (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)
}

/// The generation id (`NFTA_GEN_ID`) in a `NEWGEN` reply (pure).
fn parse_generation(reply: &[u8], msg_type: u16) -> std::io::Result<u32> {
    const NFTA_GEN_ID: u16 = 1;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let u16_at = |i: usize| {
        reply
            .get(i..i + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let len = reply
        .get(0..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("short netlink reply"))?;
    if u16_at(4) != Some(msg_type) {
        return Err(bad("not a generation reply (no permission?)"));
    }
    // Attributes follow the 16-byte header and the 4-byte nfgenmsg.
    let end = len.min(reply.len());
    let mut at = 20;
    while at + 4 <= end {
        let alen = usize::from(u16_at(at).unwrap_or(0));
        let atype = u16_at(at + 2).unwrap_or(0) & 0x3fff;
        if alen < 4 {
            break;
        }
        if atype == NFTA_GEN_ID
            && let Some(b) = reply.get(at + 4..at + 8)
            && alen >= 8
        {
            return Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
        at += (alen + 3) & !3;
    }
    Err(bad("no generation id in the reply"))
}

/// One `sendto` of `bytes` to the kernel.
fn send(fd: &OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: sockaddr_nl is plain data; zeroed means "the kernel".
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the buffer and the address outlive the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One `recv` into `buf` (retried when a signal interrupts it; bounded by
/// the socket's receive timeout).
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: a plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: Duration::from_secs(10).as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads `timeout` for its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

fn setsockopt(fd: libc::c_int, option: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt reads `value` for its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_layout() {
        let changes = [SetChange {
            set: "banned4",
            verb: Verb::Add,
            elements: vec![("198.18.0.9".parse().unwrap(), 60)].into(),
        }];
        let (bytes, acked) = batch("nolist", &changes, 7);
        assert_eq!(acked, [8]);
        // begin (20) + element message + end (20)
        let first = u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert_eq!(first, 20);
        assert_eq!(
            u16::from_ne_bytes([bytes[4], bytes[5]]),
            NFNL_MSG_BATCH_BEGIN
        );
        assert_eq!(
            u16::from_be_bytes([bytes[18], bytes[19]]),
            NFNL_SUBSYS_NFTABLES
        );
        let m = &bytes[20..];
        let len = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0a0c);
        assert_eq!(
            u16::from_ne_bytes([m[6], m[7]]),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        );
        assert_eq!(m[16], NFPROTO_INET);
        let body = &m[20..len];
        // table "nolist\0" (4 + 7, padded to 12), set "banned4\0" (4 + 8)
        assert_eq!(&body[0..4], &[11, 0, 1, 0]);
        assert_eq!(&body[4..11], b"nolist\0");
        assert_eq!(&body[12..16], &[12, 0, 2, 0]);
        // the key's value and the timeout in milliseconds, big-endian
        let tail = &body[body.len() - 12..];
        assert_eq!(&tail[0..4], &[12, 0, 4, 0]);
        assert_eq!(u64::from_be_bytes(tail[4..12].try_into().unwrap()), 60_000);
        assert!(body.windows(4).any(|w| w == [198, 18, 0, 9]));
        assert_eq!(bytes.len(), 20 + len + 20);
        let end = &bytes[20 + len..];
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), NFNL_MSG_BATCH_END);
    }

    #[test]
    fn big_changes_are_split_into_messages() {
        let many: Vec<(IpAddr, u64)> = (0..4000u32)
            .map(|i| (IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 1))
            .collect();
        let (_, acked) = batch(
            "nolist",
            &[SetChange {
                set: "banned4",
                verb: Verb::Delete,
                elements: many.into(),
            }],
            0,
        );
        assert_eq!(acked, [1, 2, 3]);
    }

    #[test]
    fn reads_the_generation_attribute() {
        let mut reply = vec![0u8; 36];
        reply[0..4].copy_from_slice(&36u32.to_ne_bytes());
        reply[4..6].copy_from_slice(&0x0a0fu16.to_ne_bytes());
        // NFTA_GEN_ID, then NFTA_GEN_PROC_PID.
        reply[20..22].copy_from_slice(&8u16.to_ne_bytes());
        reply[22..24].copy_from_slice(&1u16.to_ne_bytes());
        reply[24..28].copy_from_slice(&77u32.to_be_bytes());
        reply[28..30].copy_from_slice(&8u16.to_ne_bytes());
        reply[30..32].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(parse_generation(&reply, 0x0a0f).unwrap(), 77);
        assert!(parse_generation(&reply, 0x0a10).is_err(), "an error reply");
        assert!(parse_generation(&reply[..10], 0x0a0f).is_err());
        assert!(parse_generation(&reply[..22], 0x0a0f).is_err());
        // A truncated attribute never panics.
        assert!(parse_generation(&reply[..26], 0x0a0f).is_err());
    }

    #[test]
    fn reads_acks_and_errors() {
        let mut buf = Vec::new();
        for (seq, err) in [(2u32, 0i32), (3, -2)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&err.to_ne_bytes());
            buf.extend_from_slice(&[0u8; 16]);
        }
        assert_eq!(acks(&buf), [(2, 0), (3, 2)]);
        assert!(acks(&buf[..10]).is_empty());
    }
}
