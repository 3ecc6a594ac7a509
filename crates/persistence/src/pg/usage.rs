//! Token usage rows (`token_usage`, one per session and UTC hour): the
//! reads of the quota checks and of the usage report. The writes are part
//! of the turn's commit statement ([`super::turns::CommitTurn`]) and of a
//! session's creation.

use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::token_usage;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use diesel::sql_types::{BigInt, Date, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use heartrule_domain::{
    DailyUsage, RepositoryError, TurnRecord, TurnUsage, UsageTotals, UsageWindows,
};

/// The totals a claim reads: `$1` session, `$2`/`$3` the UTC day, `$4` the
/// UTC hour. The user is the session's, found by the subquery, so a claim
/// without an owner (an administrator's) needs no extra round trip.
pub(crate) const CLAIM_TOTALS_SQL: &str = "SELECT \
     COALESCE((SELECT sum(total_tokens) FROM token_usage WHERE session_id = $1), 0)::int8 \
       AS session_tokens, \
     COALESCE((SELECT sum(total_tokens) FROM token_usage \
       WHERE user_id = (SELECT user_id FROM sessions WHERE id = $1) \
       AND hour >= $2 AND hour < $3), 0)::int8 AS user_day_tokens, \
     COALESCE((SELECT sum(total_tokens) FROM token_usage WHERE hour = $4), 0)::int8 \
       AS global_hour_tokens";

/// The totals before a session exists: `$1` user, `$2`/`$3` the UTC day,
/// `$4` the UTC hour.
const USER_TOTALS_SQL: &str = "SELECT 0::int8 AS session_tokens, \
     COALESCE((SELECT sum(total_tokens) FROM token_usage \
       WHERE user_id = $1 AND hour >= $2 AND hour < $3), 0)::int8 AS user_day_tokens, \
     COALESCE((SELECT sum(total_tokens) FROM token_usage WHERE hour = $4), 0)::int8 \
       AS global_hour_tokens";

/// A user's days: `$1` user, `$2`..`$3` the hours.
const DAILY_SQL: &str = "SELECT (hour AT TIME ZONE 'UTC')::date AS day, \
     sum(prompt_tokens)::int8 AS prompt_tokens, \
     sum(completion_tokens)::int8 AS completion_tokens, \
     sum(total_tokens)::int8 AS total_tokens, \
     sum(llm_calls)::int8 AS llm_calls, \
     count(DISTINCT session_id)::int8 AS sessions \
     FROM token_usage WHERE user_id = $1 AND hour >= $2 AND hour < $3 \
     GROUP BY 1 ORDER BY 1";

#[derive(QueryableByName)]
pub(crate) struct TotalsRow {
    #[diesel(sql_type = BigInt)]
    session_tokens: i64,
    #[diesel(sql_type = BigInt)]
    user_day_tokens: i64,
    #[diesel(sql_type = BigInt)]
    global_hour_tokens: i64,
}

impl TotalsRow {
    pub(crate) fn into_domain(self) -> Result<UsageTotals, RepositoryError> {
        Ok(UsageTotals {
            session_tokens: stored_count(self.session_tokens)?,
            user_day_tokens: stored_count(self.user_day_tokens)?,
            global_hour_tokens: stored_count(self.global_hour_tokens)?,
        })
    }
}

#[derive(QueryableByName)]
struct DailyRow {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    completion_tokens: i64,
    #[diesel(sql_type = BigInt)]
    total_tokens: i64,
    #[diesel(sql_type = BigInt)]
    llm_calls: i64,
    #[diesel(sql_type = BigInt)]
    sessions: i64,
}

impl DailyRow {
    fn into_domain(self) -> Result<DailyUsage, RepositoryError> {
        Ok(DailyUsage {
            day: self.day,
            prompt_tokens: stored_count(self.prompt_tokens)?,
            completion_tokens: stored_count(self.completion_tokens)?,
            total_tokens: stored_count(self.total_tokens)?,
            llm_calls: stored_count(self.llm_calls)?,
            sessions: stored_count(self.sessions)?,
        })
    }
}

/// A stored count (the table's CHECK keeps them non-negative).
fn stored_count(value: i64) -> Result<u64, RepositoryError> {
    u64::try_from(value)
        .map_err(|_| RepositoryError::Corrupt(format!("negative token count {value}")))
}

/// A count to store.
pub(crate) fn bind_count(value: u64) -> Result<i64, RepositoryError> {
    i64::try_from(value)
        .map_err(|_| RepositoryError::Query(format!("token count {value} is out of range")))
}

/// The end (exclusive) of the UTC day starting at `day_start`.
pub(crate) fn day_end(windows: &UsageWindows) -> DateTime<Utc> {
    windows.day_start + TimeDelta::days(1)
}

/// A turn's usage as bind values: `(prompt, completion, total, calls)`.
pub(crate) fn usage_binds(usage: &TurnUsage) -> Result<[i64; 4], RepositoryError> {
    Ok([
        bind_count(usage.prompt_tokens)?,
        bind_count(usage.completion_tokens)?,
        bind_count(usage.total_tokens)?,
        bind_count(usage.llm_calls)?,
    ])
}

/// The first turn's usage row of a new session (inside its transaction).
pub(crate) async fn insert_first_usage(
    conn: &mut AsyncPgConnection,
    record: &TurnRecord,
) -> Result<(), RepositoryError> {
    use diesel::ExpressionMethods;
    if record.usage.is_empty() {
        return Ok(());
    }
    let [prompt, completion, total, calls] = usage_binds(&record.usage)?;
    let session = &record.session;
    diesel::insert_into(token_usage::table)
        .values((
            token_usage::session_id.eq(session.id.as_uuid()),
            token_usage::hour.eq(heartrule_domain::quota::hour_start(session.updated_at)),
            token_usage::user_id.eq(&session.user_id),
            token_usage::prompt_tokens.eq(prompt),
            token_usage::completion_tokens.eq(completion),
            token_usage::total_tokens.eq(total),
            token_usage::llm_calls.eq(calls),
        ))
        .execute(conn)
        .await
        .map_err(map_diesel)?;
    Ok(())
}

impl PgStore {
    pub(crate) async fn read_usage_totals(
        &self,
        user_id: &str,
        windows: &UsageWindows,
    ) -> Result<UsageTotals, RepositoryError> {
        observed!("select", "token_usage", async {
            let mut conn = self.acquire().await?;
            let row = diesel::sql_query(USER_TOTALS_SQL)
                .bind::<Text, _>(user_id)
                .bind::<Timestamptz, _>(windows.day_start)
                .bind::<Timestamptz, _>(day_end(windows))
                .bind::<Timestamptz, _>(windows.hour_start)
                .get_result::<TotalsRow>(&mut *conn)
                .await
                .map_err(map_diesel);
            conn.finish(row).await?.into_domain()
        })
        .await
    }

    pub(crate) async fn read_user_daily_usage(
        &self,
        user_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, RepositoryError> {
        observed!("select", "token_usage", async {
            let start = from.and_time(NaiveTime::MIN).and_utc();
            let end = to.and_time(NaiveTime::MIN).and_utc() + TimeDelta::days(1);
            let mut conn = self.acquire().await?;
            let rows = diesel::sql_query(DAILY_SQL)
                .bind::<Text, _>(user_id)
                .bind::<Timestamptz, _>(start)
                .bind::<Timestamptz, _>(end)
                .load::<DailyRow>(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<DailyRow> = conn.finish(rows).await?;
            rows.into_iter().map(DailyRow::into_domain).collect()
        })
        .await
    }
}
