//! Repair intents inside a turn: a stop ends the session with the closing
//! message, a request for a person holds it in handoff with a neutral reply,
//! and messages sent while it waits get the holding reply. A skip is the
//! engine's (it moves past the question); the manager counts it. Every such
//! turn commits like any other, fenced on the lease.

use super::safety_turns::{release, SafetyTurn, WrittenReply};
use super::{SessionManager, REPAIR_INTENTS_TOTAL};
use crate::engine::LlmCallRecord;
use crate::error::{DomainError, ErrorKind};
use crate::manager::TurnResult;
use crate::ports::Clock;
use crate::ports_bundle::Ports;
use crate::repair::{
    IntentDetector, IntentReading, RepairIntent, RepairPolicy, ENDED_BY_KEY, ENDED_BY_USER,
};
use crate::safety::{
    detect_locale, AlertKind, Handoff, HandoffReason, RiskLevel, RiskSignal, SafetyAlert,
};
use crate::session::{ExecutionStatus, Session, SessionStatus};
use serde_json::json;
use std::sync::Arc;

/// Target of the repair intents' business events.
pub const REPAIR_EVENT_TARGET: &str = "heartrule::repair";

/// The repair intents a [`SessionManager`] understands.
pub struct RepairProtocol {
    /// The settings, replies included.
    pub policy: RepairPolicy,
    /// Built from `policy.rules`.
    pub detector: IntentDetector,
}

impl RepairProtocol {
    /// The intents of `policy`, its detector built from `policy.rules`.
    #[must_use]
    pub fn new(policy: RepairPolicy) -> Self {
        Self {
            detector: IntentDetector::new(&policy.rules),
            policy,
        }
    }
}

impl<P: Ports> SessionManager<P> {
    /// The repair intents, when configured and on.
    pub(super) fn repair(&self) -> Option<Arc<RepairProtocol>> {
        self.repair
            .as_ref()
            .filter(|r| r.policy.enabled)
            .map(Arc::clone)
    }

    /// Checks a session waiting for a person before its turn: released when
    /// the crisis protocol's handoff cooldown (`safety.handoff_cooldown`)
    /// has passed, else `false` and the turn gets the holding reply.
    pub(super) fn leave_expired_person_handoff(&self, session: &mut Session) -> bool {
        let now = self.adapters.clock.now();
        let free = self
            .safety
            .as_ref()
            .is_some_and(|p| p.cooldown_elapsed(session.state.safety.handoff.as_ref(), now));
        if free {
            release(session);
            tracing::info!(
                target: REPAIR_EVENT_TARGET,
                event = "handoff_released",
                session.id = %session.id,
                released_by = "cooldown",
                "session released from handoff"
            );
        }
        free
    }

    /// A message to a session waiting for a person: the crisis protocol
    /// still reads it first; otherwise it is stored with the holding reply
    /// and the script does not move.
    pub(super) async fn commit_waiting_turn(
        &self,
        protocol: Option<&super::SafetyProtocol>,
        turn: SafetyTurn<'_>,
    ) -> Result<TurnResult, DomainError> {
        let mut signals = Vec::new();
        if let Some(p) = protocol {
            let local = p.detector.detect(&turn.input.content);
            let threshold = p.policy.threshold_for(turn.script.session.safety.as_ref());
            let local = [local];
            if let Some(level) = crate::safety::protocol_level(threshold, &local) {
                return self
                    .commit_protocol_turn(p, turn, &local, level, Vec::new())
                    .await;
            }
            signals.extend(local);
        }
        let locale = detect_locale(&turn.input.content);
        // A session can wait for a person after repair intents were turned off.
        let text = self.repair.as_ref().map_or_else(
            || crate::repair::FALLBACK_HOLDING.to_owned(),
            |r| r.policy.holding_reply(locale),
        );
        let mut state = turn.session.state.clone();
        self.note_signals(
            &mut state,
            &signals,
            turn.lease.turn_id,
            &turn.input.content,
        );
        let reply = WrittenReply {
            text,
            metadata: json!({ "repair": { "holding": true, "locale": locale } }),
            stream_as: "repair",
        };
        let status = turn.session.status;
        self.commit_safety_turn(turn, status, state, reply, Vec::new())
            .await
    }

