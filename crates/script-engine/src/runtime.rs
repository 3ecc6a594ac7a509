//! Turn execution: [`HeartRuleEngine`] walks
//! phases → topics → actions from the saved position, runs `ai_say`,
//! `ai_ask`, `ai_think` and `use_skill`, pauses by one rule, and returns
//! everything the turn changed in a [`heartrule_domain::TurnOutcome`].
//!
//! The support modules (placeholders, LLM JSON reading, templates, prompt
//! contracts) are public so adapters and editors can use them too.

pub mod llm_json;
pub mod placeholders;
pub mod prompts;
pub mod templates;

mod ask;
mod cursor;
mod engine;
mod exit;
mod flow;
mod monitor;
mod reply;
mod safety;
mod say;
mod skill;
mod think;
mod turn;

pub use engine::{EngineOptions, HeartRuleEngine};
pub use turn::HISTORY_TRIMMED_KEY;
