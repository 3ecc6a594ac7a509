//! The crisis protocol: what the engine does, whatever the script says, when
//! a user's message shows a risk of self-harm.
//!
//! Two independent detectors read every user message: the [`LocalDetector`]
//! (weighted phrases per language, no network) and the LLM's own reading
//! (`metadata.crisis_signal` and `safety_risk` of the replies of actions
//! that ask for it). A signal at or above the threshold makes the turn
//! follow the protocol instead of the script: the crisis reply with the
//! hotlines of the user's locale, the session marked (`risk_level`,
//! `risk_events`) and paused in [`SessionStatus::Handoff`](crate::SessionStatus::Handoff),
//! a business event, a metric and an alert to the on-call
//! [`SafetyNotifier`] once the turn has committed.
//!
//! This is a safety net, not a clinical service.

pub(crate) mod detector;

pub use detector::{
    detect_locale, CrisisPattern, DetectorRules, LocalDetector, PatternKind, ScoreLevels,
};

use crate::ids::{ScriptId, SessionId, TurnId};
use crate::ports::RepositoryError;
use crate::session::ExecutionStatus;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// How much risk a signal shows, ordered.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    #[default]
    None,
    Low,
    Medium,
    High,
    Imminent,
}

impl RiskLevel {
    /// The lowercase name (also the metric label).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Imminent => "imminent",
        }
    }

    /// The level named `text`, if any.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Self::None),
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            "imminent" => Some(Self::Imminent),
            _ => None,
        }
    }
}

/// Which detector produced a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalSource {
    /// The local pattern detector.
    Local,
    /// The LLM's `crisis_signal` / `safety_risk`.
    Llm,
}

impl SignalSource {
    /// The lowercase name (also the metric label).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Llm => "llm",
        }
    }
}

/// What one detector found in one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskSignal {
    pub source: SignalSource,
    pub level: RiskLevel,
    /// The local detector's score (0 for the LLM).
    pub score: u32,
    /// Ids of the patterns or LLM fields that fired; safe to log.
    pub pattern_ids: Vec<String>,
}

impl RiskSignal {
    /// A signal that found nothing.
    #[must_use]
    pub fn none(source: SignalSource) -> Self {
        Self {
            source,
            level: RiskLevel::None,
            score: 0,
            pattern_ids: Vec::new(),
        }
    }
}

/// `safety_risk.risk_type` values that report a crisis of the user.
pub const CRISIS_RISK_TYPES: &[&str] = &[
    "crisis",
    "self_harm",
    "self-harm",
    "suicide",
    "suicidal",
    "harm_to_others",
];

/// The LLM's reading of the turn, from the engine's safety readings (see
/// [`crate::TurnOutcome::safety_readings`]): `crisis_signal: true` is
/// `high`; `safety_risk.detected: true` with a crisis `risk_type` (see
/// [`CRISIS_RISK_TYPES`]) is `high`, `medium` or `low` by its `confidence`.
#[must_use]
pub fn llm_signal(readings: &[Value]) -> RiskSignal {
    let mut signal = RiskSignal::none(SignalSource::Llm);
    let mut raise = |level: RiskLevel, id: &str| {
        signal.level = signal.level.max(level);
        if !signal.pattern_ids.iter().any(|p| p == id) {
            signal.pattern_ids.push(id.to_owned());
        }
    };
    for reading in readings {
        if reading.get("crisis_signal").and_then(Value::as_bool) == Some(true) {
            raise(RiskLevel::High, "llm.crisis_signal");
        }
        if let Some(risk) = reading.get("safety_risk") {
            // Other risk types (diagnosis, prescription, guarantee, advice)
            // are about the AI's own reply: the output guard's, not a crisis.
            let crisis_type = risk
                .get("risk_type")
                .and_then(Value::as_str)
                .is_some_and(|t| CRISIS_RISK_TYPES.contains(&t.to_lowercase().as_str()));
            if crisis_type && risk.get("detected").and_then(Value::as_bool) == Some(true) {
                let level = match risk.get("confidence").and_then(Value::as_str) {
                    Some("high") => RiskLevel::High,
                    Some("medium") => RiskLevel::Medium,
                    _ => RiskLevel::Low,
                };
                raise(level, "llm.safety_risk");
            }
        }
    }
    signal
}

