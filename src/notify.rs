//! systemd readiness and watchdog notifications (`sd_notify`), without
//! libsystemd: a datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Outside systemd (no `$NOTIFY_SOCKET`) every call
//! does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok(),
                None => SocketAddr::from_pathname(&path).ok(),
            }
        });
        Notifier { target }
    }

    /// Sends one state string such as `READY=1`; errors are ignored (a
    /// notification must never take the daemon down).
    pub fn send(&self, state: &str) {
        if let Some(target) = &self.target
            && let Ok(sock) = UnixDatagram::unbound()
        {
            let _ = sock.send_to_addr(state.as_bytes(), target);
        }
    }

    /// The watchdog interval systemd asked for (`$WATCHDOG_USEC`), halved as
    /// sd_watchdog_enabled(3) recommends; `None` when there is no watchdog.
    pub fn watchdog_interval() -> Option<Duration> {
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

/// Sends `WATCHDOG=1` every `every` until `stop` is cancelled.
pub async fn watchdog(every: Duration, stop: tokio_util::sync::CancellationToken) {
    let notifier = Notifier::from_env();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => notifier.send("WATCHDOG=1"),
            () = stop.cancelled() => return,
        }
    }
}
