//! Repair intents: a user answering a question who asks to skip it, to stop
//! the session, or to speak to a person.
//!
//! Two sources read the answer to a pending `ai_ask`: the
//! [`IntentDetector`] (phrases per language, no network, negation-aware like
//! the crisis detector) and the LLM's own reading (`metadata.user_intent` of
//! the `ai_ask` reply, see [`llm_intent`]). Either one triggers the intent:
//!
//! - **skip**: the engine completes the question without extraction, writes
//!   each of its variables as declined (value `null`, source
//!   [`DECLINED_SOURCE`]) and moves on to the next action in the same turn;
//! - **stop**: the session ends with the configured closing message (status
//!   `completed`, `endedBy: user_request` in the engine state metadata);
//! - **human**: the session waits in `handoff` like the crisis protocol's
//!   (same release route and cooldown) with a neutral reply and no risk
//!   recorded.
//!
//! The crisis protocol reads every message first and wins.

use crate::safety::detector::{ends_clause, is_cjk, normalize, strip_quoted};
use crate::safety::SignalSource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The variable source of an answer the user declined to give: the value is
/// `null`, which placeholders render as an empty text and conditions treat
/// as unset.
pub const DECLINED_SOURCE: &str = "declined";

/// The engine-state metadata key recording why a session ended early
/// (`user_request` for a stop intent).
pub const ENDED_BY_KEY: &str = "endedBy";

/// The [`ENDED_BY_KEY`] value of a session the user asked to stop.
pub const ENDED_BY_USER: &str = "user_request";

/// What the user asked for instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepairIntent {
    /// Move on without answering this question.
    Skip,
    /// End the session.
    Stop,
    /// Speak to a person instead of the AI.
    Human,
}

impl RepairIntent {
    /// The lowercase name (also the metric label and the LLM's spelling).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Stop => "stop",
            Self::Human => "human",
        }
    }

    /// The intent named `text` (`none` and anything else: no intent).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_lowercase().as_str() {
            "skip" => Some(Self::Skip),
            "stop" => Some(Self::Stop),
            "human" => Some(Self::Human),
            _ => None,
        }
    }
}

/// An intent and the detector that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntentReading {
    /// What the user asked for.
    pub intent: RepairIntent,
    /// `local` (the [`IntentDetector`]) or `llm` (`metadata.user_intent`).
    pub source: SignalSource,
}

/// The LLM's reading of the user's answer in an `ai_ask` reply's metadata:
/// `user_intent` (`skip`, `stop`, `human` or `none`) inside the reply's
/// `metadata` object (kept as `llm_metadata`), or at its top level.
#[must_use]
pub fn llm_intent(reply_metadata: &Map<String, Value>) -> Option<RepairIntent> {
    reply_metadata
        .get("llm_metadata")
        .and_then(|m| m.get("user_intent"))
        .or_else(|| reply_metadata.get("user_intent"))
        .and_then(Value::as_str)
        .and_then(RepairIntent::parse)
}

/// One phrase of the local detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentPattern {
    /// Safe to log (`en.skip_question`).
    pub id: String,
    /// What the phrase asks for.
    pub intent: RepairIntent,
    /// `en`, `zh`, …: informative; every phrase is looked for in every message.
    pub language: String,
    /// Matched case-insensitively; English phrases on word boundaries.
    pub phrase: String,
    /// The phrase must end its clause (filler such as "now", "please",
    /// "了", "吧" aside): "I want to stop." but not "I want to stop worrying".
    #[serde(default)]
    pub whole_clause: bool,
    /// The phrase counts only after a request phrase of the same clause
    /// ("can I talk to a real person"), so a question about a person ("are
    /// you a real person?") is not a request for one.
    #[serde(default)]
    pub needs_request: bool,
}

/// Phrases added to the built-in Chinese and English ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRules {
    /// Looked for besides the built-in phrases.
    #[serde(default)]
    pub patterns: Vec<IntentPattern>,
}

