//! The `SessionManager`: creates sessions, runs turns under the session lock,
//! and reads history and variables. Every turn is all-or-nothing: the engine
//! runs on a locked session and its whole outcome is committed at once, or
//! nothing is and the failure is recorded.

use crate::actor::Actor;
use crate::engine::{ContentSink, EngineState, LlmCallRecord, TurnOutcome, TurnRequest};
use crate::engine::{ScriptEngine, ValidationErrorType, ValidationIssue};
use crate::error::{DomainError, ErrorCode, ErrorKind};
use crate::ids::{ScriptId, SessionId, TurnId};
use crate::message::{Message, NewMessage};
use crate::metric::{MetricDecl, MetricSet, DURATION_BUCKETS, GEN_AI_DURATION_BUCKETS};
use crate::ports::{
    ClaimOutcome, Clock, FailedTurn, IdGenerator, IdempotentResponse, MessageHistory, ScriptCache,
    ScriptRepository, SessionCache, SessionRepository, TurnClaim, TurnContext, TurnLease,
    TurnRecord, VariableSnapshot,
};
use crate::ports_bundle::{Adapters, Ports};
use crate::project::VersionBundle;
use crate::quota::{QuotaAction, QuotaConfig, TurnUsage, UsageTotals, UsageWindows};
use crate::repair::{IntentReading, RepairIntent};
use crate::replay::ReplayReport;
use crate::safety::{llm_signal, protocol_level, HandoffReason, SignalSource};
use crate::script::ActionType;
use crate::script::{ScriptDocument, ScriptVersion, SessionScript, TechniqueScript};
use crate::session::{ExecutionStatus, Position, Session, SessionStatus};
use crate::usecases::{Conversations, PendingTurn, StartedTurn};
use crate::variables::{ValueType, VariableScope, VariableStore, VariableValue};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use metrics::Unit;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Counter of conversation turns, label `outcome`.
pub const TURNS_TOTAL: &str = "heartrule_turns_total";
/// Histogram of one turn's duration, LLM calls included.
pub const TURN_DURATION: &str = "heartrule_turn_duration_seconds";
/// Counter of sessions created.
pub const SESSIONS_CREATED_TOTAL: &str = "heartrule_sessions_created_total";
/// Histogram of the time a turn took to claim its session's lease.
pub const SESSION_LOCK_WAIT: &str = "heartrule_session_lock_wait_seconds";
/// Counter of risk detections on user messages, labels `source`, `level`.
pub const SAFETY_EVENTS_TOTAL: &str = "heartrule_safety_events_total";
/// Counter of LLM tokens of committed turns, label `kind`.
pub const LLM_TOKENS_TOTAL: &str = "heartrule_llm_tokens_total";
/// Counter of turns refused by a token quota, label `limit`.
pub const QUOTA_EXCEEDED_TOTAL: &str = "heartrule_quota_exceeded_total";
/// Gauge of the spend against a budget, label `budget`.
pub const BUDGET_USED_RATIO: &str = "heartrule_llm_budget_used_ratio";
/// Counter of repair intents acted on, labels `intent`, `source`.
pub const REPAIR_INTENTS_TOTAL: &str = "heartrule_repair_intents_total";

/// The metrics the [`SessionManager`] records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::counter(SESSIONS_CREATED_TOTAL, &[], "Counseling sessions created."),
        MetricDecl::counter(
            TURNS_TOTAL,
            &["outcome"],
            "Conversation turns processed, by outcome (committed, replayed, failed, in_progress).",
        ),
        MetricDecl::histogram(
            TURN_DURATION,
            Unit::Seconds,
            &[],
            GEN_AI_DURATION_BUCKETS,
            "Duration of one conversation turn, LLM calls included.",
        ),
        MetricDecl::histogram(
            SESSION_LOCK_WAIT,
            Unit::Seconds,
            &[],
            DURATION_BUCKETS,
            "Time a turn took to claim its session's lease; a claim never waits for another turn (a busy session answers TURN_IN_PROGRESS).",
        ),
        MetricDecl::counter(
            SAFETY_EVENTS_TOTAL,
            &["source", "level"],
            "Risk detections on user messages, by detector (local, llm) and level (low, medium, high, imminent).",
        ),
        MetricDecl::counter(
            LLM_TOKENS_TOTAL,
            &["kind"],
            "LLM tokens of the turns that reached their commit, by kind (prompt, completion); provider-reported, estimated where the provider reported none.",
        ),
        MetricDecl::counter(
            QUOTA_EXCEEDED_TOTAL,
            &["limit", "action"],
            "Turns over a token limit, by limit (session, user_daily, global_hourly) and what they got (refuse: QUOTA_EXCEEDED before any LLM call; scripted: run on scripted texts without the LLM).",
        ),
        MetricDecl::gauge(
            BUDGET_USED_RATIO,
            None,
            &["budget"],
            "Tokens spent against the global hourly budget (budget=global_hourly) as a fraction of it, as read by this instance's last quota check; 1 or more means spent.",
        ),
        MetricDecl::counter(
            REPAIR_INTENTS_TOTAL,
            &["intent", "source"],
            "Repair intents acted on in answers to ai_ask questions, by intent (skip, stop, human) and detector (local, llm).",
        ),
    ],
};

/// Tunables of the [`SessionManager`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionManagerConfig {
    /// How many recent messages a turn loads for the prompts.
    pub history_window: usize,
    /// The most sessions `list_user_sessions` returns.
    pub user_sessions_limit: usize,
    /// How long a turn's lease on its session lasts. It must outlast the
    /// slowest turn (every LLM call with its retries): a turn still running
    /// when it lapses can be taken over, and its late commit is refused.
    /// A crashed instance's sessions become free again after it.
    pub turn_lease: Duration,
    /// How long turns reuse a parsed script and the techniques it resolved
    /// without asking the stores again. An edited session script has a new
    /// content hash and is used at once; an edited technique within this time.
    pub script_memo_ttl: Duration,
    /// Token limits checked before a turn runs (all off by default).
    pub quotas: QuotaConfig,
    /// Whether the recorded LLM exchanges of a turn keep the prompt text
    /// (sensitive values masked) besides its hash: only where conversation
    /// content may be captured (the server's `telemetry.capture_content`).
    /// The responses are always kept, for replays.
    #[serde(default)]
    pub record_prompts: bool,
}

