//! The local crisis detector: weighted phrases per language, benign
//! contexts and negations, and a score → level rule. No network, no model:
//! it runs on every user message before anything else.

use super::{RiskLevel, RiskSignal, SignalSource};
use serde::{Deserialize, Serialize};

/// What a matched phrase contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternKind {
    /// Speaks of self-harm or suicide itself.
    Primary,
    /// Raises the score (a time, a means, a farewell) but only next to a
    /// primary match: "tonight" alone is not a crisis.
    Booster,
}

/// One phrase of the detector, matched as a lowercase substring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrisisPattern {
    /// Stable id, logged instead of the user's words (`en.kill_myself`).
    pub id: String,
    /// `zh` or `en` (or any locale added in configuration).
    pub language: String,
    pub phrase: String,
    pub weight: u32,
    #[serde(default = "primary")]
    pub kind: PatternKind,
}

fn primary() -> PatternKind {
    PatternKind::Primary
}

/// Score at which each level starts; below `low` nothing was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreLevels {
    pub low: u32,
    pub medium: u32,
    pub high: u32,
    pub imminent: u32,
}

impl Default for ScoreLevels {
    fn default() -> Self {
        Self {
            low: 1,
            medium: 3,
            high: 5,
            imminent: 8,
        }
    }
}

impl ScoreLevels {
    #[must_use]
    pub fn level(&self, score: u32) -> RiskLevel {
        if score >= self.imminent {
            RiskLevel::Imminent
        } else if score >= self.high {
            RiskLevel::High
        } else if score >= self.medium {
            RiskLevel::Medium
        } else if score >= self.low {
            RiskLevel::Low
        } else {
            RiskLevel::None
        }
    }
}

/// Patterns added by configuration on top of the built-in ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorRules {
    #[serde(default)]
    pub patterns: Vec<CrisisPattern>,
    /// Phrases whose words are meant in another sense ("killing time");
    /// they are blanked out before matching.
    #[serde(default)]
    pub benign: Vec<String>,
    #[serde(default)]
    pub levels: ScoreLevels,
}

/// `(id, phrase, weight, kind)` of the built-in English patterns.
const EN: &[(&str, &str, u32, PatternKind)] = &[
    ("en.kill_myself", "kill myself", 6, PatternKind::Primary),
    ("en.kill_myself", "killing myself", 6, PatternKind::Primary),
    ("en.end_my_life", "end my life", 6, PatternKind::Primary),
    ("en.end_my_life", "ending my life", 6, PatternKind::Primary),
    ("en.end_it_all", "end it all", 5, PatternKind::Primary),
    (
        "en.take_my_life",
        "take my own life",
        6,
        PatternKind::Primary,
    ),
    ("en.suicide", "suicide", 4, PatternKind::Primary),
    ("en.suicidal", "suicidal", 5, PatternKind::Primary),
    ("en.want_to_die", "want to die", 5, PatternKind::Primary),
    ("en.want_to_die", "wanna die", 5, PatternKind::Primary),
    (
        "en.want_to_die",
        "wish i were dead",
        5,
        PatternKind::Primary,
    ),
    ("en.want_to_die", "wish i was dead", 5, PatternKind::Primary),
    ("en.not_live", "don't want to live", 5, PatternKind::Primary),
    ("en.not_live", "dont want to live", 5, PatternKind::Primary),
    (
        "en.not_live",
        "do not want to live",
        5,
        PatternKind::Primary,
    ),
    (
        "en.no_reason_to_live",
        "no reason to live",
        4,
        PatternKind::Primary,
    ),
    (
        "en.better_off_dead",
        "better off dead",
        5,
        PatternKind::Primary,
    ),
    (
        "en.better_off_without_me",
        "better off without me",
        4,
        PatternKind::Primary,
    ),
    ("en.hurt_myself", "hurt myself", 4, PatternKind::Primary),
    ("en.hurt_myself", "cut myself", 4, PatternKind::Primary),
    ("en.self_harm", "self-harm", 4, PatternKind::Primary),
    ("en.self_harm", "self harm", 4, PatternKind::Primary),
    ("en.cant_go_on", "can't go on", 3, PatternKind::Primary),
    ("en.cant_go_on", "cannot go on", 3, PatternKind::Primary),
    ("en.overdose", "overdose", 3, PatternKind::Primary),
    ("en.when", "tonight", 3, PatternKind::Booster),
    ("en.when", "right now", 3, PatternKind::Booster),
    ("en.means", "pills", 2, PatternKind::Booster),
    ("en.means", "bridge", 2, PatternKind::Booster),
    ("en.means", "rope", 2, PatternKind::Booster),
    ("en.means", "gun", 2, PatternKind::Booster),
    ("en.plan", "plan to", 2, PatternKind::Booster),
    ("en.farewell", "note", 2, PatternKind::Booster),
    ("en.farewell", "goodbye", 2, PatternKind::Booster),
];

