//! Drives one [`Dialogue`] over a byte stream: line framing with a length
//! cap, pipelined commands, idle and whole-session timeouts, a command
//! budget, an optional tarpit, and `421` on shutdown. Generic over the
//! stream, so tests drive it without sockets.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dialogue::{Dialogue, End};

/// Per-session limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for the next bytes, and for a reply to be written.
    pub idle: Duration,
    /// Longest session in all.
    pub session: Duration,
    /// Longest command line.
    pub max_line: usize,
    /// Commands before the session is closed.
    pub max_commands: u32,
    /// Delay before each reply.
    pub tarpit: Duration,
}

/// The byte stream under a session.
pub trait Stream: AsyncRead + AsyncWrite + Unpin {
    /// Writes the session's last reply; the caller closes the stream right
    /// after.
    fn last(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> {
        async move {
            self.write_all(bytes).await?;
            self.flush().await
        }
    }
}

#[cfg(test)]
impl Stream for tokio::io::DuplexStream {}

impl Stream for TcpStream {
    /// Sent with `MSG_MORE`, then the write side shut: the FIN rides on the
    /// reply, one segment instead of two at every session's end. Shut here,
    /// not left to the close: a close with input still unread sends a RST
    /// and discards what it had not sent.
    async fn last(&mut self, bytes: &[u8]) -> io::Result<()> {
        let sock = socket2::SockRef::from(&*self);
        let sent = self
            .async_io(tokio::io::Interest::WRITABLE, || {
                sock.send_with_flags(bytes, libc::MSG_MORE | libc::MSG_NOSIGNAL)
            })
            .await?;
        self.write_all(&bytes[sent..]).await?;
        self.shutdown().await
    }
}

/// Runs the dialogue to its end and says why it ended.
pub async fn run<S: Stream>(
    io: &mut S,
    dialogue: &mut Dialogue,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> End {
    let deadline = Instant::now() + limits.session;
    let banner = dialogue.banner();
    if let Err(end) = send(io, &banner.text, banner.close.is_some(), limits, shutdown).await {
        return end;
    }
    if let Some(end) = banner.close {
        return end;
    }
    let mut line = Vec::new();
    let mut chunk = [0u8; 512];
    let mut out = String::new();
    loop {
        // Answer every complete line already received (pipelining), then flush once.
        let mut closing = None;
        while let Some(nl) = line.iter().position(|&b| b == b'\n') {
            if nl + 1 > limits.max_line {
                break; // handled below as too long, whether or not its newline came
            }
            let reply = if dialogue.commands >= limits.max_commands {
                closing = Some(End::TooManyCommands);
                "421 4.7.0 Too many commands, closing connection\r\n".to_owned()
            } else {
                let reply = dialogue.command(&line[..=nl]);
                closing = reply.close;
                reply.text
            };
            out.push_str(&reply);
            line.drain(..=nl);
            if closing.is_some() {
                break;
            }
        }
        let first_line = line
            .iter()
            .position(|&b| b == b'\n')
            .map_or(line.len(), |nl| nl + 1);
        if closing.is_none() && first_line > limits.max_line {
            closing = Some(End::LineTooLong);
            out.push_str("421 4.7.0 Line too long, closing connection\r\n");
        }
        if !out.is_empty() {
            if let Err(end) = send(io, &out, closing.is_some(), limits, shutdown).await {
                return end;
            }
            out.clear();
        }
        if let Some(end) = closing {
            return end;
        }
        let wait_until = deadline.min(Instant::now() + limits.idle);
        let read = tokio::select! {
            r = tokio::time::timeout_at(wait_until, io.read(&mut chunk)) => r,
            () = shutdown.cancelled() => {
                let _ = say(io, "421 4.3.2 Service shutting down, closing connection\r\n", limits).await;
                return End::Shutdown;
            }
        };
        match read {
            Ok(Ok(0)) => return End::ClientClosed,
            Ok(Ok(n)) => line.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return End::ReadFailed,
            Err(_) if Instant::now() >= deadline => {
                let _ = say(
                    io,
                    "421 4.4.2 Session time limit exceeded, closing connection\r\n",
                    limits,
                )
                .await;
                return End::SessionTimeout;
            }
            Err(_) => {
                let _ = say(
                    io,
                    "421 4.4.2 Timeout exceeded, closing connection\r\n",
                    limits,
                )
                .await;
                return End::IdleTimeout;
            }
        }
    }
}

/// Writes `text` after the tarpit delay (`last`: the session ends after
/// it); shutdown interrupts the delay.
async fn send<S: Stream>(
    io: &mut S,
    text: &str,
    last: bool,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> Result<(), End> {
    if !limits.tarpit.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(limits.tarpit) => {}
            () = shutdown.cancelled() => {
                let _ = say(io, "421 4.3.2 Service shutting down, closing connection\r\n", limits).await;
                return Err(End::Shutdown);
            }
        }
    }
    write(io, text, last, limits).await
}

/// Writes the session's last reply (see [`write`]).
async fn say<S: Stream>(io: &mut S, text: &str, limits: &Limits) -> Result<(), End> {
    write(io, text, true, limits).await
}

/// Writes a reply within the idle timeout (a client that never reads
/// loses); `last` when the session ends after it.
async fn write<S: Stream>(io: &mut S, text: &str, last: bool, limits: &Limits) -> Result<(), End> {
    let bytes = text.as_bytes();
    let written = async {
        if last {
            io.last(bytes).await
        } else {
            io.write_all(bytes).await?;
            io.flush().await
        }
    };
    match tokio::time::timeout(limits.idle, written).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::WriteFailed),
    }
}

#[cfg(test)]
mod tests;
