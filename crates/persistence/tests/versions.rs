//! Script versions and drafts, on both stores (the contract), and what the
//! migration and its trigger do on PostgreSQL: existing scripts become
//! version 1, and a write by a server that knows nothing of versions is
//! recorded as a new version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::Duration;
use heartrule_domain::{
    content_hash, RepositoryError, Script, ScriptId, ScriptRepository, ScriptStatus, ScriptVersion,
};
use support::fixtures::*;
use support::TestDb;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&heartrule_persistence::MemoryStore::new()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::support::TestDb::new().await;
                    let store = db.store().await;
                    super::$name(&store).await;
                }
            )*
        }
        mod postgres_transaction_pooling {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::support::TestDb::new().await;
                    let mut config = db.config();
                    config.transaction_pooling = true;
                    let store = db.store_with(config).await;
                    super::$name(&store).await;
                }
            )*
        }
    };
}

contract!(
    an_inserted_script_is_its_version_one,
    publishing_adds_the_next_version_and_makes_it_current,
    a_taken_version_number_conflicts_and_writes_nothing,
    the_current_version_moves_between_stored_versions,
    update_changes_metadata_only,
    drafts_are_saved_against_their_revision,
);

/// The next version of `script`, with other content.
fn next_version(script: &Script, number: u32, content: &str) -> (Script, ScriptVersion) {
    let at = script.updated_at + Duration::seconds(i64::from(number));
    let version = ScriptVersion {
        script_id: script.id,
        number,
        content: content.into(),
        content_hash: content_hash(content),
        document: script.document.clone(),
        files: vec![],
        author: "editor".into(),
        note: format!("version {number}"),
        warnings: vec![],
        created_at: at,
    };
    let mut after = script.clone();
    after.content = version.content.clone();
    after.content_hash = version.content_hash.clone();
    after.current_version = number;
    after.updated_at = at;
    (after, version)
}

async fn an_inserted_script_is_its_version_one<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();

    let first = ScriptVersion::first_of(&script);
    assert_eq!(
        store.get_version(script.id, 1).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.list_versions(script.id).await.unwrap(),
        vec![first.clone()]
    );
    assert_eq!(
        store.latest_version_number(script.id).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .find_version_by_hash(script.id, &script.content_hash)
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(
        store.get(script.id).await.unwrap().unwrap().current_version,
        1
    );

    let unknown = ScriptId::new_random();
    assert_eq!(store.get_version(script.id, 2).await.unwrap(), None);
    assert_eq!(store.get_version(unknown, 1).await.unwrap(), None);
    assert_eq!(store.list_versions(unknown).await.unwrap(), vec![]);
    assert_eq!(store.latest_version_number(unknown).await.unwrap(), None);
    assert_eq!(
        store
            .find_version_by_hash(script.id, "other")
            .await
            .unwrap(),
        None
    );
}

async fn publishing_adds_the_next_version_and_makes_it_current<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let (after, v2) = next_version(&script, 2, "# intake, revised\n");
    store.publish(&after, &v2).await.unwrap();

    assert_eq!(store.get(script.id).await.unwrap(), Some(after.clone()));
    assert_eq!(
        store.latest_version_number(script.id).await.unwrap(),
        Some(2)
    );
    let numbers: Vec<u32> = store
        .list_versions(script.id)
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(numbers, vec![2, 1], "newest first");
    // Version 1 is untouched: a session started on it still finds it.
    assert_eq!(
        store
            .find_version_by_hash(script.id, &script.content_hash)
            .await
            .unwrap()
            .map(|v| v.number),
        Some(1)
    );
    assert_eq!(store.get_version(script.id, 2).await.unwrap(), Some(v2));

    let ghost = session_script("ghost");
    let (ghost_after, ghost_v2) = next_version(&ghost, 2, "# ghost\n");
    assert!(matches!(
        store.publish(&ghost_after, &ghost_v2).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(store.list_versions(ghost.id).await.unwrap(), vec![]);
}

async fn a_taken_version_number_conflicts_and_writes_nothing<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let (after, v2) = next_version(&script, 2, "# first editor\n");
    store.publish(&after, &v2).await.unwrap();

    // A second editor computed the same number concurrently.
    let (late, late_v2) = next_version(&script, 2, "# second editor\n");
    assert!(matches!(
        store.publish(&late, &late_v2).await,
        Err(RepositoryError::Conflict(_))
    ));
    assert_eq!(store.get(script.id).await.unwrap(), Some(after));
    assert_eq!(store.get_version(script.id, 2).await.unwrap(), Some(v2));
    assert_eq!(store.list_versions(script.id).await.unwrap().len(), 2);
}

