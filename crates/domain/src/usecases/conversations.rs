//! The conversation use cases: sessions, their history and variables, and
//! turns (plain or streamed).
//!
//! Who may reach a session: its user (the actor whose subject is the
//! session's `userId`) and administrators. Anyone else is told the session
//! does not exist (`SESSION_NOT_FOUND`), so session ids cannot be probed,
//! and a refused turn claims no lease and records no failed turn.

use crate::actor::Actor;
use crate::error::DomainError;
use crate::ids::SessionId;
use crate::manager::{CreateSession, ProcessInput, TurnResult};
use crate::message::Message;
use crate::replay::ReplayReport;
use crate::session::Session;
use crate::variables::VariableStore;
use async_trait::async_trait;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A claimed turn, ready to run: it holds its session's lease. Run it to
/// completion (in a task of its own if the caller may go away); dropping it
/// leaves the lease to lapse.
pub struct PendingTurn(Pin<Box<dyn Future<Output = Result<TurnResult, DomainError>> + Send>>);

impl PendingTurn {
    /// Wraps the rest of a turn.
    pub fn new(
        run: impl Future<Output = Result<TurnResult, DomainError>> + Send + 'static,
    ) -> Self {
        Self(Box::pin(run))
    }

    /// Runs the engine and commits (or records the failure).
    pub async fn run(self) -> Result<TurnResult, DomainError> {
        self.0.await
    }
}

impl fmt::Debug for PendingTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingTurn")
    }
}

/// What [`Conversations::start_turn`] found.
#[derive(Debug)]
pub enum StartedTurn {
    /// The session is this turn's: run it.
    Claimed(PendingTurn),
    /// A committed turn already answered the request's `Idempotency-Key`.
    Replayed(Box<TurnResult>),
}

/// Conversations: what chat front ends do.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Conversations: Send + Sync {
    /// Creates a session for `request.user_id` and runs it to its first
    /// pause. Only the user itself or an administrator may: anyone else is
    /// `FORBIDDEN` (the user id is the caller's own input, nothing stored is
    /// revealed by refusing it).
    async fn create_session(
        &self,
        actor: &Actor,
        request: CreateSession,
    ) -> Result<TurnResult, DomainError>;

    /// The stored session; `SESSION_NOT_FOUND` when the actor may not reach it.
    async fn get_session(&self, actor: &Actor, id: SessionId) -> Result<Session, DomainError>;

    /// The session's messages after `after_seq`, oldest first.
    async fn messages(
        &self,
        actor: &Actor,
        id: SessionId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Message>, DomainError>;

    /// The session's variables in their scopes.
    async fn variables(&self, actor: &Actor, id: SessionId) -> Result<VariableStore, DomainError>;

    /// The sessions of `user_id`, newest first. An actor that may not reach
    /// that user's sessions gets an empty list: the answer is then the same
    /// whether the user exists or not, and the store is not asked.
    async fn list_user_sessions(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<Vec<Session>, DomainError>;

    /// Runs one turn to its commit (see [`Conversations::start_turn`]).
    async fn process_input(
        &self,
        actor: &Actor,
        input: ProcessInput,
    ) -> Result<TurnResult, DomainError>;

    /// The first half of a turn: checks the actor, then claims the session
    /// (or finds the stored response of the request's `Idempotency-Key`)
    /// without running the engine, so a streaming caller can answer a
    /// hidden, missing or busy session before it starts its stream.
    async fn start_turn(
        &self,
        actor: &Actor,
        input: ProcessInput,
    ) -> Result<StartedTurn, DomainError>;

    /// Releases a session the crisis protocol holds in handoff: the
    /// session is active again and its script resumes where it stood.
    /// Editors and administrators only (`FORBIDDEN` otherwise); `CONFLICT`
    /// when the session is not in handoff.
    async fn release_handoff(
        &self,
        actor: &Actor,
        id: SessionId,
    ) -> Result<TurnResult, DomainError>;

    /// Replays the session against version `version` of its script (by
    /// default the version it ran on) and reports where the conversations
    /// diverge (see [`crate::replay`]); nothing is written. Editors and
    /// administrators only (`FORBIDDEN` otherwise): it reads another
    /// user's conversation, and is audited as `session.replay`.
    /// `SESSION_NOT_FOUND`, `VERSION_NOT_FOUND`.
    async fn replay(
        &self,
        actor: &Actor,
        id: SessionId,
        version: Option<u32>,
    ) -> Result<ReplayReport, DomainError>;
}
