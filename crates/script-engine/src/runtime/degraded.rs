//! Degraded mode: the LLM unavailable and the conversation running on the
//! script's own texts. The metrics it records.

/// Counter `{action_type}` of actions that ran without the LLM in degraded
/// mode (`ai_say`, `ai_ask`, `ai_think`).
pub const DEGRADED_ACTIONS_TOTAL: &str = "heartrule_llm_degraded_actions_total";
/// Gauge: 1 after an LLM call of this instance found the LLM unavailable
/// and degraded mode took over, 0 after the next call the LLM answered.
/// Only moves while `llm.degraded_mode` is `scripted`.
pub const DEGRADED_ACTIVE: &str = "heartrule_llm_degraded_active";
