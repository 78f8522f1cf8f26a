//! The decoy's side of an SMTP dialogue, as a pure state machine: a command
//! line in, a reply out. No I/O, no clock; `session` drives it.
//!
//! The invariants that make the decoy safe live here and are tested here:
//! never a 2xx/3xx to RCPT, DATA or BDAT (no mail is ever accepted), and
//! never a 5xx to the greeting, EHLO/HELO, MAIL or RCPT (no sender bounces).

use std::borrow::Cow;
use std::sync::Arc;

use smtp_proto::Request;

use crate::config::Mode;

/// How far a client got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Connected and saw the banner.
    Connect,
    /// Sent EHLO or HELO.
    Helo,
    /// Sent MAIL FROM.
    Mail,
    /// Sent RCPT TO (and got 450).
    Rcpt,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt];

    /// The stage as written in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The client sent QUIT.
    Quit,
    /// The client closed the connection.
    ClientClosed,
    /// The greeting was the 4xx reply (`greet-*` modes).
    Greeted,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// The session deadline passed.
    SessionTimeout,
    /// The command budget ran out.
    TooManyCommands,
    /// A line exceeded the maximum length.
    LineTooLong,
    /// BDAT: closed rather than read message content.
    Bdat,
    /// The responder is shutting down.
    Shutdown,
    /// The client did not read our replies in time, or the socket failed.
    WriteFailed,
    /// Reading from the socket failed.
    ReadFailed,
    /// Over the connection limits: `421` at once.
    Overloaded,
    /// A retry-exempt client: `421` at once, so that it tries the next MX
    /// (never a decoy hit).
    Passed,
}

impl End {
    /// Every reason.
    pub const ALL: [End; 13] = [
        End::Quit,
        End::ClientClosed,
        End::Greeted,
        End::IdleTimeout,
        End::SessionTimeout,
        End::TooManyCommands,
        End::LineTooLong,
        End::Bdat,
        End::Shutdown,
        End::WriteFailed,
        End::ReadFailed,
        End::Overloaded,
        End::Passed,
    ];

    /// The reason as in the JSON event and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Quit => "quit",
            End::ClientClosed => "client_closed",
            End::Greeted => "greeted",
            End::IdleTimeout => "idle_timeout",
            End::SessionTimeout => "session_timeout",
            End::TooManyCommands => "too_many_commands",
            End::LineTooLong => "line_too_long",
            End::Bdat => "bdat",
            End::Shutdown => "shutdown",
            End::WriteFailed => "write_failed",
            End::ReadFailed => "read_failed",
            End::Overloaded => "overloaded",
            End::Passed => "passed",
        }
    }
}

/// One reply, possibly multi-line, with CRLFs; `close` ends the session after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The wire text.
    pub text: String,
    /// Close after sending, for this reason.
    pub close: Option<End>,
}

impl Reply {
    fn line(text: impl Into<String>) -> Reply {
        let mut text = text.into();
        text.push_str("\r\n");
        Reply { text, close: None }
    }

    fn closing(text: impl Into<String>, end: End) -> Reply {
        Reply {
            close: Some(end),
            ..Reply::line(text)
        }
    }

