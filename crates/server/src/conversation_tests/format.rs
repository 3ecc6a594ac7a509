//! The conversation test file: a script, the techniques it calls, and cases
//! of user turns with what each turn must lead to.
//!
//! ```yaml
//! script: hello.yaml              # relative to this file
//! techniques: [techniques/x.yaml] # optional, for use_skill
//! cases:
//!   - name: the visitor gives a name
//!     llm:                        # optional scripted LLM replies, used in order
//!       - purpose: ai_ask         # optional: only calls with this purpose take it
//!         reply: {content: "What may I call you?", EXIT: "true"}
//!     start:                      # the session's first turn (no user text)
//!       ai_says: Welcome
//!     turns:
//!       - user: Call me Sam
//!         expect:
//!           action: goodbye
//!           variables: {visitor_name: {contains: Sam}}
//!           llm_calls: 2
//!     expect:                     # after the last turn
//!       status: completed
//! ```

use heartrule_domain::SessionStatus;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One test file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The session script under test, relative to the test file. Required
    /// for files run from disk; a project's test files run against the
    /// project's draft and may leave it out.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Technique scripts the session calls through `use_skill`.
    #[serde(default)]
    pub techniques: Vec<PathBuf>,
    pub cases: Vec<TestCase>,
}

/// One conversation from the start of a session.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Written to the session scope before the first turn.
    #[serde(default)]
    pub initial_variables: Map<String, Value>,
    /// LLM replies this case needs in particular; every other call goes to
    /// the runner's provider. Each reply is used once, in order.
    #[serde(default)]
    pub llm: Vec<ScriptedReply>,
    /// What the session's first turn (no user text) must lead to.
    #[serde(default)]
    pub start: Option<Expectation>,
    #[serde(default)]
    pub turns: Vec<TestTurn>,
    /// What must hold after the last turn; `ai_says` and `llm_calls` here
    /// count over the whole case.
    #[serde(default)]
    pub expect: Option<Expectation>,
}

/// One user message and what it must lead to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestTurn {
    pub user: String,
    #[serde(default)]
    pub expect: Option<Expectation>,
}

/// A reply the LLM gives instead of the provider's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    /// `ai_ask`, `ai_say`, `rewrite`, `extract`, `ai_think`, or a monitor's
    /// purpose; absent: the next call of any purpose.
    #[serde(default)]
    pub purpose: Option<String>,
    /// The reply text; a mapping is sent as its JSON text.
    pub reply: Value,
}

impl ScriptedReply {
    /// The reply as the LLM's text.
    #[must_use]
    pub fn text(&self) -> String {
        match &self.reply {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

/// What a turn (or a whole case) must lead to. Absent fields are not checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub status: Option<SessionStatus>,
    /// The phase, topic and action the session stands at afterwards (the
    /// action waiting for the user's next message).
    pub phase: Option<String>,
    pub topic: Option<String>,
    pub action: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, VariableExpectation>,
    /// Texts the AI messages must contain (each in some message).
    #[serde(default)]
    pub ai_says: OneOrMany,
    /// How many LLM calls were made.
    pub llm_calls: Option<usize>,
}

/// A text or a list of texts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "OneOrManyRepr")]
pub struct OneOrMany(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrManyRepr {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrManyRepr> for OneOrMany {
    fn from(value: OneOrManyRepr) -> Self {
        match value {
            OneOrManyRepr::One(text) => Self(vec![text]),
            OneOrManyRepr::Many(texts) => Self(texts),
        }
    }
}

/// What a variable must hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum VariableExpectation {
    /// `{matches: REGEX}`: its text matches the regular expression.
    Matches { matches: String },
    /// `{contains: TEXT}`: its text contains the text.
    Contains { contains: String },
    /// `{set: true}` / `{set: false}`: it has (not) been given a value.
    Set { set: bool },
    /// Anything else: equal to this value.
    Equals(Value),
}

impl VariableExpectation {
    /// Whether the expectation holds however the LLM words things.
    #[must_use]
    pub fn is_wording_free(&self) -> bool {
        matches!(self, Self::Set { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let yaml = r#"
script: hello.yaml
cases:
  - name: gives a name
    llm:
      - purpose: ai_ask
        reply: {content: "What may I call you?", EXIT: "true"}
      - reply: plain text
    start:
      ai_says: Welcome
    turns:
      - user: Call me Sam
        expect:
          action: goodbye
          variables:
            visitor_name: {contains: Sam}
            mood: {matches: "^(ok|fine)$"}
            age: 30
            note: {set: false}
          llm_calls: 2
    expect:
      status: completed
      ai_says: [Sam, demo]
"#;
        let file: TestFile = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(file.script, Some(PathBuf::from("hello.yaml")));
        let case = &file.cases[0];
        assert_eq!(
            case.llm[0].text(),
            r#"{"EXIT":"true","content":"What may I call you?"}"#
        );
        assert_eq!(case.llm[1].text(), "plain text");
        assert_eq!(case.start.as_ref().unwrap().ai_says.0, ["Welcome"]);
        let turn = case.turns[0].expect.as_ref().unwrap();
        assert_eq!(
            turn.variables["visitor_name"],
            VariableExpectation::Contains {
                contains: "Sam".into()
            }
        );
        assert_eq!(
            turn.variables["age"],
            VariableExpectation::Equals(serde_json::json!(30))
        );
        assert_eq!(
            turn.variables["note"],
            VariableExpectation::Set { set: false }
        );
        let end = case.expect.as_ref().unwrap();
        assert_eq!(end.status, Some(SessionStatus::Completed));
        assert_eq!(end.ai_says.0, ["Sam", "demo"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let yaml = "script: a.yaml\ncases:\n  - name: x\n    turns:\n      - user: hi\n        expct: {}\n";
        let error = serde_yaml::from_str::<TestFile>(yaml).unwrap_err();
        assert!(error.to_string().contains("expct"), "{error}");
    }
}
