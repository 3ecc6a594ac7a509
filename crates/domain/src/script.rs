//! Scripts: the stored entity and the one typed model every load mode
//! normalises into. Parsing YAML is the script
//! engine's job; this module only holds the result.

use crate::ids::ScriptId;
use crate::safety::ScriptSafety;
use crate::variables::VariableScope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptType {
    Session,
    Technique,
    Awareness,
}

impl ScriptType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Technique => "technique",
            Self::Awareness => "awareness",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "session" => Some(Self::Session),
            "technique" => Some(Self::Technique),
            "awareness" => Some(Self::Awareness),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptStatus {
    Draft,
    Published,
    Archived,
}

impl ScriptStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Archived => "archived",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "draft" => Some(Self::Draft),
            "published" => Some(Self::Published),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// A stored script: its YAML source and the typed document parsed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Script {
    pub id: ScriptId,
    pub name: String,
    pub script_type: ScriptType,
    pub status: ScriptStatus,
    /// The YAML source as submitted.
    pub content: String,
    /// The current version's identity hash
    /// ([`crate::project::version_hash`]; hex SHA-256 of `content` when the
    /// version has no files); keys the parsed-script cache.
    pub content_hash: String,
    pub document: ScriptDocument,
    /// The number of the published version `content` is (see
    /// [`ScriptVersion`]); new sessions start on it.
    pub current_version: u32,
    pub version: String,
    pub author: String,
    pub description: String,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Script {
    /// The technique id when this is a technique script.
    #[must_use]
    pub fn technique_id(&self) -> Option<&str> {
        match &self.document {
            ScriptDocument::Technique(t) => Some(t.technique_id.as_str()),
            ScriptDocument::Session(_) => None,
        }
    }
}

/// One immutable published version of a script. Versions are numbered
/// 1, 2, … per script and never change once stored; a session records the
/// content hash of the version it started on and runs on it to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptVersion {
    pub script_id: ScriptId,
    /// 1 for the first version, then one more per publish.
    pub number: u32,
    /// The YAML source of this version.
    pub content: String,
    /// The version's identity hash ([`crate::project::version_hash`] of
    /// `content` and `files`): what sessions started on it record.
    pub content_hash: String,
    pub document: ScriptDocument,
    /// The project files published with it (techniques, templates, tests).
    #[serde(default)]
    pub files: Vec<crate::project::ProjectFile>,
    /// Subject of the actor who published it.
    pub author: String,
    /// The publisher's release note.
    pub note: String,
    /// What compatible-mode loading normalised when it was published.
    pub warnings: Vec<crate::engine::LoadWarning>,
    pub created_at: DateTime<Utc>,
}

impl ScriptVersion {
    /// The version `script`'s content is: number `script.current_version`,
    /// authored by `script.author` when it was created.
    #[must_use]
    pub fn first_of(script: &Script) -> Self {
        Self {
            script_id: script.id,
            number: script.current_version,
            content: script.content.clone(),
            content_hash: script.content_hash.clone(),
            document: script.document.clone(),
            files: Vec::new(),
            author: script.author.clone(),
            note: String::new(),
            warnings: Vec::new(),
            created_at: script.created_at,
        }
    }
}

/// The mutable draft of a script editors work on. `revision` grows by one
/// on every save: a save based on an older revision is refused, so two
/// editors cannot overwrite each other silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkingDraft {
    pub script_id: ScriptId,
    /// The draft's YAML; the current version's content until first saved.
    pub content: String,
    /// 0 until the first save.
    pub revision: u64,
    /// When and by whom it was last saved; `None` until the first save.
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<String>,
}

/// A parsed script document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScriptDocument {
    Session(SessionScript),
    Technique(TechniqueScript),
}

impl ScriptDocument {
    #[must_use]
    pub fn script_type(&self) -> ScriptType {
        match self {
            Self::Session(_) => ScriptType::Session,
            Self::Technique(_) => ScriptType::Technique,
        }
    }

    /// Technique ids this document invokes through `use_skill`.
    #[must_use]
    pub fn referenced_skills(&self) -> Vec<String> {
        match self {
            Self::Session(s) => s.referenced_skills(),
            Self::Technique(t) => skills_in(std::iter::once(&t.topic)),
        }
    }
}

