//! [`MemoryStore`]: the storage ports in process memory, with the semantics
//! of the PostgreSQL adapter (same conflicts, same ordering, same per-session
//! turn leases and fenced commits, all-or-nothing commits, timestamps kept to
//! microseconds). Used when no database is configured; nothing survives a
//! restart.

use crate::turn_check::{check_failure_lease, check_turn_record, lease_length, lease_lost};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, TimeDelta, Utc};
use heartrule_domain::quota::hour_start;
use heartrule_domain::{
    Adapters, AuditEvent, AuditFilter, AuditLog, ClaimOutcome, DailyUsage, DeliveryAttempt,
    ErasedUser, ExecutionStatus, FailedTurn, IdempotentResponse, LlmExchange, Message,
    MessageHistory, MessageId, RepositoryError, SafetyDeliveryLog, Script, ScriptFilter, ScriptId,
    ScriptRepository, ScriptVersion, Session, SessionData, SessionId, SessionRepository,
    SessionStatus, TurnClaim, TurnContext, TurnId, TurnLease, TurnRecord, TurnUsage, UsageTotals,
    UsageWindows, UserData, UserDataStore, VariableSnapshot, WorkingDraft,
};
use heartrule_domain::{
    DraftFile, FileWrite, ProjectFile, ProjectFilter, ProjectPage, ProjectSummary,
};
use heartrule_domain::{NoCache, Ports, RandomIds, ScriptEngine, SystemClock};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// In-memory storage. Clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.lock();
        f.debug_struct("MemoryStore")
            .field("scripts", &data.scripts.len())
            .field("sessions", &data.sessions.len())
            .finish()
    }
}

#[derive(Default)]
struct Data {
    scripts: HashMap<ScriptId, Script>,
    /// Each script's versions, oldest first.
    versions: HashMap<ScriptId, Vec<ScriptVersion>>,
    /// Drafts saved at least once (else the current content is the draft).
    drafts: HashMap<ScriptId, WorkingDraft>,
    /// Each script's draft files by path.
    files: HashMap<ScriptId, BTreeMap<String, DraftFile>>,
    /// When deprecated projects were deprecated.
    deprecated: HashMap<ScriptId, DateTime<Utc>>,
    sessions: HashMap<SessionId, StoredSession>,
    message_ids: HashSet<MessageId>,
    failed_turn_ids: HashSet<TurnId>,
    /// Insert-only, in recording order.
    audit: Vec<AuditEvent>,
}

struct StoredSession {
    session: Session,
    /// The running turn's lease: its turn id and when it lapses.
    lease: Option<(TurnId, DateTime<Utc>)>,
    /// Ordered by seq.
    messages: Vec<Message>,
    variables: Vec<VariableSnapshot>,
    idempotency: HashMap<String, IdempotentResponse>,
    failed_turns: Vec<FailedTurn>,
    /// Deleted with the session, like the rows of `ON DELETE CASCADE`.
    safety_deliveries: Vec<DeliveryAttempt>,
    /// Tokens by UTC hour; deleted with the session like `token_usage`.
    usage: BTreeMap<DateTime<Utc>, TurnUsage>,
    /// The recorded LLM exchanges, in commit order (which is turn number,
    /// then call index); deleted with the session like `llm_exchanges`.
    exchanges: Vec<LlmExchange>,
}

impl StoredSession {
    /// The session's tokens in hours `from..to` (all when `None`).
    fn tokens_between(&self, range: Option<(DateTime<Utc>, DateTime<Utc>)>) -> u64 {
        self.usage
            .iter()
            .filter(|(hour, _)| range.is_none_or(|(from, to)| **hour >= from && **hour < to))
            .map(|(_, usage)| usage.total_tokens)
            .sum()
    }
}

/// The user's day and every user's hour, as `token_usage` sums them.
fn user_and_global_totals(
    sessions: &HashMap<SessionId, StoredSession>,
    user_id: &str,
    windows: &UsageWindows,
) -> UsageTotals {
    let day = (windows.day_start, windows.day_start + TimeDelta::days(1));
    let hour = (windows.hour_start, windows.hour_start + TimeDelta::hours(1));
    UsageTotals {
        session_tokens: 0,
        user_day_tokens: sessions
            .values()
            .filter(|s| s.session.user_id == user_id)
            .map(|s| s.tokens_between(Some(day)))
            .sum(),
        global_hour_tokens: sessions
            .values()
            .map(|s| s.tokens_between(Some(hour)))
            .sum(),
    }
}