/// `(id, intent, phrase, whole_clause, needs_request)` of the built-in patterns.
type Builtin = (&'static str, RepairIntent, &'static str, bool, bool);

const EN: &[Builtin] = &[
    ("en.skip", RepairIntent::Skip, "skip this", false, false),
    ("en.skip", RepairIntent::Skip, "skip that", false, false),
    ("en.skip", RepairIntent::Skip, "skip it", false, false),
    (
        "en.skip",
        RepairIntent::Skip,
        "skip the question",
        false,
        false,
    ),
    ("en.skip", RepairIntent::Skip, "next question", false, false),
    (
        "en.decline",
        RepairIntent::Skip,
        "rather not answer",
        false,
        false,
    ),
    (
        "en.decline",
        RepairIntent::Skip,
        "rather not say",
        false,
        false,
    ),
    (
        "en.decline",
        RepairIntent::Skip,
        "prefer not to answer",
        false,
        false,
    ),
    (
        "en.decline",
        RepairIntent::Skip,
        "prefer not to say",
        false,
        false,
    ),
    (
        "en.decline",
        RepairIntent::Skip,
        "don't want to answer",
        false,
        false,
    ),
    (
        "en.decline",
        RepairIntent::Skip,
        "do not want to answer",
        false,
        false,
    ),
    (
        "en.decline",
        RepairIntent::Skip,
        "pass on this",
        false,
        false,
    ),
    ("en.stop", RepairIntent::Stop, "i want to stop", true, false),
    (
        "en.stop",
        RepairIntent::Stop,
        "i'd like to stop",
        true,
        false,
    ),
    ("en.stop", RepairIntent::Stop, "let's stop", true, false),
    ("en.stop", RepairIntent::Stop, "can we stop", true, false),
    ("en.stop", RepairIntent::Stop, "i want to quit", true, false),
    ("en.stop", RepairIntent::Stop, "i quit", true, false),
    ("en.stop", RepairIntent::Stop, "i'm done", true, false),
    ("en.stop", RepairIntent::Stop, "stop talking", false, false),
    (
        "en.end_session",
        RepairIntent::Stop,
        "end the session",
        false,
        false,
    ),
    (
        "en.end_session",
        RepairIntent::Stop,
        "end this session",
        false,
        false,
    ),
    (
        "en.end_session",
        RepairIntent::Stop,
        "stop the session",
        false,
        false,
    ),
    (
        "en.end_session",
        RepairIntent::Stop,
        "end the conversation",
        false,
        false,
    ),
    (
        "en.end_session",
        RepairIntent::Stop,
        "end this conversation",
        false,
        false,
    ),
    (
        "en.end_session",
        RepairIntent::Stop,
        "stop the conversation",
        false,
        false,
    ),
    (
        "en.end_session",
        RepairIntent::Stop,
        "stop this conversation",
        false,
        false,
    ),
    ("en.human", RepairIntent::Human, "a human", false, true),
    (
        "en.human",
        RepairIntent::Human,
        "a real person",
        false,
        true,
    ),
    (
        "en.human",
        RepairIntent::Human,
        "an actual person",
        false,
        true,
    ),
    ("en.human", RepairIntent::Human, "a person", false, true),
    ("en.human", RepairIntent::Human, "someone real", false, true),
    ("en.human", RepairIntent::Human, "a live agent", false, true),
    (
        "en.human",
        RepairIntent::Human,
        "a human counselor",
        false,
        true,
    ),
    (
        "en.human",
        RepairIntent::Human,
        "a human counsellor",
        false,
        true,
    ),
    (
        "en.human",
        RepairIntent::Human,
        "a real counselor",
        false,
        true,
    ),
    (
        "en.human",
        RepairIntent::Human,
        "a real counsellor",
        false,
        true,
    ),
    (
        "en.human",
        RepairIntent::Human,
        "a real therapist",
        false,
        true,
    ),
    (
        "en.human",
        RepairIntent::Human,
        "a staff member",
        false,
        true,
    ),
];

