//! `rate --tun NAME`: the same decoy sessions, with the client's TCP done
//! here in user space over a TUN device instead of by kernel sockets.
//!
//! On loopback the client's half of every connection costs the machine as
//! much kernel work as the server's half (a socket, a file, an epoll
//! registration, its own TCP state machine, and every segment processed a
//! second time), on the same two cores as the server under test. Here the
//! client is a table of small state machines: each session costs one
//! `write` per segment sent and one `read` per segment received, and the
//! server's kernel does exactly the work a remote client would cause.
//!
//! The TCP is the least a well-behaved client does on a lossless link:
//! SYN with an MSS option, no window scaling, timestamps or SACK; data in
//! order, out-of-order segments dropped and re-acknowledged; our segments
//! retransmitted after 200 ms (doubling, 6 tries; SYN after 1 s); an ACK
//! owed is sent within 40 ms (delayed ACK) unless a segment carries it
//! sooner. The dialogue is `session`'s: banner, EHLO, MAIL, RCPT, QUIT (or
//! MAIL, RCPT and QUIT pipelined), each reply's class checked; then, once
//! the server has closed, FIN (or RST with `--close rst`).
//!
//! The addresses: `--target` must be an address of this machine that is
//! reached through the device's peer (bench/responder puts it on the
//! device), `--sources` addresses routed to the device. Each session uses
//! the next (source, port) pair, so no pair is reused within a run; ISNs
//! follow the clock, so a pair reused across runs still opens (Linux
//! accepts a SYN into TIME_WAIT when its sequence number is higher).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use crate::{Exchange, Fail, Tally, dialogue};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const SESSION_LIMIT: Duration = Duration::from_secs(10);
const DELAYED_ACK: Duration = Duration::from_millis(40);
const RTO: Duration = Duration::from_millis(200);
const SYN_RTO: Duration = Duration::from_secs(1);
const TRIES: u32 = 6;
const TICK: Duration = Duration::from_millis(5);

/// What `rate --tun` runs.
pub struct Plan<'a> {
    pub device: &'a str,
    pub target: SocketAddrV4,
    pub sources: Vec<Ipv4Addr>,
    pub concurrency: usize,
    pub warmup: Duration,
    pub seconds: Duration,
    pub pipeline: bool,
    pub abort: bool,
}

#[derive(PartialEq)]
enum State {
    SynSent,
    Open,
    /// Our FIN is out; the session has been counted.
    Closing,
}

struct Conn {
    state: State,
    started: Instant,
    /// Next sequence number we send, and the oldest one not acknowledged.
    snd_nxt: u32,
    snd_una: u32,
    rcv_nxt: u32,
    /// Exchange in progress and replies of it already checked.
    step: usize,
    replies: usize,
    /// Reply bytes not yet ending in a final line.
    rx: Vec<u8>,
    /// The server's FIN has arrived.
    fin: bool,
    /// The last segment carrying SYN, data or FIN: flags, payload, its seq.
    last: (u8, &'static [u8], u32),
    retransmit_at: Option<Instant>,
    rto: Duration,
    tries: u32,
    ack_at: Option<Instant>,
}

/// What a packet did to its connection.
enum Outcome {
    Going,
    Done,
    Failed(Fail),
    /// Our FIN is acknowledged: drop the connection (already counted).
    Gone,
}

struct Tun {
    fd: OwnedFd,
    out: Vec<u8>,
    target: SocketAddrV4,
}

impl Tun {
    fn open(name: &str, target: SocketAddrV4) -> io::Result<Tun> {
        // SAFETY: open with a NUL-terminated path; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // struct ifreq: the name (16 bytes), then the flags (a short).
        let mut ifr = [0u8; 40];
        if name.len() >= 16 {
            return Err(io::Error::other("device name too long"));
        }
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads a struct ifreq, which `ifr` is large enough for.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tun {
            fd,
            out: Vec::with_capacity(128),
            target,
        })
    }

