//! Prompt templates in two layers: a custom scheme's
//! file when it exists, otherwise the default file.
//!
//! Every source keeps its templates in memory, keyed by the relative path
//! (`default/ai_ask_v1.md`, `custom/<scheme>/ai_ask_v1.md`), so resolving a
//! template never touches the file system.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub use super::prompts::{
    AI_ASK_MONITOR_TEMPLATE, AI_ASK_TEMPLATE, AI_SAY_MONITOR_TEMPLATE, AI_SAY_TEMPLATE,
    AI_THINK_TEMPLATE,
};

const DEFAULT_DIR: &str = "default";
const CUSTOM_DIR: &str = "custom";
const MAX_SCHEME_LEN: usize = 100;

/// Which layer a template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateLayer {
    Custom,
    Default,
}

impl TemplateLayer {
    /// The spelling used in message metadata (`template_layer`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Default => "default",
        }
    }
}

/// A template ready for substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTemplate {
    pub text: Arc<str>,
    /// Relative path, e.g. `custom/crisis_intervention/ai_ask_v1.md`.
    pub path: String,
    pub layer: TemplateLayer,
    /// The requested scheme, also when the default layer answered.
    pub scheme: Option<String>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    #[error("default template not found: {path}; the prompt templates were not installed")]
    NotFound { path: String },
    #[error("invalid template scheme {0:?}: use 1-100 characters of A-Z, a-z, 0-9, `_` or `-`")]
    InvalidScheme(String),
    #[error("cannot read templates at {path}: {message}")]
    Io { path: String, message: String },
}

/// Where templates come from.
pub trait TemplateSource: Send + Sync {
    /// `file` like `"ai_ask_v1.md"`. Custom layer `custom/<scheme>/<file>`
    /// when `scheme` is Some and the file exists there, else
    /// `default/<file>`; a missing default → [`TemplateError::NotFound`].
    /// An empty scheme counts as none.
    fn resolve(&self, scheme: Option<&str>, file: &str) -> Result<ResolvedTemplate, TemplateError>;
}

/// True for scheme names that are safe as a single path component.
#[must_use]
pub fn is_valid_scheme(scheme: &str) -> bool {
    (1..=MAX_SCHEME_LEN).contains(&scheme.len())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Templates by relative path; the resolution rule shared by every source.
#[derive(Debug, Clone, Default)]
struct TemplateMap {
    files: HashMap<String, Arc<str>>,
}

impl TemplateMap {
    fn insert(&mut self, path: String, text: &str) {
        self.files.insert(path, Arc::from(text));
    }

    fn resolve(&self, scheme: Option<&str>, file: &str) -> Result<ResolvedTemplate, TemplateError> {
        let scheme = scheme.filter(|s| !s.is_empty());
        if let Some(scheme) = scheme {
            if !is_valid_scheme(scheme) {
                return Err(TemplateError::InvalidScheme(scheme.to_owned()));
            }
            let path = format!("{CUSTOM_DIR}/{scheme}/{file}");
            if let Some(text) = self.files.get(&path) {
                return Ok(ResolvedTemplate {
                    text: Arc::clone(text),
                    path,
                    layer: TemplateLayer::Custom,
                    scheme: Some(scheme.to_owned()),
                });
            }
            tracing::warn!(
                template.scheme = scheme,
                template.file = file,
                "custom template not found, using the default layer"
            );
        }
        let path = format!("{DEFAULT_DIR}/{file}");
        match self.files.get(&path) {
            Some(text) => Ok(ResolvedTemplate {
                text: Arc::clone(text),
                path,
                layer: TemplateLayer::Default,
                scheme: scheme.map(str::to_owned),
            }),
            None => Err(TemplateError::NotFound { path }),
        }
    }
}

/// Templates read once (at startup) from a directory laid out as
/// `<root>/default/*.md` and `<root>/custom/<scheme>/*.md`, then served from
/// memory. Sub-directories of `custom/` whose names are not valid schemes
/// are skipped with a warning.
#[derive(Debug, Clone)]
pub struct DirectoryTemplates {
    map: TemplateMap,
}

impl DirectoryTemplates {
    /// Loads every template under `root`. `root/default` must exist;
    /// `root/custom` is optional.
    pub fn load(root: &Path) -> Result<Self, TemplateError> {
        let mut map = TemplateMap::default();
        let default_dir = root.join(DEFAULT_DIR);
        load_markdown_files(&default_dir, DEFAULT_DIR, &mut map)?;

        let custom_dir = root.join(CUSTOM_DIR);
        if custom_dir.is_dir() {
            for entry in read_dir(&custom_dir)? {
                let entry = entry.map_err(|e| io_error(&custom_dir, &e))?;
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                let name = entry.file_name();
                match name.to_str().filter(|n| is_valid_scheme(n)) {
                    Some(scheme) => {
                        load_markdown_files(&path, &format!("{CUSTOM_DIR}/{scheme}"), &mut map)?;
                    }
                    None => tracing::warn!(
                        template.dir = %path.display(),
                        "skipping custom template directory with an invalid scheme name"
                    ),
                }
            }
        }
        Ok(Self { map })
    }

    /// Relative paths of every loaded template, sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<String> {
        sorted_paths(&self.map)
    }
}