/// The safety reading of an action's result metadata, when the LLM gave
/// one: `crisis_signal` (from its `metadata`) and `safety_risk`.
#[must_use]
pub fn safety_reading(metadata: &serde_json::Map<String, Value>) -> Option<Value> {
    let mut reading = serde_json::Map::new();
    if let Some(crisis) = metadata
        .get("llm_metadata")
        .and_then(|m| m.get("crisis_signal"))
    {
        reading.insert("crisis_signal".to_owned(), crisis.clone());
    }
    if let Some(risk) = metadata.get("safety_risk") {
        reading.insert("safety_risk".to_owned(), risk.clone());
    }
    (!reading.is_empty()).then_some(Value::Object(reading))
}

/// One detection recorded on the session, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskEvent {
    pub turn_id: TurnId,
    pub at: DateTime<Utc>,
    pub source: SignalSource,
    pub level: RiskLevel,
    pub pattern_ids: Vec<String>,
    /// The user's message that was read (kept in the store, never logged).
    pub evidence: String,
    /// Whether the turn followed the protocol.
    pub protocol: bool,
}

/// Why a session waits in handoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffReason {
    /// The crisis protocol holds it.
    #[default]
    Crisis,
    /// The user asked to speak to a person (a repair intent, see
    /// [`crate::repair`]): no risk is recorded.
    UserRequest,
}

impl HandoffReason {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crisis => "crisis",
            Self::UserRequest => "user_request",
        }
    }
}

/// A session paused by the protocol, or at the user's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    pub since: DateTime<Utc>,
    pub level: RiskLevel,
    /// The execution status to return to when released.
    pub resume_status: ExecutionStatus,
    /// Absent in records written before repair intents: a crisis.
    #[serde(default)]
    pub reason: HandoffReason,
}

/// The safety side of a session, kept in its engine state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetyState {
    /// The highest level detected so far.
    #[serde(default)]
    pub risk_level: RiskLevel,
    /// Every detection, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_events: Vec<RiskEvent>,
    /// Set while the session waits for a person (or the cooldown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
}

impl SafetyState {
    /// Nothing was ever detected.
    #[must_use]
    pub fn is_clear(&self) -> bool {
        self.risk_level == RiskLevel::None && self.risk_events.is_empty() && self.handoff.is_none()
    }
}

/// A hotline shown in the crisis reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hotline {
    pub name: String,
    pub number: String,
}

/// What users of one locale are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocaleResponse {
    /// The crisis reply; `{hotlines}` is replaced by the hotline list.
    pub response: String,
    /// The reply to messages sent while the session waits in handoff.
    pub holding_response: String,
    pub hotlines: Vec<Hotline>,
}

/// The protocol's settings (configuration `safety:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyPolicy {
    pub enabled: bool,
    /// Signals at or above this level start the protocol.
    pub threshold: RiskLevel,
    /// Used when the message's locale has no entry in `locales`.
    pub default_locale: String,
    pub locales: BTreeMap<String, LocaleResponse>,
    /// A session in handoff is released by the next message after this
    /// long; `None`: only an editor or admin releases it.
    pub handoff_cooldown: Option<Duration>,
    pub rules: DetectorRules,
}

/// A script's own `safety:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptSafety {
    /// Replaces the configured crisis reply (`{hotlines}` is filled in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Replaces the configured threshold for this script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<RiskLevel>,
    /// When true the session is not held in handoff: the crisis reply is
    /// sent (and everything recorded and notified) and the user's next
    /// message, their acknowledgement, continues the script.
    #[serde(default)]
    pub continue_after_acknowledgement: bool,
}

impl SafetyPolicy {
    /// The threshold for a script.
    #[must_use]
    pub fn threshold_for(&self, script: Option<&ScriptSafety>) -> RiskLevel {
        script.and_then(|s| s.threshold).unwrap_or(self.threshold)
    }

    /// The settings of `locale`, else of the default locale.
    #[must_use]
    pub fn locale(&self, locale: &str) -> Option<&LocaleResponse> {
        self.locales
            .get(locale)
            .or_else(|| self.locales.get(&self.default_locale))
    }

    /// The crisis reply for a message in `locale`: the script's response
    /// when it has one, else the locale's, hotlines filled in.
    #[must_use]
    pub fn crisis_reply(&self, locale: &str, script: Option<&ScriptSafety>) -> String {
        let settings = self.locale(locale);
        let template = script
            .and_then(|s| s.response.as_deref())
            .or(settings.map(|s| s.response.as_str()))
            .unwrap_or(FALLBACK_RESPONSE);
        fill_hotlines(template, settings)
    }

