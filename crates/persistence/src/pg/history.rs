//! [`MessageHistory`] on PostgreSQL.

use super::exchanges::ExchangeRow;
use super::models::{sql_limit, MessageRow, VariableRow};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::{llm_exchanges, messages, variables};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use heartrule_domain::{
    LlmExchange, Message, MessageHistory, RepositoryError, SessionId, VariableSnapshot,
};

#[async_trait]
impl MessageHistory for PgStore {
    async fn list_messages(
        &self,
        session_id: SessionId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Message>, RepositoryError> {
        observed!("select", "messages", async {
            let mut conn = self.acquire().await?;
            let rows = messages::table
                .filter(messages::session_id.eq(session_id.as_uuid()))
                .filter(messages::seq.gt(after_seq))
                .order(messages::seq.asc())
                .limit(sql_limit(limit))
                .select(MessageRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<MessageRow> = conn.finish(rows).await?;
            rows.into_iter().map(MessageRow::into_domain).collect()
        })
        .await
    }

    async fn list_variable_snapshots(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<VariableSnapshot>, RepositoryError> {
        observed!("select", "variables", async {
            let mut conn = self.acquire().await?;
            let rows = variables::table
                .filter(variables::session_id.eq(session_id.as_uuid()))
                .order(variables::id.asc())
                .select(VariableRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<VariableRow> = conn.finish(rows).await?;
            rows.into_iter().map(VariableRow::into_domain).collect()
        })
        .await
    }

    async fn list_llm_exchanges(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<LlmExchange>, RepositoryError> {
        observed!("select", "llm_exchanges", async {
            let mut conn = self.acquire().await?;
            let rows = llm_exchanges::table
                .filter(llm_exchanges::session_id.eq(session_id.as_uuid()))
                .order((
                    llm_exchanges::turn_number.asc(),
                    llm_exchanges::call_index.asc(),
                ))
                .select(ExchangeRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<ExchangeRow> = conn.finish(rows).await?;
            rows.into_iter().map(ExchangeRow::into_domain).collect()
        })
        .await
    }
}
