//! The SMTP probe: one dialogue up to RCPT, like `swaks --quit-after RCPT`,
//! that never sends DATA. Used by `nolist probe` and by `verify`'s mail
//! checks. Replies from the remote side are read with caps on line length
//! and line count, so a hostile server cannot make the probe grow.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest reply line kept; longer lines are cut.
const MAX_LINE: usize = 1024;
/// Most lines in one (multi-line) reply.
const MAX_LINES: usize = 64;

/// Checks a value that goes into a command line: printable ASCII, no
/// spaces or angle brackets. Without this, `--rcpt $'a@b>\r\nDATA'` would
/// put a second command (DATA) on the wire.
pub fn check_argument(what: &str, value: &str) -> Result<(), BadArgument> {
    if value.len() > 256
        || !value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    {
        return Err(BadArgument {
            what: what.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// A value that could smuggle a second SMTP command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?}: only printable ASCII without spaces or <>, at most 256 characters")]
pub struct BadArgument {
    /// Which argument.
    pub what: String,
    /// As given.
    pub value: String,
}

/// What to say.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// EHLO/HELO name.
    pub helo: String,
    /// MAIL FROM address (empty: the null sender `<>`).
    pub mail_from: String,
    /// RCPT TO address.
    pub rcpt: String,
    /// Limit for the connect and for each reply.
    pub timeout: Duration,
}

/// Who sent a transcript line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We sent it.
    Sent,
    /// The server sent it.
    Received,
}

/// One line of the dialogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Who sent it.
    pub dir: Direction,
    /// The text, without CRLF.
    pub text: String,
}

/// How the probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The connection was refused (TCP reset): nothing listens.
    Refused,
    /// No answer in time: the connect or a reply timed out (a DROP).
    Timeout,
    /// The server closed the connection before the dialogue ended.
    Closed,
    /// The dialogue ran to RCPT (or stopped at a non-2xx reply) and QUIT.
    Completed,
    /// Another network error.
    Error,
}

/// Where the dialogue was when it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// TCP connect.
    Connect,
    /// Waiting for the banner.
    Banner,
    /// EHLO or HELO.
    Ehlo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// QUIT.
    Quit,
}

/// Everything one probe learned.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The address probed.
    pub address: SocketAddr,
    /// How it ended.
    pub outcome: Outcome,
    /// The step it was at when it ended.
    pub step: Step,
    /// Banner reply code.
    pub banner: Option<u16>,
    /// EHLO reply code (or HELO's, when EHLO was refused).
    pub ehlo: Option<u16>,
    /// True when the fallback to HELO was used.
    pub helo_fallback: bool,
    /// EHLO extensions (keywords, upper case).
    pub extensions: Vec<String>,
    /// STARTTLS offered.
    pub starttls: bool,
    /// MAIL reply code.
    pub mail: Option<u16>,
    /// RCPT reply code.
    pub rcpt: Option<u16>,
    /// Error text for `error` outcomes.
    pub error: Option<String>,
    /// Milliseconds from the connect to the end.
    pub elapsed_ms: u64,
    /// The dialogue.
    pub transcript: Vec<Line>,
}

impl ProbeReport {
    /// A report for `address` that has learned nothing yet.
    pub fn new(address: SocketAddr) -> ProbeReport {
        ProbeReport {
            address,
            outcome: Outcome::Completed,
            step: Step::Connect,
            banner: None,
            ehlo: None,
            helo_fallback: false,
            extensions: Vec::new(),
            starttls: false,
            mail: None,
            rcpt: None,
            error: None,
            elapsed_ms: 0,
            transcript: Vec::new(),
        }
    }
}

/// Probes `address`.
pub async fn probe(address: SocketAddr, options: &ProbeOptions) -> ProbeReport {
    let started = Instant::now();
    let mut report = ProbeReport::new(address);
    match tokio::time::timeout(options.timeout, TcpStream::connect(address)).await {
        Err(_) => report.outcome = Outcome::Timeout,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            report.outcome = Outcome::Refused;
        }
        Ok(Err(e)) => {
            report.outcome = Outcome::Error;
            report.error = Some(e.to_string());
        }
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            dialogue(stream, options, &mut report).await;
        }
    }
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// Why the dialogue stopped early.
enum Stop {
    Timeout,
    Closed,
    Error(String),
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    options: &ProbeOptions,
    report: &mut ProbeReport,
) {
    let mut io = BufReader::new(stream);
    let result = async {
        report.step = Step::Banner;
        let banner = reply(&mut io, options.timeout, report).await?;
        report.banner = Some(banner);
        if !is_2xx(banner) {
            return quit(&mut io, options, report).await;
        }
        report.step = Step::Ehlo;
        let mut code = command(&mut io, &format!("EHLO {}", options.helo), options, report).await?;
        if code >= 500 {
            report.helo_fallback = true;
            code = command(&mut io, &format!("HELO {}", options.helo), options, report).await?;
        } else if is_2xx(code) {
            report.extensions = extensions(&report.transcript);
            report.starttls = report.extensions.iter().any(|e| e == "STARTTLS");
        }
        report.ehlo = Some(code);
        if !is_2xx(code) {
            return quit(&mut io, options, report).await;
        }
        report.step = Step::Mail;
        let code = command(
            &mut io,
            &format!("MAIL FROM:<{}>", options.mail_from),
            options,
            report,
        )
        .await?;
        report.mail = Some(code);
        if !is_2xx(code) {
            return quit(&mut io, options, report).await;
        }
        report.step = Step::Rcpt;
        let code = command(
            &mut io,
            &format!("RCPT TO:<{}>", options.rcpt),
            options,
            report,
        )
        .await?;
        report.rcpt = Some(code);
        quit(&mut io, options, report).await
    }
    .await;
    match result {
        Ok(()) => report.outcome = Outcome::Completed,
        Err(Stop::Timeout) => report.outcome = Outcome::Timeout,
        Err(Stop::Closed) => report.outcome = Outcome::Closed,
        Err(Stop::Error(e)) => {
            report.outcome = Outcome::Error;
            report.error = Some(e);
        }
    }
}

