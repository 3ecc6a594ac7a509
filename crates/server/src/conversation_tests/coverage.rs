//! Which actions of a script (and of its techniques) the cases reached, and
//! which exit branches of multi-round actions they took.

use heartrule_domain::{Action, ActionKind, ActionType, ScriptDocument, Topic};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How a multi-round action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitBranch {
    /// Its exit condition held before the last round (the reply's EXIT
    /// flag, the exit criteria or the LLM's suggestion).
    ExitedEarly,
    /// It ran out of rounds.
    MaxRounds,
}

impl ExitBranch {
    /// The branch an `exitDecision` object records.
    pub(crate) fn of_decision(decision: &serde_json::Value) -> Option<Self> {
        if decision
            .get("should_exit")
            .and_then(serde_json::Value::as_bool)
            != Some(true)
        {
            return None;
        }
        match decision.get("decision_source")?.as_str()? {
            "max_rounds" | "exceeded_max_rounds" => Some(Self::MaxRounds),
            _ => Some(Self::ExitedEarly),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::ExitedEarly => "never exited before its last round",
            Self::MaxRounds => "never ran to its max_rounds",
        }
    }
}

/// One action of a script file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionCoverage {
    pub file: PathBuf,
    pub action_id: String,
    pub action_type: ActionType,
    /// 1-based line of its `action_id:`, when found.
    pub line: Option<usize>,
    pub reached: bool,
    /// The exit branches a multi-round action has and no case took.
    pub missed_branches: Vec<ExitBranch>,
    /// The technique a `use_skill` action runs.
    #[serde(skip)]
    technique: Option<String>,
    #[serde(skip)]
    branches: Vec<ExitBranch>,
}

/// What the cases of a file reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Coverage {
    pub actions: Vec<ActionCoverage>,
    /// The technique id of each technique file.
    #[serde(skip)]
    techniques: BTreeMap<PathBuf, String>,
}

/// What one case saw, gathered turn by turn.
#[derive(Debug, Default)]
pub struct Reached {
    pub actions: BTreeSet<String>,
    /// The `use_skill` actions seen running a technique.
    pub skill_callers: BTreeSet<String>,
    pub branches: BTreeMap<String, BTreeSet<ExitBranch>>,
}

impl Reached {
    pub fn merge(&mut self, other: Reached) {
        self.actions.extend(other.actions);
        self.skill_callers.extend(other.skill_callers);
        for (action, branches) in other.branches {
            self.branches.entry(action).or_default().extend(branches);
        }
    }
}

impl Coverage {
    /// Every action of `document` (read from `source`, found at `file`).
    pub fn add_script(&mut self, file: &Path, source: &str, document: &ScriptDocument) {
        let topics: Vec<&Topic> = match document {
            ScriptDocument::Session(s) => s.phases.iter().flat_map(|p| p.topics.iter()).collect(),
            ScriptDocument::Technique(t) => {
                self.techniques
                    .insert(file.to_owned(), t.technique_id.clone());
                vec![&t.topic]
            }
        };
        for action in topics.into_iter().flat_map(|t| t.actions.iter()) {
            self.actions.push(ActionCoverage {
                file: file.to_owned(),
                action_id: action.action_id.clone(),
                action_type: action.action_type(),
                line: line_of(source, &action.action_id),
                reached: false,
                missed_branches: Vec::new(),
                technique: match &action.kind {
                    ActionKind::UseSkill(config) => Some(config.skill.clone()),
                    _ => None,
                },
                branches: branches_of(action),
            });
        }
    }

