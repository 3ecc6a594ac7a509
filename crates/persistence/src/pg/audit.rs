//! [`AuditLog`] on PostgreSQL: the `audit_events` table, insert-only.

use super::models::{sql_limit, to_json};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::audit_events;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use heartrule_domain::{
    AuditAction, AuditEvent, AuditFilter, AuditLog, AuditTargetType, RepositoryError, Role,
};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg))]
struct AuditEventRow {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    actor_subject: String,
    actor_roles: Value,
    action: String,
    target_type: String,
    target_id: String,
    before_hash: Option<String>,
    after_hash: Option<String>,
    details: Value,
}

fn corrupt(column: &str, detail: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Corrupt(format!("audit_events.{column}: {detail}"))
}

impl AuditEventRow {
    fn new(event: &AuditEvent) -> Result<Self, RepositoryError> {
        Ok(Self {
            id: event.id.as_uuid(),
            occurred_at: event.occurred_at,
            actor_subject: event.actor_subject.clone(),
            actor_roles: to_json(&event.actor_roles, "the actor's roles")?,
            action: event.action.as_str().to_owned(),
            target_type: event.target_type.as_str().to_owned(),
            target_id: event.target_id.clone(),
            before_hash: event.before_hash.clone(),
            after_hash: event.after_hash.clone(),
            details: event.details.clone(),
        })
    }

    fn into_domain(self) -> Result<AuditEvent, RepositoryError> {
        let actor_roles: Vec<Role> =
            serde_json::from_value(self.actor_roles).map_err(|e| corrupt("actor_roles", e))?;
        Ok(AuditEvent {
            id: self.id.into(),
            occurred_at: self.occurred_at,
            actor_subject: self.actor_subject,
            actor_roles,
            action: self
                .action
                .parse::<AuditAction>()
                .map_err(|e| corrupt("action", e))?,
            target_type: self
                .target_type
                .parse::<AuditTargetType>()
                .map_err(|e| corrupt("target_type", e))?,
            target_id: self.target_id,
            before_hash: self.before_hash,
            after_hash: self.after_hash,
            details: self.details,
        })
    }
}

#[async_trait]
impl AuditLog for PgStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), RepositoryError> {
        observed!("insert", "audit_events", async {
            let row = AuditEventRow::new(event)?;
            let mut conn = self.acquire().await?;
            let inserted = diesel::insert_into(audit_events::table)
                .values(&row)
                .execute(&mut *conn)
                .await
                .map(drop)
                .map_err(map_diesel);
            conn.finish(inserted).await
        })
        .await
    }

    async fn list_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, RepositoryError> {
        observed!("select", "audit_events", async {
            let mut query = audit_events::table
                .select(AuditEventRow::as_select())
                .into_boxed();
            if let Some(action) = filter.action {
                query = query.filter(audit_events::action.eq(action.as_str()));
            }
            if let Some(actor) = &filter.actor_subject {
                query = query.filter(audit_events::actor_subject.eq(actor.clone()));
            }
            if let Some(target_type) = filter.target_type {
                query = query.filter(audit_events::target_type.eq(target_type.as_str()));
            }
            if let Some(target_id) = &filter.target_id {
                query = query.filter(audit_events::target_id.eq(target_id.clone()));
            }
            if let Some(since) = filter.since {
                query = query.filter(audit_events::occurred_at.ge(since));
            }
            if let Some(until) = filter.until {
                query = query.filter(audit_events::occurred_at.lt(until));
            }
            let query = query
                .order((audit_events::occurred_at.desc(), audit_events::id.desc()))
                .limit(sql_limit(filter.limit))
                .offset(sql_limit(filter.offset));
            let mut conn = self.acquire().await?;
            let rows = query.load(&mut *conn).await.map_err(map_diesel);
            let rows: Vec<AuditEventRow> = conn.finish(rows).await?;
            rows.into_iter().map(AuditEventRow::into_domain).collect()
        })
        .await
    }
}
