//! [`ScriptRepository`] on PostgreSQL.

use super::models::{sql_limit, ScriptRow, ScriptWrite};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::scripts;
use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use heartrule_domain::{RepositoryError, Script, ScriptFilter, ScriptId, ScriptRepository};

#[async_trait]
impl ScriptRepository for PgStore {
    async fn insert(&self, script: &Script) -> Result<(), RepositoryError> {
        observed!("insert", "scripts", async {
            let row = ScriptWrite::new(script)?;
            let mut conn = self.acquire().await?;
            let inserted = diesel::insert_into(scripts::table)
                .values(&row)
                .execute(&mut *conn)
                .await
                .map_err(map_diesel);
            conn.finish(inserted).await?;
            Ok(())
        })
        .await
    }

    async fn update(&self, script: &Script) -> Result<(), RepositoryError> {
        observed!("update", "scripts", async {
            let row = ScriptWrite::new(script)?;
            let mut conn = self.acquire().await?;
            let updated = diesel::update(scripts::table.find(script.id.as_uuid()))
                .set(&row)
                .execute(&mut *conn)
                .await
                .map_err(map_diesel);
            let updated = conn.finish(updated).await?;
            if updated == 0 {
                return Err(RepositoryError::NotFound(format!("script {}", script.id)));
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, id: ScriptId) -> Result<Option<Script>, RepositoryError> {
        self.first_script(scripts::table.find(id.as_uuid()).into_boxed())
            .await
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<Script>, RepositoryError> {
        self.first_script(
            scripts::table
                .filter(scripts::script_name.eq(name))
                .into_boxed(),
        )
        .await
    }

    async fn find_technique(&self, technique_id: &str) -> Result<Option<Script>, RepositoryError> {
        self.first_script(
            scripts::table
                .filter(scripts::technique_id.eq(technique_id))
                .into_boxed(),
        )
        .await
    }

    async fn list(&self, filter: &ScriptFilter) -> Result<Vec<Script>, RepositoryError> {
        observed!("select", "scripts", async {
            let mut query = scripts::table
                .select(ScriptRow::as_select())
                .order((scripts::created_at.desc(), scripts::id.desc()))
                .into_boxed();
            if let Some(script_type) = filter.script_type {
                query = query.filter(scripts::script_type.eq(script_type.as_str()));
            }
            if let Some(status) = filter.status {
                query = query.filter(scripts::status.eq(status.as_str()));
            }
            if let Some(limit) = filter.limit {
                query = query.limit(sql_limit(limit));
            }
            if let Some(offset) = filter.offset {
                query = query.offset(sql_limit(offset));
            }
            let mut conn = self.acquire().await?;
            let rows = query.load(&mut *conn).await.map_err(map_diesel);
            let rows: Vec<ScriptRow> = conn.finish(rows).await?;
            rows.into_iter().map(ScriptRow::into_domain).collect()
        })
        .await
    }
}

impl PgStore {
    /// The first script `query` selects: the lookups by id, name and
    /// technique id differ only in their filter.
    async fn first_script(
        &self,
        query: scripts::BoxedQuery<'_, diesel::pg::Pg>,
    ) -> Result<Option<Script>, RepositoryError> {
        observed!("select", "scripts", async {
            let mut conn = self.acquire().await?;
            let row = query
                .select(ScriptRow::as_select())
                .first(&mut *conn)
                .await
                .optional()
                .map_err(map_diesel);
            conn.finish(row)
                .await?
                .map(ScriptRow::into_domain)
                .transpose()
        })
        .await
    }
}
