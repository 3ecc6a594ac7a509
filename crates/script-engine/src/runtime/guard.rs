//! The output guard. An AI reply whose scan finds diagnosis, prescription
//! or guarantee language, or whose own `safety_risk` self-check is
//! `detected` (with a risk type about the reply, not a crisis of the user),
//! is regenerated once with a corrective instruction naming what was wrong;
//! if the new reply fails too (or the call fails), the action's scripted
//! text replaces the message. Every guarded reply is recorded: the
//! `outputGuard` metadata of its message, [`OUTPUT_GUARD_TOTAL`], and a
//! business event when it was withdrawn. The turn never fails because of it.
//!
//! Streamed replies pass through a [`SentenceGate`]: text reaches the sink a
//! sentence at a time, after the sentence and everything before it passed
//! the scan. A withdrawn reply of which some text was released is retracted
//! ([`heartrule_domain::ContentSink::retract`]) before its replacement is
//! sent.

use super::llm_json::{flag, parse_reply};
use super::reply;
use super::safety;
use super::turn::{Streaming, Turn};
use heartrule_domain::safety::CRISIS_RISK_TYPES;
use heartrule_domain::{ActionType, ContentSink, DomainError, LlmError, SAFETY_EVENT_TARGET};
use serde_json::{json, Map, Value};

/// Counter of AI replies the output guard checked, labels `action_type`,
/// `outcome` (`passed`, `regenerated`, `replaced`).
pub const OUTPUT_GUARD_TOTAL: &str = "heartrule_output_guard_total";

/// The `purpose` of the regeneration call.
pub(crate) const GUARD_RETRY_PURPOSE: &str = "guard_retry";

/// The metadata key of the guard's record on the AI message.
pub(crate) const OUTPUT_GUARD_KEY: &str = "outputGuard";

/// What the guard decided about one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passed,
    Regenerated,
    Replaced,
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Regenerated => "regenerated",
            Self::Replaced => "replaced",
        }
    }
}

/// How a reply is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyFormat {
    /// A JSON object (its `safety_risk` is read).
    Json,
    /// Plain text that is the message.
    Text,
}

/// A user-facing LLM call under the guard.
pub(crate) struct GuardedCall<'a> {
    pub action_id: &'a str,
    pub action_type: ActionType,
    pub purpose: &'a str,
    pub prompt: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub streaming: Streaming,
    pub format: ReplyFormat,
    /// The action's scripted text (placeholders substituted): the message
    /// when the LLM's replies are withdrawn.
    pub scripted: String,
}

/// The reply an action goes on with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuardedReply {
    /// The reply the action reads its fields from: the one that passed, or
    /// the last one generated when the message is replaced.
    pub raw: String,
    /// The scripted text that replaces the reply's message.
    pub replacement: Option<String>,
    /// The `outputGuard` metadata; `None` when the guard is off.
    pub record: Option<Value>,
}

impl GuardedReply {
    /// A reply the guard did not look at.
    pub(crate) fn unguarded(raw: String) -> Self {
        Self {
            raw,
            replacement: None,
            record: None,
        }
    }

    /// The message to show: the replacement, else what `message_of` reads.
    pub(crate) fn message(&self, message_of: impl FnOnce() -> String) -> String {
        self.replacement.clone().unwrap_or_else(message_of)
    }

    /// Adds the guard's record to a message's metadata.
    pub(crate) fn record_into(&self, metadata: &mut Map<String, Value>) {
        if let Some(record) = &self.record {
            metadata.insert(OUTPUT_GUARD_KEY.to_owned(), record.clone());
        }
    }
}

/// Where a sentence ends: after `。！？!?…；;` or a line break, or after a
/// `.` followed by white space (so `3.5` and `v1.2` do not end one). A `.`
/// at the very end waits for the next character.
fn sentence_end(text: &str) -> Option<usize> {
    const TERMINATORS: &[char] = &['。', '！', '？', '!', '?', '…', '；', ';', '\n'];
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        if TERMINATORS.contains(&c) {
            return Some(end);
        }
        if c == '.' && chars.peek().is_some_and(|(_, next)| next.is_whitespace()) {
            return Some(end);
        }
    }
    None
}

/// Holds streamed message text back until a sentence is complete and the
/// text so far passes the guarded scan. Once a sentence fails, nothing more
/// is released.
#[derive(Debug, Default)]
pub(crate) struct SentenceGate {
    pending: String,
    released: String,
    violations: Vec<Value>,
}

