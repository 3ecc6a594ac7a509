//! `ai_ask`: simple mode (one question, the answer goes to
//! `target_variable`) and multi-round mode (questions until the exit
//! decision, then the finish extraction of every `output` variable).

use super::exit::{self, ExitDecision, ExitInput, ExitSource};
use super::guard::{GuardedCall, GuardedReply, ReplyFormat};
use super::monitor::{MonitorRequest, ASK_METRICS, FEEDBACK_KEY};
use super::prompts::{
    beijing_time_text, chat_lines, extraction_prompt, output_list, AI_ASK_TEMPLATE,
    EXTRACTION_HISTORY_LEN,
};
use super::reply::{self, Reply};
use super::safety;
use super::templates::ResolvedTemplate;
use super::turn::{ActionCall, ActionOutcome, Streaming, Turn, VariableWrite};
use heartrule_domain::repair::{llm_intent, IntentReading, RepairIntent};
use heartrule_domain::{
    ActionType, AskConfig, DomainError, HistoryEntry, MessageRole, SignalSource, VariableScope,
    DECLINED_SOURCE, LLM_RAW_OUTPUT,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Conversation entries the `ai_ask` prompt shows.
const ASK_CHAT_LEN: usize = 5;
/// Reply budget of the `ai_ask` call.
const ASK_MAX_TOKENS: u32 = 800;
/// Reply budget of a finish extraction.
const EXTRACT_MAX_TOKENS: u32 = 500;

const DEFAULT_TONE: &str = "温和、同理心、专业";
const DEFAULT_EXIT: &str = "用户提供了足够的信息";
const DEFAULT_MAX_ROUNDS: u32 = 3;
const DEFAULT_AI_ROLE: &str = "咨询师";
/// `exit_reason` of a multi-round ask ended by degraded mode.
const LLM_UNAVAILABLE_EXIT: &str = "llm_unavailable";
/// The reply to an empty answer.
pub(crate) const EMPTY_ANSWER_PROMPT: &str = "请提供您的回答。";

pub(crate) async fn run(
    turn: &mut Turn,
    call: ActionCall<'_>,
    config: &AskConfig,
) -> Result<ActionOutcome, DomainError> {
    let multi_round = config.is_multi_round();
    let max_rounds = config
        .max_rounds
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_MAX_ROUNDS);
    if call.round == 0 {
        let Some(question) =
            generate(turn, &call, config, multi_round, Streaming::JsonContent).await?
        else {
            return Ok(degraded_question(
                turn,
                &call,
                config,
                multi_round,
                max_rounds,
            ));
        };
        return Ok(question_outcome(
            &question,
            config,
            multi_round,
            1,
            max_rounds,
            None,
        ));
    }

    let answer = call.input.as_deref().unwrap_or_default().trim().to_owned();
    if answer.is_empty() {
        let mut outcome = ActionOutcome::new(false, call.round, max_rounds);
        outcome.message = Some(EMPTY_ANSWER_PROMPT.to_owned());
        outcome.metadata = base_metadata(call.round, max_rounds);
        outcome
            .metadata
            .insert("validationFailed".to_owned(), json!(true));
        outcome
            .metadata
            .insert("waitingFor".to_owned(), json!("answer"));
        // Keeps monitor advice for the next real prompt.
        outcome.data = call.data.clone();
        return Ok(outcome);
    }

    // The user asked to skip this question (the local detector).
    if turn.intent.take() == Some(RepairIntent::Skip) {
        return Ok(declined(
            turn,
            config,
            call.round,
            max_rounds,
            SignalSource::Local,
        ));
    }

    if !multi_round {
        let mut outcome = ActionOutcome::new(true, call.round, max_rounds);
        outcome.metadata = base_metadata(call.round, max_rounds);
        if let Some(target) = config
            .target_variable
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            outcome.writes.push(VariableWrite {
                name: target.to_owned(),
                scope: VariableScope::Session,
                value: Value::String(answer),
                unextracted: false,
            });
        }
        return Ok(outcome);
    }

    // Round = questions asked = answers received. When this answer uses up
    // the rounds the exit is certain, so the (discarded) reply isn't streamed.
    let round = call.round;
    let streaming = if round >= max_rounds {
        Streaming::Off
    } else {
        Streaming::JsonContent
    };
    let Some(question) = generate(turn, &call, config, true, streaming).await? else {
        return Ok(degraded_finish(turn, &call, config, &answer, max_rounds));
    };
    if turn.llm_intents {
        match user_intent(&question.reply.object) {
            Some(RepairIntent::Skip) => {
                return Ok(declined(turn, config, round, max_rounds, SignalSource::Llm));
            }
            // The session manager ends the session or hands it over and
            // drops this turn's outcome.
            Some(intent) => {
                turn.repair = Some(IntentReading {
                    intent,
                    source: SignalSource::Llm,
                });
            }
            None => {}
        }
    }
    let lookup = |name: &str| turn.lookup(call.loc, name).cloned();
    let decision = exit::evaluate(&ExitInput {
        supports_exit: true,
        sources: &[
            ExitSource::MaxRounds,
            ExitSource::ExitFlag,
            ExitSource::LlmSuggestion,
        ],
        round,
        max_rounds,
        reply: &question.reply.object,
        criteria: None,
        lookup: &lookup,
    });
    if !decision.should_exit {
        return Ok(question_outcome(
            &question,
            config,
            true,
            round + 1,
            max_rounds,
            Some(&decision),
        ));
    }
    finish(
        turn, &call, config, &question, &decision, &answer, max_rounds,
    )
    .await
}

