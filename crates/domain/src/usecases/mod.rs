//! Inbound ports: the use cases adapters drive, as traits the services
//! implement. Each takes the [`Actor`](crate::Actor) asking first, and the
//! service decides what that actor may do; an adapter only extracts the
//! actor and can be tested against mocks of these traits.
//!
//! - [`Conversations`]: sessions and turns ([`SessionManager`](crate::SessionManager)).
//! - [`ScriptLibrary`]: scripts ([`ScriptCatalog`](crate::ScriptCatalog)).
//! - [`Administration`]: the audit log and the privacy operations
//!   ([`AdminService`]).

pub mod administration;
pub mod conversations;
pub mod scripts;

pub use administration::{AdminService, Administration, UserErasure};
pub use conversations::{Conversations, PendingTurn, StartedTurn};
pub use scripts::ScriptLibrary;

#[cfg(any(test, feature = "mocks"))]
pub use administration::MockAdministration;
#[cfg(any(test, feature = "mocks"))]
pub use conversations::MockConversations;
#[cfg(any(test, feature = "mocks"))]
pub use scripts::MockScriptLibrary;
