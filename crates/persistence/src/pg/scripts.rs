//! [`ScriptRepository`] on PostgreSQL: the scripts (projects) with their
//! current version's content in the row, the immutable `script_versions`,
//! and the draft columns.

use super::models::{
    corrupt, from_json, sql_limit, to_json, version_from_db, version_to_db, ScriptMetadataWrite,
    ScriptRow, ScriptWrite,
};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::{script_files, script_versions, scripts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use heartrule_domain::{
    DraftFile, FileType, FileWrite, ProjectFile, ProjectFilter, ProjectPage, ProjectStatus,
    ProjectSummary, RepositoryError, Script, ScriptFilter, ScriptId, ScriptRepository, ScriptType,
    ScriptVersion, WorkingDraft,
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
                    .map_err(map_diesel)?;
                // The first version's files are the draft's.
                let files: Vec<FileRow> = version
                    .files
                    .iter()
                    .map(|f| FileRow::new(script.id, f, &version.author, version.created_at))
                    .collect();
                if !files.is_empty() {
                    diesel::insert_into(script_files::table)
                        .values(&files)
                        .execute(&mut *conn)
                        .await
                        .map_err(map_diesel)?;
                }
                Ok(())
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
            let mut conn = self.acquire().await?;
            let saved = bump_draft(
                &mut conn,
                id,
                Some(content),
                expected_revision,
                updated_by,
                updated_at,
            )
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

    async fn list_files(&self, id: ScriptId) -> Result<Vec<DraftFile>, RepositoryError> {
        observed!("select", "script_files", async {
            let mut conn = self.acquire().await?;
            let rows = script_files::table
                .filter(script_files::script_id.eq(id.as_uuid()))
                .order(script_files::path.asc())
                .select(FileRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<FileRow> = conn.finish(rows).await?;
            rows.into_iter().map(FileRow::into_domain).collect()
        })
        .await
    }

    async fn write_file(
        &self,
        id: ScriptId,
        write: &FileWrite,
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError> {
        observed!("update", "script_files", async {
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let written = async {
                // The revision first: it locks the script row, so file
                // writes of one project are serialised by it.
                let draft = bump_draft(
                    &mut conn,
                    id,
                    None,
                    expected_revision,
                    updated_by,
                    updated_at,
                )
                .await?;
                let key = (id.as_uuid(), write.path().to_owned());
                let touched = match write {
                    FileWrite::Create(file) => diesel::insert_into(script_files::table)
                        .values(FileRow::new(id, file, updated_by, updated_at))
                        .on_conflict_do_nothing()
                        .execute(&mut *conn)
                        .await
                        .map_err(map_diesel)?,
                    FileWrite::Replace(file) => diesel::update(script_files::table.find(key))
                        .set((
                            script_files::file_type.eq(file.file_type.as_str()),
                            script_files::content.eq(&file.content),
                            script_files::updated_at.eq(updated_at),
                            script_files::updated_by.eq(updated_by),
                        ))
                        .execute(&mut *conn)
                        .await
                        .map_err(map_diesel)?,
                    FileWrite::Delete(_) => diesel::delete(script_files::table.find(key))
                        .execute(&mut *conn)
                        .await
                        .map_err(map_diesel)?,
                };
                if touched == 0 {
                    return Err(match write {
                        FileWrite::Create(file) => RepositoryError::Conflict(format!(
                            "script {id} has a file `{}` already",
                            file.path
                        )),
                        _ => RepositoryError::NotFound(format!(
                            "file `{}` of script {id}",
                            write.path()
                        )),
                    });
                }
                Ok(draft)
            }
            .await;
            conn.finish(written).await
        })
        .await
    }

    async fn replace_draft(
        &self,
        id: ScriptId,
        content: &str,
        files: &[ProjectFile],
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError> {
        observed!("update", "scripts", async {
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let replaced = async {
                let draft = bump_draft(
                    &mut conn,
                    id,
                    Some(content),
                    expected_revision,
                    updated_by,
                    updated_at,
                )
                .await?;
                diesel::delete(
                    script_files::table.filter(script_files::script_id.eq(id.as_uuid())),
                )
                .execute(&mut *conn)
                .await
                .map_err(map_diesel)?;
                let rows: Vec<FileRow> = files
                    .iter()
                    .map(|f| FileRow::new(id, f, updated_by, updated_at))
                    .collect();
                if !rows.is_empty() {
                    diesel::insert_into(script_files::table)
                        .values(&rows)
                        .execute(&mut *conn)
                        .await
                        .map_err(map_diesel)?;
                }
                Ok(draft)
            }
            .await;
            conn.finish(replaced).await
        })
        .await
    }

    async fn get_project(&self, id: ScriptId) -> Result<Option<ProjectSummary>, RepositoryError> {
        observed!("select", "scripts", async {
            let mut conn = self.acquire().await?;
            let found = self
                .projects(&mut conn, scripts::table.find(id.as_uuid()).into_boxed())
                .await;
            Ok(conn.finish(found).await?.pop())
        })
        .await
    }

    async fn list_projects(&self, filter: &ProjectFilter) -> Result<ProjectPage, RepositoryError> {
        observed!("select", "scripts", async {
            let mut conn = self.acquire().await?;
            let page = async {
                let total: i64 = projects_where(filter)
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                let query = projects_where(filter)
                    .limit(sql_limit(filter.limit))
                    .offset(sql_limit(filter.offset));
                let projects = self.projects(&mut conn, query).await?;
                Ok(ProjectPage {
                    projects,
                    total: u64::try_from(total).unwrap_or(0),
                })
            }
            .await;
            conn.finish(page).await
        })
        .await
    }

    async fn set_deprecated(
        &self,
        id: ScriptId,
        deprecated_at: Option<DateTime<Utc>>,
        updated_at: DateTime<Utc>,
    ) -> Result<ProjectSummary, RepositoryError> {
        observed!("update", "scripts", async {
            let mut conn = self.acquire().await?;
            let changed = async {
                // Only a project in the other state changes.
                let target = scripts::table
                    .find(id.as_uuid())
                    .filter(scripts::deprecated_at.is_null().eq(deprecated_at.is_some()));
                let updated = diesel::update(target)
                    .set((
                        scripts::deprecated_at.eq(deprecated_at),
                        scripts::updated_at.eq(updated_at),
                    ))
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                let project = self
                    .projects(&mut conn, scripts::table.find(id.as_uuid()).into_boxed())
                    .await?
                    .pop()
                    .ok_or_else(|| RepositoryError::NotFound(format!("script {id}")))?;
                if updated == 0 {
                    return Err(RepositoryError::Conflict(format!(
                        "script {id} is {} already",
                        if deprecated_at.is_some() {
                            "deprecated"
                        } else {
                            "active"
                        }
                    )));
                }
                Ok(project)
            }
            .await;
            conn.finish(changed).await
        })
        .await
    }
}

/// Bumps the draft revision (and sets its content when given) in one
/// statement, so the revision check and the bump cannot be split by another
/// save (a concurrent one waits for the row and then finds the revision
/// moved on).
async fn bump_draft(
    conn: &mut super::Checkout,
    id: ScriptId,
    content: Option<&str>,
    expected_revision: Option<u64>,
    updated_by: &str,
    updated_at: DateTime<Utc>,
) -> Result<WorkingDraft, RepositoryError> {
    let expected = expected_revision
        .map(|r| {
            i64::try_from(r)
                .map_err(|_| RepositoryError::Conflict(format!("the draft is not at revision {r}")))
        })
        .transpose()?;
    let changes = (
        scripts::draft_revision.eq(scripts::draft_revision + 1),
        scripts::draft_updated_at.eq(Some(updated_at)),
        scripts::draft_updated_by.eq(Some(updated_by)),
    );
    // Any revision when none is expected.
    let target = scripts::table.find(id.as_uuid()).filter(
        expected
            .is_none()
            .into_sql::<diesel::sql_types::Bool>()
            .or(scripts::draft_revision.eq(expected.unwrap_or(0))),
    );
    let row = match content {
        Some(content) => {
            diesel::update(target)
                .set((scripts::draft_content.eq(Some(content)), changes))
                .returning(DraftRow::as_returning())
                .get_result(&mut **conn)
                .await
        }
        None => {
            diesel::update(target)
                .set(changes)
                .returning(DraftRow::as_returning())
                .get_result(&mut **conn)
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
        .first::<i64>(&mut **conn)
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

/// The `scripts` rows `filter` selects (paging aside).
fn projects_where(filter: &ProjectFilter) -> scripts::BoxedQuery<'static, diesel::pg::Pg> {
    let mut query = scripts::table
        .filter(scripts::script_type.eq(ScriptType::Session.as_str()))
        .into_boxed();
    match filter.status {
        Some(ProjectStatus::Active) => query = query.filter(scripts::deprecated_at.is_null()),
        Some(ProjectStatus::Deprecated) => {
            query = query.filter(scripts::deprecated_at.is_not_null());
        }
        None if !filter.include_deprecated => {
            query = query.filter(scripts::deprecated_at.is_null());
        }
        None => {}
    }
    if let Some(search) = &filter.search {
        let pattern = format!(
            "%{}%",
            search
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        query = query.filter(
            scripts::script_name
                .ilike(pattern.clone())
                .or(scripts::description.ilike(pattern)),
        );
    }
    if let Some(author) = &filter.author {
        query = query.filter(scripts::author.eq(author.clone()));
    }
    if let Some(tag) = &filter.tag {
        query = query.filter(scripts::tags.contains(serde_json::json!([tag])));
    }
    query
}

impl PgStore {
    /// The project view of the scripts `query` selects.
    async fn projects(
        &self,
        conn: &mut super::Checkout,
        query: scripts::BoxedQuery<'_, diesel::pg::Pg>,
    ) -> Result<Vec<ProjectSummary>, RepositoryError> {
        let rows: Vec<(ScriptRow, Option<DateTime<Utc>>)> = query
            .select((ScriptRow::as_select(), scripts::deprecated_at))
            .order((scripts::created_at.desc(), scripts::id.desc()))
            .load(&mut **conn)
            .await
            .map_err(map_diesel)?;
        let ids: Vec<Uuid> = rows.iter().map(|(row, _)| row.id()).collect();
        let counts: Vec<(Uuid, i64)> = script_files::table
            .filter(script_files::script_id.eq_any(&ids))
            .group_by(script_files::script_id)
            .select((script_files::script_id, diesel::dsl::count_star()))
            .load(&mut **conn)
            .await
            .map_err(map_diesel)?;
        let counts: std::collections::HashMap<Uuid, i64> = counts.into_iter().collect();
        rows.into_iter()
            .map(|(row, deprecated_at)| {
                let count = counts.get(&row.id()).copied().unwrap_or(0);
                Ok(ProjectSummary {
                    script: row.into_domain()?,
                    deprecated_at,
                    file_count: usize::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

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
    files: Value,
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
            files: from_json(self.files, T, "files")?,
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
    files: Value,
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
            files: to_json(&version.files, "the version's files")?,
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

/// A draft file as stored.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = script_files, check_for_backend(diesel::pg::Pg))]
struct FileRow {
    script_id: Uuid,
    path: String,
    file_type: String,
    content: String,
    updated_at: DateTime<Utc>,
    updated_by: String,
}

impl FileRow {
    fn new(id: ScriptId, file: &ProjectFile, updated_by: &str, updated_at: DateTime<Utc>) -> Self {
        Self {
            script_id: id.as_uuid(),
            path: file.path.clone(),
            file_type: file.file_type.as_str().to_owned(),
            content: file.content.clone(),
            updated_at,
            updated_by: updated_by.to_owned(),
        }
    }

    fn into_domain(self) -> Result<DraftFile, RepositoryError> {
        let file_type = FileType::parse(&self.file_type)
            .ok_or_else(|| corrupt("script_files", "file_type", &self.file_type))?;
        Ok(DraftFile {
            file: ProjectFile {
                path: self.path,
                file_type,
                content: self.content,
            },
            updated_at: self.updated_at,
            updated_by: self.updated_by,
        })
    }
}