impl TemplateSource for DirectoryTemplates {
    fn resolve(&self, scheme: Option<&str>, file: &str) -> Result<ResolvedTemplate, TemplateError> {
        self.map.resolve(scheme, file)
    }
}

fn io_error(path: &Path, error: &std::io::Error) -> TemplateError {
    TemplateError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

fn read_dir(dir: &Path) -> Result<std::fs::ReadDir, TemplateError> {
    std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))
}

/// Adds every `*.md` file directly inside `dir` as `<prefix>/<file name>`.
fn load_markdown_files(
    dir: &Path,
    prefix: &str,
    map: &mut TemplateMap,
) -> Result<(), TemplateError> {
    for entry in read_dir(dir)? {
        let entry = entry.map_err(|e| io_error(dir, &e))?;
        let path = entry.path();
        let is_markdown = path.extension().is_some_and(|ext| ext == "md");
        if !is_markdown || !path.is_file() {
            continue;
        }
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(template.file = %path.display(), "skipping template with a non-UTF-8 name");
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, &e))?;
        map.insert(format!("{prefix}/{file_name}"), &text);
    }
    Ok(())
}

fn sorted_paths(map: &TemplateMap) -> Vec<String> {
    let mut paths: Vec<String> = map.files.keys().cloned().collect();
    paths.sort();
    paths
}

/// The project's own templates from `config/prompts`, compiled in, so the
/// engine works with no template files on disk. Same files as on disk: one
/// source of truth.
#[derive(Debug, Clone)]
pub struct EmbeddedTemplates {
    map: TemplateMap,
}

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        [$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/prompts/", $path)))),*]
    };
}

/// Every template file shipped under `config/prompts`, by relative path.
const EMBEDDED_FILES: [(&str, &str); 6] = embedded![
    "default/ai_ask_v1.md",
    "default/ai_say_v1.md",
    "default/ai_think_v1.md",
    "default/ai_ask_monitor_v1.md",
    "default/ai_say_monitor_v1.md",
    "custom/crisis_intervention/ai_ask_v1.md",
];

impl EmbeddedTemplates {
    #[must_use]
    pub fn new() -> Self {
        let mut map = TemplateMap::default();
        for (path, text) in EMBEDDED_FILES {
            map.insert(path.to_owned(), text);
        }
        Self { map }
    }

    /// Relative paths of every embedded template, sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<String> {
        sorted_paths(&self.map)
    }
}

