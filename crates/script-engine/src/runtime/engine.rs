//! [`HeartRuleEngine`]: the [`ScriptEngine`] port implementation.

use super::templates::{OverlayTemplates, TemplateSource, DEFAULT_FILES};
use super::turn::{Turn, TurnInput};
use async_trait::async_trait;
use heartrule_domain::{
    DegradedMode, DomainError, LlmProvider, LoadMode, ParsedScript, ScriptEngine, ScriptLoadError,
    TurnOutcome, TurnRequest,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Engine switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Run the topic-layer monitors after incomplete
    /// ai_ask / template ai_say results. Each adds one LLM call.
    pub monitors: bool,
    /// How many of the request's newest history entries prompts may see.
    pub history_window: usize,
    /// What a turn does when the LLM is unavailable: fail (`Off`, the
    /// default) or continue on the script's own texts (`Scripted`). Decided
    /// per call: when the LLM answers again, the next call uses it.
    pub degraded_mode: DegradedMode,
    /// Guard the AI replies of ai_say / ai_ask: a reply with diagnosis,
    /// prescription or guarantee language (or a flagged `safety_risk`) is
    /// regenerated once, then replaced by the action's scripted text, and
    /// streamed text is released sentence by sentence once it passed.
    pub output_guard: bool,
    /// The model's context window in tokens: a prompt whose estimate (see
    /// [`heartrule_domain::estimate_tokens`]) leaves less than the call's
    /// `max_tokens` loses its oldest history entries until it fits.
    pub context_window_tokens: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            monitors: false,
            history_window: 20,
            degraded_mode: DegradedMode::Off,
            output_guard: true,
            context_window_tokens: 128_000,
        }
    }
}

/// Runs HeartRule scripts turn by turn. Stateless between turns: everything
/// a turn needs arrives in its [`TurnRequest`].
#[derive(Clone)]
pub struct HeartRuleEngine {
    llm: Arc<dyn LlmProvider>,
    templates: Arc<dyn TemplateSource>,
    options: EngineOptions,
}

impl std::fmt::Debug for HeartRuleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartRuleEngine")
            .field("llm", &self.llm.name())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HeartRuleEngine {
    #[must_use]
    pub fn new(
        llm: Arc<dyn LlmProvider>,
        templates: Arc<dyn TemplateSource>,
        options: EngineOptions,
    ) -> Self {
        Self {
            llm,
            templates,
            options,
        }
    }

    #[must_use]
    pub fn options(&self) -> EngineOptions {
        self.options
    }
}

#[async_trait]
impl ScriptEngine for HeartRuleEngine {
    fn load(&self, yaml: &str, mode: LoadMode) -> Result<ParsedScript, ScriptLoadError> {
        crate::loader::load(yaml, mode)
    }

    /// Runs one turn. On error nothing of the turn is returned; the error's
    /// context carries the position of the failing action, and the caller
    /// keeps its previous state.
    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutcome, DomainError> {
        let TurnRequest {
            script,
            techniques,
            templates,
            state,
            user_input,
            history,
            now,
            sink,
            intent,
            llm_intents,
            llm_withheld,
            recorded,
        } = request;
        // A version's own template files override the engine's.
        let templates: Arc<dyn TemplateSource> = if templates.is_empty() {
            Arc::clone(&self.templates)
        } else {
            Arc::new(OverlayTemplates::new(
                templates.iter(),
                Arc::clone(&self.templates),
            ))
        };
        let turn = Turn::new(
            Arc::clone(&self.llm),
            templates,
            self.options,
            TurnInput {
                script,
                techniques,
                state,
                history,
                now,
                sink,
                intent,
                llm_intents,
                llm_withheld,
                recorded,
            },
        );
        turn.run(user_input).await
    }

    fn default_templates(&self) -> BTreeMap<String, String> {
        DEFAULT_FILES
            .iter()
            .filter_map(|file| {
                self.templates
                    .resolve(None, file)
                    .ok()
                    .map(|t| ((*file).to_owned(), t.text.to_string()))
            })
            .collect()
    }
}