impl Default for SessionManagerConfig {
    fn default() -> Self {
        Self {
            history_window: 20,
            user_sessions_limit: 100,
            turn_lease: Duration::from_secs(300),
            script_memo_ttl: Duration::from_secs(30),
            quotas: QuotaConfig::default(),
            record_prompts: false,
        }
    }
}

/// Input of [`SessionManager::create_session`].
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSession {
    pub user_id: String,
    pub script_id: ScriptId,
    /// Written to the session scope before the first turn.
    pub initial_variables: serde_json::Map<String, Value>,
}

/// An `Idempotency-Key` with a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

/// Input of [`SessionManager::process_input`].
#[derive(Clone)]
pub struct ProcessInput {
    pub session_id: SessionId,
    pub content: String,
    pub idempotency: Option<IdempotencyKey>,
    /// Receives AI message text as it is generated (streaming clients).
    pub sink: Option<Arc<dyn ContentSink>>,
}

impl std::fmt::Debug for ProcessInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The content is private conversation text: never print it.
        f.debug_struct("ProcessInput")
            .field("session_id", &self.session_id)
            .field("content_len", &self.content.len())
            .field("idempotency", &self.idempotency.as_ref().map(|k| &k.key))
            .field("streaming", &self.sink.is_some())
            .finish()
    }
}

/// What a committed turn (or a session creation) returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnResult {
    pub session_id: SessionId,
    pub turn_id: TurnId,
    pub script_id: ScriptId,
    pub session_status: SessionStatus,
    pub execution_status: ExecutionStatus,
    pub position: Position,
    /// AI messages produced by this turn, in order.
    pub messages: Vec<Message>,
    pub variables: VariableStore,
    pub llm_calls: Vec<LlmCallRecord>,
    pub created_at: DateTime<Utc>,
    /// True when this is a stored response replayed for an `Idempotency-Key`.
    #[serde(default)]
    pub replayed: bool,
}

impl TurnResult {
    /// The last AI message's text (`aiMessage` of the original API).
    #[must_use]
    pub fn last_ai_message(&self) -> &str {
        self.messages.last().map_or("", |m| m.content.as_str())
    }
}

/// What [`SessionManager::start_turn`] found.
pub enum TurnStart<P: Ports> {
    /// The session is this turn's: run it.
    Claimed(Box<ClaimedTurn<P>>),
    /// A committed turn already answered the request's `Idempotency-Key`.
    Replayed(Box<TurnResult>),
}

/// A turn that holds its session's lease, ready to run. Nothing is held in
/// the store meanwhile: the lease is a row value, not a lock.
pub struct ClaimedTurn<P: Ports> {
    manager: SessionManager<P>,
    input: ProcessInput,
    context: TurnContext,
    /// A spent token quota keeps the LLM out of this turn.
    llm_withheld: bool,
    started: std::time::Instant,
    span: tracing::Span,
}

impl<P: Ports> ClaimedTurn<P> {
    /// Runs the engine and commits the turn, fenced on the lease; on failure
    /// records it with the user's words and releases the lease.
    pub async fn run(self) -> Result<TurnResult, DomainError> {
        let Self {
            manager,
            input,
            context,
            llm_withheld,
            started,
            span,
        } = self;
        // What a failure is recorded with; the session itself moves into
        // the engine run.
        let lease = context.lease.clone();
        let position = context.session.state.position.clone();
        let outcome = async {
            match manager
                .run_claimed_turn(context, &input, llm_withheld)
                .await
            {
                Ok(result) => Ok(result),
                Err(failure) => {
                    manager
                        .end_failed_turn(&lease, &position, &input, &failure)
                        .await;
                    Err(failure)
                }
            }
        }
        .instrument(span.clone())
        .await;
        record_turn_outcome(&span, outcome.as_ref(), started);
        outcome
    }
}

/// A claim's two happy answers.
enum Claimed {
    /// The turn's context, and whether a spent token quota keeps the LLM
    /// out of it (`quotas.when_exceeded: scripted`).
    Turn(Box<TurnContext>, bool),
    Replay(Box<TurnResult>),
}

/// What the engine is told besides the script, state and input.
#[derive(Debug, Clone, Copy, Default)]
struct EngineFlags {
    /// The local detector's repair intent of the input.
    intent: Option<RepairIntent>,
    /// Whether the LLM's reading of an answer's intent is acted on.
    llm_intents: bool,
    /// A spent token quota keeps the LLM out of the turn.
    llm_withheld: bool,
}

/// Whether a claim checks the session's token quotas: a user's turn does,
/// an editor's release of a handoff does not (it calls no LLM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuotaCheck {
    Apply,
    Skip,
}

/// What a committed turn records of its LLM calls for replays: every call
/// whose response is the provider's own words (one with sensitive values
/// masked out is left out: it could not stand in for the reply, and the
/// record never holds a sensitive value). The prompt text only with
/// `with_prompts`.
fn recorded_exchanges(
    calls: &[LlmCallRecord],
    turn_id: TurnId,
    turn_number: u64,
    with_prompts: bool,
) -> Vec<crate::ports::LlmExchange> {
    calls
        .iter()
        .zip(0u32..)
        .filter(|(call, _)| !call.response_masked && !call.prompt_hash.is_empty())
        .map(|(call, call_index)| crate::ports::LlmExchange {
            turn_id,
            turn_number,
            call_index,
            action_id: call.action_id.clone(),
            purpose: call.purpose.clone(),
            prompt_hash: call.prompt_hash.clone(),
            prompt: with_prompts.then(|| call.prompt.clone()),
            response: call.response.clone(),
            created_at: call.started_at,
        })
        .collect()
}