impl Default for EmbeddedTemplates {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateSource for EmbeddedTemplates {
    fn resolve(&self, scheme: Option<&str>, file: &str) -> Result<ResolvedTemplate, TemplateError> {
        self.map.resolve(scheme, file)
    }
}

/// In-memory templates for tests: relative path (`default/ai_ask_v1.md`) → text.
#[derive(Debug, Clone)]
pub struct MemoryTemplates {
    map: TemplateMap,
}

impl MemoryTemplates {
    pub fn new(files: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut map = TemplateMap::default();
        for (path, text) in files {
            map.insert(path, &text);
        }
        Self { map }
    }
}

impl TemplateSource for MemoryTemplates {
    fn resolve(&self, scheme: Option<&str>, file: &str) -> Result<ResolvedTemplate, TemplateError> {
        self.map.resolve(scheme, file)
    }
}

/// The default-layer template files every engine resolves.
pub const DEFAULT_FILES: [&str; 5] = [
    AI_ASK_TEMPLATE,
    AI_SAY_TEMPLATE,
    AI_THINK_TEMPLATE,
    AI_ASK_MONITOR_TEMPLATE,
    AI_SAY_MONITOR_TEMPLATE,
];

/// A project version's own templates over the engine's: at each layer a
/// version's file at the same relative path wins, so the order is the
/// version's custom file, the engine's custom file, the version's default
/// file, the engine's default file.
pub struct OverlayTemplates {
    own: TemplateMap,
    base: Arc<dyn TemplateSource>,
}

impl OverlayTemplates {
    /// `own` by relative path (`default/ai_ask_v1.md`,
    /// `custom/<scheme>/ai_ask_v1.md`) over `base`.
    pub fn new<'a>(
        own: impl IntoIterator<Item = (&'a String, &'a String)>,
        base: Arc<dyn TemplateSource>,
    ) -> Self {
        let mut map = TemplateMap::default();
        for (path, text) in own {
            map.insert(path.clone(), text);
        }
        Self { own: map, base }
    }
}

