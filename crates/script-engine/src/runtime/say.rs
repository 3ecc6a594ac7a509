//! `ai_say`: legacy rewrite mode and template mode.

use super::exit::{self, ExitDecision, ExitInput, ExitSource};
use super::guard::{GuardedCall, GuardedReply, ReplyFormat};
use super::monitor::{MonitorRequest, FEEDBACK_KEY, SAY_METRICS};
use super::prompts::{beijing_time_text, chat_lines, rewrite_prompt, AI_SAY_TEMPLATE};
use super::reply::{self, Reply};
use super::safety;
use super::turn::{ActionCall, ActionOutcome, Streaming, Turn};
use heartrule_domain::{ActionType, DomainError, SayConfig, LLM_RAW_OUTPUT};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Conversation entries the template `ai_say` prompt shows.
const SAY_CHAT_LEN: usize = 10;
/// Reply budget of the template `ai_say` call.
const SAY_MAX_TOKENS: u32 = 1000;

const DEFAULT_TONE: &str = "专业、温暖、平和";
const DEFAULT_MAX_ROUNDS: u32 = 5;
const DEFAULT_UNDERSTANDING_THRESHOLD: u32 = 80;
const DEFAULT_AI_ROLE: &str = "咨询师";
const NO_HISTORY: &str = "（暂无对话历史）";
/// `exit_reason` of a template ai_say ended by degraded mode.
const LLM_UNAVAILABLE_EXIT: &str = "llm_unavailable";

pub(crate) async fn run(
    turn: &mut Turn,
    call: ActionCall<'_>,
    config: &SayConfig,
) -> Result<ActionOutcome, DomainError> {
    if config.is_template_mode() {
        template_mode(turn, call, config).await
    } else {
        legacy_mode(turn, call, config).await
    }
}

fn base_metadata(mode: &str, round: u32, max_rounds: u32) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("actionType".to_owned(), json!(ActionType::AiSay.as_str()));
    metadata.insert("mode".to_owned(), json!(mode));
    metadata.insert("currentRound".to_owned(), json!(round));
    metadata.insert("maxRounds".to_owned(), json!(max_rounds));
    metadata
}

/// A rewrite of the scripted text; with acknowledgment the next input
/// (whatever it says) completes the action silently.
async fn legacy_mode(
    turn: &mut Turn,
    call: ActionCall<'_>,
    config: &SayConfig,
) -> Result<ActionOutcome, DomainError> {
    if config.require_acknowledgment && call.round > 0 {
        let mut outcome = ActionOutcome::new(true, call.round, 1);
        outcome.metadata = base_metadata("legacy", call.round, 1);
        outcome
            .metadata
            .insert("userAcknowledged".to_owned(), json!(true));
        return Ok(outcome);
    }
    let text = turn.substitute_text(call.loc, &config.content);
    let guarded = turn
        .guarded_llm(GuardedCall {
            action_id: call.action_id,
            action_type: ActionType::AiSay,
            purpose: "rewrite",
            prompt: rewrite_prompt(&text),
            temperature: 0.7,
            max_tokens: 500,
            streaming: Streaming::Raw,
            format: ReplyFormat::Text,
            scripted: text.clone(),
        })
        .await?;
    let (raw, message) = match &guarded {
        Some(guarded) => (
            guarded.raw.clone(),
            guarded.message(|| guarded.raw.trim().to_owned()),
        ),
        // Degraded: the scripted text itself, unrewritten.
        None => {
            let scripted = text.trim().to_owned();
            turn.emit(call.action_id, &scripted);
            (scripted.clone(), scripted)
        }
    };

    let mut outcome = ActionOutcome::new(!config.require_acknowledgment, 1, 1);
    outcome.metadata = base_metadata("legacy", 1, 1);
    outcome
        .metadata
        .insert("safety_check".to_owned(), safety::scan(&raw));
    match &guarded {
        Some(guarded) => guarded.record_into(&mut outcome.metadata),
        None => outcome.mark_degraded(),
    }
    if config.require_acknowledgment {
        outcome
            .metadata
            .insert("waitingFor".to_owned(), json!("acknowledgment"));
    }
    outcome.data = json!({ "mode": "legacy" });
    outcome.message = Some(message);
    Ok(outcome)
}

fn fallback(raw: &str) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("content".to_owned(), json!(raw.trim()));
    object.insert("EXIT".to_owned(), json!("NO"));
    object.insert("progress_suggestion".to_owned(), json!("continue_needed"));
    object
}