const ZH: &[Builtin] = &[
    ("zh.skip", RepairIntent::Skip, "跳过", false, false),
    ("zh.skip", RepairIntent::Skip, "下一个问题", false, false),
    ("zh.skip", RepairIntent::Skip, "换个问题", false, false),
    ("zh.decline", RepairIntent::Skip, "不想回答", false, false),
    ("zh.decline", RepairIntent::Skip, "不想说", false, false),
    ("zh.decline", RepairIntent::Skip, "不方便说", false, false),
    ("zh.decline", RepairIntent::Skip, "不方便回答", false, false),
    ("zh.stop", RepairIntent::Stop, "结束对话", false, false),
    ("zh.stop", RepairIntent::Stop, "结束咨询", false, false),
    ("zh.stop", RepairIntent::Stop, "结束会话", false, false),
    ("zh.stop", RepairIntent::Stop, "停止对话", false, false),
    ("zh.stop", RepairIntent::Stop, "不想聊了", true, false),
    ("zh.stop", RepairIntent::Stop, "不想继续了", true, false),
    ("zh.stop", RepairIntent::Stop, "不聊了", true, false),
    ("zh.stop", RepairIntent::Stop, "到此为止", true, false),
    ("zh.human", RepairIntent::Human, "转人工", false, false),
    ("zh.human", RepairIntent::Human, "真人", false, true),
    ("zh.human", RepairIntent::Human, "人工客服", false, true),
    ("zh.human", RepairIntent::Human, "人工服务", false, true),
    ("zh.human", RepairIntent::Human, "真正的咨询师", false, true),
    ("zh.human", RepairIntent::Human, "工作人员", false, true),
    ("zh.human", RepairIntent::Human, "人类咨询师", false, true),
];

/// Phrases that ask for something, for patterns that need one.
const REQUESTS_EN: &[&str] = &[
    "talk to",
    "talk with",
    "speak to",
    "speak with",
    "chat with",
    "connect me",
    "transfer me",
    "put me through",
    "get me",
    "give me",
    "i want",
    "i need",
    "i'd like",
    "i would like",
    "switch to",
];
const REQUESTS_ZH: &[&str] = &[
    "我要",
    "我想",
    "我需要",
    "能不能",
    "可不可以",
    "可以",
    "请",
    "帮我",
    "给我",
    "让我",
    "找",
    "换",
    "转",
    "接通",
];

/// Polite request forms that mention "you" without asking about the AI.
const POLITE_YOU: &[&str] = &["can you", "could you", "would you", "will you"];

/// Words that may follow a whole-clause phrase ("I want to stop now").
const FILLER_EN: &[&str] = &[
    "now", "please", "here", "today", "for", "then", "thanks", "thank", "you", "ok", "okay",
    "already", "anymore",
];
const FILLER_ZH: &[&str] = &[
    "好吗",
    "可以吗",
    "行吗",
    "了",
    "吧",
    "啦",
    "呢",
    "啊",
    "吗",
    "哦",
    "今天",
    "现在",
    "先",
];

/// Question forms built with 不 that are not negations ("能不能跳过").
const ZH_QUESTION_FORMS: &[&str] = &["能不能", "可不可以", "要不要", "行不行", "好不好", "是不是"];

/// Phrases that contain a pattern but mean something else.
const BENIGN: &[&str] = &["人工智能", "人工呼吸"];

/// Words (English) or characters (Chinese) before a match looked at for a
/// negation, as in the crisis detector.
const NEGATION_WORDS: usize = 3;
const NEGATION_CHARS: usize = 4;

/// The local intent detector, built once from the built-in and configured
/// patterns.
#[derive(Debug, Clone)]
pub struct IntentDetector {
    patterns: Vec<IntentPattern>,
}

impl Default for IntentDetector {
    fn default() -> Self {
        Self::new(&IntentRules::default())
    }
}

