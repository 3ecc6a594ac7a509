//! `ai_think`: one LLM call whose JSON reply
//! fills the output variables. No message; the script continues.

use super::prompts::{beijing_time_text, chat_lines, output_list, AI_THINK_TEMPLATE};
use super::reply;
use super::turn::{ActionCall, ActionOutcome, Streaming, Turn, VariableWrite};
use heartrule_domain::{DomainError, ThinkConfig, VariableScope, LLM_RAW_OUTPUT};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Conversation entries the `ai_think` prompt shows.
const THINK_CHAT_LEN: usize = 10;
/// Reply budget of the `ai_think` call.
const THINK_MAX_TOKENS: u32 = 1000;

const MISSING_INPUT: &str = "（未提供）";
const NO_INPUTS: &str = "（无）";

pub(crate) async fn run(
    turn: &mut Turn,
    call: ActionCall<'_>,
    config: &ThinkConfig,
) -> Result<ActionOutcome, DomainError> {
    let template = turn.template(call.action_id, AI_THINK_TEMPLATE)?;
    let loc = call.loc;
    let inputs: Vec<String> = config
        .input_variables
        .iter()
        .map(|name| {
            let value = turn
                .lookup_text(loc, name)
                .unwrap_or_else(|| MISSING_INPUT.to_owned());
            format!("{name}: {value}")
        })
        .collect();
    let who = turn.counselor_name(loc, "心理咨询师");
    let user = turn.user_name(loc);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("time", beijing_time_text(turn.now));
    vars.insert("task", turn.substitute_text(loc, &config.content));
    vars.insert(
        "input_variables",
        if inputs.is_empty() {
            NO_INPUTS.to_owned()
        } else {
            inputs.join("\n")
        },
    );
    vars.insert("output_list", output_list(&config.output));
    vars.insert("who", who.clone());
    vars.insert("user", user.clone());
    let prompt = turn.fit_prompt(
        call.action_id,
        THINK_CHAT_LEN,
        THINK_MAX_TOKENS,
        |turn, history| {
            let mut vars = vars.clone();
            vars.insert("chat", chat_lines(history, THINK_CHAT_LEN, &user, &who));
            turn.render(loc, &template.text, &vars)
        },
    );
    let Some(raw) = turn
        .call_llm_or_degrade(
            call.action_id,
            "ai_think",
            prompt,
            0.3,
            THINK_MAX_TOKENS,
            Streaming::Off,
        )
        .await?
    else {
        // Without the LLM there is nothing to think with: no variable is
        // written (later placeholders of them stay unfilled) and the
        // script moves on.
        let mut outcome = ActionOutcome::new(true, 1, 1);
        outcome
            .metadata
            .insert("actionType".to_owned(), json!("ai_think"));
        outcome.mark_degraded();
        return Ok(outcome);
    };

    // A reply without an object writes nothing; the think step never
    // fails the turn over its format.
    let reply = reply::read(&raw, |_| serde_json::Map::new());
    if reply.fallback {
        tracing::warn!(
            action_id = call.action_id,
            "ai_think reply had no JSON object; no variables written"
        );
    }
    let mut outcome = ActionOutcome::new(true, 1, 1);
    outcome.writes = config
        .output
        .iter()
        .filter(|field| !field.get.trim().is_empty())
        .filter_map(|field| {
            reply
                .object
                .get(&field.get)
                .filter(|v| !v.is_null())
                .map(|value| VariableWrite {
                    name: field.get.clone(),
                    scope: field.scope.unwrap_or(VariableScope::Session),
                    value: value.clone(),
                    unextracted: false,
                })
        })
        .collect();
    outcome
        .metadata
        .insert("actionType".to_owned(), json!("ai_think"));
    outcome
        .metadata
        .insert(LLM_RAW_OUTPUT.to_owned(), reply.raw_output.clone());
    reply::template_metadata(&template, &mut outcome.metadata);
    reply::parse_metadata(&reply, &mut outcome.metadata);
    outcome.data = Value::Null;
    Ok(outcome)
}