    /// The reply code (first three digits).
    pub fn code(&self) -> u16 {
        self.text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}

/// Longest piece of client-supplied text kept as evidence.
const MAX_EVIDENCE: usize = 256;

/// Client text made safe to log and store: printable ASCII, bounded.
pub fn evidence(text: &str) -> String {
    text.chars()
        .take(MAX_EVIDENCE)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The decoy's dialogue state and what the client revealed.
#[derive(Clone, Debug)]
pub struct Dialogue {
    mode: Mode,
    hostname: Arc<str>,
    reply: Arc<str>,
    /// The furthest stage reached.
    pub stage: Stage,
    /// EHLO/HELO argument.
    pub helo: Option<String>,
    /// MAIL FROM address (empty string for the null sender).
    pub mail_from: Option<String>,
    /// The first RCPT TO address.
    pub first_rcpt: Option<String>,
    /// Commands received.
    pub commands: u32,
}

impl Dialogue {
    /// A new dialogue. `reply` is the text after `450` (RCPT, `greet-450`).
    pub fn new(mode: Mode, hostname: impl Into<Arc<str>>, reply: impl Into<Arc<str>>) -> Dialogue {
        Dialogue {
            mode,
            hostname: hostname.into(),
            reply: reply.into(),
            stage: Stage::Connect,
            helo: None,
            mail_from: None,
            first_rcpt: None,
            commands: 0,
        }
    }

    /// The greeting. In `greet-*` modes it is the 4xx reply and closes.
    pub fn banner(&self) -> Reply {
        match self.mode {
            Mode::Greet421 => Reply::closing(
                format!(
                    "421 4.7.0 {} Service not available, try again later",
                    self.hostname
                ),
                End::Greeted,
            ),
            Mode::Greet450 => Reply::closing(format!("450 {}", self.reply), End::Greeted),
            Mode::Rcpt450 | Mode::Refuse => Reply::line(format!("220 {} ESMTP", self.hostname)),
        }
    }

    /// The reply to one command line (with or without its CRLF).
    pub fn command(&mut self, line: &[u8]) -> Reply {
        self.commands = self.commands.saturating_add(1);
        // The session hands over whole lines; only other callers need framing.
        let framed: Cow<'_, [u8]> = if line.ends_with(b"\n") {
            Cow::Borrowed(line)
        } else {
            Cow::Owned([line, b"\r\n"].concat())
        };
        match Request::parse(&mut framed.iter()) {
            Ok(request) => self.request(request),
            Err(e) => self.syntax_error(line, matches!(e, smtp_proto::Error::UnknownCommand)),
        }
    }

    fn request(&mut self, request: Request<Cow<'_, str>>) -> Reply {
        match request {
            Request::Ehlo { host } => {
                self.greeted(&host);
                Reply::line(format!(
                    "250-{}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8",
                    self.hostname
                ))
            }
            Request::Helo { host } | Request::Lhlo { host } => {
                self.greeted(&host);
                Reply::line(format!("250 {}", self.hostname))
            }
            Request::Mail { from } => {
                self.stage = self.stage.max(Stage::Mail);
                self.mail_from = Some(evidence(&from.address));
                Reply::line("250 2.1.0 Ok")
            }
            Request::Rcpt { to } => {
                self.stage = Stage::Rcpt;
                if self.first_rcpt.is_none() {
                    self.first_rcpt = Some(evidence(&to.address));
                }
                Reply::line(format!("450 {}", self.reply))
            }
            Request::Data => Reply::line("503 5.5.1 Error: need RCPT command"),
            // Never read message content: refuse the chunk and hang up.
            Request::Bdat { .. } => Reply::closing("503 5.5.1 Error: need RCPT command", End::Bdat),
            Request::Rset => Reply::line("250 2.0.0 Ok"),
            Request::Noop { .. } => Reply::line("250 2.0.0 Ok"),
            Request::Quit => Reply::closing("221 2.0.0 Bye", End::Quit),
            Request::StartTls => Reply::line("454 4.7.0 TLS not available"),
            Request::Vrfy { .. } => Reply::line("252 2.0.0 Cannot VRFY user"),
            Request::Help { .. } => Reply::line("214 2.0.0 See RFC 5321"),
            Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => Reply::line("502 5.5.1 Error: command not implemented"),
        }
    }

    /// Records a greeting; an empty name never replaces a real one.
    fn greeted(&mut self, host: &str) {
        self.stage = self.stage.max(Stage::Helo);
        if !host.is_empty() || self.helo.is_none() {
            self.helo = Some(evidence(host));
        }
    }

    /// A line that names a command but fails to parse. For the commands a
    /// sender must never see a 5xx for, the reply is a 4xx.
    fn syntax_error(&mut self, line: &[u8], unknown: bool) -> Reply {
        let verb: Vec<u8> = line
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .map(u8::to_ascii_uppercase)
            .collect();
        match verb.as_slice() {
            b"EHLO" | b"HELO" | b"LHLO" => {
                let arg = String::from_utf8_lossy(&line[verb.len()..]);
                self.greeted(arg.trim());
                Reply::line(format!("250 {}", self.hostname))
            }
            b"RCPT" => {
                self.stage = Stage::Rcpt;
                if self.first_rcpt.is_none() {
                    self.first_rcpt = Some(raw_path(line));
                }
                Reply::line(format!("450 {}", self.reply))
            }
            b"MAIL" => Reply::line("451 4.5.1 Error: bad sender address syntax, try again"),
            b"DATA" | b"BDAT" => Reply::line("503 5.5.1 Error: need RCPT command"),
            _ if unknown => Reply::line("502 5.5.2 Error: command not recognized"),
            _ => Reply::line("501 5.5.4 Error: syntax error"),
        }
    }
}

/// The path of a `RCPT TO:` line the parser refused (an address literal
/// such as `<user@[192.0.2.1]>`, stray spaces, a missing `<>`), as evidence:
/// what follows the colon, inside the angle brackets when there are some.
fn raw_path(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let arg = text.split_once(':').map_or("", |(_, rest)| rest).trim();
    let path = match arg.strip_prefix('<') {
        Some(inner) => inner.split('>').next().unwrap_or(""),
        None => arg.split_whitespace().next().unwrap_or(""),
    };
    evidence(path.trim())
}

#[cfg(test)]
mod tests;
