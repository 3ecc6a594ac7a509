//! [`SafetyDeliveryLog`] on PostgreSQL: one row per delivery attempt of a
//! safety alert, deleted with its session.

use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::safety_deliveries;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use heartrule_domain::{
    DeliveryAttempt, DeliveryOutcome, RepositoryError, SafetyDeliveryLog, SessionId, TurnId,
};
use uuid::Uuid;

#[derive(Insertable)]
#[diesel(table_name = safety_deliveries)]
struct NewDeliveryRow<'a> {
    alert_id: Uuid,
    attempt: i64,
    session_id: Uuid,
    outcome: &'static str,
    http_status: Option<i64>,
    error: Option<&'a str>,
    attempted_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = safety_deliveries)]
#[diesel(check_for_backend(diesel::pg::Pg))]
struct DeliveryRow {
    alert_id: Uuid,
    attempt: i64,
    session_id: Uuid,
    outcome: String,
    http_status: Option<i64>,
    error: Option<String>,
    attempted_at: DateTime<Utc>,
}

impl DeliveryRow {
    fn into_domain(self) -> Result<DeliveryAttempt, RepositoryError> {
        let corrupt = |what: String| RepositoryError::Corrupt(what);
        Ok(DeliveryAttempt {
            alert_id: TurnId::from(self.alert_id),
            session_id: SessionId::from(self.session_id),
            attempt: u32::try_from(self.attempt)
                .map_err(|_| corrupt(format!("delivery attempt {} out of range", self.attempt)))?,
            outcome: DeliveryOutcome::parse(&self.outcome)
                .ok_or_else(|| corrupt(format!("unknown delivery outcome `{}`", self.outcome)))?,
            http_status: self
                .http_status
                .map(|s| {
                    u16::try_from(s).map_err(|_| corrupt(format!("HTTP status {s} out of range")))
                })
                .transpose()?,
            error: self.error,
            attempted_at: self.attempted_at,
        })
    }
}

#[async_trait]
impl SafetyDeliveryLog for PgStore {
    async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), RepositoryError> {
        observed!("insert", "safety_deliveries", async {
            let row = NewDeliveryRow {
                alert_id: attempt.alert_id.as_uuid(),
                attempt: i64::from(attempt.attempt),
                session_id: attempt.session_id.as_uuid(),
                outcome: attempt.outcome.as_str(),
                http_status: attempt.http_status.map(i64::from),
                error: attempt.error.as_deref(),
                attempted_at: attempt.attempted_at,
            };
            let mut conn = self.acquire().await?;
            let inserted = diesel::insert_into(safety_deliveries::table)
                .values(&row)
                .execute(&mut *conn)
                .await
                .map_err(map_diesel);
            conn.finish(inserted).await.map(drop)
        })
        .await
    }

    async fn list_deliveries(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<DeliveryAttempt>, RepositoryError> {
        observed!("select", "safety_deliveries", async {
            let mut conn = self.acquire().await?;
            let rows = safety_deliveries::table
                .filter(safety_deliveries::session_id.eq(session_id.as_uuid()))
                .order((
                    safety_deliveries::attempted_at.asc(),
                    safety_deliveries::attempt.asc(),
                ))
                .select(DeliveryRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<DeliveryRow> = conn.finish(rows).await?;
            rows.into_iter().map(DeliveryRow::into_domain).collect()
        })
        .await
    }
}