fn is_2xx(code: u16) -> bool {
    (200..300).contains(&code)
}

/// QUIT, politely; whatever happens to it, the probe has its answers.
async fn quit<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    options: &ProbeOptions,
    report: &mut ProbeReport,
) -> Result<(), Stop> {
    let step = report.step;
    report.step = Step::Quit;
    let _ = command(io, "QUIT", options, report).await;
    report.step = step;
    Ok(())
}

/// Sends one command and reads its reply code.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    line: &str,
    options: &ProbeOptions,
    report: &mut ProbeReport,
) -> Result<u16, Stop> {
    if line.bytes().any(|b| b == b'\r' || b == b'\n') {
        // Defence in depth: one command per line, never a smuggled DATA.
        return Err(Stop::Error(
            "refusing to send a command containing CR or LF".into(),
        ));
    }
    report.transcript.push(Line {
        dir: Direction::Sent,
        text: line.to_owned(),
    });
    let sent = tokio::time::timeout(options.timeout, async {
        let stream = io.get_mut();
        stream.write_all(line.as_bytes()).await?;
        stream.write_all(b"\r\n").await?;
        stream.flush().await
    })
    .await;
    match sent {
        Err(_) => return Err(Stop::Timeout),
        Ok(Err(e)) if is_closed(&e) => return Err(Stop::Closed),
        Ok(Err(e)) => return Err(Stop::Error(e.to_string())),
        Ok(Ok(())) => {}
    }
    reply(io, options.timeout, report).await
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

/// Reads one reply (all its lines) and returns its code.
async fn reply<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    timeout: Duration,
    report: &mut ProbeReport,
) -> Result<u16, Stop> {
    let deadline = Instant::now() + timeout;
    for _ in 0..MAX_LINES {
        let mut raw = Vec::new();
        let read = tokio::time::timeout_at(deadline, async {
            // Read at most MAX_LINE bytes of this line; skip the rest of it.
            let n = (&mut *io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut raw)
                .await?;
            if n == MAX_LINE && raw.last() != Some(&b'\n') {
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    let m = (&mut *io)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut rest)
                        .await?;
                    if m == 0 || rest.last() == Some(&b'\n') {
                        break;
                    }
                }
            }
            Ok::<usize, std::io::Error>(n)
        })
        .await;
        let n = match read {
            Err(_) => return Err(Stop::Timeout),
            Ok(Err(e)) if is_closed(&e) => return Err(Stop::Closed),
            Ok(Err(e)) => return Err(Stop::Error(e.to_string())),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(Stop::Closed);
        }
        let text = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>();
        let code = text.get(..3).and_then(|c| c.parse::<u16>().ok());
        let last = text.as_bytes().get(3) != Some(&b'-');
        report.transcript.push(Line {
            dir: Direction::Received,
            text,
        });
        match code {
            Some(code) if (200..600).contains(&code) && last => return Ok(code),
            Some(_) => {}
            None => {
                return Err(Stop::Error(
                    "the server sent a line that is not an SMTP reply".into(),
                ));
            }
        }
    }
    Err(Stop::Error(format!(
        "a reply of more than {MAX_LINES} lines"
    )))
}

/// EHLO keywords from the last reply in the transcript (skipping its first line).
fn extensions(transcript: &[Line]) -> Vec<String> {
    let reply: Vec<&Line> = transcript
        .iter()
        .rev()
        .take_while(|l| l.dir == Direction::Received)
        .collect();
    reply
        .iter()
        .rev()
        .skip(1)
        .filter_map(|l| l.text.get(4..))
        .filter_map(|t| t.split_whitespace().next())
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The transcript in swaks style, with a result line.
pub fn transcript_text(report: &ProbeReport) -> String {
    let mut out = format!("=== Trying {}...\n", report.address);
    match report.outcome {
        Outcome::Refused => out.push_str("*** Connection refused (nothing listens: TCP reset)\n"),
        Outcome::Timeout if report.step == Step::Connect => {
            out.push_str("*** Timed out connecting (dropped?)\n");
        }
        _ => {}
    }
    if report.step != Step::Connect {
        out.push_str(&format!("=== Connected to {}.\n", report.address));
    }
    if report.outcome == Outcome::Timeout && report.step == Step::Banner {
        out.push_str("*** Timed out waiting for the banner\n");
    }
    for line in &report.transcript {
        let arrow = match line.dir {
            Direction::Sent => " -> ",
            Direction::Received => "<-  ",
        };
        out.push_str(arrow);
        out.push_str(&line.text);
        out.push('\n');
    }
    let code = |c: Option<u16>| c.map_or_else(|| "-".to_owned(), |c| c.to_string());
    out.push_str(&format!(
        "=== {}: outcome {}, banner {}, ehlo {}{}, mail {}, rcpt {}, starttls {}, {} ms\n",
        report.address,
        serde_json::to_string(&report.outcome)
            .unwrap_or_default()
            .trim_matches('"'),
        code(report.banner),
        code(report.ehlo),
        if report.helo_fallback { " (HELO)" } else { "" },
        code(report.mail),
        code(report.rcpt),
        if report.starttls {
            "offered"
        } else {
            "not offered"
        },
        report.elapsed_ms
    ));
    if let Some(e) = &report.error {
        out.push_str(&format!("*** {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests;
