//! DNS: the planned zones as resource records, and the authoritative
//! server of `nolist serve` (and of `nolist run` with `dns.serve`). This
//! module answers queries and never sends any; nolist's DNS clients are
//! `verify` and the SPF allow list (through one resolver) and the providers
//! crate's RFC 2136 backend.

pub mod cache;
pub mod fast;
pub mod records;
pub mod server;
pub mod wire;
pub mod zone;

pub use server::{Authority, Listeners, Snapshot, TcpLimits};
pub use zone::{ZoneData, ZoneError};