/// `(id, phrase, weight, kind)` of the built-in Chinese patterns.
const ZH: &[(&str, &str, u32, PatternKind)] = &[
    ("zh.suicide", "自杀", 5, PatternKind::Primary),
    ("zh.not_live", "不想活", 5, PatternKind::Primary),
    ("zh.not_live", "活不下去", 5, PatternKind::Primary),
    ("zh.want_to_die", "想死", 5, PatternKind::Primary),
    ("zh.want_to_die", "不如死了", 5, PatternKind::Primary),
    ("zh.want_to_die", "死了算了", 5, PatternKind::Primary),
    ("zh.end_life", "结束生命", 6, PatternKind::Primary),
    ("zh.end_life", "结束自己的生命", 6, PatternKind::Primary),
    ("zh.end_life", "了结自己", 6, PatternKind::Primary),
    ("zh.suicide", "轻生", 5, PatternKind::Primary),
    ("zh.self_harm", "自残", 4, PatternKind::Primary),
    ("zh.self_harm", "割腕", 5, PatternKind::Primary),
    ("zh.self_harm", "伤害自己", 4, PatternKind::Primary),
    ("zh.jump", "跳楼", 4, PatternKind::Primary),
    ("zh.meaningless", "活着没意思", 4, PatternKind::Primary),
    ("zh.meaningless", "活着没有意义", 4, PatternKind::Primary),
    ("zh.when", "今晚", 3, PatternKind::Booster),
    ("zh.when", "现在就", 3, PatternKind::Booster),
    ("zh.means", "安眠药", 2, PatternKind::Booster),
    ("zh.means", "药", 1, PatternKind::Booster),
    ("zh.farewell", "遗书", 3, PatternKind::Booster),
    ("zh.farewell", "永别", 3, PatternKind::Booster),
    ("zh.plan", "计划", 2, PatternKind::Booster),
];

/// Built-in phrases that use crisis words in another sense.
const BENIGN: &[&str] = &[
    "killing time",
    "kill time",
    "killing it",
    "killed it",
    "kill it",
    "dying to",
    "to die for",
    "die laughing",
    "bored to death",
    "suicide squad",
    "想死你了",
    "想死你们了",
    "笑死",
    "累死",
    "热死",
    "饿死",
    "困死",
    "烦死",
    "气死",
    "吓死",
    "冷死",
    "死机",
];

/// Characters that end a clause: a negation does not reach across them.
pub(crate) fn ends_clause(c: char) -> bool {
    matches!(
        c,
        ',' | '.' | '!' | '?' | ';' | ':' | '，' | '。' | '！' | '？' | '；' | '：' | '\n'
    )
}

/// How many words (English) or characters (Chinese) before a match are
/// looked at for a negation: near enough for "never thought about suicide"
/// and "我从来没想过自杀", short enough that "not sure why, but I want to
/// die" still counts.
const NEGATION_WORDS: usize = 3;
const NEGATION_CHARS: usize = 4;

pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}')
}

/// Whether the clause text right before a match denies it.
fn negated(before: &str, cjk: bool) -> bool {
    if cjk {
        let tail: String = {
            let chars: Vec<char> = before.chars().collect();
            chars[chars.len().saturating_sub(NEGATION_CHARS)..]
                .iter()
                .collect()
        };
        ["不", "没", "未"].iter().any(|n| tail.contains(n))
    } else {
        before
            .split_whitespace()
            .rev()
            .take(NEGATION_WORDS)
            .any(|w| matches!(w, "not" | "never" | "no") || w.ends_with("n't"))
    }
}

/// The local detector, built once from the built-in and configured rules.
#[derive(Debug, Clone)]
pub struct LocalDetector {
    patterns: Vec<CrisisPattern>,
    benign: Vec<String>,
    levels: ScoreLevels,
}

impl Default for LocalDetector {
    fn default() -> Self {
        Self::new(&DetectorRules::default())
    }
}