    /// A stop or a request for a person, instead of the script's turn:
    /// the closing message and a completed session, or the neutral reply
    /// and the session held in handoff. `signals` are crisis signals below
    /// the threshold, recorded as on any turn; `pattern_id` names what read
    /// the intent (safe to log).
    pub(super) async fn commit_repair_turn(
        &self,
        repair: &RepairProtocol,
        turn: SafetyTurn<'_>,
        reading: IntentReading,
        pattern_id: &str,
        signals: &[RiskSignal],
        llm_calls: Vec<LlmCallRecord>,
    ) -> Result<TurnResult, DomainError> {
        let user_id = turn.session.user_id.clone();
        let now = self.adapters.clock.now();
        let locale = detect_locale(&turn.input.content);
        let mut state = turn.session.state.clone();
        self.note_signals(&mut state, signals, turn.lease.turn_id, &turn.input.content);
        let (text, status, metadata) = match reading.intent {
            RepairIntent::Skip => {
                return Err(DomainError::new(ErrorKind::Internal(
                    "a skip is applied by the engine, not instead of it".into(),
                ))
                .with_session(turn.session.id))
            }
            RepairIntent::Stop => {
                state.status = ExecutionStatus::Completed;
                state.pending_action = None;
                state.position.current_round = None;
                state.position.max_rounds = None;
                state
                    .metadata
                    .insert(ENDED_BY_KEY.to_owned(), json!(ENDED_BY_USER));
                (
                    repair.policy.stop_reply(locale),
                    SessionStatus::Completed,
                    json!({ "repair": {
                        "intent": reading.intent,
                        "source": reading.source,
                        "locale": locale,
                        "endedBy": ENDED_BY_USER,
                    } }),
                )
            }
            RepairIntent::Human => {
                state.safety.handoff = Some(Handoff {
                    since: now,
                    level: RiskLevel::None,
                    resume_status: state.status,
                    reason: HandoffReason::UserRequest,
                });
                state.status = ExecutionStatus::Paused;
                (
                    repair.policy.human_reply(locale),
                    SessionStatus::Handoff,
                    json!({ "repair": {
                        "intent": reading.intent,
                        "source": reading.source,
                        "locale": locale,
                        "handoff": true,
                    } }),
                )
            }
        };
        let reply = WrittenReply {
            text,
            metadata,
            stream_as: "repair",
        };
        let result = self
            .commit_safety_turn(turn, status, state, reply, llm_calls)
            .await?;
        announce_intent(&result, reading);
        // Only once committed, and only when asked for: nothing is at risk.
        if reading.intent == RepairIntent::Human && repair.policy.notify_on_human {
            if let Some(protocol) = self.protocol() {
                protocol.notifier.notify(SafetyAlert {
                    kind: AlertKind::HumanRequest,
                    alert_id: result.turn_id,
                    session_id: result.session_id,
                    user_id,
                    script_id: result.script_id,
                    level: RiskLevel::None,
                    sources: vec![reading.source],
                    pattern_ids: vec![pattern_id.to_owned()],
                    handoff: true,
                    occurred_at: self.adapters.clock.now(),
                });
            }
        }
        Ok(result)
    }
}

/// The business event and the metric of an intent acted on, once its turn
/// has committed. Intent and source only: the user's words stay in the store.
pub(super) fn announce_intent(result: &TurnResult, reading: IntentReading) {
    metrics::counter!(
        REPAIR_INTENTS_TOTAL,
        "intent" => reading.intent.as_str(),
        "source" => reading.source.as_str()
    )
    .increment(1);
    tracing::info!(
        target: REPAIR_EVENT_TARGET,
        event = "repair_intent",
        session.id = %result.session_id,
        turn.id = %result.turn_id,
        intent = reading.intent.as_str(),
        source = reading.source.as_str(),
        session_status = result.session_status.as_str(),
        "repair intent followed"
    );
}