/// The LLM's reading of the answer: `metadata.user_intent` of its reply.
fn user_intent(object: &Map<String, Value>) -> Option<RepairIntent> {
    let mut probe = Map::new();
    if let Some(metadata) = reply::llm_metadata(object) {
        probe.insert("llm_metadata".to_owned(), Value::Object(metadata.clone()));
    }
    if let Some(intent) = object.get("user_intent") {
        probe.insert("user_intent".to_owned(), intent.clone());
    }
    llm_intent(&probe)
}

/// A question the user skipped: completed without extraction, each of its
/// variables (the `output` fields and `target_variable`) written as
/// declined — `null` with source [`DECLINED_SOURCE`] — and no message, so
/// the turn moves on to the next action.
fn declined(
    turn: &mut Turn,
    config: &AskConfig,
    round: u32,
    max_rounds: u32,
    source: SignalSource,
) -> ActionOutcome {
    let mut outcome = ActionOutcome::new(true, round, max_rounds);
    outcome.metadata = base_metadata(round, max_rounds);
    for field in config.output.iter().filter(|f| !f.get.trim().is_empty()) {
        outcome.writes.push(VariableWrite {
            name: field.get.clone(),
            scope: field.scope.unwrap_or(VariableScope::Session),
            value: Value::Null,
            unextracted: false,
        });
    }
    if let Some(target) = config
        .target_variable
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        if !outcome.writes.iter().any(|w| w.name == target) {
            outcome.writes.push(VariableWrite {
                name: target.to_owned(),
                scope: VariableScope::Session,
                value: Value::Null,
                unextracted: false,
            });
        }
    }
    outcome.write_source = Some(DECLINED_SOURCE);
    turn.declined = outcome.writes.iter().map(|w| w.name.clone()).collect();
    turn.repair = Some(IntentReading {
        intent: RepairIntent::Skip,
        source,
    });
    outcome
}

fn base_metadata(round: u32, max_rounds: u32) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("actionType".to_owned(), json!(ActionType::AiAsk.as_str()));
    metadata.insert("currentRound".to_owned(), json!(round));
    metadata.insert("maxRounds".to_owned(), json!(max_rounds));
    metadata
}

/// A generated question with what produced it.
struct Question {
    guarded: GuardedReply,
    reply: Reply,
    template: ResolvedTemplate,
}

fn fallback(raw: &str) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("content".to_owned(), json!(raw.trim()));
    object.insert("EXIT".to_owned(), json!("false"));
    object.insert("BRIEF".to_owned(), json!("LLM输出JSON解析失败"));
    object
}