/// What the local detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentMatch {
    /// What the user asked for.
    pub intent: RepairIntent,
    /// The id of the pattern that matched; safe to log.
    pub pattern_id: String,
}

impl IntentDetector {
    /// The built-in Chinese and English patterns plus `rules`.
    #[must_use]
    pub fn new(rules: &IntentRules) -> Self {
        let builtin = |language: &str, table: &[Builtin]| {
            table
                .iter()
                .map(
                    |(id, intent, phrase, whole_clause, needs_request)| IntentPattern {
                        id: (*id).to_owned(),
                        intent: *intent,
                        language: language.to_owned(),
                        phrase: (*phrase).to_owned(),
                        whole_clause: *whole_clause,
                        needs_request: *needs_request,
                    },
                )
                .collect::<Vec<_>>()
        };
        let mut patterns = builtin("en", EN);
        patterns.extend(builtin("zh", ZH));
        patterns.extend(rules.patterns.iter().map(|p| IntentPattern {
            phrase: normalize(&p.phrase),
            ..p.clone()
        }));
        Self { patterns }
    }

    /// The intent `text` expresses, if any. When several match, asking for
    /// a person wins over stopping, and stopping over skipping. Quoted
    /// spans and negated matches do not count.
    #[must_use]
    pub fn detect(&self, text: &str) -> Option<IntentMatch> {
        let mut cleaned = strip_quoted(&normalize(text));
        for phrase in BENIGN {
            cleaned = cleaned.replace(phrase, " ");
        }
        self.patterns
            .iter()
            .filter(|p| !p.phrase.is_empty() && matches(&cleaned, p))
            .max_by_key(|p| p.intent)
            .map(|p| IntentMatch {
                intent: p.intent,
                pattern_id: p.id.clone(),
            })
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\''
}

/// Whether `pattern` occurs in `text` in a way that counts.
fn matches(text: &str, pattern: &IntentPattern) -> bool {
    let phrase = pattern.phrase.as_str();
    let cjk = phrase.chars().next().is_some_and(is_cjk);
    text.match_indices(phrase).any(|(start, found)| {
        let end = start + found.len();
        let before = &text[..start];
        let after = &text[end..];
        if !cjk
            && (before.chars().next_back().is_some_and(is_word_char)
                || after.chars().next().is_some_and(is_word_char))
        {
            return false;
        }
        let clause = before.rfind(ends_clause).map_or(before, |at| &before[at..]);
        if negated(clause, cjk) {
            return false;
        }
        if pattern.whole_clause && !ends_its_clause(after, cjk) {
            return false;
        }
        !pattern.needs_request || requested(clause)
    })
}

/// Whether the clause text right before a match denies it.
fn negated(before: &str, cjk: bool) -> bool {
    if cjk {
        let mut text = before.to_owned();
        for form in ZH_QUESTION_FORMS {
            text = text.replace(form, "");
        }
        let chars: Vec<char> = text.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(NEGATION_CHARS)..]
            .iter()
            .collect();
        ["不", "没", "未", "别", "勿"]
            .iter()
            .any(|n| tail.contains(n))
    } else {
        before
            .split_whitespace()
            .rev()
            .take(NEGATION_WORDS)
            .any(|w| matches!(w, "not" | "never" | "no") || w.ends_with("n't"))
    }
}

/// Whether only filler follows the match up to the end of its clause.
fn ends_its_clause(after: &str, cjk: bool) -> bool {
    let rest = after.split(ends_clause).next().unwrap_or_default();
    if cjk {
        let mut rest = rest.to_owned();
        for filler in FILLER_ZH {
            rest = rest.replace(filler, "");
        }
        rest.trim().is_empty()
    } else {
        rest.split_whitespace()
            .all(|w| FILLER_EN.contains(&w.trim_matches(|c: char| !is_word_char(c))))
    }
}

