//! [`ScriptRepository`] on PostgreSQL: the scripts (projects) with their
//! current version's content in the row, the immutable `script_versions`,
//! and the draft columns.

use super::models::{
    corrupt, from_json, sql_limit, to_json, version_from_db, version_to_db, ScriptMetadataWrite,
    ScriptRow, ScriptWrite,
};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::{script_versions, scripts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use heartrule_domain::{
    RepositoryError, Script, ScriptFilter, ScriptId, ScriptRepository, ScriptVersion, WorkingDraft,
};
use serde_json::Value;
use uuid::Uuid;

#[async_trait]
impl ScriptRepository for PgStore {
    async fn insert_with_version(
        &self,
        script: &Script,
        version: &ScriptVersion,
    ) -> Result<(), RepositoryError> {
        observed!("insert", "scripts", async {
            let row = ScriptWrite::new(script)?;
            let version_row = VersionWrite::new(version)?;
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let inserted = async {
                // The version first: the row's trigger then finds it and
                // records nothing of its own.
                diesel::insert_into(script_versions::table)
                    .values(&version_row)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                diesel::insert_into(scripts::table)
                    .values(&row)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)
            }
            .await;
            conn.finish(inserted).await?;
            Ok(())
        })
        .await
    }

    async fn update(&self, script: &Script) -> Result<(), RepositoryError> {
        observed!("update", "scripts", async {
            let row = ScriptMetadataWrite::new(script)?;
            let current = version_to_db(script.current_version)?;
            let mut conn = self.acquire().await?;
            let updated = async {
                let updated = diesel::update(
                    scripts::table
                        .find(script.id.as_uuid())
                        .filter(scripts::content_hash.eq(&script.content_hash))
                        .filter(scripts::current_version.eq(current)),
                )
                .set(&row)
                .execute(&mut *conn)
                .await
                .map_err(map_diesel)?;
                if updated > 0 {
                    return Ok(());
                }
                let exists = scripts::table
                    .find(script.id.as_uuid())
                    .select(scripts::id)
                    .first::<Uuid>(&mut *conn)
                    .await
                    .optional()
                    .map_err(map_diesel)?;
                Err(match exists {
                    Some(_) => RepositoryError::Conflict(format!(
                        "script {} has other content than the update names: publish a version to change it",
                        script.id
                    )),
                    None => RepositoryError::NotFound(format!("script {}", script.id)),
                })
            }
            .await;
            conn.finish(updated).await
        })
        .await
    }

    async fn publish(
        &self,
        script: &Script,
        version: &ScriptVersion,
    ) -> Result<(), RepositoryError> {
        observed!("insert", "script_versions", async {
            let row = ScriptWrite::new(script)?;
            let version_row = VersionWrite::new(version)?;
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let published = async {
                diesel::insert_into(script_versions::table)
                    .values(&version_row)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                let updated = diesel::update(scripts::table.find(script.id.as_uuid()))
                    .set(&row)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                if updated == 0 {
                    return Err(RepositoryError::NotFound(format!("script {}", script.id)));
                }
                Ok(())
            }
            .await;
            conn.finish(published).await
        })
        .await
    }

    async fn set_current_version(
        &self,
        id: ScriptId,
        number: u32,
        updated_at: DateTime<Utc>,
    ) -> Result<Script, RepositoryError> {
        observed!("update", "scripts", async {
            let db_number = version_to_db(number)?;
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let moved = async {
                let version = script_versions::table
                    .find((id.as_uuid(), db_number))
                    .select(VersionRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(map_diesel)?
                    .ok_or_else(|| {
                        RepositoryError::NotFound(format!("version {number} of script {id}"))
                    })?
                    .into_domain()?;
                let mut script = scripts::table
                    .find(id.as_uuid())
                    .select(ScriptRow::as_select())
                    .for_update()
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(map_diesel)?
                    .ok_or_else(|| RepositoryError::NotFound(format!("script {id}")))?
                    .into_domain()?;
                script.script_type = version.document.script_type();
                script.content = version.content;
                script.content_hash = version.content_hash;
                script.document = version.document;
                script.current_version = number;
                script.updated_at = updated_at;
                diesel::update(scripts::table.find(id.as_uuid()))
                    .set(&ScriptWrite::new(&script)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                Ok(script)
            }
            .await;
            conn.finish(moved).await
        })
        .await
    }

    async fn get_version(
        &self,
        id: ScriptId,
        number: u32,
    ) -> Result<Option<ScriptVersion>, RepositoryError> {
        let Ok(number) = version_to_db(number) else {
            return Ok(None);
        };
        self.versions_where(
            script_versions::table
                .filter(script_versions::script_id.eq(id.as_uuid()))
                .filter(script_versions::number.eq(number))
                .into_boxed(),
            Some(1),
        )
        .await
        .map(|mut found| found.pop())
    }

    async fn find_version_by_hash(
        &self,
        id: ScriptId,
        content_hash: &str,
    ) -> Result<Option<ScriptVersion>, RepositoryError> {
        self.versions_where(
            script_versions::table
                .filter(script_versions::script_id.eq(id.as_uuid()))
                .filter(script_versions::content_hash.eq(content_hash.to_owned()))
                .into_boxed(),
            Some(1),
        )
        .await
        .map(|mut found| found.pop())
    }

    async fn latest_version_number(&self, id: ScriptId) -> Result<Option<u32>, RepositoryError> {
        observed!("select", "script_versions", async {
            let mut conn = self.acquire().await?;
            let latest = script_versions::table
                .filter(script_versions::script_id.eq(id.as_uuid()))
                .select(diesel::dsl::max(script_versions::number))
                .first::<Option<i32>>(&mut *conn)
                .await
                .map_err(map_diesel);
            conn.finish(latest)
                .await?
                .map(|n| version_from_db(Some(n), "script_versions", "number"))
                .transpose()
        })
        .await
    }

    async fn list_versions(&self, id: ScriptId) -> Result<Vec<ScriptVersion>, RepositoryError> {
        self.versions_where(
            script_versions::table
                .filter(script_versions::script_id.eq(id.as_uuid()))
                .into_boxed(),
            None,
        )
        .await
    }

    async fn get_draft(&self, id: ScriptId) -> Result<Option<WorkingDraft>, RepositoryError> {
        observed!("select", "scripts", async {
            let mut conn = self.acquire().await?;
            let row = scripts::table
                .find(id.as_uuid())
                .select(DraftRow::as_select())
                .first(&mut *conn)
                .await
                .optional()
                .map_err(map_diesel);
            conn.finish(row)
                .await?
                .map(DraftRow::into_domain)
                .transpose()
        })
        .await
    }

    async fn save_draft(
        &self,
        id: ScriptId,
        content: &str,
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError> {
        observed!("update", "scripts", async {
            let expected = expected_revision
                .map(|r| {
                    i64::try_from(r).map_err(|_| {
                        RepositoryError::Conflict(format!("the draft is not at revision {r}"))
                    })
                })
                .transpose()?;
            let mut conn = self.acquire().await?;
            let saved = async {
                let changes = (
                    scripts::draft_content.eq(Some(content)),
                    scripts::draft_revision.eq(scripts::draft_revision + 1),
                    scripts::draft_updated_at.eq(Some(updated_at)),
                    scripts::draft_updated_by.eq(Some(updated_by)),
                );
                // One statement: the revision check and the bump cannot be
                // split by another save (a concurrent one waits for the row
                // and then finds the revision moved on).
                let row = match expected {
                    Some(expected) => {
                        diesel::update(
                            scripts::table
                                .find(id.as_uuid())
                                .filter(scripts::draft_revision.eq(expected)),
                        )
                        .set(changes)
                        .returning(DraftRow::as_returning())
                        .get_result(&mut *conn)
                        .await
                    }
                    None => {
                        diesel::update(scripts::table.find(id.as_uuid()))
                            .set(changes)
                            .returning(DraftRow::as_returning())
                            .get_result(&mut *conn)
                            .await
                    }
                }
                .optional()
                .map_err(map_diesel)?;
                if let Some(row) = row {
                    return row.into_domain();
                }
                let revision = scripts::table
                    .find(id.as_uuid())
                    .select(scripts::draft_revision)
                    .first::<i64>(&mut *conn)
                    .await
                    .optional()
                    .map_err(map_diesel)?;
                Err(match revision {
                    Some(revision) => RepositoryError::Conflict(format!(
                        "the draft of script {id} is at revision {revision}"
                    )),
                    None => RepositoryError::NotFound(format!("script {id}")),
                })
            }
            .await;
            conn.finish(saved).await
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
    /// The versions `query` selects, newest first, at most `limit`.
    async fn versions_where(
        &self,
        query: script_versions::BoxedQuery<'_, diesel::pg::Pg>,
        limit: Option<i64>,
    ) -> Result<Vec<ScriptVersion>, RepositoryError> {
        observed!("select", "script_versions", async {
            let mut query = query
                .select(VersionRow::as_select())
                .order(script_versions::number.desc());
            if let Some(limit) = limit {
                query = query.limit(limit);
            }
            let mut conn = self.acquire().await?;
            let rows = query.load(&mut *conn).await.map_err(map_diesel);
            let rows: Vec<VersionRow> = conn.finish(rows).await?;
            rows.into_iter().map(VersionRow::into_domain).collect()
        })
        .await
    }

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

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = script_versions, check_for_backend(diesel::pg::Pg))]
struct VersionRow {
    script_id: Uuid,
    number: i32,
    script_content: String,
    content_hash: String,
    parsed_content: Value,
    author: String,
    note: String,
    warnings: Value,
    created_at: DateTime<Utc>,
}

impl VersionRow {
    fn into_domain(self) -> Result<ScriptVersion, RepositoryError> {
        const T: &str = "script_versions";
        Ok(ScriptVersion {
            script_id: self.script_id.into(),
            number: version_from_db(Some(self.number), T, "number")?,
            content: self.script_content,
            content_hash: self.content_hash,
            document: from_json(self.parsed_content, T, "parsed_content")?,
            author: self.author,
            note: self.note,
            warnings: from_json(self.warnings, T, "warnings")?,
            created_at: self.created_at,
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = script_versions)]
struct VersionWrite<'a> {
    script_id: Uuid,
    number: i32,
    script_content: &'a str,
    content_hash: &'a str,
    parsed_content: Value,
    author: &'a str,
    note: &'a str,
    warnings: Value,
    created_at: DateTime<Utc>,
}

impl<'a> VersionWrite<'a> {
    fn new(version: &'a ScriptVersion) -> Result<Self, RepositoryError> {
        Ok(Self {
            script_id: version.script_id.as_uuid(),
            number: version_to_db(version.number)?,
            script_content: &version.content,
            content_hash: &version.content_hash,
            parsed_content: to_json(&version.document, "the version's document")?,
            author: &version.author,
            note: &version.note,
            warnings: to_json(&version.warnings, "the version's warnings")?,
            created_at: version.created_at,
        })
    }
}

/// The draft columns, with the current content standing in for a draft
/// never saved.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = scripts, check_for_backend(diesel::pg::Pg))]
struct DraftRow {
    id: Uuid,
    script_content: String,
    draft_content: Option<String>,
    draft_revision: i64,
    draft_updated_at: Option<DateTime<Utc>>,
    draft_updated_by: Option<String>,
}

impl DraftRow {
    fn into_domain(self) -> Result<WorkingDraft, RepositoryError> {
        Ok(WorkingDraft {
            script_id: self.id.into(),
            content: self.draft_content.unwrap_or(self.script_content),
            revision: u64::try_from(self.draft_revision)
                .map_err(|_| corrupt("scripts", "draft_revision", self.draft_revision))?,
            updated_at: self.draft_updated_at,
            updated_by: self.draft_updated_by,
        })
    }
}