/// Builds the ai_ask prompt and asks the LLM; `None` when degraded mode
/// stands in for an unavailable LLM.
async fn generate(
    turn: &mut Turn,
    call: &ActionCall<'_>,
    config: &AskConfig,
    multi_round: bool,
    streaming: Streaming,
) -> Result<Option<Question>, DomainError> {
    let template = turn.template(call.action_id, AI_ASK_TEMPLATE)?;
    let loc = call.loc;
    let who = turn.counselor_name(loc, "心理咨询师");
    let user = turn.user_name(loc);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("time", beijing_time_text(turn.now));
    vars.insert("who", who.clone());
    vars.insert("user", user.clone());
    vars.insert(
        "tone",
        config
            .tone
            .clone()
            .unwrap_or_else(|| DEFAULT_TONE.to_owned()),
    );
    vars.insert(
        "ai_role",
        config
            .ai_role
            .clone()
            .unwrap_or_else(|| DEFAULT_AI_ROLE.to_owned()),
    );
    vars.insert(
        "output_list",
        if multi_round {
            output_list(&config.output)
        } else {
            String::new()
        },
    );
    let task = turn.substitute_text(loc, &config.content);
    vars.insert("task", task.clone());
    vars.insert(
        "exit",
        config
            .exit
            .clone()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_EXIT.to_owned()),
    );
    let feedback = call.data.get(FEEDBACK_KEY).and_then(Value::as_str);
    let prompt = turn.fit_prompt(
        call.action_id,
        ASK_CHAT_LEN,
        ASK_MAX_TOKENS,
        |turn, history| {
            let mut vars = vars.clone();
            vars.insert("chat", chat_lines(history, ASK_CHAT_LEN, &user, &who));
            let mut prompt = turn.render(loc, &template.text, &vars);
            if let Some(feedback) = feedback {
                prompt.push_str("\n\n");
                prompt.push_str(feedback);
            }
            prompt
        },
    );
    let guarded = if streaming == Streaming::Off {
        // An unstreamed question is one the certain exit discards: nobody
        // sees it, so there is nothing to guard.
        turn.call_llm_or_degrade(
            call.action_id,
            "ai_ask",
            prompt,
            0.7,
            ASK_MAX_TOKENS,
            streaming,
        )
        .await?
        .map(GuardedReply::unguarded)
    } else {
        turn.guarded_llm(GuardedCall {
            action_id: call.action_id,
            action_type: ActionType::AiAsk,
            purpose: "ai_ask",
            prompt,
            temperature: 0.7,
            max_tokens: ASK_MAX_TOKENS,
            streaming,
            format: ReplyFormat::Json,
            scripted: task,
        })
        .await?
    };
    let Some(guarded) = guarded else {
        return Ok(None);
    };
    let reply = reply::read(&guarded.raw, fallback);
    Ok(Some(Question {
        guarded,
        reply,
        template,
    }))
}

/// The scripted question (`content`, substituted) asked as is, without the
/// LLM; the answer is handled like any other.
fn degraded_question(
    turn: &Turn,
    call: &ActionCall<'_>,
    config: &AskConfig,
    multi_round: bool,
    max_rounds: u32,
) -> ActionOutcome {
    let message = turn
        .substitute_text(call.loc, &config.content)
        .trim()
        .to_owned();
    turn.emit(call.action_id, &message);
    let mut outcome = ActionOutcome::new(false, 1, max_rounds);
    outcome.metadata = base_metadata(1, max_rounds);
    outcome
        .metadata
        .insert("waitingFor".to_owned(), json!("answer"));
    if let Some(target) = config.target_variable.as_ref().filter(|_| !multi_round) {
        outcome
            .metadata
            .insert("extractTo".to_owned(), json!(target));
    }
    outcome.data = json!({ "mode": if multi_round { "multi" } else { "simple" } });
    outcome.message = Some(message);
    outcome.mark_degraded();
    outcome
}

/// A multi-round answer without the LLM to judge it: the action ends.
/// Every output variable gets the value an earlier reply of this action
/// carried, else the user's raw answer flagged as unextracted (each of
/// them, so later placeholders still read the client's words); no message.
fn degraded_finish(
    turn: &Turn,
    call: &ActionCall<'_>,
    config: &AskConfig,
    answer: &str,
    max_rounds: u32,
) -> ActionOutcome {
    let mut writes: Vec<VariableWrite> = config
        .output
        .iter()
        .filter(|f| !f.get.trim().is_empty())
        .map(
            |field| match history_value(&turn.history, call.action_id, &field.get) {
                Some(value) => VariableWrite {
                    name: field.get.clone(),
                    scope: field.scope.unwrap_or(VariableScope::Session),
                    value,
                    unextracted: false,
                },
                None => VariableWrite {
                    name: field.get.clone(),
                    scope: field.scope.unwrap_or(VariableScope::Session),
                    value: Value::String(answer.to_owned()),
                    unextracted: true,
                },
            },
        )
        .collect();
    if let Some(target) = config
        .target_variable
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        if !writes.iter().any(|w| w.name == target) {
            writes.push(VariableWrite {
                name: target.to_owned(),
                scope: VariableScope::Session,
                value: Value::String(answer.to_owned()),
                unextracted: false,
            });
        }
    }
    let mut outcome = ActionOutcome::new(true, call.round, max_rounds);
    outcome.metadata = base_metadata(call.round, max_rounds);
    outcome
        .metadata
        .insert("exit_reason".to_owned(), json!(LLM_UNAVAILABLE_EXIT));
    outcome.writes = writes;
    outcome.mark_degraded();
    outcome
}

