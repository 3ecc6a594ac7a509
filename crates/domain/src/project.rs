//! Projects: a session script with the files that travel with it
//! (techniques, prompt templates, conversation tests), edited in the draft
//! and frozen together into each published version.

use crate::catalog::content_hash;
use crate::engine::{LoadMode, ScriptEngine, ValidationErrorType, ValidationIssue};
use crate::error::{DomainError, ErrorKind};
use crate::script::{Script, ScriptDocument, ScriptVersion, TechniqueScript};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What a project file is, which decides where its path may point and how
/// publishing treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A technique script `use_skill` may run; publishing validates it.
    Technique,
    /// A prompt template at an engine template path; it overrides the
    /// engine's template at the same path for sessions of the version.
    Template,
    /// A conversation test file, stored as written.
    Test,
}

impl FileType {
    /// The stored and serialized spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Technique => "technique",
            Self::Template => "template",
            Self::Test => "test",
        }
    }

    /// The type spelled `text`, if any.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "technique" => Some(Self::Technique),
            "template" => Some(Self::Template),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

/// One file of a project, as published in a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectFile {
    /// Relative path, unique in the project (see [`check_file_path`]).
    pub path: String,
    /// What the file is; decides where its path may point.
    pub file_type: FileType,
    /// The file's text, as written.
    pub content: String,
}

/// A file of a project's draft, with its last edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DraftFile {
    /// The file itself.
    #[serde(flatten)]
    pub file: ProjectFile,
    /// When it was written last.
    pub updated_at: DateTime<Utc>,
    /// Subject of the editor who wrote it last.
    pub updated_by: String,
}

/// A change to one draft file (see
/// [`crate::ScriptRepository::write_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileWrite {
    /// Adds a file; its path must be free.
    Create(ProjectFile),
    /// Replaces the content (and type) of an existing file.
    Replace(ProjectFile),
    /// Removes the file at this path.
    Delete(String),
}

impl FileWrite {
    /// The path the write touches.
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Self::Create(f) | Self::Replace(f) => &f.path,
            Self::Delete(path) => path,
        }
    }
}

/// The longest file path accepted.
pub const MAX_FILE_PATH_LEN: usize = 255;
/// Where template files live: the engine's template virtual paths.
pub const TEMPLATE_ROOT: &str = "_system/config/";
/// The scheme every project has: the default template layer.
pub const DEFAULT_SCHEME: &str = "default";

