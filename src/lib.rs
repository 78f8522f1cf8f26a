//! nolist: runs a mail domain's nolisting defence end to end.
//!
//! The library does the work; the `nolist` binary only parses arguments and
//! prints. See `ARCHITECTURE.md` for the map.

pub mod bans;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod dnsbl;
pub mod enforce;
pub mod fleet;
pub mod hash;
pub mod init;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod resolver;
pub mod smtp;
pub mod store;
#[cfg(feature = "providers")]
pub mod sync;
pub mod verify;
pub mod watch;