impl SentenceGate {
    /// Takes more message text; returns what may be shown now.
    pub(crate) fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        if self.tripped() {
            return out;
        }
        self.pending.push_str(text);
        while let Some(end) = sentence_end(&self.pending) {
            let sentence: String = self.pending.drain(..end).collect();
            if !self.offer(&sentence, &mut out) {
                break;
            }
        }
        out
    }

    /// The stream ended and the reply passed: the last, unterminated
    /// sentence (checked like the others).
    pub(crate) fn finish(&mut self) -> String {
        let mut out = String::new();
        if !self.tripped() && !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.offer(&rest, &mut out);
        }
        out
    }

    fn offer(&mut self, sentence: &str, out: &mut String) -> bool {
        let candidate = format!("{}{sentence}", self.released);
        let found = safety::guarded_violations(&candidate);
        if found.is_empty() {
            out.push_str(sentence);
            self.released = candidate;
            true
        } else {
            self.violations = found;
            self.pending.clear();
            false
        }
    }

    /// Whether a sentence failed.
    pub(crate) fn tripped(&self) -> bool {
        !self.violations.is_empty()
    }

    /// Whether the client was shown any text.
    pub(crate) fn released_any(&self) -> bool {
        !self.released.is_empty()
    }
}

/// `safety_risk` reporting a problem of the reply itself. A crisis risk type
/// reports the user's state: the crisis protocol reads it, not the guard.
fn flagged_risk(object: &Map<String, Value>) -> Option<Value> {
    let risk = object.get("safety_risk")?.as_object()?;
    if flag(risk, &["detected"]) != Some(true) {
        return None;
    }
    let risk_type = risk.get("risk_type").and_then(Value::as_str);
    if risk_type.is_some_and(|t| CRISIS_RISK_TYPES.contains(&t.to_lowercase().as_str())) {
        return None;
    }
    Some(json!({
        "category": "safety_risk",
        "risk_type": risk_type,
        "severity": "high",
    }))
}

/// What the guard finds in a whole reply: the guarded scan of the reply
/// (and, for JSON, of its decoded fields, so escaped text is read too),
/// plus a flagged `safety_risk`.
pub(crate) fn reply_violations(raw: &str, format: ReplyFormat) -> Vec<Value> {
    let object = match format {
        ReplyFormat::Json => parse_reply(raw).object,
        ReplyFormat::Text => None,
    };
    let mut text = raw.to_owned();
    if let Some(object) = &object {
        text.push('\n');
        text.push_str(&Value::Object(object.clone()).to_string());
    }
    let mut violations = safety::guarded_violations(&text);
    violations.extend(object.as_ref().and_then(flagged_risk));
    violations
}

/// The safety reading (`metadata.crisis_signal`, `safety_risk`) of a JSON
/// reply, as the action's metadata would have carried it.
fn withdrawn_reading(raw: &str, format: ReplyFormat) -> Option<Value> {
    if format != ReplyFormat::Json {
        return None;
    }
    let object = parse_reply(raw).object?;
    let mut metadata = Map::new();
    if let Some(llm_metadata) = reply::llm_metadata(&object) {
        metadata.insert(
            "llm_metadata".to_owned(),
            Value::Object(llm_metadata.clone()),
        );
    }
    if let Some(risk) = object.get("safety_risk") {
        metadata.insert("safety_risk".to_owned(), risk.clone());
    }
    heartrule_domain::safety::safety_reading(&metadata)
}

/// The instruction appended to the prompt of the regeneration.
pub(crate) fn corrective_instruction(violations: &[Value]) -> String {
    let problems: Vec<String> = violations
        .iter()
        .map(|v| {
            let category = v["category"].as_str().unwrap_or_default();
            let name = match category {
                "diagnosis" => "诊断",
                "prescription" => "处方或用药建议",
                "guarantee" => "疗效保证",
                _ => "你的安全自查（safety_risk）报告的风险",
            };
            match (v["matched_pattern"].as_str(), v["risk_type"].as_str()) {
                (Some(pattern), _) => format!("{name}（“{pattern}”）"),
                (None, Some(risk_type)) => format!("{name}（{risk_type}）"),
                (None, None) => name.to_owned(),
            }
        })
        .collect();
    format!(
        "【输出安全修正】你上一次生成的回复违反了安全与伦理底线：{}。\
         请重新生成这条回复：不做任何诊断，不建议或评价用药、剂量、停药，不保证或承诺疗效；\
         保持原来的任务、语气和输出格式。",
        problems.join("、")
    )
}

/// One generation under the guard.
struct Attempt {
    raw: String,
    violations: Vec<Value>,
    gate: SentenceGate,
}