/// The identity hash of a published version: what sessions started on it
/// record and what keys the parsed-version caches. Without files it is
/// [`content_hash`] of the session script, so versions published before
/// projects had files keep their hash; with files it covers the script
/// and every file (path, type, content) in path order, each part
/// length-prefixed so no two different versions can hash alike by moving
/// text between parts.
#[must_use]
pub fn version_hash(content: &str, files: &[ProjectFile]) -> String {
    if files.is_empty() {
        return content_hash(content);
    }
    let mut sorted: Vec<&ProjectFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(b"heartrule-version-v1");
    part(content.as_bytes());
    for file in sorted {
        part(file.path.as_bytes());
        part(file.file_type.as_str().as_bytes());
        part(file.content.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn invalid_path(path: &str, message: String, expected: &str) -> DomainError {
    DomainError::new(ErrorKind::ScriptValidation(vec![ValidationIssue {
        path: "path".into(),
        error_type: ValidationErrorType::ConstraintViolation,
        message,
        expected: Some(expected.to_owned()),
        actual: Some(path.to_owned()),
        suggestion: None,
        line: None,
        column: None,
    }]))
}

/// True for a name safe as one path component of a template scheme.
#[must_use]
pub fn is_valid_scheme(scheme: &str) -> bool {
    (1..=100).contains(&scheme.len())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks that `path` is a safe relative path of a project file of type
/// `file_type`: no empty, `.` or `..` component, not absolute, no
/// backslash or control character, at most [`MAX_FILE_PATH_LEN`] bytes;
/// a template must be `_system/config/default/<file>.md` or
/// `_system/config/custom/<scheme>/<file>.md`, a technique a `.yaml` (or
/// `.yml`) file under `techniques/`, a test `tests/<name>.test.yaml`.
/// Fails with `SCRIPT_VALIDATION_ERROR` naming the rule broken.
pub fn check_file_path(path: &str, file_type: FileType) -> Result<(), DomainError> {
    if path.is_empty() || path.len() > MAX_FILE_PATH_LEN {
        return Err(invalid_path(
            path,
            format!("a file path is 1 to {MAX_FILE_PATH_LEN} bytes long"),
            "a shorter relative path",
        ));
    }
    if path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid_path(
            path,
            "a file path is relative, uses `/` between non-empty components and has no `.` or `..` component".into(),
            "a path like `techniques/my_technique.yaml`",
        ));
    }
    let ok = match file_type {
        FileType::Template => template_key(path).is_some(),
        FileType::Technique => {
            path.starts_with("techniques/") && (path.ends_with(".yaml") || path.ends_with(".yml"))
        }
        FileType::Test => path.starts_with("tests/") && path.ends_with(".test.yaml"),
    };
    if ok {
        return Ok(());
    }
    let expected = match file_type {
        FileType::Template => {
            "`_system/config/default/<file>.md` or `_system/config/custom/<scheme>/<file>.md`"
        }
        FileType::Technique => "`techniques/<name>.yaml`",
        FileType::Test => "`tests/<name>.test.yaml`",
    };
    Err(invalid_path(
        path,
        format!("a {} file must be at {expected}", file_type.as_str()),
        expected,
    ))
}

/// The engine's relative template path (`default/<file>.md`,
/// `custom/<scheme>/<file>.md`) of a template file's virtual path, or
/// `None` when `path` is no template path.
#[must_use]
pub fn template_key(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(TEMPLATE_ROOT)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let file_ok = |f: &str| f.len() > 3 && f.ends_with(".md");
    let ok = match parts.as_slice() {
        ["default", file] => file_ok(file),
        ["custom", scheme, file] => is_valid_scheme(scheme) && file_ok(file),
        _ => false,
    };
    ok.then_some(rest)
}

/// The template scheme a template file's virtual path belongs to
/// (`default` or the custom scheme's name).
#[must_use]
pub fn template_scheme(path: &str) -> Option<&str> {
    let key = template_key(path)?;
    match key.split('/').collect::<Vec<_>>().as_slice() {
        ["custom", scheme, _] => Some(scheme),
        _ => Some(DEFAULT_SCHEME),
    }
}

/// Everything a session needs of one published version, parsed once and
/// cached by (script id, version hash): the session document, the
/// techniques of its technique files by technique id, and its template
/// files by the engine's relative template path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionBundle {
    /// The version's session (or technique) script.
    pub document: ScriptDocument,
    /// The version's technique files, by technique id.
    #[serde(default)]
    pub techniques: BTreeMap<String, TechniqueScript>,
    /// The version's template files, by the engine's relative template
    /// path (`default/ai_ask_v1.md`, `custom/<scheme>/ai_ask_v1.md`).
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
}

impl VersionBundle {
    /// A bundle of a version without files.
    #[must_use]
    pub fn of_document(document: ScriptDocument) -> Self {
        Self {
            document,
            techniques: BTreeMap::new(),
            templates: BTreeMap::new(),
        }
    }
}

impl VersionBundle {
    /// The bundle of `version`: its document, its technique files loaded
    /// by `engine` (compatibly: publishing validated them in its mode)
    /// keyed by technique id, its template files keyed by the engine's
    /// relative template path. A technique file that no longer loads is a
    /// `SCRIPT_VALIDATION_ERROR` naming the file.
    pub fn build<E: ScriptEngine + ?Sized>(
        engine: &E,
        version: &ScriptVersion,
    ) -> Result<Self, DomainError> {
        let mut bundle = Self::of_document(version.document.clone());
        for file in &version.files {
            match file.file_type {
                FileType::Technique => {
                    let parsed = engine
                        .load(&file.content, LoadMode::Compatible)
                        .map_err(|e| {
                            let issues = e
                                .issues()
                                .into_iter()
                                .map(|mut issue| {
                                    issue.path = format!("files[{}].{}", file.path, issue.path);
                                    issue
                                })
                                .collect();
                            DomainError::new(ErrorKind::ScriptValidation(issues))
                                .with_script(version.script_id, None)
                        })?;
                    if let ScriptDocument::Technique(t) = parsed.document {
                        bundle.techniques.insert(t.technique_id.clone(), t);
                    }
                }
                FileType::Template => {
                    if let Some(key) = template_key(&file.path) {
                        bundle
                            .templates
                            .insert(key.to_owned(), file.content.clone());
                    }
                }
                FileType::Test => {}
            }
        }
        Ok(bundle)
    }
}

/// A project's lifecycle, beside the script's own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatus {
    /// Starts new sessions.
    Active,
    /// Starts no new sessions; running ones go on.
    Deprecated,
}

/// A project as listed: the script, when it was deprecated, how many
/// files its draft has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    /// The session script at its current version.
    pub script: Script,
    /// `None` while the project is active.
    pub deprecated_at: Option<DateTime<Utc>>,
    /// How many files the draft holds.
    pub file_count: usize,
}

impl ProjectSummary {
    /// Active or deprecated.
    #[must_use]
    pub fn status(&self) -> ProjectStatus {
        if self.deprecated_at.is_some() {
            ProjectStatus::Deprecated
        } else {
            ProjectStatus::Active
        }
    }
}