impl TemplateSource for OverlayTemplates {
    fn resolve(&self, scheme: Option<&str>, file: &str) -> Result<ResolvedTemplate, TemplateError> {
        let scheme = scheme.filter(|s| !s.is_empty());
        if let Some(scheme) = scheme {
            if !is_valid_scheme(scheme) {
                return Err(TemplateError::InvalidScheme(scheme.to_owned()));
            }
            let path = format!("{CUSTOM_DIR}/{scheme}/{file}");
            if let Some(text) = self.own.files.get(&path) {
                return Ok(ResolvedTemplate {
                    text: Arc::clone(text),
                    path,
                    layer: TemplateLayer::Custom,
                    scheme: Some(scheme.to_owned()),
                });
            }
            let base = self.base.resolve(Some(scheme), file);
            if matches!(&base, Ok(t) if t.layer == TemplateLayer::Custom) {
                return base;
            }
        }
        let path = format!("{DEFAULT_DIR}/{file}");
        if let Some(text) = self.own.files.get(&path) {
            return Ok(ResolvedTemplate {
                text: Arc::clone(text),
                path,
                layer: TemplateLayer::Default,
                scheme: scheme.map(str::to_owned),
            });
        }
        self.base.resolve(scheme, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn memory() -> MemoryTemplates {
        MemoryTemplates::new([
            ("default/ai_ask_v1.md".to_owned(), "默认提问".to_owned()),
            (
                "custom/crisis_intervention/ai_ask_v1.md".to_owned(),
                "危机提问".to_owned(),
            ),
        ])
    }

    #[test]
    fn custom_scheme_hit_uses_the_custom_layer() {
        let t = memory()
            .resolve(Some("crisis_intervention"), AI_ASK_TEMPLATE)
            .unwrap();
        assert_eq!(&*t.text, "危机提问");
        assert_eq!(t.layer, TemplateLayer::Custom);
        assert_eq!(t.path, "custom/crisis_intervention/ai_ask_v1.md");
        assert_eq!(t.scheme.as_deref(), Some("crisis_intervention"));
    }

    #[test]
    fn unknown_scheme_or_no_scheme_falls_back_to_default() {
        let source = memory();
        for scheme in [Some("nope"), None, Some("")] {
            let t = source.resolve(scheme, AI_ASK_TEMPLATE).unwrap();
            assert_eq!(&*t.text, "默认提问");
            assert_eq!(t.layer, TemplateLayer::Default);
            assert_eq!(t.path, "default/ai_ask_v1.md");
        }
        let t = source.resolve(Some("nope"), AI_ASK_TEMPLATE).unwrap();
        assert_eq!(t.scheme.as_deref(), Some("nope"));
    }

    #[test]
    fn missing_default_is_not_found() {
        let err = memory()
            .resolve(Some("crisis_intervention"), AI_SAY_TEMPLATE)
            .unwrap_err();
        assert_eq!(
            err,
            TemplateError::NotFound {
                path: "default/ai_say_v1.md".to_owned()
            }
        );
    }

    #[test]
    fn unsafe_schemes_are_rejected() {
        let long = "a".repeat(101);
        for bad in ["../x", "a/b", "a b", "..", "中文", long.as_str()] {
            let err = memory().resolve(Some(bad), AI_ASK_TEMPLATE).unwrap_err();
            assert_eq!(err, TemplateError::InvalidScheme(bad.to_owned()));
        }
        assert!(is_valid_scheme(&"a".repeat(100)));
        assert!(is_valid_scheme("Crisis-2_b"));
    }

    #[test]
    fn embedded_templates_cover_every_action() {
        let source = EmbeddedTemplates::new();
        for file in [
            AI_ASK_TEMPLATE,
            AI_SAY_TEMPLATE,
            AI_THINK_TEMPLATE,
            AI_ASK_MONITOR_TEMPLATE,
            AI_SAY_MONITOR_TEMPLATE,
        ] {
            let t = source.resolve(None, file).unwrap();
            assert!(!t.text.trim().is_empty(), "{file}");
        }
        let crisis = source
            .resolve(Some("crisis_intervention"), AI_ASK_TEMPLATE)
            .unwrap();
        assert_eq!(crisis.layer, TemplateLayer::Custom);
        let say = source
            .resolve(Some("crisis_intervention"), AI_SAY_TEMPLATE)
            .unwrap();
        assert_eq!(say.layer, TemplateLayer::Default);
    }

    /// The placeholders each shipped template must use, and only those.
    const CONTRACTS: [(&str, &[&str]); 6] = [
        (
            "default/ai_ask_v1.md",
            &[
                "time",
                "who",
                "user",
                "task",
                "chat",
                "tone",
                "exit",
                "output_list",
            ],
        ),
        (
            "custom/crisis_intervention/ai_ask_v1.md",
            &[
                "time",
                "who",
                "user",
                "task",
                "chat",
                "tone",
                "exit",
                "output_list",
            ],
        ),
        (
            "default/ai_say_v1.md",
            &[
                "time",
                "who",
                "user",
                "topic_content",
                "chat_history",
                "tone",
                "understanding_threshold",
                "current_round",
                "max_rounds",
            ],
        ),
        (
            "default/ai_think_v1.md",
            &["time", "task", "chat", "input_variables", "output_list"],
        ),
        (
            "default/ai_ask_monitor_v1.md",
            &[
                "current_round",
                "max_rounds",
                "target_variables",
                "information_completeness",
                "user_engagement",
                "emotional_intensity",
                "reply_relevance",
                "progress_suggestion",
                "engagement_trend",
                "emotion_trend",
            ],
        ),
        (
            "default/ai_say_monitor_v1.md",
            &[
                "current_round",
                "max_rounds",
                "topic_content",
                "user_engagement",
                "emotional_intensity",
                "understanding_level",
                "progress_suggestion",
                "understanding_trend",
            ],
        ),
    ];

    /// The bodies of the ```json blocks of a text.
    fn json_blocks(text: &str) -> Vec<&str> {
        text.split("```json\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect()
    }

    fn render(template: &str, output_list: &str) -> String {
        crate::runtime::placeholders::substitute(
            template,
            &|name| {
                Some(if name == "output_list" {
                    output_list.to_owned()
                } else {
                    format!("<{name}>")
                })
            },
            &|_| None,
        )
    }

    #[test]
    fn shipped_templates_use_exactly_their_contract_placeholders() {
        let embedded = EmbeddedTemplates::new();
        assert_eq!(embedded.paths().len(), CONTRACTS.len());
        for (path, expected) in CONTRACTS {
            let text = &embedded.map.files[path];
            let mut names = crate::runtime::placeholders::referenced_names(text);
            names.sort();
            let mut expected: Vec<&str> = expected.to_vec();
            expected.sort_unstable();
            assert_eq!(names, expected, "{path}");
            assert!(!render(text, "").contains("{{"), "{path}");
        }
    }

    #[test]
    fn shipped_templates_carry_the_mock_markers() {
        let embedded = EmbeddedTemplates::new();
        for path in [
            "default/ai_ask_v1.md",
            "custom/crisis_intervention/ai_ask_v1.md",
            "default/ai_think_v1.md",
        ] {
            assert!(
                embedded.map.files[path].contains("\n<task>\n{{task}}\n</task>\n"),
                "{path}"
            );
        }
        assert!(embedded.map.files["default/ai_say_v1.md"]
            .contains("\n<topic_content>\n{{topic_content}}\n</topic_content>\n"));
    }

    #[test]
    fn json_examples_are_valid_json_objects() {
        use crate::runtime::llm_json::parse_reply;
        use crate::runtime::prompts::output_list;
        use heartrule_domain::OutputField;
        let field = |get: &str, define: Option<&str>| OutputField {
            get: get.to_owned(),
            define: define.map(str::to_owned),
            scope: None,
            sensitive: false,
        };
        let plain = output_list(&[field("姓名", None), field("年龄", None)]);
        let annotated = output_list(&[field("姓名", Some("用户的姓名")), field("年龄", None)]);
        let embedded = EmbeddedTemplates::new();
        for (path, _) in CONTRACTS {
            let rendered = render(&embedded.map.files[path], &plain);
            let blocks = json_blocks(&rendered);
            assert_eq!(blocks.len(), 1, "{path}");
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(blocks[0]).unwrap_or_else(|e| panic!("{path}: {e}"));
            if rendered.contains("\"姓名\": \"提取的姓名\"") {
                assert_eq!(object["年龄"], "提取的年龄", "{path}");
            }
            // Annotated lines and an empty list are still read by the lenient parser.
            for list in [annotated.as_str(), ""] {
                let rendered = render(&embedded.map.files[path], list);
                let reply = parse_reply(json_blocks(&rendered)[0]);
                assert!(reply.object.is_some(), "{path}: {:?}", reply.error_detail);
            }
        }
        let ask = render(&embedded.map.files["default/ai_ask_v1.md"], &annotated);
        assert!(ask.contains(&annotated));
        let object = parse_reply(json_blocks(&ask)[0]).object.unwrap();
        for key in [
            "content",
            "EXIT",
            "BRIEF",
            "metrics",
            "progress_suggestion",
            "safety_risk",
            "metadata",
            "姓名",
            "年龄",
        ] {
            assert!(object.contains_key(key), "{key}");
        }
        let think = render(&embedded.map.files["default/ai_think_v1.md"], &plain);
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json_blocks(&think)[0]).unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>(), vec!["姓名", "年龄"]);
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "heartrule-templates-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn directory_templates_load_both_layers() {
        let dir = TempDir::new();
        dir.write("default/ai_ask_v1.md", "默认 {{task}}");
        dir.write("default/ai_say_v1.md", "讲解");
        dir.write("default/notes.txt", "ignored");
        dir.write("custom/calm/ai_ask_v1.md", "平静 {{task}}");
        dir.write("custom/bad name/ai_ask_v1.md", "skipped");
        dir.write("custom/readme.md", "not a scheme");

        let source = DirectoryTemplates::load(&dir.0).unwrap();
        assert_eq!(
            source.paths(),
            vec![
                "custom/calm/ai_ask_v1.md",
                "default/ai_ask_v1.md",
                "default/ai_say_v1.md"
            ]
        );
        let custom = source.resolve(Some("calm"), AI_ASK_TEMPLATE).unwrap();
        assert_eq!(&*custom.text, "平静 {{task}}");
        assert_eq!(custom.layer, TemplateLayer::Custom);
        let fallback = source.resolve(Some("calm"), AI_SAY_TEMPLATE).unwrap();
        assert_eq!(fallback.layer, TemplateLayer::Default);

        // Served from memory: later changes on disk are not seen.
        dir.write("default/ai_ask_v1.md", "changed");
        let again = source.resolve(None, AI_ASK_TEMPLATE).unwrap();
        assert_eq!(&*again.text, "默认 {{task}}");
    }

    #[test]
    fn directory_without_default_layer_is_an_io_error() {
        let dir = TempDir::new();
        dir.write("custom/calm/ai_ask_v1.md", "x");
        let err = DirectoryTemplates::load(&dir.0).unwrap_err();
        assert!(matches!(err, TemplateError::Io { ref path, .. } if path.ends_with("default")));
    }

    #[test]
    fn project_prompt_directory_matches_the_embedded_copy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/prompts");
        let on_disk = DirectoryTemplates::load(&root).unwrap();
        let embedded = EmbeddedTemplates::new();
        assert_eq!(on_disk.paths(), embedded.paths());
        for path in embedded.paths() {
            let (scheme, file) = match path.split('/').collect::<Vec<_>>()[..] {
                ["default", file] => (None, file),
                ["custom", scheme, file] => (Some(scheme), file),
                _ => panic!("unexpected path {path}"),
            };
            let a = on_disk.resolve(scheme, file).unwrap();
            let b = embedded.resolve(scheme, file).unwrap();
            assert_eq!(a, b, "{path}");
        }
    }

