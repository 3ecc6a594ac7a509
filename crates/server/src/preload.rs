//! Imports the example scripts at start-up so a newcomer can chat at once.

use crate::conversation_tests::is_test_file;
use anyhow::Context;
use heartrule_domain::{Actor, LoadMode, Ports, ScriptCatalog, ScriptImport};
use std::path::{Path, PathBuf};

/// Imports every `*.yaml` in `dir/techniques/` and `dir/` (upsert by file
/// stem) but the conversation tests (`*.test.yaml`). A missing folder is not an error; a script that fails to load is.
pub(crate) async fn import_dir<P: Ports>(
    catalog: &ScriptCatalog<P>,
    dir: &Path,
) -> anyhow::Result<usize> {
    if !dir.is_dir() {
        tracing::info!(dir = %dir.display(), "no script folder to preload");
        return Ok(0);
    }
    let mut files = yaml_files(&dir.join("techniques"))?;
    files.extend(yaml_files(dir)?);
    for path in &files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("script file name {} is not UTF-8", path.display()))?
            .to_owned();
        let content =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // The server itself imports them, with every role.
        let stored = catalog
            .import(
                &Actor::local_operator(),
                ScriptImport {
                    name: name.clone(),
                    content,
                    description: None,
                    tags: vec!["example".into()],
                    mode: LoadMode::Compatible,
                },
            )
            .await
            .with_context(|| format!("importing {}", path.display()))?;
        tracing::info!(
            script.name = %name,
            script.id = %stored.script.id,
            warnings = stored.warnings.len(),
            "example script imported"
        );
    }
    Ok(files.len())
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        // Conversation tests live beside their scripts; they are no scripts.
        if path.is_file() && is_yaml && !is_test_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_llm::MockProvider;
    use heartrule_persistence::MemoryStore;
    use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
    use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
    use std::sync::Arc;

    #[tokio::test]
    async fn the_examples_are_imported_without_their_conversation_tests() {
        let engine = HeartRuleEngine::new(
            Arc::new(MockProvider::new()),
            Arc::new(EmbeddedTemplates::new()),
            EngineOptions::default(),
        );
        let catalog = ScriptCatalog::new(MemoryStore::new().adapters(Arc::new(engine)));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scripts");
        assert!(dir.join("hello.test.yaml").is_file());
        let imported = import_dir(&catalog, &dir).await.unwrap();
        assert_eq!(
            imported, 4,
            "hello, cbt_intake, deprecated_fields and the technique"
        );
    }
}