impl LocalDetector {
    /// The built-in Chinese and English rules plus `rules`.
    #[must_use]
    pub fn new(rules: &DetectorRules) -> Self {
        let builtin = |language: &str, table: &[(&str, &str, u32, PatternKind)]| {
            table
                .iter()
                .map(|(id, phrase, weight, kind)| CrisisPattern {
                    id: (*id).to_owned(),
                    language: language.to_owned(),
                    phrase: (*phrase).to_owned(),
                    weight: *weight,
                    kind: *kind,
                })
                .collect::<Vec<_>>()
        };
        let mut patterns = builtin("en", EN);
        patterns.extend(builtin("zh", ZH));
        patterns.extend(rules.patterns.iter().map(|p| CrisisPattern {
            phrase: normalize(&p.phrase),
            ..p.clone()
        }));
        let mut benign: Vec<String> = BENIGN.iter().map(|s| (*s).to_owned()).collect();
        benign.extend(rules.benign.iter().map(|b| normalize(b)));
        Self {
            patterns,
            benign,
            levels: rules.levels,
        }
    }

    /// Scores `text`: the sum of the weights of distinct pattern ids found
    /// (boosters only count next to a primary match), mapped to a level.
    /// Quoted titles, benign phrases and negated matches do not count.
    #[must_use]
    pub fn detect(&self, text: &str) -> RiskSignal {
        let cleaned = self.without_benign(&strip_quoted(&normalize(text)));
        let mut primary_ids: Vec<(&str, u32)> = Vec::new();
        let mut booster_ids: Vec<(&str, u32)> = Vec::new();
        for pattern in &self.patterns {
            if pattern.phrase.is_empty() || !affirmed(&cleaned, &pattern.phrase) {
                continue;
            }
            let found = match pattern.kind {
                PatternKind::Primary => &mut primary_ids,
                PatternKind::Booster => &mut booster_ids,
            };
            match found.iter_mut().find(|(id, _)| *id == pattern.id) {
                Some((_, weight)) => *weight = (*weight).max(pattern.weight),
                None => found.push((&pattern.id, pattern.weight)),
            }
        }
        if primary_ids.is_empty() {
            return RiskSignal::none(SignalSource::Local);
        }
        let score: u32 = primary_ids
            .iter()
            .chain(booster_ids.iter())
            .map(|(_, w)| w)
            .sum();
        RiskSignal {
            source: SignalSource::Local,
            level: self.levels.level(score),
            score,
            pattern_ids: primary_ids
                .iter()
                .chain(booster_ids.iter())
                .map(|(id, _)| (*id).to_owned())
                .collect(),
        }
    }

    fn without_benign(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for phrase in &self.benign {
            if !phrase.is_empty() {
                out = out.replace(phrase.as_str(), " ");
            }
        }
        out
    }
}

