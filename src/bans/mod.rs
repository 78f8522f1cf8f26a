//! The ban engine: the pure policy that turns evidence into decisions.

pub mod policy;
pub mod retry;
pub mod spf;

pub use policy::{Action, Decision, Engine, Policy};
pub use retry::{Envelope, Passed, Seen};