    /// The reply to a message sent while the session waits in handoff.
    #[must_use]
    pub fn holding_reply(&self, locale: &str) -> String {
        let settings = self.locale(locale);
        let template = settings
            .map(|s| s.holding_response.as_str())
            .unwrap_or(FALLBACK_RESPONSE);
        fill_hotlines(template, settings)
    }
}

/// Used only when no locale is configured at all (configuration refuses
/// that when the protocol is on).
const FALLBACK_RESPONSE: &str =
    "Your safety matters. Please contact local emergency services now.\n{hotlines}";

fn fill_hotlines(template: &str, settings: Option<&LocaleResponse>) -> String {
    let list = settings
        .map(|s| {
            s.hotlines
                .iter()
                .map(|h| format!("- {}: {}", h.name, h.number))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    template.replace("{hotlines}", &list).trim().to_owned()
}

/// The strongest signal at or above `threshold`, if any.
#[must_use]
pub fn protocol_level(threshold: RiskLevel, signals: &[RiskSignal]) -> Option<RiskLevel> {
    signals
        .iter()
        .map(|s| s.level)
        .max()
        .filter(|level| *level > RiskLevel::None && *level >= threshold)
}

/// What an alert to the on-call endpoint is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The crisis protocol ran.
    #[default]
    Crisis,
    /// The user asked to speak to a person (a repair intent; sent only when
    /// `repair_intents.notify_on_human` is on). Its level is `none`.
    HumanRequest,
}

impl AlertKind {
    /// The alert body's `type`.
    #[must_use]
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Crisis => "safety.crisis",
            Self::HumanRequest => "repair.human_request",
        }
    }
}

/// What the on-call endpoint is told. It carries no conversation text:
/// the evidence stays in the store, reachable through the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetyAlert {
    /// Sent as the body's `type`, not as a field of its own.
    #[serde(skip)]
    pub kind: AlertKind,
    /// The turn that followed the protocol (one alert per such turn).
    pub alert_id: TurnId,
    pub session_id: SessionId,
    pub user_id: String,
    pub script_id: ScriptId,
    pub level: RiskLevel,
    pub sources: Vec<SignalSource>,
    pub pattern_ids: Vec<String>,
    /// Whether the session now waits in handoff.
    pub handoff: bool,
    pub occurred_at: DateTime<Utc>,
}

/// Sends alerts to the on-call endpoint. `notify` returns at once: the
/// adapter delivers in the background (retrying, recording each attempt),
/// after the turn has committed and released its lease.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SafetyNotifier: Send + Sync {
    fn notify(&self, alert: SafetyAlert);
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// Any other status, a timeout or a connection error.
    Failed,
}

impl DeliveryOutcome {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The outcome stored as `text`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One attempt to deliver an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    pub alert_id: TurnId,
    pub session_id: SessionId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub outcome: DeliveryOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempted_at: DateTime<Utc>,
}

/// Where delivery attempts are recorded.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SafetyDeliveryLog: Send + Sync {
    /// Records one attempt. [`RepositoryError::NotFound`] when the session
    /// does not exist; [`RepositoryError::Conflict`] when this alert's
    /// attempt number is already recorded.
    async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), RepositoryError>;
    /// The attempts of a session's alerts, by time then attempt number.
    async fn list_deliveries(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<DeliveryAttempt>, RepositoryError>;
}

/// A notifier for deployments without an on-call endpoint: the business
/// event and the metric remain, nothing is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

impl SafetyNotifier for NoNotifier {
    fn notify(&self, _alert: SafetyAlert) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> SafetyPolicy {
        let mut locales = BTreeMap::new();
        locales.insert(
            "zh".to_owned(),
            LocaleResponse {
                response: "请立即求助：\n{hotlines}".into(),
                holding_response: "我们的工作人员会联系你。\n{hotlines}".into(),
                hotlines: vec![Hotline {
                    name: "心理援助热线".into(),
                    number: "400-161-9995".into(),
                }],
            },
        );
        locales.insert(
            "en".to_owned(),
            LocaleResponse {
                response: "Please reach out now:\n{hotlines}".into(),
                holding_response: "A person will contact you.\n{hotlines}".into(),
                hotlines: vec![Hotline {
                    name: "988 Lifeline".into(),
                    number: "988".into(),
                }],
            },
        );
        SafetyPolicy {
            enabled: true,
            threshold: RiskLevel::High,
            default_locale: "en".into(),
            locales,
            handoff_cooldown: None,
            rules: DetectorRules::default(),
        }
    }

