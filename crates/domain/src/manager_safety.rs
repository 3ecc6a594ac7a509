//! The crisis protocol inside a turn: the turns that follow it instead of
//! the script, the holding replies of a session in handoff, and releasing
//! a session from handoff. Every such turn commits like any other (the
//! user's message and the reply are stored, fenced on the lease); the alert
//! to the on-call endpoint is handed over only after the commit.

use super::{Claimed, QuotaCheck, RunnableScript, SessionManager, SAFETY_EVENTS_TOTAL};
use crate::actor::Actor;
use crate::engine::{LlmCallRecord, TurnOutcome};
use crate::error::{DomainError, ErrorKind};
use crate::ids::{SessionId, TurnId};
use crate::manager::{ProcessInput, TurnResult};
use crate::message::{MessageRole, NewMessage};
use crate::ports::{Clock, SessionCache, SessionRepository, TurnLease};
use crate::ports_bundle::Ports;
use crate::safety::{
    detect_locale, Handoff, HandoffReason, LocalDetector, RiskEvent, RiskLevel, RiskSignal,
    SafetyAlert, SafetyNotifier, SafetyPolicy, SafetyState,
};
use crate::session::{ExecutionStatus, Session, SessionStatus};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

/// Target of the protocol's business events (stable: alerting keys on it).
pub const SAFETY_EVENT_TARGET: &str = "heartrule::safety";

/// The crisis protocol a [`SessionManager`] runs with.
pub struct SafetyProtocol {
    pub policy: SafetyPolicy,
    pub detector: LocalDetector,
    pub notifier: Arc<dyn SafetyNotifier>,
}

impl SafetyProtocol {
    /// The protocol of `policy` (its detector built from `policy.rules`),
    /// alerting through `notifier`.
    #[must_use]
    pub fn new(policy: SafetyPolicy, notifier: Arc<dyn SafetyNotifier>) -> Self {
        Self {
            detector: LocalDetector::new(&policy.rules),
            policy,
            notifier,
        }
    }

