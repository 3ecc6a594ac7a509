//! The engine's cursor: rolling the position over exhausted topics and
//! phases, and keeping its ids in sync with the indices (ids come from the
//! script, never from a plan).

use heartrule_domain::{Action, Position, SessionScript, Topic};

/// Moves `position` past exhausted topics and phases and syncs its ids.
/// Returns the action at the cursor, or `None` at the end of the script, in
/// which case the position becomes `(#phases, 0, 0)` with its ids cleared.
pub(crate) fn settle<'s>(position: &mut Position, script: &'s SessionScript) -> Option<&'s Action> {
    loop {
        let Some(phase) = script.phases.get(position.phase_index) else {
            *position = Position {
                phase_index: script.phases.len(),
                ..Position::default()
            };
            return None;
        };
        let Some(topic) = phase.topics.get(position.topic_index) else {
            position.phase_index += 1;
            position.topic_index = 0;
            position.action_index = 0;
            continue;
        };
        let Some(action) = topic.actions.get(position.action_index) else {
            position.topic_index += 1;
            position.action_index = 0;
            continue;
        };
        position.phase_id = Some(phase.phase_id.clone());
        position.topic_id = Some(topic.topic_id.clone());
        position.action_id = Some(action.action_id.clone());
        position.action_type = Some(action.action_type());
        return Some(action);
    }
}

/// The action at a skill frame's cursor inside the technique's topic, with
/// the frame's ids synced; `None` when the technique topic is finished.
pub(crate) fn settle_in_topic<'t>(position: &mut Position, topic: &'t Topic) -> Option<&'t Action> {
    position.phase_index = 0;
    position.topic_index = 0;
    position.phase_id = None;
    position.topic_id = Some(topic.topic_id.clone());
    match topic.actions.get(position.action_index) {
        Some(action) => {
            position.action_id = Some(action.action_id.clone());
            position.action_type = Some(action.action_type());
            Some(action)
        }
        None => {
            position.action_id = None;
            position.action_type = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{ActionKind, ActionType, Phase, SayConfig};

    fn say(id: &str) -> Action {
        Action {
            action_id: id.into(),
            condition: None,
            kind: ActionKind::Say(SayConfig {
                content: "x".into(),
                tone: None,
                max_rounds: None,
                exit_criteria: None,
                require_acknowledgment: false,
                ai_role: None,
            }),
        }
    }

    fn topic(id: &str, actions: Vec<Action>) -> Topic {
        Topic {
            topic_id: id.into(),
            topic_name: None,
            topic_goal: None,
            description: None,
            strategy: None,
            actions,
        }
    }

    fn script() -> SessionScript {
        SessionScript {
            session_id: "s".into(),
            session_name: None,
            description: None,
            version: None,
            template_scheme: None,
            safety: None,
            phases: vec![
                Phase {
                    phase_id: "p1".into(),
                    phase_name: None,
                    phase_goal: None,
                    description: None,
                    topics: vec![topic("t1", vec![say("a1")]), topic("empty", vec![])],
                },
                Phase {
                    phase_id: "p2".into(),
                    phase_name: None,
                    phase_goal: None,
                    description: None,
                    topics: vec![topic("t2", vec![say("b1"), say("b2")])],
                },
            ],
        }
    }

    #[test]
    fn settles_on_the_action_and_syncs_ids() {
        let script = script();
        let mut position = Position::default();
        assert_eq!(
            settle(&mut position, &script).map(|a| a.action_id.as_str()),
            Some("a1")
        );
        assert_eq!(position.phase_id.as_deref(), Some("p1"));
        assert_eq!(position.topic_id.as_deref(), Some("t1"));
        assert_eq!(position.action_type, Some(ActionType::AiSay));
    }

    #[test]
    fn rolls_over_empty_topics_into_the_next_phase() {
        let script = script();
        let mut position = Position {
            action_index: 1,
            ..Position::default()
        };
        assert_eq!(
            settle(&mut position, &script).map(|a| a.action_id.as_str()),
            Some("b1")
        );
        assert_eq!(
            (
                position.phase_index,
                position.topic_index,
                position.action_index
            ),
            (1, 0, 0)
        );
        assert_eq!(position.topic_id.as_deref(), Some("t2"));
    }

    #[test]
    fn end_of_script_clears_the_ids() {
        let script = script();
        let mut position = Position {
            phase_index: 1,
            action_index: 2,
            phase_id: Some("p2".into()),
            ..Position::default()
        };
        assert!(settle(&mut position, &script).is_none());
        assert_eq!(
            position,
            Position {
                phase_index: 2,
                ..Position::default()
            }
        );
    }

    #[test]
    fn topic_cursor_reports_the_end_of_a_technique() {
        let t = topic("tech", vec![say("c1")]);
        let mut position = Position::default();
        assert!(settle_in_topic(&mut position, &t).is_some());
        assert_eq!(position.topic_id.as_deref(), Some("tech"));
        position.action_index = 1;
        assert!(settle_in_topic(&mut position, &t).is_none());
        assert!(position.action_id.is_none());
    }
}