    #[test]
    fn levels_order_and_round_trip() {
        assert!(RiskLevel::Imminent > RiskLevel::High);
        assert!(RiskLevel::Low > RiskLevel::None);
        for level in [
            RiskLevel::None,
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
            RiskLevel::Imminent,
        ] {
            assert_eq!(RiskLevel::parse(level.as_str()), Some(level));
            assert_eq!(serde_json::to_value(level).unwrap(), level.as_str());
        }
        assert_eq!(RiskLevel::parse("severe"), None);
    }

    #[test]
    fn the_llm_signal_reads_crisis_signal_and_safety_risk() {
        let reading =
            |metadata: Value| safety_reading(metadata.as_object().unwrap()).unwrap_or(Value::Null);
        let none = llm_signal(&[reading(json!({"llm_metadata": {"crisis_signal": false}}))]);
        assert_eq!(none.level, RiskLevel::None);
        let crisis = llm_signal(&[reading(json!({"llm_metadata": {"crisis_signal": true}}))]);
        assert_eq!(crisis.level, RiskLevel::High);
        assert_eq!(crisis.pattern_ids, ["llm.crisis_signal"]);
        let risk = llm_signal(&[reading(
            json!({"safety_risk": {"detected": true, "risk_type": "self_harm", "confidence": "medium"}}),
        )]);
        assert_eq!(risk.level, RiskLevel::Medium);
        assert_eq!(risk.pattern_ids, ["llm.safety_risk"]);
        // A diagnosis in the AI's own reply is the output guard's business.
        let diagnosis = llm_signal(&[reading(
            json!({"safety_risk": {"detected": true, "risk_type": "diagnosis", "confidence": "high"}}),
        )]);
        assert_eq!(diagnosis.level, RiskLevel::None);
        let undetected = llm_signal(&[reading(
            json!({"safety_risk": {"detected": false, "confidence": "high"}}),
        )]);
        assert_eq!(undetected.level, RiskLevel::None);
        assert_eq!(
            safety_reading(json!({"brief": "x"}).as_object().unwrap()),
            None
        );
    }

    #[test]
    fn the_protocol_starts_at_the_threshold() {
        let local = |level| RiskSignal {
            level,
            ..RiskSignal::none(SignalSource::Local)
        };
        let llm = RiskSignal::none(SignalSource::Llm);
        assert_eq!(
            protocol_level(RiskLevel::High, &[local(RiskLevel::Medium), llm.clone()]),
            None
        );
        assert_eq!(
            protocol_level(RiskLevel::High, &[local(RiskLevel::Imminent), llm.clone()]),
            Some(RiskLevel::Imminent)
        );
        assert_eq!(
            protocol_level(RiskLevel::Medium, &[local(RiskLevel::Medium)]),
            Some(RiskLevel::Medium)
        );
        // A threshold of `none` still needs something detected.
        assert_eq!(protocol_level(RiskLevel::None, &[llm]), None);
    }

    #[test]
    fn replies_fill_in_the_locale_hotlines_and_prefer_the_script() {
        let policy = policy();
        assert_eq!(
            policy.crisis_reply("zh", None),
            "请立即求助：\n- 心理援助热线: 400-161-9995"
        );
        assert_eq!(
            policy.crisis_reply("fr", None),
            "Please reach out now:\n- 988 Lifeline: 988"
        );
        let script = ScriptSafety {
            response: Some("Call {hotlines} now".into()),
            threshold: Some(RiskLevel::Medium),
            continue_after_acknowledgement: false,
        };
        assert_eq!(
            policy.crisis_reply("en", Some(&script)),
            "Call - 988 Lifeline: 988 now"
        );
        assert_eq!(policy.threshold_for(Some(&script)), RiskLevel::Medium);
        assert_eq!(policy.threshold_for(None), RiskLevel::High);
        assert!(policy.holding_reply("zh").starts_with("我们的工作人员"));
    }
}
