//! Consistency checks of a [`TurnRecord`] and of a turn's lease shared by
//! both adapters, so they reject the same records with the same errors.

use heartrule_domain::{FailedTurn, RepositoryError, SessionId, TurnLease, TurnRecord};

/// A lease length as a chrono duration; absurd lengths are refused rather
/// than wrapped.
pub(crate) fn lease_length(
    duration: std::time::Duration,
) -> Result<chrono::Duration, RepositoryError> {
    chrono::Duration::from_std(duration)
        .map_err(|_| RepositoryError::Query(format!("lease duration {duration:?} is out of range")))
}

/// The error of a commit refused by the fence: nothing was written.
pub(crate) fn lease_lost(lease: &TurnLease) -> RepositoryError {
    RepositoryError::LeaseLost(format!(
        "turn {} no longer holds session {} at turn {}; nothing was written",
        lease.turn_id, lease.session_id, lease.turn_count
    ))
}

/// A failure released with a lease must be a failure of that lease's session.
pub(crate) fn check_failure_lease(
    lease: &TurnLease,
    failure: &FailedTurn,
) -> Result<(), RepositoryError> {
    if failure.session_id == lease.session_id {
        Ok(())
    } else {
        Err(RepositoryError::Query(format!(
            "failed turn of session {} released with a lease on session {}",
            failure.session_id, lease.session_id
        )))
    }
}

/// Checks that `record` continues the session `session_id` whose last stored
/// message has seq `previous_last_seq` (0 for a new session): every row
/// belongs to that session, message seqs run on from `previous_last_seq + 1`
/// without gaps, and the session's `last_message_seq` is the last of them.
pub(crate) fn check_turn_record(
    session_id: SessionId,
    previous_last_seq: i64,
    record: &TurnRecord,
) -> Result<(), RepositoryError> {
    if record.session.id != session_id {
        return Err(RepositoryError::Query(format!(
            "turn record is for session {}, but the turn is on session {session_id}",
            record.session.id
        )));
    }
    if let Some(message) = record.messages.iter().find(|m| m.session_id != session_id) {
        return Err(RepositoryError::Query(format!(
            "message {} belongs to session {}, not {session_id}",
            message.id, message.session_id
        )));
    }
    if let Some(variable) = record.variables.iter().find(|v| v.session_id != session_id) {
        return Err(RepositoryError::Query(format!(
            "variable snapshot `{}` belongs to session {}, not {session_id}",
            variable.name, variable.session_id
        )));
    }
    let mut expected = previous_last_seq;
    for message in &record.messages {
        expected += 1;
        if message.seq != expected {
            return Err(RepositoryError::Conflict(format!(
                "message seq {} of session {session_id} is out of order: expected {expected}",
                message.seq
            )));
        }
    }
    if record.session.last_message_seq != expected {
        return Err(RepositoryError::Conflict(format!(
            "session {session_id} would record last_message_seq {} but its last message has seq {expected}",
            record.session.last_message_seq
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use heartrule_domain::{
        EngineState, Message, MessageId, MessageRole, ScriptId, Session, SessionStatus, TurnId,
        VariableStore,
    };

    fn record(session_id: SessionId, seqs: &[i64], last: i64) -> TurnRecord {
        let now = Utc::now();
        let turn_id = TurnId::new_random();
        TurnRecord {
            turn_id,
            session: Session {
                id: session_id,
                user_id: "u".into(),
                script_id: ScriptId::new_random(),
                script_hash: "h".into(),
                status: SessionStatus::Active,
                state: EngineState::initial(VariableStore::default()),
                turn_count: 1,
                last_message_seq: last,
                last_error: None,
                created_at: now,
                updated_at: now,
                completed_at: None,
            },
            messages: seqs
                .iter()
                .map(|&seq| Message {
                    id: MessageId::new_random(),
                    session_id,
                    seq,
                    turn_id,
                    role: MessageRole::Assistant,
                    content: "hi".into(),
                    action_id: None,
                    action_type: None,
                    metadata: serde_json::Value::Null,
                    created_at: now,
                })
                .collect(),
            variables: vec![],
            idempotency: None,
            usage: heartrule_domain::TurnUsage::default(),
            llm_exchanges: Vec::new(),
        }
    }

    #[test]
    fn accepts_contiguous_messages_after_the_previous_seq() {
        let id = SessionId::new_random();
        assert_eq!(check_turn_record(id, 4, &record(id, &[5, 6], 6)), Ok(()));
        assert_eq!(check_turn_record(id, 4, &record(id, &[], 4)), Ok(()));
    }

    #[test]
    fn rejects_gaps_duplicates_and_a_wrong_last_seq() {
        let id = SessionId::new_random();
        for (seqs, last) in [(&[6, 7][..], 7), (&[5, 5][..], 5), (&[5, 6][..], 9)] {
            assert!(matches!(
                check_turn_record(id, 4, &record(id, seqs, last)),
                Err(RepositoryError::Conflict(_))
            ));
        }
    }

    #[test]
    fn rejects_rows_of_another_session() {
        let id = SessionId::new_random();
        let other = record(SessionId::new_random(), &[1], 1);
        assert!(matches!(
            check_turn_record(id, 0, &other),
            Err(RepositoryError::Query(_))
        ));
        let mut mixed = record(id, &[1], 1);
        mixed.messages[0].session_id = SessionId::new_random();
        assert!(matches!(
            check_turn_record(id, 0, &mixed),
            Err(RepositoryError::Query(_))
        ));
    }
}
