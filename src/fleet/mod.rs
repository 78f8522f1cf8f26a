//! The fleet: several `nolist run` nodes (decoys, real MTAs, or both)
//! sharing decoy hits, deliveries and bans through an engine (Redis or
//! Valkey Streams), so that a bot banned anywhere is banned everywhere and
//! a sender that delivered through any real MX is banned nowhere.
//!
//! - [`event`]: the messages and their checks (the engine is input like
//!   any other: hostile until checked);
//! - [`transport`]: the engine behind a small trait; [`redis`] implements
//!   it;
//! - [`gate`]: the safety rule, pure: a hit becomes a ban only once every
//!   MTA node's watermark has passed its judgement time.
//!
//! The node's tasks (outbox publisher, consumer) live in
//! `crate::daemon::fleet`; the design and its trade-offs in `docs/fleet.md`.

pub mod event;
pub mod gate;
pub mod redis;
pub mod transport;
