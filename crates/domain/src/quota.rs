//! Token accounting and quotas.
//!
//! Every committed turn stores the tokens its LLM calls used (as the
//! provider reported them, estimated with [`estimate_tokens`] where the
//! provider reported none) together with the turn, keyed by session and
//! UTC hour. From those rows the store answers a session's running total,
//! a user's total of one UTC day and every session's total of one UTC
//! hour; [`QuotaConfig`] limits them before a turn's LLM runs.

use crate::engine::LlmCallRecord;
use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Estimated tokens of `text` for providers that report no usage, and for
/// the prompt-size guard: one token per CJK (or other wide-script)
/// character, one per four other characters (rounded up), the usual
/// average of BPE tokenizers on Latin text. An estimate, not a count:
/// limits built on it may be off by a few percent either way.
#[must_use]
pub fn estimate_tokens(text: &str) -> u32 {
    let mut wide = 0_u64;
    let mut narrow = 0_u64;
    for c in text.chars() {
        if is_wide(c) {
            wide += 1;
        } else {
            narrow += 1;
        }
    }
    u32::try_from(wide + narrow.div_ceil(4)).unwrap_or(u32::MAX)
}

/// CJK ideographs, kana, hangul and full-width forms: tokenizers spend
/// about one token on each.
fn is_wide(c: char) -> bool {
    matches!(u32::from(c),
        0x1100..=0x11FF
        | 0x2E80..=0x9FFF
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7FF
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFFEF
        | 0x2_0000..=0x3_FFFF)
}

/// The tokens one turn's LLM calls used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// How many LLM calls the turn made.
    pub llm_calls: u64,
}

impl TurnUsage {
    /// The usage of `calls`: each call's provider-reported usage, or, when
    /// the provider reported zero tokens, an estimate from the prompt and
    /// the reply (see [`estimate_tokens`]). Reused (replayed) responses
    /// count for nothing.
    #[must_use]
    pub fn of_calls(calls: &[LlmCallRecord]) -> Self {
        let mut usage = Self::default();
        // A reused (replayed) response cost no tokens.
        for call in calls.iter().filter(|c| !c.reused) {
            let reported = call.usage;
            let (prompt, completion) =
                if reported.prompt_tokens == 0 && reported.completion_tokens == 0 {
                    (
                        estimate_tokens(&call.prompt),
                        estimate_tokens(&call.response),
                    )
                } else {
                    (reported.prompt_tokens, reported.completion_tokens)
                };
            usage.prompt_tokens += u64::from(prompt);
            usage.completion_tokens += u64::from(completion);
            usage.llm_calls += 1;
        }
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        usage
    }

    /// Adds `other` to this usage.
    pub fn add(&mut self, other: &Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.llm_calls += other.llm_calls;
    }

    /// Whether no LLM call was made (nothing to store).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.llm_calls == 0 && self.total_tokens == 0
    }
}

/// The start of the UTC hour `at` falls in: usage rows are kept per hour.
#[must_use]
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// The start of the UTC day `at` falls in.
#[must_use]
pub fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The windows a claim reads usage totals for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageWindows {
    /// Start of the UTC day of the user's daily total.
    pub day_start: DateTime<Utc>,
    /// Start of the UTC hour of the global hourly total.
    pub hour_start: DateTime<Utc>,
}

impl UsageWindows {
    /// The day and hour `now` falls in.
    #[must_use]
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            day_start: day_start(now),
            hour_start: hour_start(now),
        }
    }
}

/// Token totals read with a claim (or before a session is created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// Every committed turn of the session (0 before it exists).
    pub session_tokens: u64,
    /// Every session of the session's user, in the UTC day.
    pub user_day_tokens: u64,
    /// Every session of every user, in the UTC hour.
    pub global_hour_tokens: u64,
}

/// One UTC day of a user's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub llm_calls: u64,
    /// Sessions that committed a turn with LLM calls that day.
    pub sessions: u64,
}

/// Which limit a turn hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// The session's own lifetime budget; it never resets.
    Session,
    /// The user's budget of one UTC day.
    UserDaily,
    /// Every user's budget of one UTC hour.
    GlobalHourly,
}

