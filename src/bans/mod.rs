//! The ban engine: the pure policy that turns evidence into decisions.

pub mod policy;

pub use policy::{Action, Decision, Engine, Policy};