/// The message: `content`, else the legacy `response[ai_role]`.
fn message_of(object: &Map<String, Value>, ai_role: &str) -> String {
    reply::text(object, "content")
        .or_else(|| {
            object
                .get("response")
                .and_then(Value::as_object)
                .and_then(|response| reply::text(response, ai_role))
        })
        .unwrap_or_default()
}

/// Up to `max_rounds` LLM-generated messages with an exit decision.
async fn template_mode(
    turn: &mut Turn,
    call: ActionCall<'_>,
    config: &SayConfig,
) -> Result<ActionOutcome, DomainError> {
    let max_rounds = config
        .max_rounds
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_MAX_ROUNDS);
    let round = call.round + 1;
    if round > max_rounds {
        // The user answered the last message: done, without another call.
        let decision = ExitDecision::max_rounds(max_rounds, ExitSource::ExceededMaxRounds);
        let mut outcome = ActionOutcome::new(true, max_rounds, max_rounds);
        outcome.metadata = base_metadata("template", max_rounds, max_rounds);
        outcome
            .metadata
            .insert("exitDecision".to_owned(), decision.to_json());
        outcome.exit_decision = Some(decision.to_json());
        return Ok(outcome);
    }

    let template = turn.template(call.action_id, AI_SAY_TEMPLATE)?;
    let loc = call.loc;
    let topic_content = turn.substitute_text(loc, &config.content);
    let scripted = topic_content.clone();
    let threshold = config
        .exit_criteria
        .as_ref()
        .and_then(|c| c.understanding_threshold)
        .unwrap_or(DEFAULT_UNDERSTANDING_THRESHOLD);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("time", beijing_time_text(turn.now));
    vars.insert("who", turn.counselor_name(loc, "AI咨询师"));
    vars.insert("user", turn.user_name(loc));
    vars.insert("topic_content", topic_content);
    vars.insert(
        "tone",
        config
            .tone
            .clone()
            .unwrap_or_else(|| DEFAULT_TONE.to_owned()),
    );
    vars.insert("understanding_threshold", threshold.to_string());
    vars.insert("current_round", round.to_string());
    vars.insert("max_rounds", max_rounds.to_string());
    let feedback = call.data.get(FEEDBACK_KEY).and_then(Value::as_str);
    let prompt = turn.fit_prompt(
        call.action_id,
        SAY_CHAT_LEN,
        SAY_MAX_TOKENS,
        |turn, history| {
            let chat = chat_lines(history, SAY_CHAT_LEN, "用户", "AI");
            let mut vars = vars.clone();
            vars.insert(
                "chat_history",
                if chat.trim().is_empty() {
                    NO_HISTORY.to_owned()
                } else {
                    chat
                },
            );
            let mut prompt = turn.render(loc, &template.text, &vars);
            if let Some(feedback) = feedback {
                prompt.push_str("\n\n");
                prompt.push_str(feedback);
            }
            prompt
        },
    );

    let Some(guarded) = turn
        .guarded_llm(GuardedCall {
            action_id: call.action_id,
            action_type: ActionType::AiSay,
            purpose: "ai_say",
            prompt,
            temperature: 0.7,
            max_tokens: SAY_MAX_TOKENS,
            streaming: Streaming::JsonContent,
            format: ReplyFormat::Json,
            scripted: scripted.clone(),
        })
        .await?
    else {
        return Ok(degraded_template(
            turn,
            call.action_id,
            &scripted,
            round,
            max_rounds,
        ));
    };
    let raw = &guarded.raw;
    let reply = reply::read(raw, fallback);
    let lookup = |name: &str| turn.lookup(loc, name).cloned();
    let decision = exit::evaluate(&ExitInput {
        supports_exit: true,
        sources: &[
            ExitSource::MaxRounds,
            ExitSource::ExitCriteria,
            ExitSource::LlmSuggestion,
        ],
        round,
        max_rounds,
        reply: &reply.object,
        criteria: config.exit_criteria.as_ref(),
        lookup: &lookup,
    });
    let ai_role = config.ai_role.as_deref().unwrap_or(DEFAULT_AI_ROLE);
    let message = guarded.message(|| message_of(&reply.object, ai_role));
    let early_exit = decision.should_exit && decision.source != ExitSource::MaxRounds;
    let completed = early_exit || (max_rounds != 1 && round >= max_rounds);
    let (progress, unknown_progress) = reply::progress_suggestion(&reply.object);
    let exit_reason = if round >= max_rounds {
        Some("max_rounds_reached")
    } else if early_exit && decision.source == ExitSource::ExitCriteria {
        Some("exit_criteria_met")
    } else if progress == "blocked" {
        Some("user_blocked")
    } else {
        None
    };
    let metrics = reply::metrics(&reply.object, &SAY_METRICS);

    let mut outcome = ActionOutcome::new(completed, round, max_rounds);
    outcome.metadata = template_metadata(TemplateResult {
        reply: &reply,
        guarded: &guarded,
        round,
        max_rounds,
        waiting: !completed && !message.trim().is_empty(),
        decision: &decision,
        exit_reason,
        progress: &progress,
        unknown_progress,
        metrics: &metrics,
    });
    reply::template_metadata(&template, &mut outcome.metadata);
    outcome.exit_decision = Some(decision.to_json());
    outcome.metrics = Some(metrics.clone());
    outcome.data = json!({ "mode": "template" });
    if !completed {
        outcome.monitor = Some(MonitorRequest {
            action_type: ActionType::AiSay,
            round,
            max_rounds,
            metrics,
            progress_suggestion: progress,
            target_variables: Vec::new(),
            topic_content: Some(message.clone()),
        });
    }
    outcome.message = Some(message);
    Ok(outcome)
}

