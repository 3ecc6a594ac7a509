//! The audit log: every script write and every administrative action as a
//! structured event (who, what, when, on which target, content hashes
//! before and after), stored through the [`AuditLog`] port and written to
//! the logs under the [`AUDIT_LOG_TARGET`] target.

use crate::actor::{Actor, Role};
use crate::ids::AuditEventId;
use crate::ports::RepositoryError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// The `tracing` target of the audit log lines.
pub const AUDIT_LOG_TARGET: &str = "heartrule::audit";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AuditAction {
    /// A script was created (`POST /api/scripts`).
    #[serde(rename = "script.create")]
    ScriptCreate,
    /// An import created a script that did not exist.
    #[serde(rename = "script.import")]
    ScriptImport,
    /// An import replaced an existing script of the same name.
    #[serde(rename = "script.update")]
    ScriptUpdate,
    /// A script was deleted.
    #[serde(rename = "script.delete")]
    ScriptDelete,
    /// All data of one user was exported.
    #[serde(rename = "user.export")]
    UserExport,
    /// All data of one user was erased.
    #[serde(rename = "user.erase")]
    UserErase,
    /// A session's conversation was replayed against a script version (an
    /// editor reading another user's conversation).
    #[serde(rename = "session.replay")]
    SessionReplay,
}

impl AuditAction {
    /// Every action, in declaration order.
    pub const ALL: [AuditAction; 7] = [
        Self::ScriptCreate,
        Self::ScriptImport,
        Self::ScriptUpdate,
        Self::ScriptDelete,
        Self::UserExport,
        Self::UserErase,
        Self::SessionReplay,
    ];

