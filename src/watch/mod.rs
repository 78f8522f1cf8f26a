//! The MTA-log side of the ban engine: timestamps, and the parsers that
//! turn log lines into evidence (deliveries and decoy hits).

pub mod parse;
pub mod tail;
pub mod time;

pub use parse::{DecoySpec, Kind, LineParser, LogEvent};
