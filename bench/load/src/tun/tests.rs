//! The user-space TCP client against a scripted server: segments are
//! written to one end of a socket pair standing in for the TUN device.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::*;
use crate::PIPELINED;

const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 25);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 7), 40_000);
const SERVER_ISN: u32 = 0xffff_fff0; // wraps during the session

/// A client-side device and the far end of it.
fn pair() -> (Tun, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both descriptors are new and ours.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let tun = Tun {
        fd: a,
        out: Vec::new(),
        target: SERVER,
    };
    (tun, b)
}

/// A segment the client sent: flags, seq, ack, payload.
type Sent = (u8, u32, u32, Vec<u8>);

/// What the client sent, checksums verified.
fn sent(far: &OwnedFd) -> Option<Sent> {
    let mut buf = [0u8; 2048];
    // SAFETY: read writes at most `buf.len()` bytes.
    let n = unsafe { libc::read(far.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return None;
    }
    let p = &buf[..n as usize];
    assert_eq!(checksum(0, &p[..20]), 0, "IPv4 header checksum");
    assert_eq!(&p[12..16], &CLIENT.ip().octets());
    assert_eq!(&p[16..20], &SERVER.ip().octets());
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&p[12..16]);
    pseudo[4..8].copy_from_slice(&p[16..20]);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&((p.len() - 20) as u16).to_be_bytes());
    assert_eq!(checksum(sum_words(0, &pseudo), &p[20..]), 0, "TCP checksum");
    let t = &p[20..];
    let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    let offset = usize::from(t[12] >> 4) * 4;
    Some((t[13], word(4), word(8), t[offset..].to_vec()))
}

/// The client's next segment is a bare ACK of everything the server sent.
fn assert_bare_ack(s: &Script) {
    let (flags, _, ack, data) = sent(&s.far).unwrap();
    assert_eq!((flags, ack, data.len()), (ACK, s.seq, 0), "a bare ACK");
}

/// Plays the server's side of one session.
struct Script {
    tun: Tun,
    far: OwnedFd,
    conn: Conn,
    /// The server's next sequence number.
    seq: u32,
    exchanges: &'static [Exchange],
    abort: bool,
}

impl Script {
    fn new(pipelined: bool, abort: bool) -> Script {
        let (mut tun, far) = pair();
        tun.send(CLIENT, 1000, 0, SYN, b"");
        let (flags, seq, _, _) = sent(&far).unwrap();
        assert_eq!((flags, seq), (SYN, 1000));
        let mut s = Script {
            tun,
            far,
            conn: Conn::new(1000, Instant::now()),
            seq: SERVER_ISN,
            exchanges: dialogue(pipelined),
            abort,
        };
        assert!(matches!(s.server(SYN | ACK, 1001, b""), Outcome::Going));
        s.seq = s.seq.wrapping_add(1);
        let (flags, seq, ack, data) = sent(&s.far).unwrap();
        assert_eq!(
            (flags, seq, ack, data.len()),
            (ACK, 1001, SERVER_ISN.wrapping_add(1), 0)
        );
        s
    }

    /// The server sends a segment at its next sequence number.
    fn server(&mut self, flags: u8, ack: u32, payload: &[u8]) -> Outcome {
        self.at(self.seq, flags, ack, payload)
    }

    fn at(&mut self, seq: u32, flags: u8, ack: u32, payload: &[u8]) -> Outcome {
        let seg = Segment {
            dst: CLIENT,
            seq,
            ack,
            flags,
            payload,
        };
        let now = Instant::now();
        self.conn
            .on_segment(&mut self.tun, CLIENT, &seg, self.exchanges, self.abort, now)
    }

    /// The server replies `text` (acknowledging everything); returns what
    /// the client sent in answer.
    fn reply(&mut self, text: &[u8], flags: u8) -> (Outcome, Option<Sent>) {
        let ack = self.conn.snd_nxt;
        let outcome = self.server(ACK | flags, ack, text);
        self.seq = self
            .seq
            .wrapping_add(text.len() as u32 + u32::from(flags & FIN != 0));
        (outcome, sent(&self.far))
    }
}