/// The message: `content`, else `json[ai_role]`, else `json.response`.
fn message_of(object: &Map<String, Value>, ai_role: &str) -> String {
    reply::text(object, "content")
        .or_else(|| reply::text(object, ai_role))
        .or_else(|| reply::text(object, "response"))
        .unwrap_or_default()
}

/// The reply's non-empty values of the `output` variables.
fn output_values(object: &Map<String, Value>, config: &AskConfig) -> Vec<VariableWrite> {
    config
        .output
        .iter()
        .filter(|field| !field.get.trim().is_empty())
        .filter_map(|field| {
            object
                .get(&field.get)
                .filter(|v| reply::non_empty(v))
                .map(|value| VariableWrite {
                    name: field.get.clone(),
                    scope: field.scope.unwrap_or(VariableScope::Session),
                    value: value.clone(),
                    unextracted: false,
                })
        })
        .collect()
}

/// `exit_reason` of multi-round asks.
fn exit_reason(
    round: u32,
    max_rounds: u32,
    decision: Option<&ExitDecision>,
    progress: &str,
) -> Option<&'static str> {
    if round >= max_rounds {
        Some("max_rounds_reached")
    } else if decision.is_some_and(|d| d.should_exit && d.source == ExitSource::ExitFlag) {
        Some("exit_criteria_met")
    } else if progress == "blocked" {
        Some("user_blocked")
    } else if progress == "off_topic" {
        Some("off_topic")
    } else {
        None
    }
}

/// Metadata of a reply, shared by the question and the finish results.
fn reply_metadata(
    question: &Question,
    round: u32,
    max_rounds: u32,
    progress: &str,
    unknown_progress: Option<String>,
    metrics: &Value,
) -> Map<String, Value> {
    let object = &question.reply.object;
    let mut metadata = base_metadata(round, max_rounds);
    metadata.insert(
        "shouldExit".to_owned(),
        json!(super::llm_json::flag(object, &["EXIT", "exit"]) == Some(true)),
    );
    if let Some(brief) = reply::text(object, "BRIEF") {
        metadata.insert("brief".to_owned(), json!(brief));
    }
    metadata.insert(LLM_RAW_OUTPUT.to_owned(), question.reply.raw_output.clone());
    reply::template_metadata(&question.template, &mut metadata);
    metadata.insert(
        "safety_check".to_owned(),
        safety::scan(&question.guarded.raw),
    );
    question.guarded.record_into(&mut metadata);
    if let Some(risk) = object.get("safety_risk") {
        metadata.insert("safety_risk".to_owned(), risk.clone());
    }
    if let Some(llm_metadata) = reply::llm_metadata(object) {
        if let Some(style) = llm_metadata.get("style_adaptation") {
            metadata.insert("style_adaptation".to_owned(), style.clone());
        }
        metadata.insert(
            "llm_metadata".to_owned(),
            Value::Object(llm_metadata.clone()),
        );
    }
    reply::parse_metadata(&question.reply, &mut metadata);
    metadata.insert("metrics".to_owned(), metrics.clone());
    metadata.insert("progress_suggestion".to_owned(), json!(progress));
    if let Some(unknown) = unknown_progress {
        metadata.insert(
            "progress_suggestion_unrecognized".to_owned(),
            json!(unknown),
        );
    }
    metadata
}

/// A question the user should answer (round 0, or a continuing round).
fn question_outcome(
    question: &Question,
    config: &AskConfig,
    multi_round: bool,
    round: u32,
    max_rounds: u32,
    decision: Option<&ExitDecision>,
) -> ActionOutcome {
    let object = &question.reply.object;
    let ai_role = config.ai_role.as_deref().unwrap_or(DEFAULT_AI_ROLE);
    let message = question.guarded.message(|| message_of(object, ai_role));
    let (progress, unknown_progress) = reply::progress_suggestion(object);
    let metrics = reply::metrics(object, &ASK_METRICS);

    let mut outcome = ActionOutcome::new(false, round, max_rounds);
    outcome.metadata = reply_metadata(
        question,
        round,
        max_rounds,
        &progress,
        unknown_progress,
        &metrics,
    );
    outcome
        .metadata
        .insert("waitingFor".to_owned(), json!("answer"));
    if multi_round {
        if round > 1 {
            outcome
                .metadata
                .insert("continueAsking".to_owned(), json!(true));
        }
        if let Some(reason) = exit_reason(round - 1, max_rounds, decision, &progress) {
            outcome
                .metadata
                .insert("exit_reason".to_owned(), json!(reason));
        }
        outcome.writes = output_values(object, config);
    } else if let Some(target) = &config.target_variable {
        outcome
            .metadata
            .insert("extractTo".to_owned(), json!(target));
    }
    if let Some(decision) = decision {
        outcome
            .metadata
            .insert("exitDecision".to_owned(), decision.to_json());
        outcome.exit_decision = Some(decision.to_json());
    }
    outcome.metrics = Some(metrics.clone());
    outcome.data = json!({ "mode": if multi_round { "multi" } else { "simple" } });
    outcome.monitor = Some(MonitorRequest {
        action_type: ActionType::AiAsk,
        round,
        max_rounds,
        metrics,
        progress_suggestion: progress,
        target_variables: config.output.iter().map(|f| f.get.clone()).collect(),
        topic_content: None,
    });
    outcome.message = Some(message);
    outcome
}