    pub(super) fn cooldown_elapsed(&self, handoff: Option<&Handoff>, now: DateTime<Utc>) -> bool {
        match (self.policy.handoff_cooldown, handoff) {
            (Some(cooldown), Some(handoff)) => chrono::Duration::from_std(cooldown)
                .is_ok_and(|cooldown| now >= handoff.since + cooldown),
            // A handoff without its record cannot be timed: release it.
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The signals worth recording (something was detected).
fn detected(signals: &[RiskSignal]) -> Vec<RiskSignal> {
    signals
        .iter()
        .filter(|s| s.level > RiskLevel::None)
        .cloned()
        .collect()
}

/// Adds `signals` to the session's safety record.
fn record_events(
    safety: &mut SafetyState,
    signals: &[RiskSignal],
    turn_id: TurnId,
    at: DateTime<Utc>,
    evidence: &str,
    protocol: bool,
) {
    for signal in signals {
        safety.risk_level = safety.risk_level.max(signal.level);
        safety.risk_events.push(RiskEvent {
            turn_id,
            at,
            source: signal.source,
            level: signal.level,
            pattern_ids: signal.pattern_ids.clone(),
            evidence: evidence.to_owned(),
            protocol,
        });
    }
}

/// Leaves handoff in place: the session is active again and its script
/// resumes where it stood.
pub(super) fn release(session: &mut Session) {
    if let Some(handoff) = session.state.safety.handoff.take() {
        session.state.status = handoff.resume_status;
    } else if session.state.status == ExecutionStatus::Paused {
        session.state.status = ExecutionStatus::WaitingInput;
    }
    // A crisis message to a finished script holds it too; released, it is
    // finished again.
    session.status = if session.state.status == ExecutionStatus::Completed {
        SessionStatus::Completed
    } else {
        SessionStatus::Active
    };
}

/// A claimed turn the protocol answers instead of the script.
pub(super) struct SafetyTurn<'a> {
    pub script: &'a RunnableScript,
    pub session: Session,
    pub lease: &'a TurnLease,
    pub input: &'a ProcessInput,
}

/// A reply the manager wrote instead of the script.
pub(super) struct WrittenReply {
    pub text: String,
    pub metadata: Value,
    /// The action id its text streams under.
    pub stream_as: &'static str,
}

/// What a protocol turn decided, for its event, metric and alert.
struct Decision {
    user_id: String,
    level: RiskLevel,
    signals: Vec<RiskSignal>,
    handoff: bool,
}

impl<P: Ports> SessionManager<P> {
    /// The protocol, when configured and on.
    pub(super) fn protocol(&self) -> Option<Arc<SafetyProtocol>> {
        self.safety
            .as_ref()
            .filter(|p| p.policy.enabled)
            .map(Arc::clone)
    }

    /// Checks a session in handoff before its turn: released when the
    /// protocol is off or its cooldown has passed (the turn then runs as
    /// usual), else `false` and the turn gets the holding reply.
    pub(super) fn leave_expired_handoff(
        &self,
        protocol: Option<&SafetyProtocol>,
        session: &mut Session,
    ) -> bool {
        if session.status != SessionStatus::Handoff {
            return true;
        }
        let now = self.adapters.clock.now();
        let free =
            protocol.is_none_or(|p| p.cooldown_elapsed(session.state.safety.handoff.as_ref(), now));
        if free {
            release(session);
            tracing::info!(
                target: SAFETY_EVENT_TARGET,
                event = "handoff_released",
                session.id = %session.id,
                released_by = "cooldown",
                "session released from handoff"
            );
        }
        free
    }

    /// A turn that follows the protocol instead of the script: the crisis
    /// reply, the session marked and (unless the script continues after
    /// acknowledgement) held in handoff.
    pub(super) async fn commit_protocol_turn(
        &self,
        protocol: &SafetyProtocol,
        turn: SafetyTurn<'_>,
        signals: &[RiskSignal],
        level: RiskLevel,
        llm_calls: Vec<LlmCallRecord>,
    ) -> Result<TurnResult, DomainError> {
        let SafetyTurn {
            script,
            session,
            lease,
            input,
        } = turn;
        let now = self.adapters.clock.now();
        let script_safety = script.session.safety.as_ref();
        let locale = detect_locale(&input.content);
        let reply = protocol.policy.crisis_reply(locale, script_safety);
        let hold = !script_safety.is_some_and(|s| s.continue_after_acknowledgement);
        let signals = detected(signals);
        let mut state = session.state.clone();
        record_events(
            &mut state.safety,
            &signals,
            lease.turn_id,
            now,
            &input.content,
            true,
        );
        if hold {
            // A session already waiting for a person keeps the status it
            // waited from.
            let resume_status = state
                .safety
                .handoff
                .as_ref()
                .map_or(state.status, |h| h.resume_status);
            state.safety.handoff = Some(Handoff {
                since: now,
                level,
                resume_status,
                reason: HandoffReason::Crisis,
            });
            state.status = ExecutionStatus::Paused;
        }
        let metadata = json!({
            "safety": {
                "protocol": "crisis",
                "level": level,
                "sources": signals.iter().map(|s| s.source).collect::<Vec<_>>(),
                "locale": locale,
                "handoff": hold,
            }
        });
        let decision = Decision {
            user_id: session.user_id.clone(),
            level,
            signals,
            handoff: hold,
        };
        let status = if hold {
            SessionStatus::Handoff
        } else {
            session.status
        };
        let turn = SafetyTurn {
            script,
            session,
            lease,
            input,
        };
        let reply = WrittenReply {
            text: reply,
            metadata,
            stream_as: "safety",
        };
        self.commit_safety_turn(turn, status, state, reply, llm_calls)
            .await
            .inspect(|result| self.announce(protocol, result, &decision))
    }

    /// A message to a session in handoff: stored with the holding reply;
    /// the script does not move. A new detection at the threshold alerts
    /// the on-call endpoint again.
    pub(super) async fn commit_holding_turn(
        &self,
        protocol: &SafetyProtocol,
        turn: SafetyTurn<'_>,
    ) -> Result<TurnResult, DomainError> {
        let SafetyTurn {
            script,
            session,
            lease,
            input,
        } = turn;
        let now = self.adapters.clock.now();
        let locale = detect_locale(&input.content);
        let local = protocol.detector.detect(&input.content);
        let threshold = protocol
            .policy
            .threshold_for(script.session.safety.as_ref());
        let signals = detected(std::slice::from_ref(&local));
        let alert = crate::safety::protocol_level(threshold, &signals);
        let mut state = session.state.clone();
        record_events(
            &mut state.safety,
            &signals,
            lease.turn_id,
            now,
            &input.content,
            alert.is_some(),
        );
        let reply = protocol.policy.holding_reply(locale);
        let metadata = json!({ "safety": { "holding": true, "locale": locale } });
        let status = session.status;
        let user_id = session.user_id.clone();
        let turn = SafetyTurn {
            script,
            session,
            lease,
            input,
        };
        let reply = WrittenReply {
            text: reply,
            metadata,
            stream_as: "safety",
        };
        let result = self
            .commit_safety_turn(turn, status, state, reply, Vec::new())
            .await?;
        match alert {
            Some(level) => self.announce(
                protocol,
                &result,
                &Decision {
                    user_id,
                    level,
                    signals,
                    handoff: true,
                },
            ),
            None => count_signals(&signals),
        }
        Ok(result)
    }

    /// Commits a turn whose reply the protocol (or a repair intent) wrote.
    pub(super) async fn commit_safety_turn(
        &self,
        turn: SafetyTurn<'_>,
        status: SessionStatus,
        state: crate::engine::EngineState,
        reply: WrittenReply,
        llm_calls: Vec<LlmCallRecord>,
    ) -> Result<TurnResult, DomainError> {
        let WrittenReply {
            text: reply,
            metadata,
            stream_as,
        } = reply;
        let SafetyTurn {
            script,
            mut session,
            lease,
            input,
        } = turn;
        let session_id = session.id;
        // The action the message answered, as it stood before this turn.
        let pending = session.state.pending_action.as_ref();
        let user_message = NewMessage {
            role: MessageRole::User,
            content: input.content.clone(),
            action_id: pending.map(|p| p.action_id.clone()),
            action_type: pending.map(|p| p.action_type),
            metadata: Value::Object(serde_json::Map::new()),
        };
        if let Some(sink) = &input.sink {
            sink.delta(stream_as, &reply);
        }
        let outcome = TurnOutcome {
            state,
            user_message: Some(user_message),
            messages: vec![NewMessage {
                role: MessageRole::Assistant,
                content: reply,
                action_id: None,
                action_type: None,
                metadata,
            }],
            variable_changes: Vec::new(),
            llm_calls,
            safety_readings: Vec::new(),
            repair: None,
        };
        session.status = status;
        let (record, result) = self.build_turn(
            script,
            session,
            lease.turn_id,
            outcome,
            input.idempotency.as_ref(),
        )?;
        self.adapters
            .sessions
            .commit_turn(lease, &record)
            .await
            .map_err(|e| DomainError::from(e).with_session(session_id))?;
        self.adapters.session_cache.invalidate(session_id).await;
        Ok(result)
    }

    /// The business event, the metric and the alert of a protocol turn,
    /// once it has committed (no lease or connection is held any more).
    fn announce(&self, protocol: &SafetyProtocol, result: &TurnResult, decision: &Decision) {
        count_signals(&decision.signals);
        let sources: Vec<&str> = decision.signals.iter().map(|s| s.source.as_str()).collect();
        let pattern_ids: Vec<String> = decision
            .signals
            .iter()
            .flat_map(|s| s.pattern_ids.iter().cloned())
            .collect();
        // Level, sources and pattern ids only: the user's words stay in
        // the store.
        tracing::warn!(
            target: SAFETY_EVENT_TARGET,
            event = "safety_protocol",
            session.id = %result.session_id,
            turn.id = %result.turn_id,
            risk.level = decision.level.as_str(),
            risk.sources = ?sources,
            risk.patterns = ?pattern_ids,
            handoff = decision.handoff,
            "crisis protocol followed"
        );
        protocol.notifier.notify(SafetyAlert {
            kind: crate::safety::AlertKind::Crisis,
            alert_id: result.turn_id,
            session_id: result.session_id,
            user_id: decision.user_id.clone(),
            script_id: result.script_id,
            level: decision.level,
            sources: decision.signals.iter().map(|s| s.source).collect(),
            pattern_ids,
            handoff: decision.handoff,
            occurred_at: self.adapters.clock.now(),
        });
    }

    /// Releases a session from handoff (editors and administrators): the
    /// session is active again, its script resumes where it stood, and a
    /// system message records who released it.
    pub(super) async fn release_handoff_as(
        &self,
        actor: &Actor,
        id: SessionId,
    ) -> Result<TurnResult, DomainError> {
        if !actor.may_manage_scripts() {
            return Err(DomainError::new(ErrorKind::Forbidden(
                "releasing a session from handoff needs the editor or admin role".into(),
            ))
            .with_session(id));
        }
        let input = ProcessInput {
            session_id: id,
            content: String::new(),
            idempotency: None,
            sink: None,
        };
        // A release calls no LLM: the user's token quota does not apply.
        let claimed = self
            .claim(&input, None, QuotaCheck::Skip, std::time::Instant::now())
            .await?;
        let context = match claimed {
            Claimed::Turn(context, _) => *context,
            Claimed::Replay(_) => {
                return Err(DomainError::new(ErrorKind::Internal(
                    "a release without an Idempotency-Key was answered by a replay".into(),
                ))
                .with_session(id))
            }
        };
        let lease = context.lease.clone();
        let outcome = self.release_claimed(actor, context.session, &lease).await;
        if outcome.is_err() {
            if let Err(e) = self.adapters.sessions.release_turn(&lease, None).await {
                tracing::error!(session.id = %id, error = %e, "release lease could not be freed; it lapses by itself");
            }
        }
        outcome
    }

    async fn release_claimed(
        &self,
        actor: &Actor,
        mut session: Session,
        lease: &TurnLease,
    ) -> Result<TurnResult, DomainError> {
        let id = session.id;
        if session.status != SessionStatus::Handoff {
            return Err(DomainError::new(ErrorKind::Conflict(format!(
                "session {id} is not in handoff (status `{}`)",
                session.status.as_str()
            )))
            .with_session(id));
        }
        let script = self
            .runnable_script(session.script_id, Some(&session.script_hash))
            .await
            .map_err(|e| e.with_session(id))?;
        let level = session
            .state
            .safety
            .handoff
            .as_ref()
            .map_or(RiskLevel::None, |h| h.level);
        release(&mut session);
        let outcome = TurnOutcome {
            state: session.state.clone(),
            user_message: None,
            messages: vec![NewMessage {
                role: MessageRole::System,
                content: format!("Released from handoff by {}.", actor.subject()),
                action_id: None,
                action_type: None,
                metadata: json!({
                    "safety": { "releasedBy": actor.subject(), "level": level }
                }),
            }],
            variable_changes: Vec::new(),
            llm_calls: Vec::new(),
            safety_readings: Vec::new(),
            repair: None,
        };
        let (record, result) = self.build_turn(&script, session, lease.turn_id, outcome, None)?;
        self.adapters
            .sessions
            .commit_turn(lease, &record)
            .await
            .map_err(|e| DomainError::from(e).with_session(id))?;
        self.adapters.session_cache.invalidate(id).await;
        tracing::info!(
            target: SAFETY_EVENT_TARGET,
            event = "handoff_released",
            session.id = %id,
            released_by = actor.subject(),
            "session released from handoff"
        );
        Ok(result)
    }

    /// Records detections below the threshold on the session (no protocol).
    pub(super) fn note_signals(
        &self,
        state: &mut crate::engine::EngineState,
        signals: &[RiskSignal],
        turn_id: TurnId,
        evidence: &str,
    ) {
        let signals = detected(signals);
        if signals.is_empty() {
            return;
        }
        record_events(
            &mut state.safety,
            &signals,
            turn_id,
            self.adapters.clock.now(),
            evidence,
            false,
        );
        count_signals(&signals);
        for signal in &signals {
            tracing::info!(
                target: SAFETY_EVENT_TARGET,
                event = "safety_signal",
                risk.level = signal.level.as_str(),
                risk.source = signal.source.as_str(),
                risk.patterns = ?signal.pattern_ids,
                "risk signal below the protocol threshold"
            );
        }
    }
}

fn count_signals(signals: &[RiskSignal]) {
    for signal in signals {
        metrics::counter!(
            SAFETY_EVENTS_TOTAL,
            "source" => signal.source.as_str(),
            "level" => signal.level.as_str()
        )
        .increment(1);
    }
}