/// The turn's outcome on its span and in the turn metrics.
fn record_turn_outcome(
    span: &tracing::Span,
    outcome: Result<&TurnResult, &DomainError>,
    started: std::time::Instant,
) {
    let turn_outcome = match outcome {
        Ok(result) if result.replayed => "replayed",
        Ok(_) => "committed",
        Err(e) if e.code() == ErrorCode::TurnInProgress => "in_progress",
        Err(_) => "failed",
    };
    span.record("turn.outcome", turn_outcome);
    metrics::counter!(TURNS_TOTAL, "outcome" => turn_outcome).increment(1);
    metrics::histogram!(TURN_DURATION).record(started.elapsed().as_secs_f64());
}

/// Runs conversations. Generic over the adapters of [`Ports`].
///
/// Its inherent methods act for the system and check no actor; adapters go
/// through the [`Conversations`] port, which decides what the actor asking
/// may reach.
pub struct SessionManager<P: Ports> {
    adapters: Adapters<P>,
    config: SessionManagerConfig,
    scripts: Arc<ScriptMemo>,
    safety: Option<Arc<SafetyProtocol>>,
    repair: Option<Arc<RepairProtocol>>,
}

impl<P: Ports> Clone for SessionManager<P> {
    fn clone(&self) -> Self {
        Self {
            adapters: self.adapters.clone(),
            config: self.config.clone(),
            scripts: Arc::clone(&self.scripts),
            safety: self.safety.clone(),
            repair: self.repair.clone(),
        }
    }
}

/// The scripts recent turns ran, parsed and with their techniques resolved,
/// by script id and content hash: a turn then costs no script fetch, no
/// document decoding and no technique lookup. The hash makes a session
/// script entry exact; the techniques it resolved are reused for at most
/// [`SessionManagerConfig::script_memo_ttl`].
#[derive(Default)]
struct ScriptMemo {
    entries: std::sync::Mutex<HashMap<MemoKey, MemoEntry>>,
}

/// A script id and the content hash of the version parsed.
type MemoKey = (ScriptId, String);
/// When the script was resolved, and the script.
type MemoEntry = (std::time::Instant, Arc<RunnableScript>);

/// Entries beyond this are dropped oldest first.
const SCRIPT_MEMO_CAPACITY: usize = 512;

impl ScriptMemo {
    fn get(&self, id: ScriptId, hash: &str, ttl: Duration) -> Option<Arc<RunnableScript>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(&(id, hash.to_owned()))
            .filter(|(stored_at, _)| stored_at.elapsed() < ttl)
            .map(|(_, script)| Arc::clone(script))
    }

    fn put(&self, script: &Arc<RunnableScript>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= SCRIPT_MEMO_CAPACITY {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (stored_at, _))| *stored_at)
                .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            (script.script_id, script.content_hash.clone()),
            (std::time::Instant::now(), Arc::clone(script)),
        );
    }
}

/// A session script with the techniques it may call and its version's
/// own prompt templates.
struct RunnableScript {
    script_id: ScriptId,
    script_name: String,
    content_hash: String,
    session: Arc<SessionScript>,
    techniques: Arc<BTreeMap<String, TechniqueScript>>,
    templates: Arc<BTreeMap<String, String>>,
}

impl<P: Ports> SessionManager<P> {
    #[must_use]
    pub fn new(adapters: Adapters<P>, config: SessionManagerConfig) -> Self {
        Self {
            adapters,
            config,
            scripts: Arc::default(),
            safety: None,
            repair: None,
        }
    }

    /// Runs every turn under the crisis `protocol` (see [`crate::safety`]).
    #[must_use]
    pub fn with_safety(mut self, protocol: SafetyProtocol) -> Self {
        self.safety = Some(Arc::new(protocol));
        self
    }

    /// Understands repair intents in answers to `ai_ask` questions (see
    /// [`crate::repair`]).
    #[must_use]
    pub fn with_repair(mut self, repair: RepairProtocol) -> Self {
        self.repair = Some(Arc::new(repair));
        self
    }

    /// Creates a session and runs it to its first pause. Nothing is stored
    /// when the first turn fails.
    pub async fn create_session(&self, request: CreateSession) -> Result<TurnResult, DomainError> {
        let span = tracing::info_span!(
            "session_manager.create_session",
            script.id = %request.script_id,
            session.id = tracing::field::Empty,
        );
        async move {
            let a = &self.adapters;
            let script = self.runnable_script(request.script_id, None).await?;
            let now = a.clock.now();
            let mut llm_withheld = false;
            if self.config.quotas.limits_creation() {
                let totals = a
                    .sessions
                    .usage_totals(&request.user_id, &UsageWindows::at(now))
                    .await?;
                llm_withheld = self.check_quota(&totals, now)?;
            }
            let session_id = a.ids.session_id();
            tracing::Span::current().record("session.id", tracing::field::display(session_id));

            let mut variables = VariableStore::default();
            for (name, value) in request.initial_variables {
                let var = VariableValue::new(value, "initial", VariableScope::Session, now);
                variables.set(&name, VariableScope::Session, None, var);
            }
            let session = Session {
                id: session_id,
                user_id: request.user_id,
                script_id: script.script_id,
                script_hash: script.content_hash.clone(),
                status: SessionStatus::Active,
                state: EngineState::initial(variables),
                turn_count: 0,
                last_message_seq: 0,
                last_error: None,
                created_at: now,
                updated_at: now,
                completed_at: None,
            };
            let outcome = self
                .run_engine(
                    &script,
                    &session,
                    None,
                    Vec::new(),
                    None,
                    EngineFlags {
                        llm_withheld,
                        ..EngineFlags::default()
                    },
                )
                .await?;
            let (record, result) =
                self.build_turn(&script, session, a.ids.turn_id(), outcome, None)?;
            a.sessions
                .create(&record)
                .await
                .map_err(|e| DomainError::from(e).with_session(session_id))?;
            a.session_cache.put(&record.session).await;
            metrics::counter!(SESSIONS_CREATED_TOTAL).increment(1);
            metrics::counter!(TURNS_TOTAL, "outcome" => "committed").increment(1);
            tracing::info!(
                event = "session_created",
                session.id = %session_id,
                script.id = %script.script_id,
                execution_status = result.execution_status.as_str(),
                "session created"
            );
            if result.session_status == SessionStatus::Completed {
                tracing::info!(event = "session_completed", session.id = %session_id, "session completed");
            }
            Ok(result)
        }
        .instrument(span)
        .await
    }