/// Adds a committed turn's tokens to its hour.
fn add_usage(stored: &mut StoredSession, record: &TurnRecord) {
    if !record.usage.is_empty() {
        stored
            .usage
            .entry(hour_start(record.session.updated_at))
            .or_default()
            .add(&record.usage);
    }
}

/// PostgreSQL keeps microseconds; so does this store, so both return the
/// same timestamps for what they were given.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

fn stored_script(script: &Script) -> Script {
    Script {
        created_at: micros(script.created_at),
        updated_at: micros(script.updated_at),
        ..script.clone()
    }
}

fn stored_version(version: &ScriptVersion) -> ScriptVersion {
    ScriptVersion {
        created_at: micros(version.created_at),
        ..version.clone()
    }
}

fn stored_message(message: &Message) -> Message {
    Message {
        created_at: micros(message.created_at),
        ..message.clone()
    }
}

fn stored_snapshot(snapshot: &VariableSnapshot) -> VariableSnapshot {
    VariableSnapshot {
        created_at: micros(snapshot.created_at),
        ..snapshot.clone()
    }
}

/// The name and technique id of `script` are free among the other scripts.
fn check_unique(data: &Data, script: &Script) -> Result<(), RepositoryError> {
    let mut others = data.scripts.values().filter(|s| s.id != script.id);
    if others.clone().any(|s| s.name == script.name) {
        return Err(name_taken(&script.name));
    }
    if let Some(technique_id) = script.technique_id() {
        if others.any(|s| s.technique_id() == Some(technique_id)) {
            return Err(technique_taken(technique_id));
        }
    }
    Ok(())
}

/// The saved draft, or the current content at revision 0 before any save.
fn draft_of(data: &Data, script: &Script) -> WorkingDraft {
    data.drafts
        .get(&script.id)
        .cloned()
        .unwrap_or_else(|| WorkingDraft {
            script_id: script.id,
            content: script.content.clone(),
            revision: 0,
            updated_at: None,
            updated_by: None,
        })
}

/// The project view of a stored script.
fn summary_of(data: &Data, script: &Script) -> ProjectSummary {
    ProjectSummary {
        script: script.clone(),
        deprecated_at: data.deprecated.get(&script.id).copied(),
        file_count: data.files.get(&script.id).map_or(0, BTreeMap::len),
    }
}

/// The draft after one more save at `updated_at` by `updated_by`, checked
/// against `expected_revision`.
fn next_draft(
    data: &Data,
    id: ScriptId,
    content: Option<&str>,
    expected_revision: Option<u64>,
    updated_by: &str,
    updated_at: DateTime<Utc>,
) -> Result<WorkingDraft, RepositoryError> {
    let script = data
        .scripts
        .get(&id)
        .ok_or_else(|| RepositoryError::NotFound(format!("script {id}")))?;
    let current = draft_of(data, script);
    if expected_revision.is_some_and(|expected| expected != current.revision) {
        return Err(RepositoryError::Conflict(format!(
            "the draft of script {id} is at revision {}",
            current.revision
        )));
    }
    Ok(WorkingDraft {
        script_id: id,
        content: content.map_or(current.content, str::to_owned),
        revision: current.revision + 1,
        updated_at: Some(micros(updated_at)),
        updated_by: Some(updated_by.to_owned()),
    })
}

fn draft_file(file: &ProjectFile, updated_by: &str, updated_at: DateTime<Utc>) -> DraftFile {
    DraftFile {
        file: file.clone(),
        updated_at: micros(updated_at),
        updated_by: updated_by.to_owned(),
    }
}

fn name_taken(name: &str) -> RepositoryError {
    RepositoryError::Conflict(format!("a script named `{name}` already exists"))
}

fn technique_taken(technique_id: &str) -> RepositoryError {
    RepositoryError::Conflict(format!("technique `{technique_id}` is already stored"))
}

