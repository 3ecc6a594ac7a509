//! Projects on both stores (the contract): draft files written against the
//! draft revision, files frozen into versions, a draft replaced whole, the
//! project list with its filters and paging, deprecation. And on
//! PostgreSQL: reverting the project-files migration and applying it again
//! keeps scripts, versions and sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::Duration;
use heartrule_domain::{
    version_hash, FileType, FileWrite, ProjectFile, ProjectFilter, ProjectStatus, RepositoryError,
    Script, ScriptRepository, ScriptVersion, SessionRepository,
};
use support::fixtures::*;

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
    };
}

contract!(
    files_are_written_against_the_draft_revision,
    a_version_keeps_its_files_and_a_draft_is_replaced_whole,
    projects_are_listed_filtered_and_paged,
    a_project_is_deprecated_and_restored_once,
);

fn file(path: &str, file_type: FileType, content: &str) -> ProjectFile {
    ProjectFile {
        path: path.into(),
        file_type,
        content: content.into(),
    }
}

async fn files_are_written_against_the_draft_revision<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let at = script.updated_at + Duration::seconds(1);
    let technique = file("techniques/a.yaml", FileType::Technique, "topic: a\n");

    let draft = store
        .write_file(
            script.id,
            &FileWrite::Create(technique.clone()),
            Some(0),
            "ed",
            at,
        )
        .await
        .unwrap();
    assert_eq!(draft.revision, 1);
    assert_eq!(draft.content, script.content, "the script is untouched");
    assert!(matches!(
        store
            .write_file(
                script.id,
                &FileWrite::Create(technique.clone()),
                Some(1),
                "ed",
                at
            )
            .await,
        Err(RepositoryError::Conflict(_))
    ));
    // A write based on a stale revision changes nothing.
    let stale = file("techniques/a.yaml", FileType::Technique, "topic: stale\n");
    assert!(matches!(
        store
            .write_file(script.id, &FileWrite::Replace(stale), Some(0), "other", at)
            .await,
        Err(RepositoryError::Conflict(_))
    ));
    let template = file(
        "_system/config/default/ai_say_v1.md",
        FileType::Template,
        "t",
    );
    store
        .write_file(
            script.id,
            &FileWrite::Create(template.clone()),
            None,
            "ed",
            at,
        )
        .await
        .unwrap();
    let files = store.list_files(script.id).await.unwrap();
    let listed: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.file.path.as_str(), f.file.content.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("_system/config/default/ai_say_v1.md", "t"),
            ("techniques/a.yaml", "topic: a\n")
        ],
        "path order, the stale write left out"
    );
    assert_eq!(files[1].updated_by, "ed");
    assert_eq!(files[1].updated_at, at);

    let replaced = file("techniques/a.yaml", FileType::Technique, "topic: b\n");
    let draft = store
        .write_file(script.id, &FileWrite::Replace(replaced), Some(2), "ed", at)
        .await
        .unwrap();
    assert_eq!(draft.revision, 3);
    let draft = store
        .write_file(
            script.id,
            &FileWrite::Delete("_system/config/default/ai_say_v1.md".into()),
            Some(3),
            "ed",
            at,
        )
        .await
        .unwrap();
    assert_eq!(draft.revision, 4);
    let files = store.list_files(script.id).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file.content, "topic: b\n");

    for write in [
        FileWrite::Delete("techniques/none.yaml".into()),
        FileWrite::Replace(file("techniques/none.yaml", FileType::Technique, "")),
    ] {
        assert!(matches!(
            store.write_file(script.id, &write, Some(4), "ed", at).await,
            Err(RepositoryError::NotFound(_))
        ));
    }
    assert_eq!(
        store.get_draft(script.id).await.unwrap().unwrap().revision,
        4
    );
    let ghost = session_script("ghost");
    assert!(matches!(
        store
            .write_file(ghost.id, &FileWrite::Create(technique), None, "ed", at)
            .await,
        Err(RepositoryError::NotFound(_))
    ));
    assert!(store.list_files(ghost.id).await.unwrap().is_empty());
}