/// Lowercase, typographic apostrophes made plain, whitespace collapsed.
pub(crate) fn normalize(text: &str) -> String {
    let lowered = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text with quoted spans blanked out: a book or film title in 《》,
/// 「」, 『』, “” or "" names a work, not the writer's state.
pub(crate) fn strip_quoted(text: &str) -> String {
    const PAIRS: &[(char, char)] = &[
        ('《', '》'),
        ('「', '」'),
        ('『', '』'),
        ('“', '”'),
        ('"', '"'),
    ];
    let mut out = String::with_capacity(text.len());
    let mut closing: Option<char> = None;
    for c in text.chars() {
        match closing {
            Some(end) if c == end => {
                closing = None;
                out.push(' ');
            }
            Some(_) => {}
            None => match PAIRS.iter().find(|(open, _)| *open == c) {
                Some((_, end)) => closing = Some(*end),
                None => out.push(c),
            },
        }
    }
    out
}

/// Whether `phrase` occurs in `text` at least once without a negation just
/// before it in the same clause.
fn affirmed(text: &str, phrase: &str) -> bool {
    let cjk = phrase.chars().next().is_some_and(is_cjk);
    text.match_indices(phrase).any(|(start, _)| {
        let prefix = &text[..start];
        let clause = prefix.rfind(ends_clause).map_or(prefix, |at| &prefix[at..]);
        !negated(clause, cjk)
    })
}

/// `zh` when the text has CJK ideographs, else `en`.
#[must_use]
pub fn detect_locale(text: &str) -> &'static str {
    if text.chars().any(is_cjk) {
        "zh"
    } else {
        "en"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(text: &str) -> RiskLevel {
        LocalDetector::default().detect(text).level
    }

    #[test]
    fn chinese_crisis_phrasings_reach_high() {
        for text in [
            "我不想活了",
            "真的活不下去了",
            "我想自杀",
            "有时候我想死",
            "我想结束自己的生命",
            "我昨天又割腕了",
            "不如死了算了",
            "我打算轻生",
        ] {
            assert!(level(text) >= RiskLevel::High, "{text}: {:?}", level(text));
        }
    }

    #[test]
    fn english_crisis_phrasings_reach_high() {
        for text in [
            "I want to kill myself",
            "I don't want to live anymore",
            "I don’t want to live anymore",
            "Honestly I WANT TO DIE",
            "I've been thinking about ending my life",
            "everyone would be better off dead without me, I'm suicidal",
            "I wish I was dead",
        ] {
            assert!(level(text) >= RiskLevel::High, "{text}: {:?}", level(text));
        }
    }

    #[test]
    fn a_time_and_a_means_make_it_imminent() {
        assert_eq!(
            level("I'm going to kill myself tonight"),
            RiskLevel::Imminent
        );
        assert_eq!(level("我今晚就想自杀，药都准备好了"), RiskLevel::Imminent);
        assert_eq!(level("我写好了遗书，不想活了"), RiskLevel::Imminent);
    }

    #[test]
    fn boosters_alone_detect_nothing() {
        assert_eq!(
            level("I'll take my pills tonight and watch a movie"),
            RiskLevel::None
        );
        assert_eq!(level("今晚吃了药，早点睡"), RiskLevel::None);
    }

    #[test]
    fn weaker_words_give_lower_levels() {
        assert_eq!(
            level("I just can't go on like this at work"),
            RiskLevel::Medium
        );
        assert_eq!(level("活着没意思"), RiskLevel::Medium);
    }

    #[test]
    fn benign_uses_of_the_same_words_pass() {
        for text in [
            "我昨天看了电影《想死的心》，很感人",
            "我在读「自杀俱乐部」这本书",
            "We watched \"Suicide Squad\" last night",
            "I watched suicide squad last night",
            "I'm just killing time before class",
            "I'm dying to see the new film",
            "This cake is to die for",
            "想死你了！好久不见",
            "笑死我了，太好笑了",
            "今天累死了，热死了",
            "电脑又死机了",
            "Hello, my name is Sam",
            "我今天心情还不错",
        ] {
            assert_eq!(level(text), RiskLevel::None, "{text}");
        }
    }

    #[test]
    fn negated_mentions_pass_but_a_second_clause_does_not() {
        assert_eq!(level("I have never thought about suicide"), RiskLevel::None);
        assert_eq!(level("我从来没想过自杀"), RiskLevel::None);
        assert_eq!(level("我不想死，我想好好活"), RiskLevel::None);
        assert!(level("我不知道，就是想死") >= RiskLevel::High);
        assert!(level("It's not easy. I want to die") >= RiskLevel::High);
        assert!(level("I'm not sure why but I want to die") >= RiskLevel::High);
        assert_eq!(level("I'm not suicidal, just tired"), RiskLevel::None);
    }

    #[test]
    fn configured_patterns_and_benign_phrases_apply() {
        let rules = DetectorRules {
            patterns: vec![CrisisPattern {
                id: "en.unalive".into(),
                language: "en".into(),
                phrase: "Unalive Myself".into(),
                weight: 6,
                kind: PatternKind::Primary,
            }],
            benign: vec!["suicide doors".into()],
            levels: ScoreLevels::default(),
        };
        let detector = LocalDetector::new(&rules);
        let signal = detector.detect("i want to unalive myself");
        assert_eq!(signal.level, RiskLevel::High);
        assert_eq!(signal.pattern_ids, ["en.unalive"]);
        assert_eq!(
            detector.detect("the car has suicide doors").level,
            RiskLevel::None
        );
    }

    #[test]
    fn signals_carry_pattern_ids_and_score() {
        let signal = LocalDetector::default().detect("I want to kill myself tonight");
        assert_eq!(signal.source, SignalSource::Local);
        assert_eq!(signal.pattern_ids, ["en.kill_myself", "en.when"]);
        assert_eq!(signal.score, 9);
    }

    #[test]
    fn locale_follows_the_writing_system() {
        assert_eq!(detect_locale("我不想活了"), "zh");
        assert_eq!(detect_locale("I want to die"), "en");
        assert_eq!(detect_locale("ok 好"), "zh");
    }
}
