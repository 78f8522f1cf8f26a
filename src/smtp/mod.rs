//! SMTP: the decoy responder. `dialogue` is the pure state machine,
//! `session` drives it over any byte stream with limits and timeouts, and
//! `responder` accepts connections and emits one event per session.

pub mod dialogue;
pub mod probe;
pub mod responder;
pub mod session;
