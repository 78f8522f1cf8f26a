//! The load generator of `bench/responder`: drives an SMTP decoy (nolist's
//! responder or the classic Postfix decoy) with the same client, so the two
//! are compared under identical load on the same machine.
//!
//! ```text
//! nolist-load rate --target ADDR [--concurrency 50] [--seconds 10] [--warmup 1]
//!                  [--sources IP,IP,...] [--threads 1] [--rate SESSIONS_PER_S]
//!                  [--dialogue lockstep|pipelined] [--close fin|rst] [--tun DEVICE]
//! nolist-load hold --target ADDR --count N [--sources IP,...] [--in-flight 256]
//!                  [--hold 10] [--threads 1]
//! nolist-load sink --target ADDR [--threads 2]
//! ```
//!
//! `rate` runs `--concurrency` clients, each repeating one decoy session
//! (banner → EHLO → MAIL → RCPT → QUIT, then read until the server closes)
//! and checking each reply's class (2, 2, 2, 4, 2); sessions completed
//! inside the measured window count. With `--rate`, sessions start at that
//! total rate (evenly spread over the clients) instead of back to back. `hold` opens `--count` connections,
//! reads each banner, prints `held=N`, and keeps them open and silent for
//! `--hold` seconds. Both print one `key=value` line at the end, including
//! the generator's own CPU time (`cpu_s`), because it shares the cores with
//! the server under test.
//!
//! With `--tun DEVICE`, `rate` runs its sessions over that TUN device with
//! the client's TCP in user space (see `tun.rs`): IPv4 only, `--sources`
//! addresses routed to the device, sessions back to back (no `--rate`).
//!
//! `sink` is the other end: the least an SMTP decoy can do. It listens on
//! `--target`, sends a fixed banner, answers each line from its first four
//! bytes alone (`RCPT` → 450, `QUIT` → 221 and close, anything else → 250;
//! the replies to pipelined lines in one write), and closes first, as a
//! real server does. No limits, no parsing, no
//! logging, no events: what is left is the kernel's TCP work and the async
//! runtime, the floor under any responder on this machine. It prints
//! `listening=ADDR` and runs until killed.
//!
//! Clients bind to the `--sources` loopback addresses in turn, with
//! `IP_BIND_ADDRESS_NO_PORT` so that the ephemeral port is picked at
//! connect time per destination (tens of thousands of connections do not
//! exhaust one address's port range).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};

mod tun;

const USAGE: &str = "usage: nolist-load rate|hold|sink --target ADDR [--concurrency N] [--seconds S] \
[--warmup S] [--count N] [--hold S] [--in-flight N] [--sources IP,...] [--threads N] [--rate N] \
[--dialogue lockstep|pipelined] [--close fin|rst] [--tun DEVICE]";