    /// Runs one turn with the user's input. The turn claims its session's
    /// lease (never waiting for another turn), runs the engine with nothing
    /// held in the store, then commits everything at once, fenced on the
    /// lease. A second message while a turn runs fails at once with
    /// [`ErrorKind::TurnInProgress`].
    pub async fn process_input(&self, input: ProcessInput) -> Result<TurnResult, DomainError> {
        match self.start_turn(input).await? {
            TurnStart::Replayed(result) => Ok(*result),
            TurnStart::Claimed(turn) => turn.run().await,
        }
    }

    /// The first half of [`Self::process_input`]: claims the session (or
    /// finds the stored response of the request's `Idempotency-Key`)
    /// without running the engine, so a caller can answer a busy session
    /// before it commits to a response format (a stream, say).
    ///
    /// Run the returned [`ClaimedTurn`] to completion: dropping it leaves
    /// the session's lease to lapse after [`SessionManagerConfig::turn_lease`].
    pub async fn start_turn(&self, input: ProcessInput) -> Result<TurnStart<P>, DomainError> {
        self.start_turn_of(input, None).await
    }

    /// [`Self::start_turn`] on a session of `owner` only (any session when
    /// `None`): another user's session fails as `SESSION_NOT_FOUND`, decided
    /// by the claim itself, so the check costs no extra read.
    async fn start_turn_of(
        &self,
        input: ProcessInput,
        owner: Option<String>,
    ) -> Result<TurnStart<P>, DomainError> {
        let span = tracing::info_span!(
            "session_manager.process_input",
            session.id = %input.session_id,
            turn.outcome = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let claimed = self
            .claim(&input, owner, QuotaCheck::Apply, started)
            .instrument(span.clone())
            .await;
        match claimed {
            Ok(Claimed::Turn(context, llm_withheld)) => {
                Ok(TurnStart::Claimed(Box::new(ClaimedTurn {
                    manager: self.clone(),
                    input,
                    context: *context,
                    llm_withheld,
                    started,
                    span,
                })))
            }
            Ok(Claimed::Replay(result)) => {
                record_turn_outcome(&span, Ok(&result), started);
                Ok(TurnStart::Replayed(result))
            }
            Err(error) => {
                record_turn_outcome(&span, Err(&error), started);
                Err(error)
            }
        }
    }

    async fn claim(
        &self,
        input: &ProcessInput,
        owner: Option<String>,
        quota_check: QuotaCheck,
        started: std::time::Instant,
    ) -> Result<Claimed, DomainError> {
        let session_id = input.session_id;
        let claim = TurnClaim {
            session_id,
            turn_id: self.adapters.ids.turn_id(),
            lease_duration: self.config.turn_lease,
            history_window: self.config.history_window,
            idempotency_key: input.idempotency.as_ref().map(|k| k.key.clone()),
            owner,
            usage: (quota_check == QuotaCheck::Apply && self.config.quotas.is_enabled())
                .then(|| UsageWindows::at(self.adapters.clock.now())),
        };
        let claimed = self
            .adapters
            .sessions
            .claim_turn(&claim)
            .await
            .map_err(|e| DomainError::from(e).with_session(session_id))?;
        metrics::histogram!(SESSION_LOCK_WAIT).record(started.elapsed().as_secs_f64());
        match claimed {
            ClaimOutcome::Claimed(context) => {
                let mut llm_withheld = false;
                if let Some(totals) = &context.usage {
                    match self.check_quota(totals, self.adapters.clock.now()) {
                        Ok(withheld) => llm_withheld = withheld,
                        Err(refused) => {
                            // Refused before the turn starts: no failed turn is
                            // recorded (the client still has its words), the
                            // lease is simply given back.
                            if let Err(e) = self
                                .adapters
                                .sessions
                                .release_turn(&context.lease, None)
                                .await
                            {
                                tracing::error!(
                                    session.id = %session_id,
                                    release_error = %e,
                                    "refused turn could not release its lease; it lapses by itself"
                                );
                            }
                            return Err(refused.with_session(session_id));
                        }
                    }
                }
                Ok(Claimed::Turn(context, llm_withheld))
            }
            ClaimOutcome::Replay(stored) => {
                // Only a request with a key can be answered by a replay.
                let key = input.idempotency.as_ref().ok_or_else(|| {
                    DomainError::new(ErrorKind::Internal(
                        "the store replayed a response for a request without an Idempotency-Key"
                            .into(),
                    ))
                    .with_session(session_id)
                })?;
                replay(stored, key, session_id).map(|result| Claimed::Replay(Box::new(result)))
            }
            ClaimOutcome::Busy { lease_expires_at } => {
                Err(DomainError::new(ErrorKind::TurnInProgress {
                    session_id,
                    lease_expires_at,
                })
                .with_session(session_id))
            }
            ClaimOutcome::NotFound => {
                Err(DomainError::new(ErrorKind::SessionNotFound(session_id))
                    .with_session(session_id))
            }
        }
    }

    async fn run_claimed_turn(
        &self,
        context: TurnContext,
        input: &ProcessInput,
        llm_withheld: bool,
    ) -> Result<TurnResult, DomainError> {
        let TurnContext {
            lease,
            mut session,
            history,
            usage: _,
        } = context;
        let session_id = session.id;
        let was_completed = session.status == SessionStatus::Completed;
        let script = self
            .runnable_script(session.script_id, Some(&session.script_hash))
            .await
            .map_err(|e| e.with_session(session_id))?;
        let protocol = self.protocol();
        let waits_for_person = session.status == SessionStatus::Handoff
            && session
                .state
                .safety
                .handoff
                .as_ref()
                .is_some_and(|h| h.reason == HandoffReason::UserRequest);
        if waits_for_person {
            if !self.leave_expired_person_handoff(&mut session) {
                let turn = SafetyTurn {
                    script: &script,
                    session,
                    lease: &lease,
                    input,
                };
                return self.commit_waiting_turn(protocol.as_deref(), turn).await;
            }
        } else if !self.leave_expired_handoff(protocol.as_deref(), &mut session) {
            if let Some(protocol) = protocol.as_deref() {
                let turn = SafetyTurn {
                    script: &script,
                    session,
                    lease: &lease,
                    input,
                };
                return self.commit_holding_turn(protocol, turn).await;
            }
        }
        // The local detector reads the message before anything else; at the
        // threshold the script does not run at all.
        let local = protocol
            .as_deref()
            .map(|p| p.detector.detect(&input.content));
        let threshold = protocol
            .as_deref()
            .map(|p| p.policy.threshold_for(script.session.safety.as_ref()));
        if let (Some(p), Some(local), Some(threshold)) = (protocol.as_deref(), &local, threshold) {
            if let Some(level) = protocol_level(threshold, std::slice::from_ref(local)) {
                let turn = SafetyTurn {
                    script: &script,
                    session,
                    lease: &lease,
                    input,
                };
                return self
                    .commit_protocol_turn(p, turn, std::slice::from_ref(local), level, Vec::new())
                    .await;
            }
        }
        // Repair intents are read only in answers to a question.
        let repair = self.repair().filter(|_| {
            session
                .state
                .pending_action
                .as_ref()
                .is_some_and(|p| p.action_type == ActionType::AiAsk)
        });
        let local_intent = repair
            .as_deref()
            .and_then(|r| r.detector.detect(&input.content));
        if let (Some(r), Some(found)) = (repair.as_deref(), &local_intent) {
            if found.intent != RepairIntent::Skip {
                let turn = SafetyTurn {
                    script: &script,
                    session,
                    lease: &lease,
                    input,
                };
                let reading = IntentReading {
                    intent: found.intent,
                    source: SignalSource::Local,
                };
                let signals = Vec::from_iter(local.clone());
                return self
                    .commit_repair_turn(r, turn, reading, &found.pattern_id, &signals, Vec::new())
                    .await;
            }
        }
        let mut outcome = self
            .run_engine(
                &script,
                &session,
                Some(input.content.clone()),
                history,
                input.sink.clone(),
                EngineFlags {
                    intent: local_intent.map(|m| m.intent),
                    llm_intents: repair.is_some(),
                    llm_withheld,
                },
            )
            .await?;
        // The engine carries the safety record; the manager owns it.
        outcome.state.safety = session.state.safety.clone();
        // Signals a stop or human turn records instead of the script's.
        let mut below_threshold = Vec::new();
        if let (Some(p), Some(local), Some(threshold)) = (protocol.as_deref(), local, threshold) {
            // The LLM's reading of the same message, from the replies of the
            // actions that asked for it: the script's outcome is dropped.
            let signals = [local, llm_signal(&outcome.safety_readings)];
            if let Some(level) = protocol_level(threshold, &signals) {
                let turn = SafetyTurn {
                    script: &script,
                    session,
                    lease: &lease,
                    input,
                };
                return self
                    .commit_protocol_turn(p, turn, &signals, level, outcome.llm_calls)
                    .await;
            }
            if outcome
                .repair
                .is_some_and(|r| r.intent != RepairIntent::Skip)
            {
                below_threshold = signals.to_vec();
            } else {
                self.note_signals(&mut outcome.state, &signals, lease.turn_id, &input.content);
            }
        }
        // The LLM read a stop or a request for a person in the answer: the
        // script's outcome is dropped, as for the crisis protocol.
        if let (Some(r), Some(reading)) = (repair.as_deref(), outcome.repair) {
            if reading.intent != RepairIntent::Skip {
                let turn = SafetyTurn {
                    script: &script,
                    session,
                    lease: &lease,
                    input,
                };
                return self
                    .commit_repair_turn(
                        r,
                        turn,
                        reading,
                        "llm.user_intent",
                        &below_threshold,
                        outcome.llm_calls,
                    )
                    .await;
            }
        }
        let skipped = outcome.repair;
        let (record, result) = self.build_turn(
            &script,
            session,
            lease.turn_id,
            outcome,
            input.idempotency.as_ref(),
        )?;
        self.adapters
            .sessions
            .commit_turn(&lease, &record)
            .await
            .map_err(|e| DomainError::from(e).with_session(session_id))?;
        // Dropped rather than rewritten: encoding the whole session for the
        // cache on every turn costs more than the next read's refill, and a
        // chat client reads the turn's result from its response.
        self.adapters.session_cache.invalidate(session_id).await;
        tracing::info!(
            event = "turn_committed",
            session.id = %session_id,
            turn.id = %record.turn_id,
            execution_status = result.execution_status.as_str(),
            ai_messages = result.messages.len(),
            "turn committed"
        );
        if !was_completed && result.session_status == SessionStatus::Completed {
            tracing::info!(event = "session_completed", session.id = %session_id, "session completed");
        }
        if let Some(reading) = skipped {
            announce_intent(&result, reading);
        }
        Ok(result)
    }

    async fn run_engine(
        &self,
        script: &RunnableScript,
        session: &Session,
        user_input: Option<String>,
        history: Vec<crate::message::HistoryEntry>,
        sink: Option<Arc<dyn ContentSink>>,
        flags: EngineFlags,
    ) -> Result<TurnOutcome, DomainError> {
        let request = TurnRequest {
            script: Arc::clone(&script.session),
            techniques: Arc::clone(&script.techniques),
            templates: Arc::clone(&script.templates),
            state: session.state.clone(),
            user_input,
            history,
            now: self.adapters.clock.now(),
            sink,
            intent: flags.intent,
            llm_intents: flags.llm_intents,
            llm_withheld: flags.llm_withheld,
            recorded: None,
        };
        self.adapters.engine.run_turn(request).await.map_err(|e| {
            e.with_session(session.id)
                .with_script(script.script_id, Some(script.script_name.clone()))
        })
    }

    /// Turns an engine outcome into the record to commit and the result to return.
    fn build_turn(
        &self,
        script: &RunnableScript,
        mut session: Session,
        turn_id: TurnId,
        outcome: TurnOutcome,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(TurnRecord, TurnResult), DomainError> {
        let a = &self.adapters;
        let now = a.clock.now();
        let mut seq = session.last_message_seq;
        let mut stamp = |new: NewMessage| {
            seq += 1;
            Message {
                id: a.ids.message_id(),
                session_id: session.id,
                seq,
                turn_id,
                role: new.role,
                content: new.content,
                action_id: new.action_id,
                action_type: new.action_type,
                metadata: new.metadata,
                created_at: now,
            }
        };
        let usage = TurnUsage::of_calls(&outcome.llm_calls);
        let llm_exchanges = recorded_exchanges(
            &outcome.llm_calls,
            turn_id,
            session.turn_count + 1,
            self.config.record_prompts,
        );
        if !usage.is_empty() {
            metrics::counter!(LLM_TOKENS_TOTAL, "kind" => "prompt").increment(usage.prompt_tokens);
            metrics::counter!(LLM_TOKENS_TOTAL, "kind" => "completion")
                .increment(usage.completion_tokens);
        }
        let user_message = outcome.user_message.map(&mut stamp);
        let ai_messages: Vec<Message> = outcome.messages.into_iter().map(&mut stamp).collect();

        let variables = outcome
            .variable_changes
            .into_iter()
            .map(|change| VariableSnapshot {
                session_id: session.id,
                turn_id,
                value_type: ValueType::of(&change.value),
                name: change.name,
                scope: change.scope,
                scope_key: change.scope_key,
                value: change.value,
                source: change.source,
                created_at: now,
            })
            .collect();

        session.state = outcome.state;
        session.script_hash.clone_from(&script.content_hash);
        session.turn_count += 1;
        session.last_message_seq = seq;
        session.last_error = None;
        session.updated_at = now;
        if session.state.status == ExecutionStatus::Completed {
            session.status = SessionStatus::Completed;
            session.completed_at.get_or_insert(now);
        }

        let result = TurnResult {
            session_id: session.id,
            turn_id,
            script_id: session.script_id,
            session_status: session.status,
            execution_status: session.state.status,
            position: session.state.position.clone(),
            messages: ai_messages.clone(),
            variables: session.state.variables.clone(),
            llm_calls: outcome.llm_calls,
            created_at: session.created_at,
            replayed: false,
        };
        let idempotency = match idempotency {
            Some(key) => Some(IdempotentResponse {
                key: key.key.clone(),
                request_hash: key.request_hash.clone(),
                response: serde_json::to_value(&result).map_err(|e| {
                    DomainError::new(ErrorKind::Internal(format!(
                        "turn result could not be serialized: {e}"
                    )))
                })?,
            }),
            None => None,
        };
        let mut messages = Vec::with_capacity(ai_messages.len() + 1);
        messages.extend(user_message);
        messages.extend(ai_messages);
        let record = TurnRecord {
            turn_id,
            session,
            messages,
            variables,
            idempotency,
            usage,
            llm_exchanges,
        };
        Ok((record, result))
    }

    /// Checks a turn (or a session's creation) against the token limits and
    /// publishes the global budget's spend. Over a limit it is refused, or,
    /// with [`QuotaAction::Scripted`], allowed without the LLM: `Ok(true)`.
    fn check_quota(&self, totals: &UsageTotals, now: DateTime<Utc>) -> Result<bool, DomainError> {
        let quotas = &self.config.quotas;
        if let Some(budget) = quotas.global_hourly_tokens.filter(|b| *b > 0) {
            #[allow(clippy::cast_precision_loss)] // a ratio: precision loss is fine
            let ratio = totals.global_hour_tokens as f64 / budget as f64;
            metrics::gauge!(BUDGET_USED_RATIO, "budget" => "global_hourly").set(ratio);
        }
        let Err(exceeded) = quotas.check(totals, now) else {
            return Ok(false);
        };
        let action = quotas.when_exceeded;
        metrics::counter!(
            QUOTA_EXCEEDED_TOTAL,
            "limit" => exceeded.limit.as_str(),
            "action" => action.as_str(),
        )
        .increment(1);
        tracing::warn!(
            event = "quota_exceeded",
            quota.limit = exceeded.limit.as_str(),
            quota.used = exceeded.used,
            quota.limit_tokens = exceeded.limit_tokens,
            quota.action = action.as_str(),
            "token quota exceeded"
        );
        match action {
            QuotaAction::Refuse => Err(DomainError::new(ErrorKind::QuotaExceeded(exceeded))),
            QuotaAction::Scripted => Ok(true),
        }
    }

    /// Ends a turn that did not commit: records the failure with the user's
    /// words and releases the lease. The failure itself is what the caller
    /// returns, so a recording problem is logged, not raised over it.
    async fn end_failed_turn(
        &self,
        lease: &TurnLease,
        position: &Position,
        input: &ProcessInput,
        failure: &DomainError,
    ) {
        let a = &self.adapters;
        let session_id = lease.session_id;
        let failed = FailedTurn {
            turn_id: lease.turn_id,
            session_id,
            user_input: Some(input.content.clone()),
            error_code: failure.code(),
            error_message: failure.kind.to_string(),
            position: failure
                .context
                .position
                .clone()
                .unwrap_or_else(|| position.clone()),
            failed_at: a.clock.now(),
        };
        if let Err(e) = a.sessions.release_turn(lease, Some(&failed)).await {
            tracing::error!(
                session.id = %session_id,
                error.code = failure.code().as_str(),
                record_error = %e,
                "failed turn could not be recorded; its lease lapses by itself"
            );
        }
        a.session_cache.invalidate(session_id).await;
        tracing::warn!(
            event = "turn_failed",
            session.id = %session_id,
            error.code = failure.code().as_str(),
            error.type = failure.error_type().as_str(),
            "turn failed; nothing was applied"
        );
    }

    /// The script document, the techniques it references and its
    /// version's templates: from the memo of recent turns, else from the
    /// cache when its hash matches, else from the store. With `known_hash`
    /// (a running session's) it is the version with that hash, whatever is
    /// current now: a session runs on the version it started on, with that
    /// version's technique and template files, to its end. Without, it is
    /// the current version, and a deprecated project is `CONFLICT`.
    async fn runnable_script(
        &self,
        script_id: ScriptId,
        known_hash: Option<&str>,
    ) -> Result<Arc<RunnableScript>, DomainError> {
        if let Some(hash) = known_hash {
            if let Some(script) = self
                .scripts
                .get(script_id, hash, self.config.script_memo_ttl)
            {
                return Ok(script);
            }
        }
        let a = &self.adapters;
        let cached = match known_hash {
            Some(hash) => a
                .script_cache
                .get(script_id, hash)
                .await
                .map(|bundle| (bundle, None, hash.to_owned())),
            None => None,
        };
        let (bundle, name, hash) = match cached {
            Some(hit) => hit,
            None => self.load_version(script_id, known_hash).await?,
        };
        let VersionBundle {
            document,
            techniques: own_techniques,
            templates,
        } = bundle;
        let session = match document {
            ScriptDocument::Session(s) => s,
            ScriptDocument::Technique(t) => {
                return Err(DomainError::new(ErrorKind::ScriptValidation(vec![
                    ValidationIssue {
                        path: "root".into(),
                        error_type: ValidationErrorType::StructureError,
                        message: format!(
                            "technique script `{}` cannot start a session",
                            t.technique_id
                        ),
                        expected: Some("a session script (root `session`)".into()),
                        actual: Some("a technique script (root `topic`)".into()),
                        suggestion: Some(
                            "Start the session with a session script that calls the technique through use_skill".into(),
                        ),
                        line: None,
                        column: None,
                    },
                ]))
                .with_script(script_id, name));
            }
        };
        let techniques = self
            .techniques_for(&session, script_id, own_techniques)
            .await?;
        let script = Arc::new(RunnableScript {
            script_id,
            script_name: name.unwrap_or_else(|| session.session_id.clone()),
            content_hash: hash,
            session: Arc::new(session),
            techniques: Arc::new(techniques),
            templates: Arc::new(templates),
        });
        self.scripts.put(&script);
        Ok(script)
    }

    /// The bundle, name and hash of the version with `known_hash` (the
    /// current version when `None`) from the store, cached by hash.
    async fn load_version(
        &self,
        script_id: ScriptId,
        known_hash: Option<&str>,
    ) -> Result<(VersionBundle, Option<String>, String), DomainError> {
        let a = &self.adapters;
        if let Some(hash) = known_hash {
            if let Some(version) = a.scripts.find_version_by_hash(script_id, hash).await? {
                let bundle = self.bundle_of(&version)?;
                a.script_cache
                    .put(script_id, &version.content_hash, &bundle)
                    .await;
                return Ok((bundle, None, version.content_hash));
            }
            let script = a.scripts.get(script_id).await?.ok_or_else(|| {
                DomainError::new(ErrorKind::ScriptNotFound(script_id.to_string()))
            })?;
            if hash != script.content_hash {
                // Only a session started before versions were kept can name
                // content no version has; the current version is all there is.
                tracing::warn!(
                    event = "session_version_missing",
                    script.id = %script_id,
                    script.version = script.current_version,
                    "no stored version has the content this session started on; it continues on the current version"
                );
            }
            return self.current_bundle(script, false).await;
        }
        let project =
            a.scripts.get_project(script_id).await?.ok_or_else(|| {
                DomainError::new(ErrorKind::ScriptNotFound(script_id.to_string()))
            })?;
        if project.deprecated_at.is_some() {
            return Err(DomainError::new(ErrorKind::Conflict(format!(
                "project `{}` is deprecated: it starts no new sessions (running ones go on); restore it to start one",
                project.script.name
            )))
            .with_script(script_id, Some(project.script.name)));
        }
        // A version with files is read from the versions, so the cache is
        // asked first; a plain one is the script row just read.
        let has_files =
            project.script.content_hash != crate::catalog::content_hash(&project.script.content);
        if has_files {
            if let Some(bundle) = a
                .script_cache
                .get(script_id, &project.script.content_hash)
                .await
            {
                let name = Some(project.script.name);
                return Ok((bundle, name, project.script.content_hash));
            }
        }
        self.current_bundle(project.script, true).await
    }

    /// The bundle of `script`'s current version, cached by its hash. A
    /// version without files is the script row itself; one with files is
    /// read from the versions (unless `read_files` is false: the version
    /// is known to be missing).
    async fn current_bundle(
        &self,
        script: crate::script::Script,
        read_files: bool,
    ) -> Result<(VersionBundle, Option<String>, String), DomainError> {
        let a = &self.adapters;
        let bundle = if !read_files
            || script.content_hash == crate::catalog::content_hash(&script.content)
        {
            VersionBundle::of_document(script.document)
        } else {
            let version = match a
                .scripts
                .get_version(script.id, script.current_version)
                .await?
            {
                Some(v) if v.content_hash == script.content_hash => Some(v),
                _ => {
                    a.scripts
                        .find_version_by_hash(script.id, &script.content_hash)
                        .await?
                }
            };
            match version {
                Some(version) => self.bundle_of(&version)?,
                None => VersionBundle::of_document(script.document),
            }
        };
        a.script_cache
            .put(script.id, &script.content_hash, &bundle)
            .await;
        Ok((bundle, Some(script.name), script.content_hash))
    }

    /// Parses a version's technique files and collects its template files.
    fn bundle_of(&self, version: &ScriptVersion) -> Result<VersionBundle, DomainError> {
        VersionBundle::build(&*self.adapters.engine, version)
    }

    /// The techniques `session` may run: the version's own technique files,
    /// then, for a referenced technique no file of the version declares,
    /// the technique script of that id.
    async fn techniques_for(
        &self,
        session: &SessionScript,
        script_id: ScriptId,
        own: BTreeMap<String, TechniqueScript>,
    ) -> Result<BTreeMap<String, TechniqueScript>, DomainError> {
        let mut techniques = own;
        for skill in session.referenced_skills() {
            if techniques.contains_key(&skill) {
                continue;
            }
            let technique = self
                .adapters
                .scripts
                .find_technique(&skill)
                .await?
                .and_then(|s| match s.document {
                    ScriptDocument::Technique(t) => Some(t),
                    ScriptDocument::Session(_) => None,
                })
                .ok_or_else(|| {
                    DomainError::new(ErrorKind::ScriptNotFound(format!("technique `{skill}`")))
                        .with_script(script_id, None)
                })?;
            techniques.insert(skill, technique);
        }
        Ok(techniques)
    }

    /// The stored session (through the snapshot cache).
    pub async fn get_session(&self, id: SessionId) -> Result<Session, DomainError> {
        let a = &self.adapters;
        if let Some(session) = a.session_cache.get(id).await {
            return Ok(session);
        }
        let session = a
            .sessions
            .get(id)
            .await
            .map_err(|e| DomainError::from(e).with_session(id))?
            .ok_or_else(|| DomainError::new(ErrorKind::SessionNotFound(id)).with_session(id))?;
        a.session_cache.put(&session).await;
        Ok(session)
    }

    /// Messages after `after_seq`, oldest first.
    pub async fn messages(
        &self,
        id: SessionId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Message>, DomainError> {
        self.get_session(id).await?;
        self.adapters
            .history
            .list_messages(id, after_seq, limit)
            .await
            .map_err(|e| DomainError::from(e).with_session(id))
    }

    /// The session's variables in their scopes.
    pub async fn variables(&self, id: SessionId) -> Result<VariableStore, DomainError> {
        Ok(self.get_session(id).await?.state.variables)
    }

    /// Every value each turn wrote, oldest first.
    pub async fn variable_history(
        &self,
        id: SessionId,
    ) -> Result<Vec<VariableSnapshot>, DomainError> {
        self.get_session(id).await?;
        self.adapters
            .history
            .list_variable_snapshots(id)
            .await
            .map_err(|e| DomainError::from(e).with_session(id))
    }

    /// A user's sessions, newest first.
    pub async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<Session>, DomainError> {
        Ok(self
            .adapters
            .sessions
            .list_for_user(user_id, self.config.user_sessions_limit)
            .await?)
    }
}

impl<P: Ports> SessionManager<P> {
    /// The session when `actor` may reach it. Anyone else is told it does
    /// not exist, exactly as for an unknown id, so ids cannot be probed.
    async fn reachable_session(
        &self,
        actor: &Actor,
        id: SessionId,
    ) -> Result<Session, DomainError> {
        let session = self.get_session(id).await?;
        if actor.may_access_user(&session.user_id) {
            Ok(session)
        } else {
            Err(DomainError::new(ErrorKind::SessionNotFound(id)).with_session(id))
        }
    }
}

/// The owner a turn of `actor` may claim: administrators claim any session,
/// anyone else only their own (the claim refuses the rest as not found, so
/// a refused turn takes no lease and records no failure).
fn claim_owner(actor: &Actor) -> Option<String> {
    (!actor.is_admin()).then(|| actor.subject().to_owned())
}

#[async_trait]
impl<P: Ports> Conversations for SessionManager<P> {
    async fn create_session(
        &self,
        actor: &Actor,
        request: CreateSession,
    ) -> Result<TurnResult, DomainError> {
        if !actor.may_access_user(&request.user_id) {
            return Err(DomainError::new(ErrorKind::Forbidden(
                "only administrators may create sessions for another user".into(),
            )));
        }
        SessionManager::create_session(self, request).await
    }

    async fn get_session(&self, actor: &Actor, id: SessionId) -> Result<Session, DomainError> {
        self.reachable_session(actor, id).await
    }

    async fn messages(
        &self,
        actor: &Actor,
        id: SessionId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Message>, DomainError> {
        self.reachable_session(actor, id).await?;
        self.adapters
            .history
            .list_messages(id, after_seq, limit)
            .await
            .map_err(|e| DomainError::from(e).with_session(id))
    }

    async fn variables(&self, actor: &Actor, id: SessionId) -> Result<VariableStore, DomainError> {
        Ok(self.reachable_session(actor, id).await?.state.variables)
    }

    async fn list_user_sessions(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<Vec<Session>, DomainError> {
        if !actor.may_access_user(user_id) {
            return Ok(Vec::new());
        }
        SessionManager::list_user_sessions(self, user_id).await
    }

    async fn process_input(
        &self,
        actor: &Actor,
        input: ProcessInput,
    ) -> Result<TurnResult, DomainError> {
        match self.start_turn_of(input, claim_owner(actor)).await? {
            TurnStart::Replayed(result) => Ok(*result),
            TurnStart::Claimed(turn) => turn.run().await,
        }
    }

    async fn start_turn(
        &self,
        actor: &Actor,
        input: ProcessInput,
    ) -> Result<StartedTurn, DomainError> {
        Ok(match self.start_turn_of(input, claim_owner(actor)).await? {
            TurnStart::Claimed(turn) => StartedTurn::Claimed(PendingTurn::new(turn.run())),
            TurnStart::Replayed(result) => StartedTurn::Replayed(result),
        })
    }

    async fn release_handoff(
        &self,
        actor: &Actor,
        id: SessionId,
    ) -> Result<TurnResult, DomainError> {
        self.release_handoff_as(actor, id).await
    }

    async fn replay(
        &self,
        actor: &Actor,
        id: SessionId,
        version: Option<u32>,
    ) -> Result<ReplayReport, DomainError> {
        self.replay_as(actor, id, version).await
    }
}

fn replay(
    stored: IdempotentResponse,
    key: &IdempotencyKey,
    session_id: SessionId,
) -> Result<TurnResult, DomainError> {
    if stored.request_hash != key.request_hash {
        return Err(DomainError::new(ErrorKind::Conflict(format!(
            "Idempotency-Key `{}` was already used with a different request",
            key.key
        )))
        .with_session(session_id));
    }
    let mut result: TurnResult = serde_json::from_value(stored.response).map_err(|e| {
        DomainError::new(ErrorKind::Internal(format!(
            "stored idempotent response could not be decoded: {e}"
        )))
        .with_session(session_id)
    })?;
    result.replayed = true;
    Ok(result)
}

#[path = "manager_safety.rs"]
mod safety_turns;
use safety_turns::SafetyTurn;
pub use safety_turns::{SafetyProtocol, SAFETY_EVENT_TARGET};

#[path = "manager_replay.rs"]
mod replay_runs;

#[path = "manager_repair.rs"]
mod repair_turns;
use repair_turns::announce_intent;
pub use repair_turns::{RepairProtocol, REPAIR_EVENT_TARGET};

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
