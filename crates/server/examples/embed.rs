//! Embedding the HeartRule engine in another Rust service: the in-memory
//! store, the offline mock LLM, one script, one conversation.
//!
//! ```text
//! cargo run --example embed -p heartrule-server
//! ```
//!
//! A real service swaps the adapters: `PgStore` for the store, the LLM stack
//! of `heartrule_llm::build` for the mock; the domain services stay the same.

use heartrule_domain::{
    Actor, CreateSession, LoadMode, ProcessInput, ScriptCatalog, ScriptImport, SessionManager,
    SessionManagerConfig,
};
use heartrule_llm::MockProvider;
use heartrule_persistence::MemoryStore;
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use std::sync::Arc;

const SCRIPT: &str = include_str!("../../../examples/scripts/hello.yaml");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), heartrule_domain::DomainError> {
    // The engine runs scripts; it asks the LLM port for every reply.
    let engine = HeartRuleEngine::new(
        Arc::new(MockProvider::new()),
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions::default(),
    );
    // One store behind every storage port, shared by the two services.
    let adapters = MemoryStore::new().adapters(Arc::new(engine));
    let catalog = ScriptCatalog::new(adapters.clone());
    let manager = SessionManager::new(adapters, SessionManagerConfig::default());

    // Scripts are stored by an editor (or the local operator, as here).
    let script = catalog
        .import(
            &Actor::local_operator(),
            ScriptImport {
                name: "hello".into(),
                content: SCRIPT.into(),
                description: None,
                tags: Vec::new(),
                mode: LoadMode::Strict,
            },
        )
        .await?
        .script;

    // A session runs its first turn at once: the AI speaks first.
    let mut turn = manager
        .create_session(CreateSession {
            user_id: "embedding-example".into(),
            script_id: script.id,
            initial_variables: serde_json::Map::new(),
        })
        .await?;
    for user in ["Call me Sam"] {
        for message in &turn.messages {
            println!("AI:   {}", message.content);
        }
        println!("User: {user}");
        turn = manager
            .process_input(ProcessInput {
                session_id: turn.session_id,
                content: user.into(),
                idempotency: None,
                sink: None,
            })
            .await?;
    }
    for message in &turn.messages {
        println!("AI:   {}", message.content);
    }
    println!(
        "Session {} is {}; visitor_name = {}",
        turn.session_id,
        turn.session_status.as_str(),
        turn.variables.flat()["visitor_name"]
    );
    Ok(())
}