/// Sorted, distinct technique ids of the `use_skill` actions in `topics`.
fn skills_in<'a>(topics: impl Iterator<Item = &'a Topic>) -> Vec<String> {
    let mut skills: Vec<String> = topics
        .flat_map(|t| t.actions.iter())
        .filter_map(|a| match &a.kind {
            ActionKind::UseSkill(c) => Some(c.skill.clone()),
            _ => None,
        })
        .collect();
    skills.sort();
    skills.dedup();
    skills
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionScript {
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Selects the custom prompt-template layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_scheme: Option<String>,
    /// The script's own crisis-protocol settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<ScriptSafety>,
    pub phases: Vec<Phase>,
}

impl SessionScript {
    /// Technique ids this script invokes through `use_skill`.
    #[must_use]
    pub fn referenced_skills(&self) -> Vec<String> {
        skills_in(self.phases.iter().flat_map(|p| p.topics.iter()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub phase_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub topic_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    AiSay,
    AiAsk,
    AiThink,
    UseSkill,
}

impl ActionType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AiSay => "ai_say",
            Self::AiAsk => "ai_ask",
            Self::AiThink => "ai_think",
            Self::UseSkill => "use_skill",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ai_say" => Some(Self::AiSay),
            "ai_ask" => Some(Self::AiAsk),
            "ai_think" => Some(Self::AiThink),
            "use_skill" => Some(Self::UseSkill),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub action_id: String,
    /// Kept for editors; never evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(flatten)]
    pub kind: ActionKind,
}

impl Action {
    #[must_use]
    pub fn action_type(&self) -> ActionType {
        match self.kind {
            ActionKind::Say(_) => ActionType::AiSay,
            ActionKind::Ask(_) => ActionType::AiAsk,
            ActionKind::Think(_) => ActionType::AiThink,
            ActionKind::UseSkill(_) => ActionType::UseSkill,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action_type", content = "config")]
pub enum ActionKind {
    #[serde(rename = "ai_say")]
    Say(SayConfig),
    #[serde(rename = "ai_ask")]
    Ask(AskConfig),
    #[serde(rename = "ai_think")]
    Think(ThinkConfig),
    #[serde(rename = "use_skill")]
    UseSkill(SkillConfig),
}

/// `ai_say`. Template mode when `max_rounds` or `exit_criteria` is set,
/// legacy (rewrite) mode otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SayConfig {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_criteria: Option<ExitCriteria>,
    /// Legacy mode only; defaults to true.
    #[serde(default = "default_true")]
    pub require_acknowledgment: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_role: Option<String>,
}

impl SayConfig {
    #[must_use]
    pub fn is_template_mode(&self) -> bool {
        self.max_rounds.is_some() || self.exit_criteria.is_some()
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitCriteria {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub understanding_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_questions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rounds: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_conditions: Vec<CustomCondition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomCondition {
    pub variable: String,
    /// One of `==`, `!=`, `>`, `<`, `>=`, `<=`, `contains`.
    pub operator: String,
    pub value: Value,
}

/// `ai_ask`. Multi-round when `output` is non-empty or `exit` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskConfig {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<OutputField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
    /// Legacy single-variable target (simple mode, and finish fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_variable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_role: Option<String>,
}

impl AskConfig {
    #[must_use]
    pub fn is_multi_round(&self) -> bool {
        !self.output.is_empty() || self.exit.as_deref().is_some_and(|e| !e.is_empty())
    }
}

/// One variable an action extracts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputField {
    pub get: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub define: Option<String>,
    /// Where the value is written; the session scope when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<VariableScope>,
    /// The value is private (`sensitive: true`): it never reaches logs,
    /// spans, metrics or `debugInfo`, and exports mask it (see
    /// [`crate::sensitive`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// `ai_think`: an LLM call whose JSON reply fills the output variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkConfig {
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_variables: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<OutputField>,
}

/// `use_skill`: runs a technique script as a sub-flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillConfig {
    /// The technique's `technique_id`.
    pub skill: String,
    /// Technique parameter ← value (placeholders are substituted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input: Vec<SkillBinding>,
    /// Caller variable ← technique variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<SkillBinding>,
}

/// A name mapping of `use_skill`: `name` on the receiving side, `from` on
/// the giving side (a variable name, or for inputs a text with placeholders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillBinding {
    pub name: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<VariableScope>,
}

/// A technique script (root `topic`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueScript {
    pub technique_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_parameters: Vec<TechniqueParameter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_variables: Vec<String>,
    pub topic: Topic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueParameter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say_action(id: &str) -> Action {
        Action {
            action_id: id.into(),
            condition: None,
            kind: ActionKind::Say(SayConfig {
                content: "hi".into(),
                tone: None,
                max_rounds: None,
                exit_criteria: None,
                require_acknowledgment: false,
                ai_role: None,
            }),
        }
    }

    #[test]
    fn document_round_trips_through_json() {
        let doc = ScriptDocument::Session(fixtures::one_topic_script(
            "s",
            vec![
                say_action("a1"),
                Action {
                    action_id: "a2".into(),
                    condition: None,
                    kind: ActionKind::UseSkill(SkillConfig {
                        skill: "socratic".into(),
                        input: vec![],
                        output: vec![],
                    }),
                },
            ],
        ));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["phases"][0]["topics"][0]["actions"][0]["action_type"],
            "ai_say"
        );
        let back: ScriptDocument = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.referenced_skills(), vec!["socratic".to_string()]);
        assert_eq!(back.script_type(), ScriptType::Session);
    }

    #[test]
    fn modes_follow_the_config() {
        let mut say = SayConfig {
            content: String::new(),
            tone: None,
            max_rounds: None,
            exit_criteria: None,
            require_acknowledgment: true,
            ai_role: None,
        };
        assert!(!say.is_template_mode());
        say.max_rounds = Some(0);
        assert!(say.is_template_mode());
        let ask = AskConfig {
            content: String::new(),
            tone: None,
            exit: Some(String::new()),
            output: vec![],
            max_rounds: None,
            target_variable: None,
            ai_role: None,
        };
        assert!(!ask.is_multi_round());
    }
}

/// Builders of small scripts for the crate's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Action, Phase, SessionScript, Topic};

    /// A topic of `actions` with no other settings.
    pub(crate) fn topic(id: &str, actions: Vec<Action>) -> Topic {
        Topic {
            topic_id: id.into(),
            topic_name: None,
            topic_goal: None,
            description: None,
            strategy: None,
            actions,
        }
    }

    /// A session script of one phase `p` holding one topic `t` of `actions`.
    pub(crate) fn one_topic_script(session_id: &str, actions: Vec<Action>) -> SessionScript {
        SessionScript {
            session_id: session_id.into(),
            session_name: None,
            description: None,
            version: None,
            template_scheme: None,
            safety: None,
            phases: vec![Phase {
                phase_id: "p".into(),
                phase_name: None,
                phase_goal: None,
                description: None,
                topics: vec![topic("t", actions)],
            }],
        }
    }
}