/// Whether the clause before a match asks for something, and is not a
/// question about the AI itself ("did you ever talk to a human").
fn requested(clause: &str) -> bool {
    let asks = REQUESTS_EN
        .iter()
        .chain(REQUESTS_ZH)
        .any(|r| clause.contains(r));
    let mut about_ai = clause.to_owned();
    for polite in POLITE_YOU {
        about_ai = about_ai.replace(polite, " ");
    }
    let mentions_ai = about_ai
        .split(|c: char| !is_word_char(c))
        .any(|w| matches!(w, "you" | "you're" | "your" | "are"))
        || about_ai.contains("你是")
        || about_ai.contains("是不是");
    asks && !mentions_ai
}

/// What users of one locale are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairReplies {
    /// The closing message of a session the user stopped.
    pub stop: String,
    /// The reply when the user asked for a person.
    pub human: String,
    /// The reply to messages sent while waiting for that person.
    pub holding: String,
}

/// The repair intents' settings (configuration `repair_intents:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairPolicy {
    /// Off: such answers are answers like any other.
    pub enabled: bool,
    /// Whether a request for a person also alerts the crisis protocol's
    /// on-call webhook (as a `repair.human_request`, level `none`).
    pub notify_on_human: bool,
    /// Used when the message's locale has no entry in `locales`.
    pub default_locale: String,
    /// The replies per locale (`zh`, `en`, …).
    pub locales: BTreeMap<String, RepairReplies>,
    /// Phrases added to the local detector's.
    pub rules: IntentRules,
}

/// Used only when no locale is configured at all (configuration refuses
/// that when repair intents are on).
static FALLBACK: RepairReplies = RepairReplies {
    stop: String::new(),
    human: String::new(),
    holding: String::new(),
};
const FALLBACK_STOP: &str = "Thank you for talking with me. Take care.";
const FALLBACK_HUMAN: &str = "I'll connect you with a person. Please wait a moment.";
/// The holding reply when no locale has one.
pub(crate) const FALLBACK_HOLDING: &str = "A person will be with you soon.";

impl RepairPolicy {
    /// The replies of `locale`, else of the default locale.
    #[must_use]
    pub fn replies(&self, locale: &str) -> &RepairReplies {
        self.locales
            .get(locale)
            .or_else(|| self.locales.get(&self.default_locale))
            .unwrap_or(&FALLBACK)
    }

    /// The closing message of a stopped session.
    #[must_use]
    pub fn stop_reply(&self, locale: &str) -> String {
        non_empty(&self.replies(locale).stop, FALLBACK_STOP)
    }

    /// The reply to a request for a person.
    #[must_use]
    pub fn human_reply(&self, locale: &str) -> String {
        non_empty(&self.replies(locale).human, FALLBACK_HUMAN)
    }

    /// The reply to a message sent while waiting for a person.
    #[must_use]
    pub fn holding_reply(&self, locale: &str) -> String {
        non_empty(&self.replies(locale).holding, FALLBACK_HOLDING)
    }
}

