//! Administration: reading the audit log and the privacy operations on one
//! user's data (export, erasure). Every operation needs the `admin` role,
//! and export and erasure each leave an audit event.

use crate::actor::Actor;
use crate::audit::{AuditAction, AuditEvent, AuditFilter, AuditLog};
use crate::catalog::content_hash;
use crate::error::{DomainError, ErrorKind};
use crate::ids::ScriptId;
use crate::ports::{Clock, IdGenerator, RepositoryError, ScriptRepository, SessionRepository};
use crate::ports_bundle::{Adapters, Ports};
use crate::privacy::{ErasedCounts, UserDataStore, UserExport};
use crate::quota::{QuotaConfig, QuotaState, UsageWindows, UserUsage};
use crate::retention::CacheJanitor;
use crate::script::{ScriptDocument, TechniqueScript};
use crate::sensitive::sensitive_variable_names;
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserErasure {
    /// Whose data was erased.
    pub user_id: String,
    /// Rows and cache entries removed, by kind.
    pub erased: ErasedCounts,
    /// The audit event recording the erasure (it outlives the data).
    pub audit_event_id: crate::ids::AuditEventId,
}

/// The administration use cases, for an [`Actor`] holding the `admin` role.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Administration: Send + Sync {
    /// The audit events matching `filter`, newest first.
    async fn audit_events(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, DomainError>;
    /// Everything stored about `user_id` (sessions, messages, variables and
    /// their history, failed turns). Sensitive variable values are masked
    /// unless `include_sensitive`. Audited as `user.export`.
    async fn export_user(
        &self,
        actor: &Actor,
        user_id: &str,
        include_sensitive: bool,
    ) -> Result<UserExport, DomainError>;
    /// Deletes everything stored about `user_id`, in the store and in the
    /// cache. Audited as `user.erase` once done; that record stays.
    async fn erase_user(&self, actor: &Actor, user_id: &str) -> Result<UserErasure, DomainError>;
    /// The token usage of `user_id` per UTC day from `from` to `to`
    /// (inclusive) and where the user's quota stands now.
    async fn user_usage(
        &self,
        actor: &Actor,
        user_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<UserUsage, DomainError>;
}

/// [`Administration`] on the domain's ports.
pub struct AdminService<P: Ports> {
    adapters: Adapters<P>,
    quotas: QuotaConfig,
}

impl<P: Ports> Clone for AdminService<P> {
    fn clone(&self) -> Self {
        Self {
            adapters: self.adapters.clone(),
            quotas: self.quotas,
        }
    }
}

impl<P: Ports> AdminService<P> {
    /// The service on `adapters`.
    #[must_use]
    pub fn new(adapters: Adapters<P>) -> Self {
        Self {
            adapters,
            quotas: QuotaConfig::default(),
        }
    }

    /// Reports the quota state against `quotas` (the session manager's).
    #[must_use]
    pub fn with_quotas(mut self, quotas: QuotaConfig) -> Self {
        self.quotas = quotas;
        self
    }

    fn event(&self, actor: &Actor, action: AuditAction, user_id: &str) -> AuditEvent {
        let a = &self.adapters;
        AuditEvent::new(
            a.ids.audit_event_id(),
            a.clock.now(),
            actor,
            action,
            user_id,
        )
    }

    /// Stores and logs `event`; an administrative action is not done until
    /// its record is.
    async fn record(&self, event: &AuditEvent) -> Result<(), DomainError> {
        self.adapters.audit.record(event).await?;
        event.log();
        Ok(())
    }

    /// The sensitive variable names of the script `id` (and of the
    /// techniques it runs), remembered in `known` across sessions.
    async fn sensitive_names(
        &self,
        id: ScriptId,
        known: &mut BTreeMap<ScriptId, BTreeSet<String>>,
    ) -> Result<BTreeSet<String>, DomainError> {
        if let Some(names) = known.get(&id) {
            return Ok(names.clone());
        }
        let scripts = &self.adapters.scripts;
        let names = match scripts.get(id).await?.map(|s| s.document) {
            Some(ScriptDocument::Session(script)) => {
                let mut techniques: Vec<TechniqueScript> = Vec::new();
                for skill in script.referenced_skills() {
                    if let Some(found) = scripts.find_technique(&skill).await? {
                        if let ScriptDocument::Technique(t) = found.document {
                            techniques.push(t);
                        }
                    }
                }
                sensitive_variable_names(&script, &techniques)
            }
            Some(document @ ScriptDocument::Technique(_)) => {
                crate::sensitive::declared_sensitive_names(&document)
            }
            None => BTreeSet::new(),
        };
        known.insert(id, names.clone());
        Ok(names)
    }
}

fn cache_failure(error: &crate::retention::CacheCleanupError) -> DomainError {
    DomainError::new(ErrorKind::Repository(RepositoryError::Unavailable(
        error.to_string(),
    )))
}

#[async_trait]
impl<P: Ports> Administration for AdminService<P> {
    async fn audit_events(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        actor.require_admin()?;
        Ok(self.adapters.audit.list_events(filter).await?)
    }

    async fn export_user(
        &self,
        actor: &Actor,
        user_id: &str,
        include_sensitive: bool,
    ) -> Result<UserExport, DomainError> {
        actor.require_admin()?;
        let a = &self.adapters;
        let data = a.user_data.export_user(user_id).await?;
        let mut sessions = data.sessions;
        if !include_sensitive {
            let mut known = BTreeMap::new();
            for session in &mut sessions {
                let names = self
                    .sensitive_names(session.session.script_id, &mut known)
                    .await?;
                session.mask_sensitive(&names);
            }
        }
        let export = UserExport {
            user_id: user_id.to_owned(),
            exported_at: a.clock.now(),
            sensitive_included: include_sensitive,
            sessions,
        };
        let body = serde_json::to_string(&export).map_err(|e| {
            DomainError::new(ErrorKind::Internal(format!(
                "the export could not be serialized: {e}"
            )))
        })?;
        let event = self
            .event(actor, AuditAction::UserExport, user_id)
            .with_hashes(None, Some(content_hash(&body)))
            .with_details(json!({
                "sessions": export.sessions.len(),
                "includeSensitive": include_sensitive,
            }));
        // Recorded before the data is handed out: no export goes unaudited.
        self.record(&event).await?;
        Ok(export)
    }

    async fn erase_user(&self, actor: &Actor, user_id: &str) -> Result<UserErasure, DomainError> {
        actor.require_admin()?;
        let a = &self.adapters;
        // The cache first: if it cannot be reached, nothing is deleted and the
        // erasure can simply be repeated.
        let known = a.sessions.list_for_user(user_id, usize::MAX).await?;
        let known_ids: Vec<_> = known.iter().map(|s| s.id).collect();
        let mut cache_keys = a
            .cache_janitor
            .evict_session_snapshots(&known_ids)
            .await
            .map_err(|e| cache_failure(&e))?;
        let erased = a.user_data.erase_user(user_id).await?;
        // Again for what the store removed: a read may have cached a snapshot
        // of one of these sessions since the first eviction.
        let second = a
            .cache_janitor
            .evict_session_snapshots(&erased.sessions)
            .await;
        let cache_evicted = second.is_ok();
        if let Ok(removed) = &second {
            cache_keys += removed;
        }
        let counts = ErasedCounts {
            cache_keys,
            ..erased.counts
        };
        let event = self
            .event(actor, AuditAction::UserErase, user_id)
            .with_details(json!({
                "erased": counts,
                "cacheEvicted": cache_evicted,
            }));
        self.record(&event).await?;
        if let Err(error) = second {
            return Err(DomainError::new(ErrorKind::Repository(
                RepositoryError::Unavailable(format!(
                    "the stored data of the user is erased (audit event {}), but their cached \
                     session snapshots could not be removed ({error}); they expire with \
                     redis.session_ttl",
                    event.id
                )),
            )));
        }
        Ok(UserErasure {
            user_id: user_id.to_owned(),
            erased: counts,
            audit_event_id: event.id,
        })
    }

    async fn user_usage(
        &self,
        actor: &Actor,
        user_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<UserUsage, DomainError> {
        actor.require_admin()?;
        let a = &self.adapters;
        let now = a.clock.now();
        let days = a.sessions.user_daily_usage(user_id, from, to).await?;
        let totals = a
            .sessions
            .usage_totals(user_id, &UsageWindows::at(now))
            .await?;
        Ok(UserUsage {
            user_id: user_id.to_owned(),
            from,
            to,
            days,
            quota: QuotaState::new(self.quotas, &totals, now),
        })
    }
}

#[cfg(test)]
mod tests;
