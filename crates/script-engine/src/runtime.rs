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
mod degraded;
mod engine;
mod exit;
mod flow;
mod guard;
mod monitor;
mod reply;
mod safety;
mod say;
mod skill;
mod think;
mod turn;

pub use degraded::{DEGRADED_ACTIONS_TOTAL, DEGRADED_ACTIVE};
pub use engine::{EngineOptions, HeartRuleEngine};
pub use guard::OUTPUT_GUARD_TOTAL;

use heartrule_domain::{MetricDecl, MetricSet};

/// The metrics this crate records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::counter(
            OUTPUT_GUARD_TOTAL,
            &["action_type", "outcome"],
            "AI replies checked by the output guard, by action type and outcome (passed; regenerated once with a corrective instruction; replaced by the action's scripted text).",
        ),
        MetricDecl::counter(
            DEGRADED_ACTIONS_TOTAL,
            &["action_type", "reason"],
            "Actions that ran on their scripted text without the LLM, by action type and reason (llm_unavailable: degraded mode; quota: a spent token quota with quotas.when_exceeded scripted).",
        ),
        MetricDecl::gauge(
            DEGRADED_ACTIVE,
            None,
            &[],
            "1 while degraded mode is in effect (the last LLM call of this instance found the LLM unavailable), else 0.",
        ),
    ],
};
pub use turn::HISTORY_TRIMMED_KEY;