impl QuotaLimit {
    /// Metric label and error detail spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::UserDaily => "user_daily",
            Self::GlobalHourly => "global_hourly",
        }
    }
}

/// A refused turn: the limit, what was spent against it, and when it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaExceeded {
    pub limit: QuotaLimit,
    /// Tokens already spent in the limit's window.
    pub used: u64,
    /// The configured limit.
    pub limit_tokens: u64,
    /// When the window starts afresh; `None` for the session limit.
    pub reset_at: Option<DateTime<Utc>>,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "limit {}: {} of {} tokens used",
            self.limit.as_str(),
            self.used,
            self.limit_tokens
        )?;
        match self.reset_at {
            Some(at) => write!(f, "; resetAt {}", at.to_rfc3339()),
            None => write!(f, "; the session limit never resets"),
        }
    }
}

/// What a turn gets when a token limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaAction {
    /// Refused with `QUOTA_EXCEEDED` before anything runs.
    #[default]
    Refuse,
    /// Run without the LLM: every action goes on with its scripted text, as
    /// in degraded mode, so the conversation continues at no token cost.
    Scripted,
}

impl QuotaAction {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Scripted => "scripted",
        }
    }
}

/// Token limits; each is off when `None`, and all are off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaConfig {
    /// Tokens one session may spend over its lifetime.
    pub session_max_tokens: Option<u64>,
    /// Tokens one user may spend per UTC day, over all sessions.
    pub user_daily_tokens: Option<u64>,
    /// Tokens all users together may spend per UTC hour.
    pub global_hourly_tokens: Option<u64>,
    /// What a turn over a limit gets: refused (the default) or run on
    /// scripted texts without the LLM.
    #[serde(default)]
    pub when_exceeded: QuotaAction,
}

impl QuotaConfig {
    /// Whether any limit is set (otherwise no totals are read).
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.session_max_tokens.is_some()
            || self.user_daily_tokens.is_some()
            || self.global_hourly_tokens.is_some()
    }

    /// Whether a limit other than the session's is set: those apply to a
    /// session's creation too.
    #[must_use]
    pub fn limits_creation(&self) -> bool {
        self.user_daily_tokens.is_some() || self.global_hourly_tokens.is_some()
    }

    /// The first limit `totals` has reached (a turn may start while the
    /// spend is below the limit; its own tokens may overshoot it), checked
    /// session, then user, then global.
    pub fn check(&self, totals: &UsageTotals, now: DateTime<Utc>) -> Result<(), QuotaExceeded> {
        let windows = UsageWindows::at(now);
        let checks = [
            (
                QuotaLimit::Session,
                self.session_max_tokens,
                totals.session_tokens,
                None,
            ),
            (
                QuotaLimit::UserDaily,
                self.user_daily_tokens,
                totals.user_day_tokens,
                Some(windows.day_start + TimeDelta::days(1)),
            ),
            (
                QuotaLimit::GlobalHourly,
                self.global_hourly_tokens,
                totals.global_hour_tokens,
                Some(windows.hour_start + TimeDelta::hours(1)),
            ),
        ];
        for (limit, limit_tokens, used, reset_at) in checks {
            if let Some(limit_tokens) = limit_tokens {
                if used >= limit_tokens {
                    return Err(QuotaExceeded {
                        limit,
                        used,
                        limit_tokens,
                        reset_at,
                    });
                }
            }
        }
        Ok(())
    }
}

/// A user's usage over a range of days and where their quota stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUsage {
    pub user_id: String,
    /// First and last UTC day of the range, inclusive.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Days with usage, oldest first (days without any are left out).
    pub days: Vec<DailyUsage>,
    pub quota: QuotaState,
}

/// The limits and the spend against them at the time of asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaState {
    /// The configured limits (each `None` when off).
    pub limits: QuotaConfig,
    /// The user's tokens of the current UTC day.
    pub user_day_tokens: u64,
    /// Every user's tokens of the current UTC hour.
    pub global_hour_tokens: u64,
    /// When the user's daily total starts afresh (next UTC midnight).
    pub day_resets_at: DateTime<Utc>,
    /// When the global hourly total starts afresh.
    pub hour_resets_at: DateTime<Utc>,
}

