//! The HeartRule script engine: YAML loading in strict and compatible modes
//! ([`loader`]) and turn execution ([`runtime`]), behind the domain's
//! [`heartrule_domain::ScriptEngine`] port.

pub mod loader;
pub mod runtime;

pub use runtime::{METRICS, OUTPUT_GUARD_TOTAL};