    /// Marks what the cases reached.
    pub fn apply(&mut self, reached: &Reached) {
        // A technique's actions ran: the use_skill actions calling it ran too
        // when only one calls it (a finished technique leaves no frame).
        let mut callers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for action in &self.actions {
            if let Some(technique) = &action.technique {
                callers
                    .entry(technique.clone())
                    .or_default()
                    .push(action.action_id.clone());
            }
        }
        let technique_ran: BTreeSet<String> = self
            .actions
            .iter()
            .filter(|a| reached.actions.contains(&a.action_id))
            .filter_map(|a| self.technique_of_file(&a.file))
            .collect();
        let mut inferred = BTreeSet::new();
        for (technique, ids) in &callers {
            if ids.len() == 1 && technique_ran.contains(technique) {
                inferred.insert(ids[0].clone());
            }
        }
        for action in &mut self.actions {
            action.reached = reached.actions.contains(&action.action_id)
                || reached.skill_callers.contains(&action.action_id)
                || inferred.contains(&action.action_id);
            let taken = reached.branches.get(&action.action_id);
            action.missed_branches = action
                .branches
                .iter()
                .copied()
                .filter(|b| !taken.is_some_and(|t| t.contains(b)))
                .collect();
        }
    }

    /// The technique id of a technique file.
    fn technique_of_file(&self, file: &Path) -> Option<String> {
        self.techniques.get(file).cloned()
    }

    /// Reached actions over all actions.
    #[must_use]
    pub fn summary(&self) -> (usize, usize) {
        let reached = self.actions.iter().filter(|a| a.reached).count();
        (reached, self.actions.len())
    }

    /// One line per action or branch no case reached.
    #[must_use]
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        for action in &self.actions {
            let at = match action.line {
                Some(line) => format!("{}:{line}", action.file.display()),
                None => action.file.display().to_string(),
            };
            if !action.reached {
                gaps.push(format!(
                    "{at} {} ({}) was never reached",
                    action.action_id,
                    action.action_type.as_str()
                ));
                continue;
            }
            for branch in &action.missed_branches {
                gaps.push(format!("{at} {} {}", action.action_id, branch.describe()));
            }
        }
        gaps
    }
}

/// The exit branches of a multi-round action (none for the others).
fn branches_of(action: &Action) -> Vec<ExitBranch> {
    let (multi_round, max_rounds) = match &action.kind {
        ActionKind::Ask(config) => (config.is_multi_round(), config.max_rounds),
        ActionKind::Say(config) => (config.is_template_mode(), config.max_rounds),
        _ => (false, None),
    };
    match (multi_round, max_rounds) {
        (false, _) => Vec::new(),
        // One round: it always ends by running out of rounds.
        (true, Some(1)) => vec![ExitBranch::MaxRounds],
        (true, _) => vec![ExitBranch::ExitedEarly, ExitBranch::MaxRounds],
    }
}

/// The line of `action_id: <id>` (quoted or not) in the YAML source.
fn line_of(source: &str, action_id: &str) -> Option<usize> {
    source
        .lines()
        .position(|line| {
            let Some(rest) = line
                .trim_start()
                .trim_start_matches("- ")
                .strip_prefix("action_id:")
            else {
                return false;
            };
            let value = rest.split(" #").next().unwrap_or(rest).trim();
            value.trim_matches(|c| c == '"' || c == '\'') == action_id
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_found_quoted_or_not() {
        let source =
            "session:\n  actions:\n    - action_id: greet\n    - action_id: \"ask\"  # q\n";
        assert_eq!(line_of(source, "greet"), Some(3));
        assert_eq!(line_of(source, "ask"), Some(4));
        assert_eq!(line_of(source, "gree"), None);
    }

    #[test]
    fn decisions_map_to_branches() {
        let early = json!({"should_exit": true, "decision_source": "exit_flag"});
        let max = json!({"should_exit": true, "decision_source": "exceeded_max_rounds"});
        let stay = json!({"should_exit": false, "decision_source": "exit_flag"});
        assert_eq!(
            ExitBranch::of_decision(&early),
            Some(ExitBranch::ExitedEarly)
        );
        assert_eq!(ExitBranch::of_decision(&max), Some(ExitBranch::MaxRounds));
        assert_eq!(ExitBranch::of_decision(&stay), None);
    }
}