impl QuotaState {
    /// The state of `limits` given the totals read at `now`.
    #[must_use]
    pub fn new(limits: QuotaConfig, totals: &UsageTotals, now: DateTime<Utc>) -> Self {
        let windows = UsageWindows::at(now);
        Self {
            limits,
            user_day_tokens: totals.user_day_tokens,
            global_hour_tokens: totals.global_hour_tokens,
            day_resets_at: windows.day_start + TimeDelta::days(1),
            hour_resets_at: windows.hour_start + TimeDelta::hours(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::TokenUsage;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, h, m, 7).single().unwrap()
    }

    fn call(prompt: &str, response: &str, usage: TokenUsage) -> LlmCallRecord {
        LlmCallRecord {
            action_id: "a".into(),
            purpose: "ai_say".into(),
            prompt: prompt.into(),
            response: response.into(),
            provider: "mock".into(),
            model: "m".into(),
            temperature: 0.7,
            max_tokens: 100,
            usage,
            started_at: at(1, 0),
            prompt_hash: String::new(),
            reused: false,
            response_masked: false,
        }
    }

    #[test]
    fn estimates_latin_by_four_chars_and_cjk_by_char() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("你好世界"), 4);
        assert_eq!(estimate_tokens("你好 abcd"), 2 + 2);
        assert_eq!(estimate_tokens("こんにちは"), 5);
    }

    #[test]
    fn usage_takes_reported_tokens_and_estimates_missing_ones() {
        let reported = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        };
        let usage = TurnUsage::of_calls(&[
            call("ignored", "ignored", reported),
            call("abcdefgh", "你好", TokenUsage::default()),
        ]);
        assert_eq!(
            usage,
            TurnUsage {
                prompt_tokens: 12,
                completion_tokens: 7,
                total_tokens: 19,
                llm_calls: 2,
            }
        );
        assert!(TurnUsage::of_calls(&[]).is_empty());
    }

    #[test]
    fn windows_are_utc_hour_and_day() {
        let w = UsageWindows::at(at(13, 45));
        assert_eq!(
            w.hour_start,
            Utc.with_ymd_and_hms(2026, 12, 4, 13, 0, 0).unwrap()
        );
        assert_eq!(
            w.day_start,
            Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn check_names_the_first_limit_reached_with_its_reset() {
        let config = QuotaConfig {
            session_max_tokens: Some(100),
            user_daily_tokens: Some(1_000),
            global_hourly_tokens: Some(10_000),
            ..QuotaConfig::default()
        };
        let below = UsageTotals {
            session_tokens: 99,
            user_day_tokens: 999,
            global_hour_tokens: 9_999,
        };
        assert_eq!(config.check(&below, at(13, 45)), Ok(()));

        let session = config
            .check(
                &UsageTotals {
                    session_tokens: 100,
                    ..below
                },
                at(13, 45),
            )
            .unwrap_err();
        assert_eq!(session.limit, QuotaLimit::Session);
        assert_eq!(session.reset_at, None);

        let user = config
            .check(
                &UsageTotals {
                    user_day_tokens: 1_200,
                    ..below
                },
                at(13, 45),
            )
            .unwrap_err();
        assert_eq!(
            (user.limit, user.used, user.limit_tokens),
            (QuotaLimit::UserDaily, 1_200, 1_000)
        );
        assert_eq!(
            user.reset_at,
            Some(Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap())
        );

        let global = config
            .check(
                &UsageTotals {
                    global_hour_tokens: 10_000,
                    ..below
                },
                at(13, 45),
            )
            .unwrap_err();
        assert_eq!(global.limit, QuotaLimit::GlobalHourly);
        assert_eq!(
            global.reset_at,
            Some(Utc.with_ymd_and_hms(2026, 12, 4, 14, 0, 0).unwrap())
        );
        assert!(global.to_string().contains("global_hourly"));

        assert!(!QuotaConfig::default().is_enabled());
        assert_eq!(
            QuotaConfig::default().check(
                &UsageTotals {
                    session_tokens: u64::MAX,
                    user_day_tokens: u64::MAX,
                    global_hour_tokens: u64::MAX,
                },
                at(0, 0)
            ),
            Ok(())
        );
    }
}
