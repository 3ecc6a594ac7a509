//! The prompt pieces that are built in code rather than
//! read from template files.

use chrono::{DateTime, Datelike, Timelike, Utc};
use heartrule_domain::{HistoryEntry, MessageRole, OutputField};

/// Template file of `ai_ask`.
pub const AI_ASK_TEMPLATE: &str = "ai_ask_v1.md";
/// Template file of template-mode `ai_say`.
pub const AI_SAY_TEMPLATE: &str = "ai_say_v1.md";
/// Template file of `ai_think`.
pub const AI_THINK_TEMPLATE: &str = "ai_think_v1.md";
/// Template file of the `ai_ask` monitor.
pub const AI_ASK_MONITOR_TEMPLATE: &str = "ai_ask_monitor_v1.md";
/// Template file of the `ai_say` monitor.
pub const AI_SAY_MONITOR_TEMPLATE: &str = "ai_say_monitor_v1.md";

/// How many history entries the extraction prompt shows.
pub const EXTRACTION_HISTORY_LEN: usize = 10;

/// The `{{output_list}}` system variable: one line per output field with a
/// `get`, `  "<get>": "提取的<get>"`, a comma unless it is the last line, and
/// ` // <define>` when the field has a description. No fields → `""`.
///
/// The comma follows the last *written* line rather than the last list
/// index, so a trailing field without `get` cannot leave a dangling comma.
pub fn output_list(fields: &[OutputField]) -> String {
    let named: Vec<&OutputField> = fields.iter().filter(|f| !f.get.trim().is_empty()).collect();
    let last = named.len().saturating_sub(1);
    named
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let name = field.get.trim();
            let mut line = format!(
                "  {}: {}",
                json_string(name),
                json_string(&format!("提取的{name}"))
            );
            if index != last {
                line.push(',');
            }
            if let Some(define) = field
                .define
                .as_deref()
                .map(one_line)
                .filter(|d| !d.is_empty())
            {
                line.push_str(" // ");
                line.push_str(&define);
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON string literal (quotes and backslashes escaped, non-ASCII kept).
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Line breaks would end a `//` comment early; fold them into spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The last `n` user and assistant entries as `<label>: <content>` lines,
/// oldest first. System entries are not part of the conversation and are
/// left out.
pub fn chat_lines(
    history: &[HistoryEntry],
    n: usize,
    user_label: &str,
    assistant_label: &str,
) -> String {
    let spoken: Vec<&HistoryEntry> = history
        .iter()
        .filter(|e| e.role != MessageRole::System)
        .collect();
    spoken[spoken.len().saturating_sub(n)..]
        .iter()
        .map(|entry| {
            let label = match entry.role {
                MessageRole::User => user_label,
                _ => assistant_label,
            };
            format!("{label}: {}", entry.content)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const BEIJING_OFFSET_HOURS: i64 = 8;
const WEEKDAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];

/// Beijing time (fixed UTC+8, China has no daylight saving time, so no tz
/// database is needed) in zh-CN style, e.g. `2026年11月27日 星期五 20:59`.
pub fn beijing_time_text(now: DateTime<Utc>) -> String {
    let local = now.naive_utc() + chrono::TimeDelta::hours(BEIJING_OFFSET_HOURS);
    let weekday = WEEKDAYS[local.weekday().num_days_from_monday() as usize];
    format!(
        "{}年{}月{}日 星期{} {:02}:{:02}",
        local.year(),
        local.month(),
        local.day(),
        weekday,
        local.hour(),
        local.minute()
    )
}

/// The legacy `ai_say` rewrite prompt: a fixed instruction, a blank line,
/// then `请改写：<text>`. The reply is used verbatim as the message.
pub fn rewrite_prompt(text: &str) -> String {
    format!(
        "你是一位专业、温和的心理咨询师。请把下面这段要对来访者说的话改写得更自然、更有温度，\
         保持原意和所有关键信息不变，不要添加新的建议或承诺。只输出改写后的话，不要任何解释。\
         \n\n请改写：{text}"
    )
}

/// The finish-extraction prompt of a multi-round `ai_ask`: the last
/// [`EXTRACTION_HISTORY_LEN`] entries as `user: …`/`assistant: …` lines,
/// the variable (`变量名：<name>`) and its description, and an instruction
/// to answer with the value only. The trimmed reply is the value.
pub fn extraction_prompt(history: &[HistoryEntry], variable: &str, define: &str) -> String {
    let chat = chat_lines(history, EXTRACTION_HISTORY_LEN, "user", "assistant");
    let chat = if chat.is_empty() {
        "（暂无对话）".to_owned()
    } else {
        chat
    };
    format!(
        "请从下面的咨询对话中提取指定的信息。\n\n\
         【对话历史】\n{chat}\n\n\
         【提取任务】\n变量名：{variable}\n含义：{define}\n\n\
         只输出提取到的内容本身，不要解释、不要加引号、不要输出变量名或其他格式。"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::Value;

    fn field(get: &str, define: Option<&str>) -> OutputField {
        OutputField {
            get: get.to_owned(),
            define: define.map(str::to_owned),
            scope: None,
            sensitive: false,
        }
    }

    fn entry(role: MessageRole, content: &str) -> HistoryEntry {
        HistoryEntry {
            role,
            content: content.to_owned(),
            action_id: None,
            llm_raw_output: None,
        }
    }

    #[test]
    fn output_list_matches_the_contract() {
        // One line per field: name, placeholder value, description as a comment.
        let list = output_list(&[field("姓名", Some("用户的姓名")), field("年龄", None)]);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(
            lines,
            vec![
                "  \"姓名\": \"提取的姓名\", // 用户的姓名",
                "  \"年龄\": \"提取的年龄\"",
            ]
        );
        assert_eq!(output_list(&[]), "");
    }

    #[test]
    fn output_list_skips_nameless_fields_and_keeps_json_valid() {
        let list = output_list(&[
            field("a", Some("")),
            field("b\"c", Some("多行\n说明")),
            field("  ", Some("ignored")),
        ]);
        assert_eq!(
            list,
            "  \"a\": \"提取的a\",\n  \"b\\\"c\": \"提取的b\\\"c\" // 多行 说明"
        );
        let without_comments = output_list(&[field("a", None), field("b", None)]);
        let parsed: serde_json::Map<String, Value> =
            serde_json::from_str(&format!("{{\n{without_comments}\n}}")).unwrap();
        assert_eq!(parsed["b"], "提取的b");
    }

    #[test]
    fn chat_lines_takes_the_last_entries_with_labels() {
        let history = vec![
            entry(MessageRole::Assistant, "一"),
            entry(MessageRole::User, "二"),
            entry(MessageRole::System, "系统"),
            entry(MessageRole::Assistant, "三"),
            entry(MessageRole::User, "四"),
        ];
        assert_eq!(
            chat_lines(&history, 3, "小明", "心理咨询师"),
            "小明: 二\n心理咨询师: 三\n小明: 四"
        );
        assert_eq!(chat_lines(&history, 10, "u", "a").lines().count(), 4);
        assert_eq!(chat_lines(&history, 0, "u", "a"), "");
        assert_eq!(chat_lines(&[], 5, "u", "a"), "");
    }

    #[test]
    fn beijing_time_is_utc_plus_eight() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 59, 30).unwrap();
        assert_eq!(beijing_time_text(now), "2026年11月27日 星期五 20:59");
        // Crossing midnight moves the date and weekday.
        let late = Utc.with_ymd_and_hms(2026, 1, 4, 16, 5, 0).unwrap();
        assert_eq!(beijing_time_text(late), "2026年1月5日 星期一 00:05");
        let sunday = Utc.with_ymd_and_hms(2026, 3, 1, 1, 0, 0).unwrap();
        assert_eq!(beijing_time_text(sunday), "2026年3月1日 星期日 09:00");
    }

    #[test]
    fn rewrite_prompt_ends_with_the_text() {
        let prompt = rewrite_prompt("欢迎");
        assert!(prompt.ends_with("\n\n请改写：欢迎"));
        assert_eq!(prompt.lines().last(), Some("请改写：欢迎"));
        assert!(prompt.contains("心理咨询师"));
    }

    #[test]
    fn extraction_prompt_lists_history_and_task() {
        let mut history = vec![entry(MessageRole::Assistant, "最早")];
        for i in 0..5 {
            history.push(entry(MessageRole::Assistant, &format!("问{i}")));
            history.push(entry(MessageRole::User, &format!("答{i}")));
        }
        let prompt = extraction_prompt(&history, "x", "用户年龄");
        assert!(prompt.contains("【对话历史】\nassistant: 问0\nuser: 答0\n"));
        assert!(!prompt.contains("最早"));
        assert!(prompt.contains("【提取任务】\n变量名：x\n"));
        assert!(prompt.contains("用户年龄"));
        assert!(prompt.contains("只输出"));
        let last_user_line = prompt.lines().rfind(|l| l.starts_with("user: "));
        assert_eq!(last_user_line, Some("user: 答4"));
        assert!(extraction_prompt(&[], "x", "d").contains("（暂无对话）"));
    }
}