    /// The stored and displayed name (`script.create`, `user.erase`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScriptCreate => "script.create",
            Self::ScriptImport => "script.import",
            Self::ScriptUpdate => "script.update",
            Self::ScriptDelete => "script.delete",
            Self::UserExport => "user.export",
            Self::UserErase => "user.erase",
            Self::SessionReplay => "session.replay",
        }
    }

    /// The kind of target the action works on.
    #[must_use]
    pub fn target_type(self) -> AuditTargetType {
        match self {
            Self::ScriptCreate | Self::ScriptImport | Self::ScriptUpdate | Self::ScriptDelete => {
                AuditTargetType::Script
            }
            Self::UserExport | Self::UserErase => AuditTargetType::User,
            Self::SessionReplay => AuditTargetType::Session,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`AuditAction::ALL`] or [`AuditTargetType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit {kind} `{value}`")]
pub struct UnknownAuditName {
    /// `action` or `target type`.
    pub kind: &'static str,
    /// The name given.
    pub value: String,
}

impl FromStr for AuditAction {
    type Err = UnknownAuditName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAuditName {
                kind: "action",
                value: s.to_owned(),
            })
    }
}

/// What kind of thing an event's target id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditTargetType {
    /// A script id.
    Script,
    /// A user id.
    User,
    /// A session id.
    Session,
}

impl AuditTargetType {
    /// The stored and displayed name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Script => "script",
            Self::User => "user",
            Self::Session => "session",
        }
    }
}

impl fmt::Display for AuditTargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditTargetType {
    type Err = UnknownAuditName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "script" => Ok(Self::Script),
            "user" => Ok(Self::User),
            "session" => Ok(Self::Session),
            other => Err(UnknownAuditName {
                kind: "target type",
                value: other.to_owned(),
            }),
        }
    }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// The event's own id.
    pub id: AuditEventId,
    /// When the action took effect.
    pub occurred_at: DateTime<Utc>,
    /// Who did it: the actor's subject.
    pub actor_subject: String,
    /// The actor's roles at the time.
    pub actor_roles: Vec<Role>,
    /// What was done.
    pub action: AuditAction,
    /// What kind of thing `target_id` names.
    pub target_type: AuditTargetType,
    /// The script, user or session id acted on.
    pub target_id: String,
    /// Content hash of the target before the action (a replaced script's
    /// source), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_hash: Option<String>,
    /// Content hash of the target after the action, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hash: Option<String>,
    /// Action-specific facts (a script's name, the counts an erasure
    /// removed); never conversation text or variable values.
    #[serde(default)]
    pub details: Value,
}

impl AuditEvent {
    /// An event of `actor` doing `action` on `target_id` at `occurred_at`,
    /// without hashes or details.
    #[must_use]
    pub fn new(
        id: AuditEventId,
        occurred_at: DateTime<Utc>,
        actor: &Actor,
        action: AuditAction,
        target_id: impl Into<String>,
    ) -> Self {
        Self {
            id,
            occurred_at,
            actor_subject: actor.subject().to_owned(),
            actor_roles: actor.roles().to_vec(),
            action,
            target_type: action.target_type(),
            target_id: target_id.into(),
            before_hash: None,
            after_hash: None,
            details: Value::Object(serde_json::Map::new()),
        }
    }

    /// With the content hashes before and after.
    #[must_use]
    pub fn with_hashes(mut self, before: Option<String>, after: Option<String>) -> Self {
        self.before_hash = before;
        self.after_hash = after;
        self
    }

    /// With action-specific details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Writes the event as one structured log line (target
    /// [`AUDIT_LOG_TARGET`]).
    pub fn log(&self) {
        let roles: Vec<&str> = self.actor_roles.iter().map(|r| r.as_str()).collect();
        tracing::info!(
            target: AUDIT_LOG_TARGET,
            event = "audit",
            audit = true,
            audit.id = %self.id,
            audit.action = self.action.as_str(),
            audit.actor = %self.actor_subject,
            audit.actor_roles = %roles.join(","),
            audit.target_type = self.target_type.as_str(),
            audit.target_id = %self.target_id,
            audit.before_hash = self.before_hash.as_deref(),
            audit.after_hash = self.after_hash.as_deref(),
            audit.details = %self.details,
            "{} {}",
            self.action,
            self.target_id
        );
    }
}

/// Which events to list: every given criterion must match; newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only events of this actor subject.
    pub actor_subject: Option<String>,
    /// Only targets of this type.
    pub target_type: Option<AuditTargetType>,
    /// Only this target id.
    pub target_id: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many events.
    pub limit: usize,
    /// Skips this many matching events first.
    pub offset: usize,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self {
            action: None,
            actor_subject: None,
            target_type: None,
            target_id: None,
            since: None,
            until: None,
            limit: 100,
            offset: 0,
        }
    }
}

impl AuditFilter {
    /// Whether `event` meets every criterion (paging aside).
    #[must_use]
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.action.is_none_or(|a| a == event.action)
            && self
                .actor_subject
                .as_deref()
                .is_none_or(|s| s == event.actor_subject)
            && self.target_type.is_none_or(|t| t == event.target_type)
            && self
                .target_id
                .as_deref()
                .is_none_or(|t| t == event.target_id)
            && self.since.is_none_or(|since| event.occurred_at >= since)
            && self.until.is_none_or(|until| event.occurred_at < until)
    }
}

/// Where audit events are kept. Events are only ever added; nothing in the
/// application updates or deletes them (a user's erasure keeps its own
/// record and every earlier one).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Stores `event`; a taken id is a [`RepositoryError::Conflict`].
    async fn record(&self, event: &AuditEvent) -> Result<(), RepositoryError>;
    /// The events matching `filter`, newest first (by time, then id).
    async fn list_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn actions_round_trip_through_their_names() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                json!(action.as_str())
            );
        }
        assert!("script.rename".parse::<AuditAction>().is_err());
        assert_eq!("user".parse(), Ok(AuditTargetType::User));
        assert_eq!("session".parse(), Ok(AuditTargetType::Session));
        assert!("message".parse::<AuditTargetType>().is_err());
    }

    #[test]
    fn events_take_the_actor_and_the_actions_target_type() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap();
        let event = AuditEvent::new(
            AuditEventId::new_random(),
            at,
            &Actor::admin("root"),
            AuditAction::UserErase,
            "alice",
        )
        .with_hashes(None, Some("h".into()))
        .with_details(json!({"sessions": 2}));
        assert_eq!(event.actor_subject, "root");
        assert_eq!(event.actor_roles, vec![Role::Admin]);
        assert_eq!(event.target_type, AuditTargetType::User);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["action"], "user.erase");
        assert_eq!(json["targetType"], "user");
        assert_eq!(json["afterHash"], "h");
        assert!(json.get("beforeHash").is_none());
    }

    #[test]
    fn filters_match_every_given_criterion() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap();
        let event = AuditEvent::new(
            AuditEventId::new_random(),
            at,
            &Actor::editor("ed"),
            AuditAction::ScriptCreate,
            "s1",
        );
        assert!(AuditFilter::default().matches(&event));
        let only = |f: AuditFilter| f.matches(&event);
        assert!(only(AuditFilter {
            action: Some(AuditAction::ScriptCreate),
            actor_subject: Some("ed".into()),
            target_type: Some(AuditTargetType::Script),
            target_id: Some("s1".into()),
            since: Some(at),
            until: Some(at + chrono::Duration::seconds(1)),
            ..AuditFilter::default()
        }));
        assert!(!only(AuditFilter {
            until: Some(at),
            ..AuditFilter::default()
        }));
        assert!(!only(AuditFilter {
            actor_subject: Some("other".into()),
            ..AuditFilter::default()
        }));
        assert!(!only(AuditFilter {
            action: Some(AuditAction::ScriptUpdate),
            ..AuditFilter::default()
        }));
    }
}