impl MemoryStore {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A panic while the lock was held cannot leave half-applied data: every
    /// write is checked first and applied after, so a poisoned lock is safe
    /// to keep using.
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The failed turns recorded for a session, oldest first.
    pub async fn failed_turns(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<FailedTurn>, RepositoryError> {
        Ok(self
            .lock()
            .sessions
            .get(&session_id)
            .map(|s| s.failed_turns.clone())
            .unwrap_or_default())
    }

    /// Active sessions waiting for the user's next message.
    #[must_use]
    pub fn count_waiting_sessions(&self) -> i64 {
        let waiting = self
            .lock()
            .sessions
            .values()
            .filter(|s| {
                s.session.status == SessionStatus::Active
                    && s.session.state.status == ExecutionStatus::WaitingInput
            })
            .count();
        i64::try_from(waiting).unwrap_or(i64::MAX)
    }

    /// Checks the fence and `record` against the stored data, then applies
    /// the record and releases the lease.
    fn apply_turn(&self, lease: &TurnLease, record: &TurnRecord) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        let Data {
            sessions,
            message_ids,
            ..
        } = &mut *data;
        let id = lease.session_id;
        // The record first, as PostgreSQL checks it before any round trip.
        check_turn_record(id, lease.last_message_seq, record)?;
        let stored = sessions
            .get_mut(&id)
            .filter(|s| {
                s.lease.is_some_and(|(owner, _)| owner == lease.turn_id)
                    && s.session.turn_count == lease.turn_count
            })
            .ok_or_else(|| lease_lost(lease))?;
        check_new_rows(message_ids, stored, record)?;
        stored.lease = None;

        let committed = &record.session;
        let session = &mut stored.session;
        session.script_hash.clone_from(&committed.script_hash);
        session.status = committed.status;
        session.state = committed.state.clone();
        session.turn_count = committed.turn_count;
        session.last_message_seq = committed.last_message_seq;
        session.last_error = None;
        session.updated_at = micros(committed.updated_at);
        session.completed_at = committed.completed_at.map(micros);
        append_rows(message_ids, stored, record);
        add_usage(stored, record);
        Ok(())
    }
}

/// Unique message ids and idempotency keys, as the PostgreSQL keys enforce.
fn check_new_rows(
    message_ids: &HashSet<MessageId>,
    stored: &StoredSession,
    record: &TurnRecord,
) -> Result<(), RepositoryError> {
    let mut seen = HashSet::new();
    if let Some(m) = record
        .messages
        .iter()
        .find(|m| message_ids.contains(&m.id) || !seen.insert(m.id))
    {
        return Err(RepositoryError::Conflict(format!(
            "message {} already exists",
            m.id
        )));
    }
    if let Some(idem) = &record.idempotency {
        if stored.idempotency.contains_key(&idem.key) {
            return Err(RepositoryError::Conflict(format!(
                "idempotency key `{}` was already used on session {}",
                idem.key, record.session.id
            )));
        }
    }
    Ok(())
}

fn append_rows(
    message_ids: &mut HashSet<MessageId>,
    stored: &mut StoredSession,
    record: &TurnRecord,
) {
    for message in &record.messages {
        message_ids.insert(message.id);
        stored.messages.push(stored_message(message));
    }
    stored
        .variables
        .extend(record.variables.iter().map(stored_snapshot));
    stored
        .exchanges
        .extend(record.llm_exchanges.iter().map(|e| LlmExchange {
            created_at: micros(e.created_at),
            ..e.clone()
        }));
    if let Some(idem) = &record.idempotency {
        stored.idempotency.insert(idem.key.clone(), idem.clone());
    }
}