/// Filters and paging of the project list. Only session scripts are
/// projects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectFilter {
    /// Only projects in this state; when `None`, deprecated ones only with
    /// `include_deprecated`.
    pub status: Option<ProjectStatus>,
    /// Case-insensitive substring of the name or the description.
    pub search: Option<String>,
    /// Projects of exactly this author.
    pub author: Option<String>,
    /// Projects carrying this tag.
    pub tag: Option<String>,
    /// With no `status`, list deprecated projects too.
    pub include_deprecated: bool,
    /// Page size.
    pub limit: usize,
    /// Matches skipped before the page.
    pub offset: usize,
}

impl Default for ProjectFilter {
    fn default() -> Self {
        Self {
            status: None,
            search: None,
            author: None,
            tag: None,
            include_deprecated: false,
            limit: 50,
            offset: 0,
        }
    }
}

impl ProjectFilter {
    /// Whether `project` passes every filter but paging (the rule the
    /// stores implement).
    #[must_use]
    pub fn matches(&self, project: &ProjectSummary) -> bool {
        let script = &project.script;
        let status_ok = match self.status {
            Some(status) => project.status() == status,
            None => self.include_deprecated || project.deprecated_at.is_none(),
        };
        let search_ok = self.search.as_deref().is_none_or(|needle| {
            let needle = needle.to_lowercase();
            script.name.to_lowercase().contains(&needle)
                || script.description.to_lowercase().contains(&needle)
        });
        status_ok
            && search_ok
            && script.script_type == crate::script::ScriptType::Session
            && self.author.as_deref().is_none_or(|a| script.author == a)
            && self
                .tag
                .as_deref()
                .is_none_or(|t| script.tags.iter().any(|x| x == t))
    }
}

/// A page of the project list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectPage {
    /// Newest first.
    pub projects: Vec<ProjectSummary>,
    /// How many projects pass the filters, all pages together.
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> ProjectFile {
        ProjectFile {
            path: path.into(),
            file_type: FileType::Technique,
            content: content.into(),
        }
    }

    #[test]
    fn version_hash_without_files_is_the_content_hash() {
        assert_eq!(version_hash("a: 1", &[]), content_hash("a: 1"));
    }

    #[test]
    fn version_hash_covers_files_in_path_order() {
        let a = file("techniques/a.yaml", "x");
        let b = file("techniques/b.yaml", "y");
        let both = version_hash("s", &[a.clone(), b.clone()]);
        assert_eq!(both, version_hash("s", &[b.clone(), a.clone()]));
        assert_ne!(both, content_hash("s"));
        assert_ne!(both, version_hash("s", std::slice::from_ref(&a)));
        let moved = [
            file("techniques/a.yaml", "xy"),
            file("techniques/b.yaml", ""),
        ];
        assert_ne!(both, version_hash("s", &moved));
        let mut retyped = a.clone();
        retyped.file_type = FileType::Test;
        assert_ne!(version_hash("s", &[a]), version_hash("s", &[retyped]));
    }

    #[test]
    fn file_paths_are_checked_per_type() {
        let ok = [
            ("techniques/socratic.yaml", FileType::Technique),
            ("_system/config/default/ai_ask_v1.md", FileType::Template),
            (
                "_system/config/custom/warm/ai_say_v1.md",
                FileType::Template,
            ),
            ("tests/intake.test.yaml", FileType::Test),
        ];
        for (path, t) in ok {
            assert!(check_file_path(path, t).is_ok(), "{path}");
        }
        let bad = [
            ("../techniques/x.yaml", FileType::Technique),
            ("/techniques/x.yaml", FileType::Technique),
            ("techniques//x.yaml", FileType::Technique),
            ("techniques/./x.yaml", FileType::Technique),
            ("techniques/x.txt", FileType::Technique),
            ("_system/config/other/ai_ask_v1.md", FileType::Template),
            ("_system/config/custom/bad scheme/a.md", FileType::Template),
            ("_system/config/default/a.txt", FileType::Template),
            ("tests/x.yaml", FileType::Test),
        ];
        for (path, t) in bad {
            let e = check_file_path(path, t).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::ScriptValidationError, "{path}");
        }
        let long = format!("techniques/{}.yaml", "a".repeat(250));
        assert!(check_file_path(&long, FileType::Technique).is_err());
    }

    #[test]
    fn template_paths_map_to_engine_keys_and_schemes() {
        let custom = "_system/config/custom/warm/ai_say_v1.md";
        assert_eq!(template_key(custom), Some("custom/warm/ai_say_v1.md"));
        assert_eq!(template_scheme(custom), Some("warm"));
        let default = "_system/config/default/ai_ask_v1.md";
        assert_eq!(template_key(default), Some("default/ai_ask_v1.md"));
        assert_eq!(template_scheme(default), Some("default"));
        assert_eq!(template_key("techniques/a.yaml"), None);
    }
}
