//! SMTP: the decoy responder, and the client side. `dialogue` is the pure
//! state machine, `session` drives it over any byte stream with limits and
//! timeouts, and `responder` accepts connections and emits one event per
//! session. `probe` is the client: one dialogue up to RCPT, never DATA, for
//! `nolist probe` and `verify`.

pub mod dialogue;
pub mod probe;
pub mod responder;
pub mod session;