    #[test]
    fn a_versions_own_templates_win_at_their_layer() {
        let base: Arc<dyn TemplateSource> = Arc::new(memory());
        let own: std::collections::BTreeMap<String, String> = [
            ("default/ai_ask_v1.md".to_owned(), "项目默认".to_owned()),
            ("custom/warm/ai_ask_v1.md".to_owned(), "项目温暖".to_owned()),
        ]
        .into_iter()
        .collect();
        let overlay = OverlayTemplates::new(&own, Arc::clone(&base));
        let t = overlay.resolve(Some("warm"), AI_ASK_TEMPLATE).unwrap();
        assert_eq!((&*t.text, t.layer), ("项目温暖", TemplateLayer::Custom));
        // The engine's custom layer still beats the version's default.
        let t = overlay
            .resolve(Some("crisis_intervention"), AI_ASK_TEMPLATE)
            .unwrap();
        assert_eq!(&*t.text, "危机提问");
        let t = overlay.resolve(None, AI_ASK_TEMPLATE).unwrap();
        assert_eq!((&*t.text, t.layer), ("项目默认", TemplateLayer::Default));
        let t = overlay.resolve(Some("unknown"), AI_ASK_TEMPLATE).unwrap();
        assert_eq!(&*t.text, "项目默认");
        assert_eq!(t.scheme.as_deref(), Some("unknown"));
        assert!(matches!(
            overlay.resolve(None, AI_SAY_TEMPLATE),
            Err(TemplateError::NotFound { .. })
        ));
    }
}