#[async_trait]
impl ScriptRepository for MemoryStore {
    async fn insert_with_version(
        &self,
        script: &Script,
        version: &ScriptVersion,
    ) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        if data.scripts.contains_key(&script.id) {
            return Err(RepositoryError::Conflict(format!(
                "script {} already exists",
                script.id
            )));
        }
        check_unique(&data, script)?;
        data.scripts.insert(script.id, stored_script(script));
        data.versions
            .insert(script.id, vec![stored_version(version)]);
        let files = version
            .files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    draft_file(f, &version.author, version.created_at),
                )
            })
            .collect();
        data.files.insert(script.id, files);
        Ok(())
    }

    async fn update(&self, script: &Script) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        let Some(stored) = data.scripts.get(&script.id) else {
            return Err(RepositoryError::NotFound(format!("script {}", script.id)));
        };
        if stored.content_hash != script.content_hash
            || stored.current_version != script.current_version
        {
            return Err(RepositoryError::Conflict(format!(
                "script {} has other content than the update names: publish a version to change it",
                script.id
            )));
        }
        check_unique(&data, script)?;
        let updated = Script {
            name: script.name.clone(),
            status: script.status,
            version: script.version.clone(),
            author: script.author.clone(),
            description: script.description.clone(),
            tags: script.tags.clone(),
            created_at: script.created_at,
            updated_at: script.updated_at,
            ..stored.clone()
        };
        data.scripts.insert(script.id, stored_script(&updated));
        Ok(())
    }

    async fn publish(
        &self,
        script: &Script,
        version: &ScriptVersion,
    ) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        if !data.scripts.contains_key(&script.id) {
            return Err(RepositoryError::NotFound(format!("script {}", script.id)));
        }
        let versions = data.versions.entry(script.id).or_default();
        if versions.iter().any(|v| v.number == version.number) {
            return Err(RepositoryError::Conflict(format!(
                "script {} already has a version {}",
                script.id, version.number
            )));
        }
        check_unique(&data, script)?;
        data.versions
            .entry(script.id)
            .or_default()
            .push(stored_version(version));
        data.scripts.insert(script.id, stored_script(script));
        Ok(())
    }

    async fn set_current_version(
        &self,
        id: ScriptId,
        number: u32,
        updated_at: DateTime<Utc>,
    ) -> Result<Script, RepositoryError> {
        let mut data = self.lock();
        let version = data
            .versions
            .get(&id)
            .and_then(|versions| versions.iter().find(|v| v.number == number))
            .cloned()
            .ok_or_else(|| RepositoryError::NotFound(format!("version {number} of script {id}")))?;
        let script = data
            .scripts
            .get_mut(&id)
            .ok_or_else(|| RepositoryError::NotFound(format!("script {id}")))?;
        script.script_type = version.document.script_type();
        script.content = version.content;
        script.content_hash = version.content_hash;
        script.document = version.document;
        script.current_version = number;
        script.updated_at = micros(updated_at);
        Ok(script.clone())
    }

    async fn get_version(
        &self,
        id: ScriptId,
        number: u32,
    ) -> Result<Option<ScriptVersion>, RepositoryError> {
        Ok(self
            .lock()
            .versions
            .get(&id)
            .and_then(|versions| versions.iter().find(|v| v.number == number))
            .cloned())
    }

    async fn find_version_by_hash(
        &self,
        id: ScriptId,
        content_hash: &str,
    ) -> Result<Option<ScriptVersion>, RepositoryError> {
        Ok(self
            .lock()
            .versions
            .get(&id)
            .and_then(|versions| {
                versions
                    .iter()
                    .filter(|v| v.content_hash == content_hash)
                    .max_by_key(|v| v.number)
            })
            .cloned())
    }

    async fn latest_version_number(&self, id: ScriptId) -> Result<Option<u32>, RepositoryError> {
        Ok(self
            .lock()
            .versions
            .get(&id)
            .and_then(|versions| versions.iter().map(|v| v.number).max()))
    }

    async fn list_versions(&self, id: ScriptId) -> Result<Vec<ScriptVersion>, RepositoryError> {
        let mut versions = self.lock().versions.get(&id).cloned().unwrap_or_default();
        versions.sort_by_key(|v| Reverse(v.number));
        Ok(versions)
    }

    async fn get_draft(&self, id: ScriptId) -> Result<Option<WorkingDraft>, RepositoryError> {
        let data = self.lock();
        Ok(data.scripts.get(&id).map(|script| draft_of(&data, script)))
    }

    async fn save_draft(
        &self,
        id: ScriptId,
        content: &str,
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError> {
        let mut data = self.lock();
        let saved = next_draft(
            &data,
            id,
            Some(content),
            expected_revision,
            updated_by,
            updated_at,
        )?;
        data.drafts.insert(id, saved.clone());
        Ok(saved)
    }

    async fn get(&self, id: ScriptId) -> Result<Option<Script>, RepositoryError> {
        Ok(self.lock().scripts.get(&id).cloned())
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<Script>, RepositoryError> {
        Ok(self
            .lock()
            .scripts
            .values()
            .find(|s| s.name == name)
            .cloned())
    }

    async fn find_technique(&self, technique_id: &str) -> Result<Option<Script>, RepositoryError> {
        Ok(self
            .lock()
            .scripts
            .values()
            .find(|s| s.technique_id() == Some(technique_id))
            .cloned())
    }

    async fn list(&self, filter: &ScriptFilter) -> Result<Vec<Script>, RepositoryError> {
        let data = self.lock();
        let mut scripts: Vec<&Script> = data
            .scripts
            .values()
            .filter(|s| filter.script_type.is_none_or(|t| s.script_type == t))
            .filter(|s| filter.status.is_none_or(|st| s.status == st))
            .collect();
        scripts.sort_by_key(|s| Reverse((s.created_at, s.id)));
        Ok(scripts
            .into_iter()
            .skip(filter.offset.unwrap_or(0))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn list_files(&self, id: ScriptId) -> Result<Vec<DraftFile>, RepositoryError> {
        Ok(self
            .lock()
            .files
            .get(&id)
            .map(|files| files.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn write_file(
        &self,
        id: ScriptId,
        write: &FileWrite,
        expected_revision: Option<u64>,
        updated_by: &str,
        updated_at: DateTime<Utc>,
    ) -> Result<WorkingDraft, RepositoryError> {
        let mut data = self.lock();
        let saved = next_draft(&data, id, None, expected_revision, updated_by, updated_at)?;
        let files = data.files.entry(id).or_default();
        let present = files.contains_key(write.path());
        match (write, present) {
            (FileWrite::Create(file), false) | (FileWrite::Replace(file), true) => {
                files.insert(file.path.clone(), draft_file(file, updated_by, updated_at));
            }
            (FileWrite::Delete(path), true) => {
                files.remove(path);
            }
            (FileWrite::Create(file), true) => {
                return Err(RepositoryError::Conflict(format!(
                    "script {id} has a file `{}` already",
                    file.path
                )));
            }
            (FileWrite::Replace(_) | FileWrite::Delete(_), false) => {
                return Err(RepositoryError::NotFound(format!(
                    "file `{}` of script {id}",
                    write.path()
                )));
            }
        }
        data.drafts.insert(id, saved.clone());
        Ok(saved)
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
        let mut data = self.lock();
        let saved = next_draft(
            &data,
            id,
            Some(content),
            expected_revision,
            updated_by,
            updated_at,
        )?;
        let files = files
            .iter()
            .map(|f| (f.path.clone(), draft_file(f, updated_by, updated_at)))
            .collect();
        data.files.insert(id, files);
        data.drafts.insert(id, saved.clone());
        Ok(saved)
    }

    async fn get_project(&self, id: ScriptId) -> Result<Option<ProjectSummary>, RepositoryError> {
        let data = self.lock();
        Ok(data.scripts.get(&id).map(|s| summary_of(&data, s)))
    }

    async fn list_projects(&self, filter: &ProjectFilter) -> Result<ProjectPage, RepositoryError> {
        let data = self.lock();
        let mut projects: Vec<ProjectSummary> = data
            .scripts
            .values()
            .map(|s| summary_of(&data, s))
            .filter(|p| filter.matches(p))
            .collect();
        projects.sort_by_key(|p| Reverse((p.script.created_at, p.script.id)));
        let total = projects.len() as u64;
        Ok(ProjectPage {
            projects: projects
                .into_iter()
                .skip(filter.offset)
                .take(filter.limit)
                .collect(),
            total,
        })
    }

    async fn set_deprecated(
        &self,
        id: ScriptId,
        deprecated_at: Option<DateTime<Utc>>,
        updated_at: DateTime<Utc>,
    ) -> Result<ProjectSummary, RepositoryError> {
        let mut data = self.lock();
        if !data.scripts.contains_key(&id) {
            return Err(RepositoryError::NotFound(format!("script {id}")));
        }
        let deprecated = data.deprecated.contains_key(&id);
        match deprecated_at {
            Some(_) if deprecated => {
                return Err(RepositoryError::Conflict(format!(
                    "script {id} is deprecated already"
                )))
            }
            None if !deprecated => {
                return Err(RepositoryError::Conflict(format!(
                    "script {id} is not deprecated"
                )))
            }
            Some(at) => {
                data.deprecated.insert(id, micros(at));
            }
            None => {
                data.deprecated.remove(&id);
            }
        }
        if let Some(script) = data.scripts.get_mut(&id) {
            script.updated_at = micros(updated_at);
        }
        let script = &data.scripts[&id];
        Ok(summary_of(&data, script))
    }
}

#[async_trait]
impl SessionRepository for MemoryStore {
    async fn create(&self, first_turn: &TurnRecord) -> Result<(), RepositoryError> {
        let session = &first_turn.session;
        check_turn_record(session.id, 0, first_turn)?;
        let mut data = self.lock();
        if !data.scripts.contains_key(&session.script_id) {
            return Err(RepositoryError::NotFound(format!(
                "script {}",
                session.script_id
            )));
        }
        if data.sessions.contains_key(&session.id) {
            return Err(RepositoryError::Conflict(format!(
                "session {} already exists",
                session.id
            )));
        }
        let mut stored = StoredSession {
            session: Session {
                created_at: micros(session.created_at),
                updated_at: micros(session.updated_at),
                completed_at: session.completed_at.map(micros),
                ..session.clone()
            },
            lease: None,
            messages: Vec::new(),
            variables: Vec::new(),
            idempotency: HashMap::new(),
            failed_turns: Vec::new(),
            safety_deliveries: Vec::new(),
            usage: BTreeMap::new(),
            exchanges: Vec::new(),
        };
        check_new_rows(&data.message_ids, &stored, first_turn)?;
        append_rows(&mut data.message_ids, &mut stored, first_turn);
        add_usage(&mut stored, first_turn);
        data.sessions.insert(session.id, stored);
        Ok(())
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, RepositoryError> {
        Ok(self.lock().sessions.get(&id).map(|s| s.session.clone()))
    }

    async fn list_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Session>, RepositoryError> {
        let data = self.lock();
        let mut sessions: Vec<&Session> = data
            .sessions
            .values()
            .map(|s| &s.session)
            .filter(|s| s.user_id == user_id)
            .collect();
        sessions.sort_by_key(|s| Reverse((s.created_at, s.id)));
        Ok(sessions.into_iter().take(limit).cloned().collect())
    }

    async fn claim_turn(&self, claim: &TurnClaim) -> Result<ClaimOutcome, RepositoryError> {
        let now = Utc::now();
        let mut data = self.lock();
        let usage = match (&claim.usage, data.sessions.get(&claim.session_id)) {
            (Some(windows), Some(stored)) => Some(UsageTotals {
                session_tokens: stored.tokens_between(None),
                ..user_and_global_totals(&data.sessions, &stored.session.user_id, windows)
            }),
            _ => None,
        };
        let Some(stored) = data.sessions.get_mut(&claim.session_id) else {
            return Ok(ClaimOutcome::NotFound);
        };
        if claim
            .owner
            .as_ref()
            .is_some_and(|owner| *owner != stored.session.user_id)
        {
            return Ok(ClaimOutcome::NotFound);
        }
        if let Some(stored_response) = claim
            .idempotency_key
            .as_ref()
            .and_then(|key| stored.idempotency.get(key))
        {
            return Ok(ClaimOutcome::Replay(stored_response.clone()));
        }
        if let Some((_, expires_at)) = stored.lease.filter(|(_, expires_at)| *expires_at > now) {
            return Ok(ClaimOutcome::Busy {
                lease_expires_at: Some(expires_at),
            });
        }
        let expires_at = micros(now + lease_length(claim.lease_duration)?);
        stored.lease = Some((claim.turn_id, expires_at));
        let start = stored.messages.len().saturating_sub(claim.history_window);
        Ok(ClaimOutcome::Claimed(Box::new(TurnContext {
            lease: TurnLease::claimed(claim, &stored.session, expires_at),
            session: stored.session.clone(),
            history: stored.messages[start..]
                .iter()
                .map(Message::to_history)
                .collect(),
            usage,
        })))
    }

    async fn commit_turn(
        &self,
        lease: &TurnLease,
        record: &TurnRecord,
    ) -> Result<(), RepositoryError> {
        self.apply_turn(lease, record)
    }

    async fn release_turn<'a>(
        &self,
        lease: &TurnLease,
        failure: Option<&'a FailedTurn>,
    ) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        if let Some(failure) = failure {
            check_failure_lease(lease, failure)?;
            if data.failed_turn_ids.contains(&failure.turn_id) {
                return Err(RepositoryError::Conflict(format!(
                    "failed turn {} is already recorded",
                    failure.turn_id
                )));
            }
        }
        let id = lease.session_id;
        let stored = data
            .sessions
            .get_mut(&id)
            .ok_or_else(|| RepositoryError::NotFound(format!("session {id}")))?;
        let owned = stored
            .lease
            .is_some_and(|(owner, _)| owner == lease.turn_id);
        if owned {
            stored.lease = None;
        }
        if let Some(failure) = failure {
            stored.failed_turns.push(FailedTurn {
                failed_at: micros(failure.failed_at),
                ..failure.clone()
            });
            // Only the error marker, and only while the session is still this
            // turn's: the engine state stays as the last committed turn left it.
            if owned {
                stored.session.last_error = Some(failure.error_code.as_str().to_owned());
                stored.session.updated_at = micros(failure.failed_at);
            }
            data.failed_turn_ids.insert(failure.turn_id);
        }
        Ok(())
    }

    async fn usage_totals(
        &self,
        user_id: &str,
        windows: &UsageWindows,
    ) -> Result<UsageTotals, RepositoryError> {
        Ok(user_and_global_totals(
            &self.lock().sessions,
            user_id,
            windows,
        ))
    }

    async fn user_daily_usage(
        &self,
        user_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, RepositoryError> {
        let data = self.lock();
        let mut days: BTreeMap<NaiveDate, (DailyUsage, HashSet<SessionId>)> = BTreeMap::new();
        for stored in data.sessions.values() {
            if stored.session.user_id != user_id {
                continue;
            }
            for (hour, usage) in &stored.usage {
                let day = hour.date_naive();
                if day < from || day > to {
                    continue;
                }
                let (daily, sessions) = days.entry(day).or_insert_with(|| {
                    (
                        DailyUsage {
                            day,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                            total_tokens: 0,
                            llm_calls: 0,
                            sessions: 0,
                        },
                        HashSet::new(),
                    )
                });
                daily.prompt_tokens += usage.prompt_tokens;
                daily.completion_tokens += usage.completion_tokens;
                daily.total_tokens += usage.total_tokens;
                daily.llm_calls += usage.llm_calls;
                sessions.insert(stored.session.id);
            }
        }
        Ok(days
            .into_values()
            .map(|(mut daily, sessions)| {
                daily.sessions = sessions.len() as u64;
                daily
            })
            .collect())
    }
}

#[async_trait]
impl MessageHistory for MemoryStore {
    async fn list_messages(
        &self,
        session_id: SessionId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Message>, RepositoryError> {
        let data = self.lock();
        let Some(stored) = data.sessions.get(&session_id) else {
            return Ok(Vec::new());
        };
        // Sorted by seq, so the start is a binary search, not a scan.
        let start = stored.messages.partition_point(|m| m.seq <= after_seq);
        Ok(stored.messages[start..]
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn list_variable_snapshots(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<VariableSnapshot>, RepositoryError> {
        Ok(self
            .lock()
            .sessions
            .get(&session_id)
            .map(|s| s.variables.clone())
            .unwrap_or_default())
    }

    async fn list_llm_exchanges(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<LlmExchange>, RepositoryError> {
        Ok(self
            .lock()
            .sessions
            .get(&session_id)
            .map(|s| s.exchanges.clone())
            .unwrap_or_default())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        if data.audit.iter().any(|e| e.id == event.id) {
            return Err(RepositoryError::Conflict(format!(
                "audit event {} already exists",
                event.id
            )));
        }
        data.audit.push(AuditEvent {
            occurred_at: micros(event.occurred_at),
            ..event.clone()
        });
        Ok(())
    }

    async fn list_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, RepositoryError> {
        let data = self.lock();
        let mut events: Vec<&AuditEvent> =
            data.audit.iter().filter(|e| filter.matches(e)).collect();
        events.sort_by_key(|e| Reverse((e.occurred_at, e.id)));
        Ok(events
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl UserDataStore for MemoryStore {
    async fn export_user(&self, user_id: &str) -> Result<UserData, RepositoryError> {
        let data = self.lock();
        let mut sessions: Vec<&StoredSession> = data
            .sessions
            .values()
            .filter(|s| s.session.user_id == user_id)
            .collect();
        sessions.sort_by_key(|s| (s.session.created_at, s.session.id));
        Ok(UserData {
            user_id: user_id.to_owned(),
            sessions: sessions
                .into_iter()
                .map(|s| SessionData {
                    session: s.session.clone(),
                    messages: s.messages.clone(),
                    variable_history: s.variables.clone(),
                    failed_turns: s.failed_turns.clone(),
                    llm_exchanges: s.exchanges.clone(),
                })
                .collect(),
        })
    }

    async fn erase_user(&self, user_id: &str) -> Result<ErasedUser, RepositoryError> {
        let mut data = self.lock();
        let doomed: Vec<SessionId> = data
            .sessions
            .values()
            .filter(|s| s.session.user_id == user_id)
            .map(|s| s.session.id)
            .collect();
        let mut erased = ErasedUser::default();
        for id in doomed {
            let Some(stored) = data.sessions.remove(&id) else {
                continue;
            };
            for message in &stored.messages {
                data.message_ids.remove(&message.id);
            }
            for failed in &stored.failed_turns {
                data.failed_turn_ids.remove(&failed.turn_id);
            }
            let counts = &mut erased.counts;
            counts.sessions += 1;
            counts.messages += stored.messages.len() as u64;
            counts.variable_snapshots += stored.variables.len() as u64;
            counts.idempotency_keys += stored.idempotency.len() as u64;
            counts.failed_turns += stored.failed_turns.len() as u64;
            erased.sessions.push(id);
        }
        Ok(erased)
    }
}

#[async_trait]
impl SafetyDeliveryLog for MemoryStore {
    async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), RepositoryError> {
        let mut data = self.lock();
        // The key is global, as the table's primary key is.
        let taken = data.sessions.values().any(|s| {
            s.safety_deliveries
                .iter()
                .any(|d| d.alert_id == attempt.alert_id && d.attempt == attempt.attempt)
        });
        if taken {
            return Err(RepositoryError::Conflict(format!(
                "attempt {} of alert {} is already recorded",
                attempt.attempt, attempt.alert_id
            )));
        }
        if attempt.attempt < 1 {
            return Err(RepositoryError::Query(
                "delivery attempts are numbered from 1".into(),
            ));
        }
        let stored = data
            .sessions
            .get_mut(&attempt.session_id)
            .ok_or_else(|| RepositoryError::NotFound(format!("session {}", attempt.session_id)))?;
        stored.safety_deliveries.push(DeliveryAttempt {
            attempted_at: micros(attempt.attempted_at),
            ..attempt.clone()
        });
        Ok(())
    }

    async fn list_deliveries(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<DeliveryAttempt>, RepositoryError> {
        let mut deliveries = self
            .lock()
            .sessions
            .get(&session_id)
            .map(|s| s.safety_deliveries.clone())
            .unwrap_or_default();
        deliveries.sort_by_key(|d| (d.attempted_at, d.attempt));
        Ok(deliveries)
    }
}

/// The adapter set of a deployment that keeps everything in one
/// [`MemoryStore`]: no cache, the system clock, random ids, and the script
/// engine `E`. What an embedding service or a test needs to run the domain's
/// services without a database (see [`MemoryStore::adapters`]).
pub struct MemoryPorts<E: ?Sized>(PhantomData<fn() -> Box<E>>);

impl<E: ScriptEngine + ?Sized + 'static> Ports for MemoryPorts<E> {
    type Scripts = MemoryStore;
    type Sessions = MemoryStore;
    type History = MemoryStore;
    type ScriptCache = NoCache;
    type SessionCache = NoCache;
    type Engine = E;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Audit = MemoryStore;
    type UserData = MemoryStore;
    type CacheJanitor = NoCache;
}

impl MemoryStore {
    /// The adapters of [`MemoryPorts`] over this store (clones share its
    /// data) and `engine`, ready for `SessionManager::new` and
    /// `ScriptCatalog::new`.
    #[must_use]
    pub fn adapters<E: ScriptEngine + ?Sized + 'static>(
        &self,
        engine: Arc<E>,
    ) -> Adapters<MemoryPorts<E>> {
        let store = Arc::new(self.clone());
        Adapters {
            scripts: Arc::clone(&store),
            sessions: Arc::clone(&store),
            history: Arc::clone(&store),
            script_cache: Arc::new(NoCache),
            session_cache: Arc::new(NoCache),
            engine,
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            audit: Arc::clone(&store),
            user_data: store,
            cache_janitor: Arc::new(NoCache),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_keep_microseconds_like_postgres() {
        let at = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(micros(at).timestamp_subsec_nanos(), 123_456_000);
    }

    #[tokio::test]
    async fn a_missing_session_has_no_turn_and_no_history() {
        let store = MemoryStore::new();
        let id = SessionId::new_random();
        let claim = TurnClaim {
            session_id: id,
            turn_id: TurnId::new_random(),
            lease_duration: std::time::Duration::from_secs(60),
            history_window: 10,
            idempotency_key: None,
            owner: None,
            usage: None,
        };
        assert_eq!(
            store.claim_turn(&claim).await.unwrap(),
            ClaimOutcome::NotFound
        );
        assert!(store.list_messages(id, 0, 10).await.unwrap().is_empty());
        assert!(store.failed_turns(id).await.unwrap().is_empty());
    }
}