fn non_empty(text: &str, fallback: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        fallback.to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn intent(text: &str) -> Option<RepairIntent> {
        IntentDetector::default().detect(text).map(|m| m.intent)
    }

    #[test]
    fn skip_phrasings_in_both_languages() {
        for text in [
            "Can we skip this one?",
            "I'd rather not answer that",
            "Skip the question please",
            "next question",
            "I don't want to answer this",
            "跳过",
            "这个问题能不能跳过",
            "我不想回答这个问题",
            "不方便说，换个问题吧",
        ] {
            assert_eq!(intent(text), Some(RepairIntent::Skip), "{text}");
        }
    }

    #[test]
    fn stop_phrasings_in_both_languages() {
        for text in [
            "I want to stop.",
            "I want to stop now please",
            "Let's end the session",
            "Please stop the conversation",
            "I'm done",
            "我想结束对话",
            "我不想聊了",
            "今天就到此为止吧",
            "不聊了",
        ] {
            assert_eq!(intent(text), Some(RepairIntent::Stop), "{text}");
        }
    }

    #[test]
    fn human_requests_in_both_languages() {
        for text in [
            "Can I talk to a real person?",
            "I want to speak to a human",
            "Could you connect me with a human counselor",
            "I need a real therapist",
            "我想和真人聊",
            "能不能帮我找工作人员",
            "转人工",
            "请给我换一个真正的咨询师",
        ] {
            assert_eq!(intent(text), Some(RepairIntent::Human), "{text}");
        }
    }

    #[test]
    fn negated_and_benign_messages_are_no_intent() {
        for text in [
            "I don't want to stop",
            "I don't want to skip this, it matters",
            "Let's not skip it",
            "I want to stop worrying about work",
            "I can't stop thinking about it",
            "别跳过",
            "不要跳过这个问题",
            "我不是不想回答",
            "我没有不想聊了",
            "Are you a real person?",
            "Did you ever talk to a human?",
            "I want to know if you are a real person",
            "你是真人吗",
            "我想知道你是不是真人",
            "我想了解人工智能",
            "I want to be a better person",
            "My skipping rope broke",
            "I watched \"Skip This Track\" yesterday",
            "Hello, my name is Sam",
            "我今天心情还不错",
        ] {
            assert_eq!(intent(text), None, "{text}");
        }
    }

    #[test]
    fn a_person_request_wins_over_stopping_and_stopping_over_skipping() {
        assert_eq!(
            intent("I want to end the session and talk to a human"),
            Some(RepairIntent::Human)
        );
        assert_eq!(
            intent("skip it, actually let's end the session"),
            Some(RepairIntent::Stop)
        );
    }

    #[test]
    fn configured_patterns_apply_and_carry_their_id() {
        let detector = IntentDetector::new(&IntentRules {
            patterns: vec![IntentPattern {
                id: "en.enough".into(),
                intent: RepairIntent::Stop,
                language: "en".into(),
                phrase: "Enough For Today".into(),
                whole_clause: true,
                needs_request: false,
            }],
        });
        let found = detector.detect("ok, enough for today.").unwrap();
        assert_eq!(found.intent, RepairIntent::Stop);
        assert_eq!(found.pattern_id, "en.enough");
        assert_eq!(detector.detect("enough for today's topic"), None);
        assert_eq!(
            detector.detect("skip it").map(|m| m.pattern_id),
            Some("en.skip".to_owned())
        );
    }

    #[test]
    fn the_llm_reading_comes_from_the_reply_metadata() {
        let of = |v: Value| llm_intent(v.as_object().unwrap());
        assert_eq!(
            of(json!({"llm_metadata": {"user_intent": "skip"}})),
            Some(RepairIntent::Skip)
        );
        assert_eq!(
            of(json!({"user_intent": "HUMAN"})),
            Some(RepairIntent::Human)
        );
        assert_eq!(of(json!({"llm_metadata": {"user_intent": "none"}})), None);
        assert_eq!(of(json!({"llm_metadata": {"user_intent": 3}})), None);
        assert_eq!(of(json!({})), None);
        for intent in [RepairIntent::Skip, RepairIntent::Stop, RepairIntent::Human] {
            assert_eq!(RepairIntent::parse(intent.as_str()), Some(intent));
            assert_eq!(serde_json::to_value(intent).unwrap(), intent.as_str());
        }
    }

    #[test]
    fn replies_follow_the_locale_then_the_default() {
        let mut locales = BTreeMap::new();
        for (locale, word) in [("zh", "再见"), ("en", "Bye")] {
            locales.insert(
                locale.to_owned(),
                RepairReplies {
                    stop: word.into(),
                    human: format!("{word} human"),
                    holding: format!("{word} wait"),
                },
            );
        }
        let policy = RepairPolicy {
            enabled: true,
            notify_on_human: false,
            default_locale: "en".into(),
            locales,
            rules: IntentRules::default(),
        };
        assert_eq!(policy.stop_reply("zh"), "再见");
        assert_eq!(policy.human_reply("fr"), "Bye human");
        assert_eq!(policy.holding_reply("en"), "Bye wait");
    }
}