/// `script` published as version 2 with `files`.
fn version_with_files(script: &Script, files: Vec<ProjectFile>) -> (Script, ScriptVersion) {
    let content = "# with files\n";
    let version = ScriptVersion {
        script_id: script.id,
        number: 2,
        content: content.into(),
        content_hash: version_hash(content, &files),
        document: script.document.clone(),
        files,
        author: "ed".into(),
        note: "files".into(),
        warnings: vec![],
        created_at: script.updated_at + Duration::seconds(2),
    };
    let mut after = script.clone();
    after.content = version.content.clone();
    after.content_hash = version.content_hash.clone();
    after.current_version = 2;
    after.updated_at = version.created_at;
    (after, version)
}

async fn a_version_keeps_its_files_and_a_draft_is_replaced_whole<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let files = vec![
        file("techniques/a.yaml", FileType::Technique, "topic: a\n"),
        file("tests/a.test.yaml", FileType::Test, "steps: []\n"),
    ];
    let (after, v2) = version_with_files(&script, files.clone());
    store.publish(&after, &v2).await.unwrap();
    assert_eq!(
        store.get_version(script.id, 2).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        store
            .find_version_by_hash(script.id, &v2.content_hash)
            .await
            .unwrap()
            .map(|v| v.files),
        Some(files.clone())
    );
    assert!(
        store
            .get_version(script.id, 1)
            .await
            .unwrap()
            .unwrap()
            .files
            .is_empty(),
        "version 1 has none"
    );

    let at = after.updated_at + Duration::seconds(1);
    let draft = store
        .replace_draft(script.id, "# restored\n", &files, Some(0), "ed", at)
        .await
        .unwrap();
    assert_eq!(
        (draft.revision, draft.content.as_str()),
        (1, "# restored\n")
    );
    let stored: Vec<ProjectFile> = store
        .list_files(script.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.file)
        .collect();
    assert_eq!(stored, files);
    assert!(matches!(
        store
            .replace_draft(script.id, "# late\n", &[], Some(0), "ed", at)
            .await,
        Err(RepositoryError::Conflict(_))
    ));
    store
        .replace_draft(script.id, "# none\n", &[], None, "ed", at)
        .await
        .unwrap();
    assert!(store.list_files(script.id).await.unwrap().is_empty());

    // A project inserted with files (a copy) has them in its draft.
    let copy = session_script("copy");
    let first = ScriptVersion {
        script_id: copy.id,
        files: files.clone(),
        ..ScriptVersion::first_of(&copy)
    };
    store.insert_with_version(&copy, &first).await.unwrap();
    assert_eq!(store.list_files(copy.id).await.unwrap().len(), 2);
    assert_eq!(
        store
            .get_project(copy.id)
            .await
            .unwrap()
            .unwrap()
            .file_count,
        2
    );
}