/// The newest value of `name` this action's earlier replies carried.
fn history_value(history: &[HistoryEntry], action_id: &str, name: &str) -> Option<Value> {
    history
        .iter()
        .rev()
        .filter(|e| e.role == MessageRole::Assistant && e.action_id.as_deref() == Some(action_id))
        .find_map(|entry| {
            let raw = entry.llm_raw_output.as_ref()?;
            let value = match raw {
                Value::Object(object) => object.get(name).cloned(),
                Value::String(text) => super::llm_json::parse_reply(text)
                    .object
                    .and_then(|mut object| object.remove(name)),
                _ => None,
            };
            value.filter(reply::non_empty)
        })
}

/// The exit: every output variable gets its first available value — this
/// reply, an earlier reply of this action, the extraction call (when the
/// field has a `define`), or the answer itself. No message.
async fn finish(
    turn: &mut Turn,
    call: &ActionCall<'_>,
    config: &AskConfig,
    question: &Question,
    decision: &ExitDecision,
    answer: &str,
    max_rounds: u32,
) -> Result<ActionOutcome, DomainError> {
    let round = call.round;
    let mut writes = Vec::new();
    let mut degraded = false;
    for field in config.output.iter().filter(|f| !f.get.trim().is_empty()) {
        let mut unextracted = false;
        let mut value = question
            .reply
            .object
            .get(&field.get)
            .filter(|v| reply::non_empty(v))
            .cloned()
            .or_else(|| history_value(&turn.history, call.action_id, &field.get));
        let define = field.define.as_deref().map(str::trim).unwrap_or_default();
        if value.is_none() && !define.is_empty() {
            let prompt = turn.fit_prompt(
                call.action_id,
                EXTRACTION_HISTORY_LEN,
                EXTRACT_MAX_TOKENS,
                |_, history| extraction_prompt(history, &field.get, define),
            );
            match turn
                .call_llm_or_degrade(
                    call.action_id,
                    "extract",
                    prompt,
                    0.3,
                    EXTRACT_MAX_TOKENS,
                    Streaming::Off,
                )
                .await?
            {
                Some(extracted) if !extracted.trim().is_empty() => {
                    value = Some(Value::String(extracted.trim().to_owned()));
                }
                Some(_) => {}
                None => {
                    unextracted = true;
                    degraded = true;
                }
            }
        }
        writes.push(VariableWrite {
            name: field.get.clone(),
            scope: field.scope.unwrap_or(VariableScope::Session),
            value: value.unwrap_or_else(|| Value::String(answer.to_owned())),
            unextracted,
        });
    }
    if let Some(target) = config
        .target_variable
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        if !writes.iter().any(|w| w.name == target) {
            writes.push(VariableWrite {
                name: target.to_owned(),
                scope: VariableScope::Session,
                value: Value::String(answer.to_owned()),
                unextracted: false,
            });
        }
    }

    let object = &question.reply.object;
    let (progress, unknown_progress) = reply::progress_suggestion(object);
    let metrics = reply::metrics(object, &ASK_METRICS);
    let mut outcome = ActionOutcome::new(true, round, max_rounds);
    outcome.metadata = reply_metadata(
        question,
        round,
        max_rounds,
        &progress,
        unknown_progress,
        &metrics,
    );
    if let Some(reason) = exit_reason(round, max_rounds, Some(decision), &progress) {
        outcome
            .metadata
            .insert("exit_reason".to_owned(), json!(reason));
    }
    outcome
        .metadata
        .insert("exitDecision".to_owned(), decision.to_json());
    outcome.exit_decision = Some(decision.to_json());
    outcome.metrics = Some(metrics);
    outcome.writes = writes;
    if degraded {
        outcome.mark_degraded();
    }
    Ok(outcome)
}
