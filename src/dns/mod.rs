//! DNS: the planned zones as resource records, and `nolist serve`'s
//! authoritative server. Only this module (and `verify`) speaks DNS.

pub mod cache;
pub mod records;
pub mod server;
pub mod wire;
pub mod zone;

pub use server::{Authority, Listeners, Snapshot, TcpLimits};
pub use zone::{ZoneData, ZoneError};