    /// Reads one packet; `None` when none is waiting.
    fn read<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(&buf[..n as usize]))
    }

    /// Waits until a packet can be read, at most `timeout`.
    fn wait(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(1000) as libc::c_int;
        // SAFETY: poll reads and writes the one pollfd we pass.
        unsafe { libc::poll(&raw mut pfd, 1, ms) };
    }

    /// Sends one IPv4 TCP segment from `src` to the target.
    fn send(&mut self, src: SocketAddrV4, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        let syn = flags & SYN != 0;
        let tcp_len = if syn { 24 } else { 20 };
        let total = 20 + tcp_len + payload.len();
        let out = &mut self.out;
        out.clear();
        // IPv4 header: version 4, IHL 5, DF, TTL 64, protocol TCP.
        out.extend_from_slice(&[0x45, 0]);
        out.extend_from_slice(&(total as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        out.extend_from_slice(&src.ip().octets());
        out.extend_from_slice(&self.target.ip().octets());
        let ip_sum = checksum(0, &out[..20]);
        out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // TCP header; the window is 65535 and unscaled.
        out.extend_from_slice(&src.port().to_be_bytes());
        out.extend_from_slice(&self.target.port().to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(if flags & ACK != 0 { ack } else { 0 }).to_be_bytes());
        out.extend_from_slice(&[((tcp_len / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        if syn {
            out.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        }
        out.extend_from_slice(payload);
        // The pseudo-header: addresses, protocol, TCP length.
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src.ip().octets());
        pseudo[4..8].copy_from_slice(&self.target.ip().octets());
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&((tcp_len + payload.len()) as u16).to_be_bytes());
        let sum = checksum(sum_words(0, &pseudo), &out[20..]);
        out[36..38].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: write reads `out.len()` bytes from `out`. A lost segment
        // (full queue) is retransmitted like one lost on a wire.
        unsafe { libc::write(self.fd.as_raw_fd(), out.as_ptr().cast(), out.len()) };
    }
}

fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

/// The Internet checksum of `bytes`, starting from a partial `sum`.
fn checksum(sum: u32, bytes: &[u8]) -> u16 {
    let mut sum = sum_words(sum, bytes);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `a` comes after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A TCP segment from the target, parsed.
struct Segment<'p> {
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &'p [u8],
}

fn parse(packet: &[u8], target: SocketAddrV4) -> Option<Segment<'_>> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4 || packet.len() < ihl + 20 || packet[9] != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let tcp = packet.get(ihl..total)?;
    let word = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    let port = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    if src != *target.ip() || port(0) != target.port() {
        return None;
    }
    let offset = usize::from(tcp[12] >> 4) * 4;
    Some(Segment {
        dst: SocketAddrV4::new(dst, port(2)),
        seq: word(4),
        ack: word(8),
        flags: tcp[13],
        payload: tcp.get(offset..)?,
    })
}

/// Runs `plan.concurrency` sessions at a time, back to back, and tallies
/// those that started and ended inside the measured window.
pub fn rate(plan: &Plan) -> io::Result<Tally> {
    if plan.sources.is_empty() {
        return Err(io::Error::other("--tun needs --sources"));
    }
    let exchanges = dialogue(plan.pipeline);
    let mut tun = Tun::open(plan.device, plan.target)?;
    let begin = Instant::now();
    let start = begin + plan.warmup;
    let end = start + plan.seconds;
    let mut conns: HashMap<SocketAddrV4, Conn> = HashMap::with_capacity(plan.concurrency * 4);
    let mut tally = Tally::default();
    // Pairs in turn from a place that differs between runs.
    let clock = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut next_pair = clock.as_secs() as usize * 7919;
    let mut open = |tun: &mut Tun, conns: &mut HashMap<SocketAddrV4, Conn>, now: Instant| {
        let src = loop {
            let ip = plan.sources[next_pair % plan.sources.len()];
            let port = 1024 + (next_pair / plan.sources.len() % 64_000) as u16;
            next_pair += 1;
            let src = SocketAddrV4::new(ip, port);
            if !conns.contains_key(&src) {
                break src;
            }
        };
        let micros = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let isn = (micros / 4) as u32;
        tun.send(src, isn, 0, SYN, b"");
        conns.insert(src, Conn::new(isn, now));
    };
    let now = Instant::now();
    for _ in 0..plan.concurrency {
        open(&mut tun, &mut conns, now);
    }
    // Sessions to start later: after a failure, like the socket client, wait 10 ms.
    let mut deferred: Vec<Instant> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut next_tick = Instant::now() + TICK;
    let mut ended: Vec<(Instant, Outcome)> = Vec::new();
    loop {
        let mut now = Instant::now();
        while let Some(packet) = tun.read(&mut buf)? {
            let Some(seg) = parse(packet, plan.target) else {
                continue;
            };
            let Some(conn) = conns.get_mut(&seg.dst) else {
                continue;
            };
            now = Instant::now();
            let outcome = conn.on_segment(&mut tun, seg.dst, &seg, exchanges, plan.abort, now);
            let started = conn.started;
            match outcome {
                Outcome::Going => {}
                Outcome::Gone => {
                    conns.remove(&seg.dst);
                }
                Outcome::Done if conn.state == State::Closing => ended.push((started, outcome)),
                Outcome::Done | Outcome::Failed(_) => {
                    conns.remove(&seg.dst);
                    ended.push((started, outcome));
                }
            }
        }
        if now >= next_tick {
            next_tick = now + TICK;
            let mut gone = Vec::new();
            for (&src, conn) in &mut conns {
                if let Some(fail) = conn.on_timer(&mut tun, src, now) {
                    gone.push(src);
                    if let Some(fail) = fail {
                        ended.push((conn.started, Outcome::Failed(fail)));
                    }
                }
            }
            for src in gone {
                conns.remove(&src);
            }
        }
        for (started, outcome) in ended.drain(..) {
            let in_window = started >= start && now <= end;
            match outcome {
                Outcome::Done => {
                    if in_window {
                        tally.ok += 1;
                        let us = (now - started).as_micros();
                        tally.latency_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    if now < end {
                        open(&mut tun, &mut conns, now);
                    }
                }
                Outcome::Failed(f) => {
                    if in_window {
                        tally.failed[f as usize] += 1;
                    }
                    deferred.push(now + Duration::from_millis(10));
                }
                Outcome::Going | Outcome::Gone => {}
            }
        }
        deferred.retain(|&at| {
            if at > now {
                return true;
            }
            if now < end {
                open(&mut tun, &mut conns, now);
            }
            false
        });
        if now >= end {
            // Sessions still open ended outside the window: reset them, so
            // the server under test is left with nothing half-open.
            for (&src, conn) in &conns {
                tun.send(src, conn.snd_nxt, 0, RST, b"");
            }
            return Ok(tally);
        }
        tun.wait(next_tick.saturating_duration_since(now));
    }
}

impl Conn {
    /// A connection whose SYN (sequence number `isn`) has just been sent.
    fn new(isn: u32, now: Instant) -> Conn {
        Conn {
            state: State::SynSent,
            started: now,
            snd_nxt: isn.wrapping_add(1),
            snd_una: isn,
            rcv_nxt: 0,
            step: 0,
            replies: 0,
            rx: Vec::new(),
            fin: false,
            last: (SYN, b"", isn),
            retransmit_at: Some(now + SYN_RTO),
            rto: SYN_RTO,
            tries: 0,
            ack_at: None,
        }
    }

    fn on_segment(
        &mut self,
        tun: &mut Tun,
        src: SocketAddrV4,
        seg: &Segment,
        exchanges: &[Exchange],
        abort: bool,
        now: Instant,
    ) -> Outcome {
        if seg.flags & RST != 0 {
            return Outcome::Failed(if self.state == State::SynSent {
                Fail::Connect
            } else {
                Fail::Closed
            });
        }
        if self.state == State::SynSent {
            if seg.flags & (SYN | ACK) != SYN | ACK || seg.ack != self.snd_nxt {
                return Outcome::Going; // the SYN is retransmitted on its timer
            }
            self.state = State::Open;
            self.snd_una = self.snd_nxt;
            self.rcv_nxt = seg.seq.wrapping_add(1);
            self.retransmit_at = None;
            tun.send(src, self.snd_nxt, self.rcv_nxt, ACK, b"");
            return Outcome::Going;
        }
        if seg.flags & ACK != 0 && after(seg.ack, self.snd_una) && !after(seg.ack, self.snd_nxt) {
            self.snd_una = seg.ack;
            if self.snd_una == self.snd_nxt {
                self.retransmit_at = None;
                self.tries = 0;
                if self.state == State::Closing {
                    return Outcome::Gone;
                }
            }
        }
        if self.state == State::Closing {
            return Outcome::Going;
        }
        // Data in order only; anything else is acknowledged again.
        let mut data = seg.payload;
        let mut fresh = false;
        if !data.is_empty() || seg.flags & FIN != 0 {
            let skip = self.rcv_nxt.wrapping_sub(seg.seq) as usize;
            if after(seg.seq, self.rcv_nxt) || (skip > data.len() && skip != 0) {
                tun.send(src, self.snd_nxt, self.rcv_nxt, ACK, b"");
                return Outcome::Going;
            }
            data = &data[skip.min(data.len())..];
            fresh = !data.is_empty();
            self.rcv_nxt = self.rcv_nxt.wrapping_add(data.len() as u32);
            self.rx.extend_from_slice(data);
            if seg.flags & FIN != 0 && !self.fin {
                self.fin = true;
                fresh = true;
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            }
            if !fresh {
                tun.send(src, self.snd_nxt, self.rcv_nxt, ACK, b"");
                return Outcome::Going;
            }
        }
        if self.rx.len() > 64 * 1024 {
            return self.abort(tun, src, Fail::Unexpected);
        }
        // Check every complete reply; the last line of one is "NNN " or "NNN\r\n".
        let mut send: Option<&'static [u8]> = None;
        let mut consumed = 0;
        while let Some(nl) = self.rx[consumed..].iter().position(|&b| b == b'\n') {
            let line = &self.rx[consumed..consumed + nl + 1];
            consumed += nl + 1;
            if line.len() < 4 || (line[3] != b' ' && line[3] != b'\r') {
                continue;
            }
            let Some(&(_, classes)) = exchanges.get(self.step) else {
                return self.abort(tun, src, Fail::Unexpected); // a reply nobody asked for
            };
            if line[0] != classes[self.replies] {
                return self.abort(tun, src, Fail::Unexpected);
            }
            self.replies += 1;
            if self.replies == classes.len() {
                self.step += 1;
                self.replies = 0;
                if let Some(&(command, _)) = exchanges.get(self.step) {
                    send = Some(command);
                }
            }
        }
        self.rx.drain(..consumed);
        let finished = self.step == exchanges.len();
        if self.fin && !finished {
            return self.abort(tun, src, Fail::Closed);
        }
        if let Some(command) = send {
            self.transmit(tun, src, ACK | PSH, command, now);
            return Outcome::Going;
        }
        if self.fin {
            if abort {
                tun.send(src, self.snd_nxt, 0, RST, b"");
                return Outcome::Done;
            }
            self.transmit(tun, src, FIN | ACK, b"", now);
            self.state = State::Closing;
            return Outcome::Done;
        }
        if fresh && self.ack_at.is_none() {
            self.ack_at = Some(now + DELAYED_ACK);
        }
        Outcome::Going
    }

    /// Sends a segment we may have to send again (data, or FIN).
    fn transmit(
        &mut self,
        tun: &mut Tun,
        src: SocketAddrV4,
        flags: u8,
        data: &'static [u8],
        now: Instant,
    ) {
        let seq = self.snd_nxt;
        tun.send(src, seq, self.rcv_nxt, flags, data);
        self.snd_nxt = seq.wrapping_add(data.len() as u32 + u32::from(flags & FIN != 0));
        self.last = (flags, data, seq);
        self.ack_at = None;
        self.rto = RTO;
        self.tries = 0;
        self.retransmit_at = Some(now + RTO);
    }

    /// A broken dialogue: reset the connection and count the failure.
    fn abort(&mut self, tun: &mut Tun, src: SocketAddrV4, fail: Fail) -> Outcome {
        tun.send(src, self.snd_nxt, 0, RST, b"");
        Outcome::Failed(fail)
    }

    /// Timers: a delayed ACK, a retransmission, the session's time limit.
    /// `Some(..)`: the connection is to be dropped (with the failure to
    /// count, if any).
    fn on_timer(&mut self, tun: &mut Tun, src: SocketAddrV4, now: Instant) -> Option<Option<Fail>> {
        let closing = self.state == State::Closing;
        if now - self.started > SESSION_LIMIT + SESSION_LIMIT * u32::from(closing) {
            tun.send(src, self.snd_nxt, 0, RST, b"");
            return Some((!closing).then_some(Fail::Timeout));
        }
        if self.retransmit_at.is_some_and(|at| at <= now) {
            self.tries += 1;
            if self.tries > TRIES {
                tun.send(src, self.snd_nxt, 0, RST, b"");
                return Some((!closing).then_some(Fail::Timeout));
            }
            let (flags, data, seq) = self.last;
            tun.send(src, seq, self.rcv_nxt, flags, data);
            self.rto *= 2;
            self.retransmit_at = Some(now + self.rto);
            self.ack_at = None;
        }
        if self.ack_at.is_some_and(|at| at <= now) {
            self.ack_at = None;
            tun.send(src, self.snd_nxt, self.rcv_nxt, ACK, b"");
        }
        None
    }
}

#[cfg(test)]
mod tests;
