//! `nolist run` as a library type: [`Daemon`] takes a config, starts, and
//! gives back a [`Running`] handle with `reload` and `shutdown`. The CLI
//! only parses arguments, handles signals and maps errors to exit codes;
//! tests start daemons in-process.
//!
//! The data path is one-directional:
//!
//! ```text
//! sources ──Evidence──▶ engine ──Write──▶ store writer ──▶ nolist.db ──▶ sinks
//! (responder sessions,   (pure policy,     (the only writer   (SQLite)     (enforcement
//!  MTA log tailers,       one task)         of the database)                backends)
//!  firewall SYN counts)
//! ```
//!
//! The writer thread is the only writer of `nolist.db` in this process;
//! `serials.json`, the other file of the state directory, is written
//! through `store::serials` where the zones are built ([`zones`], at start
//! and on reload). The engine also keeps the retry-exempt networks in a
//! shared `bans::Passed`, which the responder (`421` at the greeting) and
//! the nftables let-through read.
//!
//! - [`sources`]: each source sends typed [`Evidence`]; none is disguised
//!   as another, and a new one does not touch the engine.
//! - [`engine`]: the ban policy's only owner; evidence and the wall clock
//!   in, decisions out.
//! - [`writer`]: commits each step's decisions with the log checkpoint
//!   that caused them, prunes retention, reports bans back to the engine.
//! - [`sinks`]: each enforcement backend on a thread of its own, making the
//!   firewall hold exactly the bans in force in the store.
//! - [`zones`]: the planned zones, when `run` (or `serve`) answers DNS.
//! - [`spf`]: the SPF allow list, resolved and refreshed for the engine.
//! - [`lifecycle`]: start, reload (SIGHUP) and shutdown of all of it.

pub mod engine;
pub(crate) mod fleet;
pub mod lifecycle;
pub mod sinks;
pub mod sources;
pub mod spf;
pub mod writer;
pub mod zones;

pub use lifecycle::{Daemon, Restart, Running, Timing, needs_restart};
pub use sources::{Event, Evidence, Origin};
pub use writer::restore;

use crate::enforce::EnforceError;
use crate::store::StoreError;

/// Why the daemon could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Listening mode without an address to listen on.
    #[error(
        "run: no decoy address to listen on: set responder.listen, or give the decoys ipv4/ipv6 addresses"
    )]
    NoDecoyAddress,
    /// The responder's sockets could not be bound.
    #[error("starting the decoy responder (is the decoy address configured on this host?): {0}")]
    Bind(std::io::Error),
    /// Something else the OS refused.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The state store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The enforcement backend's check failed.
    #[error("enforcement ({backend}): {source}")]
    Enforce {
        /// The backend.
        backend: &'static str,
        /// Why.
        source: EnforceError,
    },
    /// The enforcement thread did not take a new backend.
    #[error("the enforcement thread is gone")]
    EnforcementGone,
    /// The enforcement thread did not answer in time.
    #[error("enforcement did not answer within {0} s")]
    EnforcementTimeout(u64),
    /// The zones to serve.
    #[error(transparent)]
    Zones(#[from] crate::dns::ZoneError),
    /// The metrics recorder was already installed.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::AlreadyInstalled),
    /// The fleet's settings cannot be used (its password cannot be read).
    #[error("fleet: {0}")]
    Fleet(String),
}

/// Starts a thread of `run` under `name` (at most 15 bytes: what `top -H`
/// and `/proc/PID/task/*/comm` show).
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("the system refused to start a thread")
}

#[cfg(test)]
mod tests;