/// Template mode without the LLM: the scripted `content` (substituted) is
/// the message, and the action ends with it as if its last round was
/// reached. The prompt's `content` is written as guidance to the LLM, but
/// it is the only text the script has for this step.
fn degraded_template(
    turn: &Turn,
    action_id: &str,
    scripted: &str,
    round: u32,
    max_rounds: u32,
) -> ActionOutcome {
    let message = scripted.trim().to_owned();
    turn.emit(action_id, &message);
    let mut outcome = ActionOutcome::new(true, round, max_rounds);
    outcome.metadata = base_metadata("template", round, max_rounds);
    outcome
        .metadata
        .insert("exit_reason".to_owned(), json!(LLM_UNAVAILABLE_EXIT));
    outcome.data = json!({ "mode": "template" });
    outcome.message = Some(message);
    outcome.mark_degraded();
    outcome
}

struct TemplateResult<'a> {
    reply: &'a Reply,
    guarded: &'a GuardedReply,
    round: u32,
    max_rounds: u32,
    waiting: bool,
    decision: &'a ExitDecision,
    exit_reason: Option<&'static str>,
    progress: &'a str,
    unknown_progress: Option<String>,
    metrics: &'a Value,
}

fn template_metadata(result: TemplateResult<'_>) -> Map<String, Value> {
    let object = &result.reply.object;
    let mut metadata = base_metadata("template", result.round, result.max_rounds);
    if result.waiting {
        metadata.insert("waitingFor".to_owned(), json!("acknowledgment"));
    }
    let llm_metadata = reply::llm_metadata(object);
    let assessment = llm_metadata
        .and_then(|m| m.get("assessment"))
        .or_else(|| object.get("assessment"));
    if let Some(assessment) = assessment {
        metadata.insert("assessment".to_owned(), assessment.clone());
    }
    if let Some(llm_metadata) = llm_metadata {
        metadata.insert(
            "llm_metadata".to_owned(),
            Value::Object(llm_metadata.clone()),
        );
    }
    if let Some(risk) = object.get("safety_risk") {
        metadata.insert("safety_risk".to_owned(), risk.clone());
    }
    metadata.insert("safety_check".to_owned(), safety::scan(&result.guarded.raw));
    result.guarded.record_into(&mut metadata);
    if let Some(brief) = reply::text(object, "BRIEF") {
        metadata.insert("brief".to_owned(), json!(brief));
    }
    metadata.insert(LLM_RAW_OUTPUT.to_owned(), result.reply.raw_output.clone());
    reply::parse_metadata(result.reply, &mut metadata);
    metadata.insert("exitDecision".to_owned(), result.decision.to_json());
    if let Some(reason) = result.exit_reason {
        metadata.insert("exit_reason".to_owned(), json!(reason));
    }
    metadata.insert("metrics".to_owned(), result.metrics.clone());
    metadata.insert("progress_suggestion".to_owned(), json!(result.progress));
    if let Some(unknown) = result.unknown_progress {
        metadata.insert(
            "progress_suggestion_unrecognized".to_owned(),
            json!(unknown),
        );
    }
    metadata
}