/// The command line, validated.
struct Args {
    mode: Mode,
    target: SocketAddr,
    sources: Vec<IpAddr>,
    threads: usize,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    count: usize,
    in_flight: usize,
    hold: f64,
    /// Sessions per second in total; 0: as fast as they go.
    rate: f64,
    /// MAIL, RCPT and QUIT in one write (RFC 2920), after the EHLO reply.
    pipeline: bool,
    /// Close with a RST (SO_LINGER 0) once the server has closed.
    abort: bool,
    /// `rate` over this TUN device, with TCP in user space (see tun.rs).
    tun: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Rate,
    Hold,
    Sink,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        Some("rate") => Mode::Rate,
        Some("hold") => Mode::Hold,
        Some("sink") => Mode::Sink,
        _ => return Err(USAGE.into()),
    };
    let mut args = Args {
        mode,
        target: SocketAddr::from(([127, 0, 0, 1], 25)),
        sources: Vec::new(),
        threads: 1,
        concurrency: 50,
        seconds: 10.0,
        warmup: 1.0,
        count: 1000,
        in_flight: 256,
        hold: 10.0,
        rate: 0.0,
        pipeline: false,
        abort: false,
        tun: None,
    };
    let mut target = None;
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--target" => target = Some(value.parse().map_err(|e| bad(&e))?),
            "--sources" => {
                args.sources = value
                    .split(',')
                    .map(|s| s.parse::<IpAddr>().map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?;
            }
            "--threads" => args.threads = value.parse().map_err(|e| bad(&e))?,
            "--concurrency" => args.concurrency = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => args.warmup = value.parse().map_err(|e| bad(&e))?,
            "--count" => args.count = value.parse().map_err(|e| bad(&e))?,
            "--in-flight" => args.in_flight = value.parse().map_err(|e| bad(&e))?,
            "--hold" => args.hold = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = value.parse().map_err(|e| bad(&e))?,
            "--tun" => args.tun = Some(value),
            "--dialogue" => {
                args.pipeline = match value.as_str() {
                    "lockstep" => false,
                    "pipelined" => true,
                    _ => return Err(bad(&"lockstep or pipelined")),
                }
            }
            "--close" => {
                args.abort = match value.as_str() {
                    "fin" => false,
                    "rst" => true,
                    _ => return Err(bad(&"fin or rst")),
                }
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    args.target = target.ok_or_else(|| format!("--target is required\n{USAGE}"))?;
    if args.threads == 0 || args.concurrency == 0 || args.in_flight == 0 {
        return Err("--threads, --concurrency and --in-flight must be > 0".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nolist-load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nolist-load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Mode::Rate, Some(device)) = (args.mode, &args.tun) {
        let line = match rate_tun(&args, device) {
            Ok(line) => line,
            Err(e) => {
                eprintln!("nolist-load: --tun {device}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("{line} cpu_s={:.2}", cpu_seconds());
        return ExitCode::SUCCESS;
    }
    let args = Arc::new(args);
    let line = match args.mode {
        Mode::Rate => runtime.block_on(rate(args.clone())),
        Mode::Hold => runtime.block_on(hold(args.clone())),
        Mode::Sink => runtime.block_on(sink(args.target)),
    };
    println!("{line} cpu_s={:.2}", cpu_seconds());
    // `hold` exits with thousands of sockets open: the kernel closes them.
    std::process::exit(0)
}

/// `rate` with the client's TCP in user space over a TUN device.
fn rate_tun(args: &Args, device: &str) -> Result<String, String> {
    let SocketAddr::V4(target) = args.target else {
        return Err("--tun takes an IPv4 --target".into());
    };
    if args.rate > 0.0 {
        return Err("--tun runs sessions back to back: no --rate".into());
    }
    let sources = args
        .sources
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => Ok(*v4),
            IpAddr::V6(_) => Err("--tun takes IPv4 --sources".to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let plan = tun::Plan {
        device,
        target,
        sources,
        concurrency: args.concurrency,
        warmup: Duration::from_secs_f64(args.warmup),
        seconds: Duration::from_secs_f64(args.seconds),
        pipeline: args.pipeline,
        abort: args.abort,
    };
    let tally = tun::rate(&plan).map_err(|e| e.to_string())?;
    Ok(summary(tally, args.seconds))
}

/// One exchange of a decoy session: the command sent (nothing for the
/// banner) and the classes of the replies it gets.
type Exchange = (&'static [u8], &'static [u8]);

const LOCKSTEP: [Exchange; 5] = [
    (b"", b"2"),
    (b"EHLO load.example\r\n", b"2"),
    (b"MAIL FROM:<load@spam.example>\r\n", b"2"),
    (b"RCPT TO:<user@example.org>\r\n", b"4"),
    (b"QUIT\r\n", b"2"),
];
/// MAIL, RCPT and QUIT in one write after the EHLO reply (RFC 2920: QUIT
/// may end a group).
const PIPELINED: [Exchange; 3] = [
    (b"", b"2"),
    (b"EHLO load.example\r\n", b"2"),
    (
        b"MAIL FROM:<load@spam.example>\r\nRCPT TO:<user@example.org>\r\nQUIT\r\n",
        b"242",
    ),
];

/// The session both clients run.
fn dialogue(pipeline: bool) -> &'static [Exchange] {
    if pipeline { &PIPELINED } else { &LOCKSTEP }
}

/// Why a session failed.
#[derive(Clone, Copy)]
enum Fail {
    Connect = 0,
    Io = 1,
    Closed = 2,
    Timeout = 3,
    Unexpected = 4,
}

const FAIL_NAMES: [&str; 5] = ["connect", "io", "closed", "timeout", "unexpected"];

/// One worker's results.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: [u64; 5],
    latency_us: Vec<u32>,
}

async fn rate(args: Arc<Args>) -> String {
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut workers = Vec::new();
    for i in 0..args.concurrency {
        let args = args.clone();
        let source = pick(&args.sources, i);
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut buf = Vec::with_capacity(1024);
            // Client i of n starts its sessions at i/rate, (i+n)/rate, ...
            let pace = (args.rate > 0.0)
                .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
            let mut next = Instant::now()
                + Duration::from_secs_f64(if args.rate > 0.0 {
                    i as f64 / args.rate
                } else {
                    0.0
                });
            while Instant::now() < end {
                if let Some(pace) = pace {
                    tokio::time::sleep_until(next).await;
                    next += pace;
                    if Instant::now() >= end {
                        break;
                    }
                }
                let t0 = Instant::now();
                let result = timeout(Duration::from_secs(10), session(&args, source, &mut buf))
                    .await
                    .unwrap_or(Err(Fail::Timeout));
                let t1 = Instant::now();
                if t0 < start || t1 > end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        tally.ok += 1;
                        let us = (t1 - t0).as_micros();
                        tally.latency_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Err(f) => {
                        tally.failed[f as usize] += 1;
                        // A refusing or broken server: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for w in workers {
        if let Ok(t) = w.await {
            total.ok += t.ok;
            for (a, b) in total.failed.iter_mut().zip(t.failed) {
                *a += b;
            }
            total.latency_us.extend(t.latency_us);
        }
    }
    summary(total, args.seconds)
}

/// The `key=value` line of a rate run.
fn summary(mut total: Tally, seconds: f64) -> String {
    total.latency_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let v = &total.latency_us;
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        f64::from(v[i]) / 1000.0
    };
    let failed: u64 = total.failed.iter().sum();
    format!(
        "sessions={} seconds={:.2} rate={:.0} failed={} fail_detail={} p50_ms={:.2} p99_ms={:.2}",
        total.ok,
        seconds,
        total.ok as f64 / seconds,
        failed,
        fail_detail(&total.failed),
        pct(0.5),
        pct(0.99),
    )
}

/// One decoy session: banner 2xx, EHLO 2xx, MAIL 2xx, RCPT 4xx, QUIT 2xx,
/// then read until the server closes (the server closes first, so the
/// TIME_WAIT state stays on its side, not on the client's ports). With
/// `--dialogue pipelined`, MAIL, RCPT and QUIT go in one write after the
/// EHLO reply (RFC 2920: QUIT may end a group), and the three replies are
/// read and checked in order; with `--close rst` the client then closes
/// abortively, as many bots do.
async fn session(args: &Args, source: Option<IpAddr>, buf: &mut Vec<u8>) -> Result<(), Fail> {
    buf.clear();
    let mut s = connect(args.target, source).await?;
    for &(command, classes) in dialogue(args.pipeline) {
        if !command.is_empty() {
            s.write_all(command).await.map_err(|_| Fail::Io)?;
        }
        for &class in classes {
            expect(&mut s, buf, class).await?;
        }
    }
    let mut rest = [0u8; 64];
    loop {
        match s.read(&mut rest).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if args.abort {
        let _ = s.set_zero_linger();
    }
    Ok(())
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, Fail> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|_| Fail::Connect)?;
    if let Some(ip) = source {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` (a c_int) for the length given.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|_| Fail::Connect)?;
    }
    // No TCP_NODELAY: each command goes out when the previous one has been
    // answered (and so acknowledged), so Nagle never holds it back.
    socket.connect(target).await.map_err(|_| Fail::Connect)
}

/// Reads one (possibly multi-line) reply and checks its class.
async fn expect(s: &mut TcpStream, buf: &mut Vec<u8>, class: u8) -> Result<(), Fail> {
    let mut scanned = 0;
    loop {
        while let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let line = &buf[scanned..scanned + nl + 1];
            scanned += nl + 1;
            // A final line: "NNN " or "NNN\r\n".
            if line.len() >= 4 && (line[3] == b' ' || line[3] == b'\r') {
                let got = line[0];
                buf.drain(..scanned);
                return if got == class {
                    Ok(())
                } else {
                    Err(Fail::Unexpected)
                };
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(Fail::Unexpected);
        }
        buf.reserve(512);
        match s.read_buf(buf).await {
            Ok(0) => return Err(Fail::Closed),
            Ok(_) => {}
            Err(_) => return Err(Fail::Io),
        }
    }
}

async fn hold(args: Arc<Args>) -> String {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.in_flight));
    let held = Arc::new(AtomicU64::new(0));
    let failed: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    for i in 0..args.count {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let (held, failed, done) = (held.clone(), failed.clone(), done_tx.clone());
        let mut release = release_rx.clone();
        let source = pick(&args.sources, i);
        let target = args.target;
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(256);
            let opened = timeout(Duration::from_secs(20), async {
                let mut s = connect(target, source).await?;
                expect(&mut s, &mut buf, b'2').await?;
                Ok::<_, Fail>(s)
            })
            .await
            .unwrap_or(Err(Fail::Timeout));
            drop(permit);
            drop(buf);
            match opened {
                Ok(stream) => {
                    held.fetch_add(1, Ordering::Relaxed);
                    drop(done);
                    let _ = release.wait_for(|r| *r).await;
                    drop(stream);
                }
                Err(f) => {
                    failed[f as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    drop(done_tx);
    // Every task has either failed or holds its session when all senders are gone.
    let _ = done_rx.recv().await;
    let counts: Vec<u64> = failed.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let line = format!(
        "held={} failed={} fail_detail={} open_s={:.2}",
        held.load(Ordering::Relaxed),
        counts.iter().sum::<u64>(),
        fail_detail(&counts),
        started.elapsed().as_secs_f64()
    );
    println!("{line}");
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let _ = release_tx.send(true);
    line
}

async fn sink(addr: SocketAddr) -> String {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return format!("error=bind:{e}"),
    };
    let bound = listener.local_addr().map_or(addr, |a| a);
    println!("listening={bound}");
    let _ = std::io::stdout().flush();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(sink_session(stream));
    }
}

/// Answers every complete line received in one write, as nolist does with
/// pipelined commands; the last reply (221) goes with `MSG_MORE`, so it
/// leaves with the FIN in one segment, as nolist's does.
async fn sink_session(mut s: TcpStream) {
    if s.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    let mut buf = [0u8; 512];
    let mut len = 0;
    let mut out = Vec::with_capacity(256);
    loop {
        match s.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        let mut start = 0;
        let mut quit = false;
        while let Some(nl) = buf[start..len].iter().position(|&b| b == b'\n') {
            let reply: &[u8] = match buf.get(start..start + 4) {
                Some(b"RCPT") => b"450 4.7.1 try later\r\n",
                Some(b"QUIT") => b"221 2.0.0 bye\r\n",
                _ => b"250 ok\r\n",
            };
            out.extend_from_slice(reply);
            start += nl + 1;
            if reply.starts_with(b"221") {
                quit = true;
                break;
            }
        }
        if quit {
            let _ = send_last(&s, &out).await;
            return;
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        buf.copy_within(start..len, 0);
        len -= start;
        if len == buf.len() {
            return;
        }
    }
}

/// Writes `bytes` with `MSG_MORE`: the kernel holds them until the close
/// adds its FIN (a short reply fits in one send).
async fn send_last(s: &TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let fd = s.as_raw_fd();
    s.async_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: send reads `bytes.len()` bytes from `bytes`.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    })
    .await
}

/// `connect:3,timeout:1`, or `-` when nothing failed.
fn fail_detail(counts: &[u64]) -> String {
    let parts: Vec<String> = FAIL_NAMES
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| format!("{name}:{n}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

fn pick(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