async fn the_current_version_moves_between_stored_versions<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let (after, v2) = next_version(&script, 2, "# intake, revised\n");
    store.publish(&after, &v2).await.unwrap();

    let at = after.updated_at + Duration::seconds(30);
    let back = store.set_current_version(script.id, 1, at).await.unwrap();
    assert_eq!(back.current_version, 1);
    assert_eq!(back.content, script.content);
    assert_eq!(back.content_hash, script.content_hash);
    assert_eq!(back.updated_at, at);
    assert_eq!(back.name, script.name);
    assert_eq!(store.get(script.id).await.unwrap(), Some(back));
    // Moving the pointer adds no version.
    assert_eq!(
        store.latest_version_number(script.id).await.unwrap(),
        Some(2)
    );

    let forward = store.set_current_version(script.id, 2, at).await.unwrap();
    assert_eq!(forward.content, v2.content);

    assert!(matches!(
        store.set_current_version(script.id, 3, at).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert!(matches!(
        store
            .set_current_version(ScriptId::new_random(), 1, at)
            .await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(store.get(script.id).await.unwrap(), Some(forward));
}

async fn update_changes_metadata_only<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();

    let mut renamed = script.clone();
    renamed.description = "revised".into();
    renamed.status = ScriptStatus::Published;
    renamed.updated_at += Duration::seconds(5);
    store.update(&renamed).await.unwrap();
    assert_eq!(store.get(script.id).await.unwrap(), Some(renamed.clone()));

    let mut sneaky = renamed.clone();
    sneaky.content = "# changed without a version\n".into();
    sneaky.content_hash = content_hash(&sneaky.content);
    assert!(matches!(
        store.update(&sneaky).await,
        Err(RepositoryError::Conflict(_))
    ));
    let mut stale = renamed.clone();
    stale.current_version = 2;
    assert!(matches!(
        store.update(&stale).await,
        Err(RepositoryError::Conflict(_))
    ));
    assert_eq!(store.get(script.id).await.unwrap(), Some(renamed));
    assert_eq!(store.list_versions(script.id).await.unwrap().len(), 1);
}

async fn drafts_are_saved_against_their_revision<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();

    let draft = store.get_draft(script.id).await.unwrap().unwrap();
    assert_eq!(
        draft.content, script.content,
        "the current content until saved"
    );
    assert_eq!(draft.revision, 0);
    assert_eq!(draft.updated_by, None);

    let at = now();
    let saved = store
        .save_draft(script.id, "# draft 1\n", Some(0), "ed", at)
        .await
        .unwrap();
    assert_eq!(saved.revision, 1);
    assert_eq!(saved.content, "# draft 1\n");
    assert_eq!(saved.updated_by.as_deref(), Some("ed"));
    assert_eq!(saved.updated_at, Some(at));
    assert_eq!(
        store.get_draft(script.id).await.unwrap(),
        Some(saved.clone())
    );

    // Another editor still holding revision 0.
    assert!(matches!(
        store
            .save_draft(script.id, "# stale\n", Some(0), "other", at)
            .await,
        Err(RepositoryError::Conflict(_))
    ));
    assert_eq!(store.get_draft(script.id).await.unwrap(), Some(saved));

    // Unconditional (a restore).
    let restored = store
        .save_draft(script.id, "# restored\n", None, "ed", at)
        .await
        .unwrap();
    assert_eq!(restored.revision, 2);

    // The draft never touches the published content.
    let stored = store.get(script.id).await.unwrap().unwrap();
    assert_eq!(stored.content, script.content);

    let unknown = ScriptId::new_random();
    assert_eq!(store.get_draft(unknown).await.unwrap(), None);
    assert!(matches!(
        store.save_draft(unknown, "x", Some(0), "ed", at).await,
        Err(RepositoryError::NotFound(_))
    ));
}

const UP: &str = include_str!("../../../migrations/2026-12-05-200001_script_versions/up.sql");
const DOWN: &str = include_str!("../../../migrations/2026-12-05-200001_script_versions/down.sql");
/// The later migration that extends `script_versions`: reverted before and
/// applied again after the one under test.
const FILES_UP: &str = include_str!("../../../migrations/2026-12-06-100001_project_files/up.sql");
const FILES_DOWN: &str =
    include_str!("../../../migrations/2026-12-06-100001_project_files/down.sql");

/// A row as the previous server writes it: no version, no pointer.
fn legacy_insert(id: ScriptId, name: &str, content: &str) -> String {
    format!(
        "INSERT INTO scripts (id, script_name, script_type, script_content, content_hash, parsed_content)
         SELECT '{id}', '{name}', script_type, '{content}', '{hash}', parsed_content
         FROM scripts LIMIT 1",
        hash = content_hash(content)
    )
}

#[tokio::test]
async fn the_migration_makes_every_existing_script_its_version_one() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let template = session_script("template");
    store.insert(&template).await.unwrap();
    db.try_execute(FILES_DOWN).await.unwrap();
    db.try_execute(DOWN).await.unwrap();
    let old = ScriptId::new_random();
    db.try_execute(&legacy_insert(old, "old", "# old\n"))
        .await
        .unwrap();

    db.try_execute(UP).await.unwrap();
    db.try_execute(FILES_UP).await.unwrap();
    let script = store.get(old).await.unwrap().unwrap();
    assert_eq!(script.current_version, 1);
    let version = store.get_version(old, 1).await.unwrap().unwrap();
    assert_eq!(version.content, "# old\n");
    assert_eq!(version.content_hash, content_hash("# old\n"));
    assert_eq!(version.document, script.document);
    assert_eq!(version.note, "migrated");
    assert_eq!(store.list_versions(template.id).await.unwrap().len(), 1);
    assert_eq!(db.count("script_versions", "true").await, 2);
}