async fn projects_are_listed_filtered_and_paged<S: ScriptRepository>(store: &S) {
    let base = now();
    let mut names = Vec::new();
    for (i, (name, author, tags, description)) in [
        ("Intake", "alice", vec!["cbt"], "First meeting"),
        (
            "Follow-up",
            "bob",
            vec!["cbt", "weekly"],
            "A weekly CHECK-in",
        ),
        ("Sleep", "alice", vec![], "Sleep hygiene, 100% practical"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut script = session_script_at(name, base + Duration::seconds(i as i64));
        script.author = author.into();
        script.tags = tags.into_iter().map(str::to_owned).collect();
        script.description = description.into();
        store.insert(&script).await.unwrap();
        names.push(script);
    }
    store
        .insert(&technique_script("Technique", "t1"))
        .await
        .unwrap();
    let listed = |filter: ProjectFilter| async move {
        let page = store.list_projects(&filter).await.unwrap();
        let names: Vec<String> = page
            .projects
            .iter()
            .map(|p| p.script.name.clone())
            .collect();
        (names, page.total)
    };
    assert_eq!(
        listed(ProjectFilter::default()).await,
        (vec!["Sleep".into(), "Follow-up".into(), "Intake".into()], 3),
        "session scripts only, newest first"
    );
    let search = |s: &str| ProjectFilter {
        search: Some(s.into()),
        ..ProjectFilter::default()
    };
    assert_eq!(listed(search("check")).await, (vec!["Follow-up".into()], 1));
    assert_eq!(listed(search("INTA")).await, (vec!["Intake".into()], 1));
    assert_eq!(listed(search("0%")).await, (vec!["Sleep".into()], 1));
    assert_eq!(listed(search("_")).await, (vec![], 0), "no wildcard");
    let by_author = ProjectFilter {
        author: Some("alice".into()),
        ..ProjectFilter::default()
    };
    assert_eq!(
        listed(by_author).await,
        (vec!["Sleep".into(), "Intake".into()], 2)
    );
    let by_tag = ProjectFilter {
        tag: Some("cbt".into()),
        ..ProjectFilter::default()
    };
    assert_eq!(
        listed(by_tag).await,
        (vec!["Follow-up".into(), "Intake".into()], 2)
    );
    let paged = ProjectFilter {
        limit: 1,
        offset: 1,
        ..ProjectFilter::default()
    };
    assert_eq!(listed(paged).await, (vec!["Follow-up".into()], 3));

    let sleep = &names[2];
    store
        .set_deprecated(sleep.id, Some(base), base)
        .await
        .unwrap();
    assert_eq!(listed(ProjectFilter::default()).await.1, 2);
    let with_deprecated = ProjectFilter {
        include_deprecated: true,
        ..ProjectFilter::default()
    };
    assert_eq!(listed(with_deprecated).await.1, 3);
    let deprecated = ProjectFilter {
        status: Some(ProjectStatus::Deprecated),
        ..ProjectFilter::default()
    };
    assert_eq!(listed(deprecated).await, (vec!["Sleep".into()], 1));
}

async fn a_project_is_deprecated_and_restored_once<S: ScriptRepository>(store: &S) {
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let at = script.updated_at + Duration::seconds(5);
    let project = store.get_project(script.id).await.unwrap().unwrap();
    assert_eq!((project.deprecated_at, project.file_count), (None, 0));

    let deprecated = store.set_deprecated(script.id, Some(at), at).await.unwrap();
    assert_eq!(deprecated.deprecated_at, Some(at));
    assert_eq!(deprecated.status(), ProjectStatus::Deprecated);
    assert_eq!(deprecated.script.updated_at, at);
    assert!(matches!(
        store.set_deprecated(script.id, Some(at), at).await,
        Err(RepositoryError::Conflict(_))
    ));
    let restored = store.set_deprecated(script.id, None, at).await.unwrap();
    assert_eq!(restored.deprecated_at, None);
    assert!(matches!(
        store.set_deprecated(script.id, None, at).await,
        Err(RepositoryError::Conflict(_))
    ));
    assert!(matches!(
        store
            .set_deprecated(session_script("ghost").id, None, at)
            .await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(
        store.get_project(session_script("ghost").id).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn reverting_the_project_files_migration_keeps_scripts_versions_and_sessions() {
    let db = support::TestDb::new().await;
    let store = db.store().await;
    let script = session_script("intake");
    store.insert(&script).await.unwrap();
    let (after, v2) = version_with_files(
        &script,
        vec![file("techniques/a.yaml", FileType::Technique, "topic: a\n")],
    );
    store.publish(&after, &v2).await.unwrap();
    let session = new_session(script.id, "u1");
    store.create(&first_turn(session.clone())).await.unwrap();

    let down = include_str!("../../../migrations/2026-12-06-100001_project_files/down.sql");
    let up = include_str!("../../../migrations/2026-12-06-100001_project_files/up.sql");
    db.try_execute(down).await.unwrap();
    assert_eq!(db.count("scripts", "true").await, 1);
    assert_eq!(db.count("script_versions", "true").await, 2);
    assert_eq!(db.count("sessions", "true").await, 1);
    db.try_execute(up).await.unwrap();

    let store = db.store().await;
    assert_eq!(
        ScriptRepository::get(&store, script.id).await.unwrap(),
        Some(after)
    );
    // The version keeps its number and hash; its files went with the column.
    let kept = store.get_version(script.id, 2).await.unwrap().unwrap();
    assert_eq!((kept.number, kept.content_hash), (2, v2.content_hash));
    assert!(kept.files.is_empty());
    assert_eq!(
        SessionRepository::get(&store, session.id)
            .await
            .unwrap()
            .map(|s| s.script_hash),
        Some(session.script_hash)
    );
}
