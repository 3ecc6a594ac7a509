//! `use_skill`: a technique script runs as a
//! sub-flow in a [`SkillFrame`]. Inputs are mapped into the frame's own
//! variables when it starts; outputs are copied back to the caller when the
//! technique's topic ends.

use super::cursor::{settle, settle_in_topic};
use super::placeholders::referenced_names;
use super::reply::non_empty;
use super::turn::{action_error, Location, Turn};
use heartrule_domain::{
    Action, ActionKind, DomainError, Position, SkillConfig, SkillFrame, VariableScope,
    VariableStore, VariableValue,
};
use serde_json::Value;
use std::sync::Arc;

/// Techniques may call techniques; this bounds accidental recursion.
pub(crate) const MAX_SKILL_DEPTH: usize = 8;

impl Turn {
    /// Starts the technique of a `use_skill` action at `loc`.
    pub(crate) fn start_skill(
        &mut self,
        loc: &Location,
        action: &Action,
        config: &SkillConfig,
    ) -> Result<(), DomainError> {
        let action_id = action.action_id.as_str();
        if self.state.skill_frames.len() >= MAX_SKILL_DEPTH {
            return Err(action_error(
                action_id,
                format!("techniques nested deeper than {MAX_SKILL_DEPTH} levels"),
            ));
        }
        let techniques = Arc::clone(&self.techniques);
        let technique = techniques.get(&config.skill).ok_or_else(|| {
            action_error(
                action_id,
                format!("technique `{}` is not available", config.skill),
            )
        })?;

        let mut variables = VariableStore::default();
        for binding in &config.input {
            if let Some(value) = self.input_value(loc, &binding.from) {
                let record = VariableValue::new(value, action_id, VariableScope::Session, self.now);
                variables.set(&binding.name, VariableScope::Session, None, record);
            }
        }
        for parameter in technique.input_parameters.iter().filter(|p| p.required) {
            let supplied = variables
                .session
                .get(&parameter.name)
                .is_some_and(|v| non_empty(&v.value));
            if !supplied {
                return Err(action_error(
                    action_id,
                    format!(
                        "required parameter `{}` of technique `{}` has no value",
                        parameter.name, technique.technique_id
                    ),
                ));
            }
        }

        let mut position = Position::default();
        settle_in_topic(&mut position, &technique.topic);
        self.state.skill_frames.push(SkillFrame {
            caller_action_id: action_id.to_owned(),
            technique_id: technique.technique_id.clone(),
            position,
            variables,
        });
        Ok(())
    }

    /// The value of an input binding in the caller's scope: a variable
    /// named by `from` (bare or as a single placeholder) keeps its JSON
    /// type; any other text is substituted.
    fn input_value(&self, loc: &Location, from: &str) -> Option<Value> {
        let trimmed = from.trim();
        if let Some(value) = self.lookup(loc, trimmed) {
            return Some(value.clone());
        }
        let names = referenced_names(trimmed);
        if let [name] = names.as_slice() {
            let single = [
                format!("${{{name}}}"),
                format!("{{{{{name}}}}}"),
                format!("{{{name}}}"),
            ];
            if single.iter().any(|s| s == trimmed) {
                return self.lookup(loc, name).cloned();
            }
        }
        Some(Value::String(self.substitute_text(loc, from)))
    }

    /// Ends the innermost technique: maps its outputs into the caller's
    /// scope and moves the caller past its `use_skill` action.
    pub(crate) fn finish_skill(&mut self) -> Result<(), DomainError> {
        let Some(frame) = self.state.skill_frames.pop() else {
            return Ok(());
        };
        let depth = self.state.skill_frames.len();
        let caller = self.caller_action(depth);
        let Some(ActionKind::UseSkill(config)) = caller
            .as_ref()
            .filter(|a| a.action_id == frame.caller_action_id)
            .map(|a| &a.kind)
        else {
            return Err(self.at_position(action_error(
                &frame.caller_action_id,
                format!(
                    "technique `{}` finished but its use_skill action is no longer at the cursor",
                    frame.technique_id
                ),
            )));
        };
        let loc = self.location(depth);
        let technique_topic = frame.position.topic_id.as_deref();
        for binding in &config.output {
            match frame.variables.lookup(&binding.from, None, technique_topic) {
                Some(value) => {
                    let scope = binding.scope.unwrap_or(VariableScope::Session);
                    self.write_variable(
                        &loc,
                        &binding.name,
                        scope,
                        value.value.clone(),
                        &frame.caller_action_id,
                    );
                }
                None => tracing::warn!(
                    technique = %frame.technique_id,
                    variable = %binding.from,
                    "technique finished without the variable its output binding reads"
                ),
            }
        }
        self.advance(depth);
        Ok(())
    }

    /// The action at the cursor of `depth` (0 = the session script).
    fn caller_action(&mut self, depth: usize) -> Option<Action> {
        match depth.checked_sub(1) {
            None => {
                let script = Arc::clone(&self.script);
                settle(&mut self.state.position, &script).cloned()
            }
            Some(index) => {
                let techniques = Arc::clone(&self.techniques);
                let frame = self.state.skill_frames.get_mut(index)?;
                let technique = techniques.get(&frame.technique_id)?;
                settle_in_topic(&mut frame.position, &technique.topic).cloned()
            }
        }
    }
}
