//! Inbound ports: what the adapters that take requests (HTTP, WebSocket)
//! may ask of the domain, each method taking the [`crate::Actor`] it acts
//! for, and the services implementing them.

pub mod administration;

pub use administration::{AdminService, Administration, UserErasure};
