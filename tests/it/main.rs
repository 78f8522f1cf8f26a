//! The integration tests, one module per area, in one test binary: one link
//! instead of one per file, and one copy of the helpers in `util`. Run one
//! area with `cargo test --test it senders::`.

mod util;

mod apply_powerdns;
mod apply_rfc2136;
mod apply_zonefile;
mod bans;
mod daemon;
mod dashboard;
mod dns_conformance;
mod dnsbl;
mod dnsbl_consumers;
mod docs;
mod enforce;
mod exim_log;
mod fleet;
mod fleet_redis;
mod hostile_config;
mod init;
mod netns_e2e;
mod netns_fleet;
mod notify;
mod packaging;
mod plan;
mod postfix_decoy;
mod reload;
mod replay;
mod responder;
mod retry;
mod senders;
mod serve;
mod serve_scale;
mod verify;
mod verify_smtp;