impl Turn {
    /// A user-facing LLM call under the output guard (see the module
    /// documentation). With the guard off, a plain
    /// [`Turn::call_llm_or_degrade`]. `None` when the LLM is unavailable in
    /// degraded mode: the caller runs on its scripted text.
    ///
    /// # Errors
    /// The first call's failure, as [`Turn::call_llm`]; a failed
    /// regeneration only means the scripted text is used.
    pub(crate) async fn guarded_llm(
        &mut self,
        call: GuardedCall<'_>,
    ) -> Result<Option<GuardedReply>, DomainError> {
        if !self.options.output_guard {
            let raw = self
                .call_llm_or_degrade(
                    call.action_id,
                    call.purpose,
                    call.prompt,
                    call.temperature,
                    call.max_tokens,
                    call.streaming,
                )
                .await?;
            return Ok(raw.map(GuardedReply::unguarded));
        }
        if self.llm_unavailable {
            return Ok(None);
        }
        let sink = self.sink_for(call.streaming);
        let mut first = match self
            .attempt(&call, sink.as_deref(), call.purpose, call.prompt.clone())
            .await
        {
            Ok(first) => first,
            // Whatever of the reply was shown has been retracted: the
            // scripted text can stand in for it.
            Err(error) if self.degrades_on(&error, call.action_id, call.purpose) => {
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if first.violations.is_empty() {
            release_rest(sink.as_deref(), call.action_id, &mut first.gate);
            return Ok(Some(self.conclude(
                &call,
                Verdict::Passed,
                first.raw,
                Vec::new(),
                None,
            )));
        }

        let mut record = Map::new();
        let prompt = format!(
            "{}\n\n{}",
            call.prompt,
            corrective_instruction(&first.violations)
        );
        let retry = self
            .attempt(&call, sink.as_deref(), GUARD_RETRY_PURPOSE, prompt)
            .await;
        if retry.is_ok() {
            // The withdrawn reply's reading of the user (a crisis signal)
            // still reaches the crisis protocol.
            self.safety_readings
                .extend(withdrawn_reading(&first.raw, call.format));
        }
        let (verdict, raw) = match retry {
            Ok(mut second) if second.violations.is_empty() => {
                release_rest(sink.as_deref(), call.action_id, &mut second.gate);
                (Verdict::Regenerated, second.raw)
            }
            Ok(second) => {
                record.insert("retryViolations".to_owned(), json!(second.violations));
                (Verdict::Replaced, second.raw)
            }
            Err(error) => {
                record.insert("retryError".to_owned(), json!(error.to_string()));
                (Verdict::Replaced, first.raw)
            }
        };
        let replacement = (verdict == Verdict::Replaced).then(|| call.scripted.clone());
        if let (Some(sink), Some(text)) = (sink.as_deref(), replacement.as_deref()) {
            if !text.is_empty() {
                sink.delta(call.action_id, text);
            }
        }
        let violations = first.violations;
        Ok(Some(self.conclude(
            &call,
            verdict,
            raw,
            violations,
            Some(record),
        )))
    }

    /// Records the verdict (metric, business event) and builds the reply.
    fn conclude(
        &self,
        call: &GuardedCall<'_>,
        verdict: Verdict,
        raw: String,
        violations: Vec<Value>,
        extra: Option<Map<String, Value>>,
    ) -> GuardedReply {
        metrics::counter!(
            OUTPUT_GUARD_TOTAL,
            "action_type" => call.action_type.as_str(),
            "outcome" => verdict.as_str(),
        )
        .increment(1);
        if verdict != Verdict::Passed {
            let categories: Vec<&str> = violations
                .iter()
                .filter_map(|v| v["category"].as_str())
                .collect();
            // Names what was found, never the reply's words.
            tracing::warn!(
                target: SAFETY_EVENT_TARGET,
                event = "output_guard",
                "action.id" = %call.action_id,
                "action.type" = call.action_type.as_str(),
                outcome = verdict.as_str(),
                categories = ?categories,
                "AI reply withdrawn by the output guard"
            );
        }
        let mut record = extra.unwrap_or_default();
        record.insert("verdict".to_owned(), json!(verdict.as_str()));
        record.insert("violations".to_owned(), json!(violations));
        GuardedReply {
            raw,
            replacement: (verdict == Verdict::Replaced).then(|| call.scripted.clone()),
            record: Some(Value::Object(record)),
        }
    }

    /// One generation: streamed through a [`SentenceGate`] when the call
    /// streams, then checked whole. A failing reply of which text was shown
    /// is retracted; one that passes still holds its last sentence (see
    /// [`release_rest`]).
    async fn attempt(
        &mut self,
        call: &GuardedCall<'_>,
        sink: Option<&dyn ContentSink>,
        purpose: &str,
        prompt: String,
    ) -> Result<Attempt, LlmError> {
        let request = self.llm_request(
            call.action_id,
            purpose,
            prompt,
            call.temperature,
            call.max_tokens,
        );
        let mut gate = SentenceGate::default();
        let answer = match sink {
            Some(sink) => {
                let streamed = self
                    .stream(&request, call.streaming, &mut |text| {
                        let released = gate.push(text);
                        if !released.is_empty() {
                            sink.delta(call.action_id, &released);
                        }
                    })
                    .await;
                if streamed.is_err() && gate.released_any() {
                    sink.retract(call.action_id);
                }
                streamed?
            }
            None => self.complete(&request).await?,
        };
        let mut violations = reply_violations(&answer.response.text, call.format);
        if violations.is_empty() && gate.tripped() {
            violations.clone_from(&gate.violations);
        }
        if !violations.is_empty() && gate.released_any() {
            if let Some(sink) = sink {
                sink.retract(call.action_id);
            }
        }
        let raw = answer.response.text.clone();
        self.record_call(call.action_id, request, answer);
        Ok(Attempt {
            raw,
            violations,
            gate,
        })
    }
}

/// Sends the last sentence of a reply that passed.
fn release_rest(sink: Option<&dyn ContentSink>, action_id: &str, gate: &mut SentenceGate) {
    let rest = gate.finish();
    if let (Some(sink), false) = (sink, rest.is_empty()) {
        sink.delta(action_id, &rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate_run(deltas: &[&str]) -> (Vec<String>, SentenceGate) {
        let mut gate = SentenceGate::default();
        let mut out: Vec<String> = deltas
            .iter()
            .map(|d| gate.push(d))
            .filter(|r| !r.is_empty())
            .collect();
        let rest = gate.finish();
        if !rest.is_empty() {
            out.push(rest);
        }
        (out, gate)
    }

    #[test]
    fn sentences_are_released_whole_chinese_and_english() {
        let (out, gate) = gate_run(&["你好，", "很高兴", "见到你。我们", "聊聊吧？好", "的"]);
        assert_eq!(out, ["你好，很高兴见到你。", "我们聊聊吧？", "好的"]);
        assert!(!gate.tripped());
        let (out, _) = gate_run(&["It is 3.5 km. Sh", "all we walk? Yes!\nOk"]);
        // One delta's complete sentences go out together.
        assert_eq!(out, ["It is 3.5 km.", " Shall we walk? Yes!\n", "Ok"]);
    }

    #[test]
    fn a_failing_sentence_stops_the_release() {
        let (out, gate) = gate_run(&["我听到了。", "你患有抑", "郁症。", "别担心。"]);
        assert_eq!(out, ["我听到了。"]);
        assert!(gate.tripped() && gate.released_any());
        assert_eq!(gate.violations[0]["category"], "diagnosis");
        // The last, unterminated sentence is checked too.
        let (out, gate) = gate_run(&["好的。", "一定会好"]);
        assert_eq!(out, ["好的。"]);
        assert!(gate.tripped());
    }

    #[test]
    fn a_flagged_self_check_fails_the_reply_but_a_crisis_type_does_not() {
        let flagged = r#"{"content":"好的","safety_risk":{"detected":true,"risk_type":"inappropriate_advice"}}"#;
        let found = reply_violations(flagged, ReplyFormat::Json);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["category"], "safety_risk");
        assert_eq!(found[0]["risk_type"], "inappropriate_advice");
        let crisis =
            r#"{"content":"好的","safety_risk":{"detected":true,"risk_type":"self_harm"}}"#;
        assert!(reply_violations(crisis, ReplyFormat::Json).is_empty());
        let clean = r#"{"content":"好的","safety_risk":{"detected":false}}"#;
        assert!(reply_violations(clean, ReplyFormat::Json).is_empty());
        // Escaped text is read decoded.
        let escaped = r#"{"content":"\u4f60\u60a3\u6709\u7126\u8651"}"#;
        assert_eq!(
            reply_violations(escaped, ReplyFormat::Json)[0]["category"],
            "diagnosis"
        );
    }

    #[test]
    fn the_corrective_instruction_names_what_was_wrong() {
        let mut found = safety::guarded_violations("你患有焦虑，建议服用");
        found.push(json!({"category": "safety_risk", "risk_type": "guarantee"}));
        let text = corrective_instruction(&found);
        assert!(text.contains("诊断（“你患有”）"), "{text}");
        assert!(text.contains("处方或用药建议（“建议服用”）"), "{text}");
        assert!(text.contains("（guarantee）"), "{text}");
    }
}