#[tokio::test]
async fn content_written_by_the_previous_server_becomes_a_new_version() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let template = session_script("template");
    store.insert(&template).await.unwrap();

    // Its import of a new script.
    let id = ScriptId::new_random();
    db.try_execute(&legacy_insert(id, "legacy", "# legacy v1\n"))
        .await
        .unwrap();
    let script = store.get(id).await.unwrap().unwrap();
    assert_eq!(script.current_version, 1);
    assert_eq!(
        store.get_version(id, 1).await.unwrap().unwrap().content,
        "# legacy v1\n"
    );

    // Its import over that script.
    db.try_execute(&format!(
        "UPDATE scripts SET script_content = '# legacy v2\n', content_hash = '{}' WHERE id = '{id}'",
        content_hash("# legacy v2\n")
    ))
    .await
    .unwrap();
    let script = store.get(id).await.unwrap().unwrap();
    assert_eq!(script.current_version, 2);
    let numbers: Vec<u32> = store
        .list_versions(id)
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(numbers, vec![2, 1]);
    assert_eq!(
        store
            .get_version(id, 2)
            .await
            .unwrap()
            .unwrap()
            .content_hash,
        content_hash("# legacy v2\n")
    );

    // This server's own writes record nothing beyond their versions.
    let (after, v3) = next_version(&script, 3, "# v3\n");
    store.publish(&after, &v3).await.unwrap();
    store
        .set_current_version(id, 1, after.updated_at)
        .await
        .unwrap();
    assert_eq!(store.latest_version_number(id).await.unwrap(), Some(3));
    assert_eq!(
        db.count("script_versions", &format!("script_id = '{id}'"))
            .await,
        3
    );
}