#[test]
fn checksum_is_rfc_1071s() {
    assert_eq!(
        checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
    assert_eq!(checksum(0, &[0x01]), !0x0100);
}

#[test]
fn a_lockstep_session_checks_every_reply_and_ends_with_a_fin() {
    let mut s = Script::new(false, false);
    let steps: [(&[u8], &[u8]); 4] = [
        (b"220 mx ESMTP\r\n", b"EHLO load.example\r\n"),
        (
            b"250-mx\r\n250 PIPELINING\r\n",
            b"MAIL FROM:<load@spam.example>\r\n",
        ),
        (b"250 2.1.0 Ok\r\n", b"RCPT TO:<user@example.org>\r\n"),
        (b"450 4.7.1 Later\r\n", b"QUIT\r\n"),
    ];
    for (reply, command) in steps {
        let (outcome, out) = s.reply(reply, PSH);
        assert!(matches!(outcome, Outcome::Going));
        let (flags, seq, ack, data) = out.expect("the next command");
        assert_eq!(flags, ACK | PSH);
        assert_eq!(data, command);
        assert_eq!(ack, s.seq, "acknowledges the reply");
        assert_eq!(seq.wrapping_add(data.len() as u32), s.conn.snd_nxt);
    }
    // 221 with the FIN: the client answers FIN, and the session counts.
    let (outcome, out) = s.reply(b"221 2.0.0 Bye\r\n", PSH | FIN);
    assert!(matches!(outcome, Outcome::Done));
    let (flags, _, ack, _) = out.unwrap();
    assert_eq!((flags, ack), (FIN | ACK, s.seq));
    // The server's ACK of that FIN lets the connection go.
    let ack = s.conn.snd_nxt;
    assert!(matches!(s.server(ACK, ack, b""), Outcome::Gone));
}

#[test]
fn a_reply_split_across_segments_and_a_fin_apart_are_handled() {
    let mut s = Script::new(true, true);
    let (outcome, out) = s.reply(b"220 mx", 0);
    assert!(matches!(outcome, Outcome::Going));
    assert!(out.is_none(), "half a reply: nothing to say yet");
    let (_, out) = s.reply(b" ESMTP\r\n", PSH);
    assert_eq!(out.unwrap().3, b"EHLO load.example\r\n");
    let (_, out) = s.reply(b"250 mx\r\n", PSH);
    assert_eq!(
        out.unwrap().3,
        PIPELINED[2].0,
        "MAIL, RCPT and QUIT in one segment"
    );
    let (outcome, out) = s.reply(b"250 Ok\r\n450 Later\r\n221 Bye\r\n", PSH);
    assert!(
        matches!(outcome, Outcome::Going),
        "waits for the server to close"
    );
    assert!(out.is_none(), "the ACK is delayed");
    // The FIN alone: with --close rst the client resets.
    let (outcome, out) = s.reply(b"", FIN);
    assert!(matches!(outcome, Outcome::Done));
    assert_eq!(out.unwrap().0, RST);
}

#[test]
fn a_wrong_reply_class_fails_the_session_and_resets_it() {
    let mut s = Script::new(false, false);
    let (outcome, out) = s.reply(b"554 5.7.1 Go away\r\n", PSH);
    assert!(matches!(outcome, Outcome::Failed(Fail::Unexpected)));
    assert_eq!(out.unwrap().0, RST);
}

#[test]
fn a_close_before_the_dialogue_ends_fails_it() {
    let mut s = Script::new(false, false);
    let (outcome, _) = s.reply(b"220 mx ESMTP\r\n", PSH | FIN);
    assert!(matches!(outcome, Outcome::Failed(Fail::Closed)));
    let mut s = Script::new(false, false);
    assert!(matches!(
        s.server(RST, 0, b""),
        Outcome::Failed(Fail::Closed)
    ));
}

#[test]
fn out_of_order_and_repeated_data_is_acknowledged_not_taken() {
    let mut s = Script::new(false, false);
    let ahead = s.seq.wrapping_add(100);
    let ack = s.conn.snd_nxt;
    assert!(matches!(
        s.at(ahead, ACK, ack, b"250 early\r\n"),
        Outcome::Going
    ));
    assert_bare_ack(&s);
    assert!(s.conn.rx.is_empty());
    // The banner, then the same segment again (a retransmission).
    let (_, out) = s.reply(b"220 mx ESMTP\r\n", PSH);
    assert_eq!(out.unwrap().3, b"EHLO load.example\r\n");
    let old = s.seq.wrapping_sub(14);
    let ack = s.conn.snd_nxt;
    assert!(matches!(
        s.at(old, ACK, ack, b"220 mx ESMTP\r\n"),
        Outcome::Going
    ));
    assert_bare_ack(&s);
    assert_eq!(s.conn.step, 1, "the banner counted once");
}

#[test]
fn unacknowledged_data_is_sent_again_and_a_silent_server_times_out() {
    let mut s = Script::new(false, false);
    let (_, out) = s.reply(b"220 mx ESMTP\r\n", PSH);
    let (_, seq, _, data) = out.unwrap();
    let start = s.conn.started;
    let mut now = Instant::now();
    let mut resent = 0;
    while now + s.conn.rto < start + SESSION_LIMIT {
        now += s.conn.rto;
        assert!(s.conn.on_timer(&mut s.tun, CLIENT, now).is_none());
        let (flags, again, _, data_again) = sent(&s.far).unwrap();
        assert_eq!((flags, again, &data_again), (ACK | PSH, seq, &data));
        resent += 1;
    }
    assert!(resent >= 4, "{resent} retransmissions");
    now = start + SESSION_LIMIT + Duration::from_millis(1);
    assert!(matches!(
        s.conn.on_timer(&mut s.tun, CLIENT, now),
        Some(Some(Fail::Timeout))
    ));
    assert_eq!(sent(&s.far).unwrap().0, RST);
}
