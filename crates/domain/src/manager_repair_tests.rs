//! Repair intents in the SessionManager, with mocks of every port: skip,
//! stop and a request for a person, each in Chinese and English, from the
//! local detector and from the LLM's reading; the crisis protocol first.

use super::*;
use crate::repair::{IntentReading, RepairIntent, RepairPolicy, RepairReplies};
use crate::safety::{
    Handoff, HandoffReason, Hotline, LocaleResponse, MockSafetyNotifier, RiskLevel, SafetyPolicy,
    SignalSource,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::BTreeMap;
use std::sync::Mutex;

fn repair_policy() -> RepairPolicy {
    let mut locales = BTreeMap::new();
    for locale in ["zh", "en"] {
        locales.insert(
            locale.to_owned(),
            RepairReplies {
                stop: format!("STOP-{locale}"),
                human: format!("HUMAN-{locale}"),
                holding: format!("WAIT-{locale}"),
            },
        );
    }
    RepairPolicy {
        enabled: true,
        notify_on_human: false,
        default_locale: "zh".into(),
        locales,
        rules: crate::repair::IntentRules::default(),
    }
}

fn safety_policy(cooldown: Option<Duration>) -> SafetyPolicy {
    let mut locales = BTreeMap::new();
    for locale in ["zh", "en"] {
        locales.insert(
            locale.to_owned(),
            LocaleResponse {
                response: "CRISIS {hotlines}".into(),
                holding_response: "HOLD {hotlines}".into(),
                hotlines: vec![Hotline {
                    name: "line".into(),
                    number: "1".into(),
                }],
            },
        );
    }
    SafetyPolicy {
        enabled: true,
        threshold: RiskLevel::High,
        default_locale: "zh".into(),
        locales,
        handoff_cooldown: cooldown,
        rules: crate::safety::DetectorRules::default(),
    }
}

/// A manager with the crisis protocol (whose notifier expects `alerts`
/// alerts) and repair intents.
fn repairing(
    script: &Script,
    sessions: MockSessionRepository,
    engine: MockScriptEngine,
    alerts: usize,
    cooldown: Option<Duration>,
) -> SessionManager<MockPorts> {
    let mut notifier = MockSafetyNotifier::new();
    notifier.expect_notify().times(alerts).returning(|_| ());
    manager(scripts_returning(script), sessions, engine)
        .with_safety(SafetyProtocol::new(
            safety_policy(cooldown),
            Arc::new(notifier),
        ))
        .with_repair(RepairProtocol::new(repair_policy()))
}

/// A session whose `a1` question waits for its answer.
fn asking(script: &Script) -> Session {
    let mut session = stored_session(script, 2);
    session.state.status = ExecutionStatus::WaitingInput;
    session.state.pending_action = Some(crate::engine::PendingAction {
        action_id: "a1".into(),
        action_type: ActionType::AiAsk,
        round: 1,
        max_rounds: 1,
        data: json!({}),
    });
    session
}

/// The counters named `name`: labels and value.
fn counters(snapshotter: &Snapshotter, name: &str) -> Vec<(Vec<String>, u64)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == name)
        .map(|(key, _, _, value)| {
            METRICS
                .check_series(
                    key.key().name(),
                    key.key().labels().map(metrics::Label::key),
                )
                .unwrap();
            let labels = key.key().labels().map(|l| l.value().to_owned()).collect();
            match value {
                DebugValue::Counter(n) => (labels, n),
                _ => panic!("a counter"),
            }
        })
        .collect()
}

fn labels(a: &str, b: &str) -> Vec<String> {
    vec![a.to_owned(), b.to_owned()]
}

#[tokio::test]
async fn a_local_skip_reaches_the_engine_which_moves_on() {
    for text in ["这个问题能不能跳过", "Can we skip this one?"] {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let script = script();
        let session = asking(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine
            .expect_run_turn()
            .times(1)
            .withf(|r| r.intent == Some(RepairIntent::Skip) && r.llm_intents)
            .returning(|r| {
                let mut outcome = outcome_from(&r, ExecutionStatus::WaitingInput);
                outcome.repair = Some(IntentReading {
                    intent: RepairIntent::Skip,
                    source: SignalSource::Local,
                });
                Ok(outcome)
            });
        let m = repairing(&script, sessions, engine, 0, None);
        let result = m.process_input(input(session.id, text)).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Active, "{text}");
        assert_eq!(result.last_ai_message(), "hello there");
        assert_eq!(records.lock().unwrap().len(), 1);
        assert_eq!(
            counters(&snapshotter, REPAIR_INTENTS_TOTAL),
            [(labels("skip", "local"), 1)],
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_local_stop_ends_the_session_politely_without_running_the_script() {
    for (text, reply) in [
        ("我不想聊了", "STOP-zh"),
        ("I want to stop now.", "STOP-en"),
    ] {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let script = script();
        let session = asking(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        let m = repairing(&script, sessions, engine, 0, None);
        let result = m.process_input(input(session.id, text)).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Completed, "{text}");
        assert_eq!(result.execution_status, ExecutionStatus::Completed);
        assert_eq!(result.last_ai_message(), reply);
        let record = records.lock().unwrap()[0].clone();
        assert_eq!(record.messages[0].content, text);
        assert_eq!(record.messages[0].action_id.as_deref(), Some("a1"));
        assert_eq!(
            record.messages[1].metadata["repair"],
            json!({"intent": "stop", "source": "local", "locale": crate::safety::detect_locale(text), "endedBy": "user_request"})
        );
        assert!(record.session.completed_at.is_some());
        assert!(record.session.state.pending_action.is_none());
        assert_eq!(
            record.session.state.metadata.get("endedBy"),
            Some(&json!("user_request"))
        );
        assert!(record.session.state.safety.is_clear());
        assert_eq!(
            counters(&snapshotter, REPAIR_INTENTS_TOTAL),
            [(labels("stop", "local"), 1)]
        );
    }
}

#[tokio::test]
async fn a_local_request_for_a_person_holds_the_session_without_crisis_wording_or_alert() {
    for (text, reply) in [
        ("我想和真人聊聊", "HUMAN-zh"),
        ("Can I talk to a real person?", "HUMAN-en"),
    ] {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let script = script();
        let session = asking(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        // No alert: the notifier expects none.
        let m = repairing(&script, sessions, engine, 0, None);
        let result = m.process_input(input(session.id, text)).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Handoff, "{text}");
        assert_eq!(result.execution_status, ExecutionStatus::Paused);
        assert_eq!(result.last_ai_message(), reply);
        let record = records.lock().unwrap()[0].clone();
        let safety = &record.session.state.safety;
        let handoff = safety.handoff.clone().unwrap();
        assert_eq!(handoff.reason, HandoffReason::UserRequest);
        assert_eq!(handoff.level, RiskLevel::None);
        assert_eq!(handoff.resume_status, ExecutionStatus::WaitingInput);
        assert_eq!(safety.risk_level, RiskLevel::None);
        assert!(safety.risk_events.is_empty());
        assert_eq!(
            record.session.state.pending_action,
            session.state.pending_action
        );
        assert_eq!(
            counters(&snapshotter, REPAIR_INTENTS_TOTAL),
            [(labels("human", "local"), 1)]
        );
        assert!(counters(&snapshotter, SAFETY_EVENTS_TOTAL).is_empty());
    }
}

#[tokio::test]
async fn the_llms_stop_or_person_reading_drops_the_scripts_outcome() {
    for (intent, status) in [
        (RepairIntent::Stop, SessionStatus::Completed),
        (RepairIntent::Human, SessionStatus::Handoff),
    ] {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let script = script();
        let session = asking(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine
            .expect_run_turn()
            .times(1)
            .withf(|r| r.intent.is_none() && r.llm_intents)
            .returning(move |r| {
                let mut outcome = outcome_from(&r, ExecutionStatus::WaitingInput);
                outcome.repair = Some(IntentReading {
                    intent,
                    source: SignalSource::Llm,
                });
                Ok(outcome)
            });
        let m = repairing(&script, sessions, engine, 0, None);
        let result = m
            .process_input(input(session.id, "我先这样吧"))
            .await
            .unwrap();
        assert_eq!(result.session_status, status);
        let record = records.lock().unwrap()[0].clone();
        // The script's variables and message are not kept.
        assert!(record.variables.is_empty());
        assert_eq!(record.messages.len(), 2);
        assert_eq!(record.messages[1].metadata["repair"]["source"], "llm");
        assert_eq!(
            counters(&snapshotter, REPAIR_INTENTS_TOTAL),
            [(labels(intent.as_str(), "llm"), 1)]
        );
    }
}

#[tokio::test]
async fn intents_are_read_only_in_answers_to_a_question_and_only_when_on() {
    // The pending action is an ai_say: "跳过" is an ordinary message.
    let script = script();
    let mut session = asking(&script);
    if let Some(pending) = session.state.pending_action.as_mut() {
        pending.action_type = ActionType::AiSay;
    }
    let mut sessions = sessions_claiming(&session, 1);
    committed(&mut sessions);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .times(1)
        .withf(|r| r.intent.is_none() && !r.llm_intents)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = repairing(&script, sessions, engine, 0, None);
    let result = m.process_input(input(session.id, "不聊了")).await.unwrap();
    assert_eq!(result.session_status, SessionStatus::Active);

    // Turned off: a stop at a question runs the script.
    let session = asking(&script);
    let mut sessions = sessions_claiming(&session, 1);
    committed(&mut sessions);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .times(1)
        .withf(|r| r.intent.is_none() && !r.llm_intents)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let mut policy = repair_policy();
    policy.enabled = false;
    let m = manager(scripts_returning(&script), sessions, engine)
        .with_repair(RepairProtocol::new(policy));
    let result = m.process_input(input(session.id, "不聊了")).await.unwrap();
    assert_eq!(result.session_status, SessionStatus::Active);
}

#[tokio::test]
async fn the_crisis_protocol_reads_first_and_wins() {
    let script = script();
    let session = asking(&script);
    let mut sessions = sessions_claiming(&session, 1);
    let records = committed(&mut sessions);
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let m = repairing(&script, sessions, engine, 1, None);
    let result = m
        .process_input(input(session.id, "我不想活了，不想聊了"))
        .await
        .unwrap();
    assert_eq!(result.session_status, SessionStatus::Handoff);
    assert_eq!(result.last_ai_message(), "CRISIS - line: 1");
    let handoff = records.lock().unwrap()[0]
        .session
        .state
        .safety
        .handoff
        .clone()
        .unwrap();
    assert_eq!(handoff.reason, HandoffReason::Crisis);
}

/// A session waiting for a person since `since`.
fn waiting_for_person(script: &Script, since: DateTime<Utc>) -> Session {
    let mut session = asking(script);
    session.status = SessionStatus::Handoff;
    session.state.status = ExecutionStatus::Paused;
    session.state.safety.handoff = Some(Handoff {
        since,
        level: RiskLevel::None,
        resume_status: ExecutionStatus::WaitingInput,
        reason: HandoffReason::UserRequest,
    });
    session
}

#[tokio::test]
async fn a_session_waiting_for_a_person_gets_the_neutral_holding_reply() {
    for (text, reply) in [("还在吗", "WAIT-zh"), ("hello?", "WAIT-en")] {
        let script = script();
        let session = waiting_for_person(&script, FixedClock.now());
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        let m = repairing(
            &script,
            sessions,
            engine,
            0,
            Some(Duration::from_secs(3600)),
        );
        let result = m.process_input(input(session.id, text)).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Handoff);
        assert_eq!(result.last_ai_message(), reply);
        let record = records.lock().unwrap()[0].clone();
        assert_eq!(record.messages[1].metadata["repair"]["holding"], true);
        assert_eq!(
            record.session.state.safety.handoff,
            session.state.safety.handoff
        );
    }
}

#[tokio::test]
async fn a_crisis_while_waiting_for_a_person_follows_the_protocol_and_keeps_the_resume_status() {
    let script = script();
    let session = waiting_for_person(&script, FixedClock.now());
    let mut sessions = sessions_claiming(&session, 1);
    let records = committed(&mut sessions);
    let mut engine = MockScriptEngine::new();
    engine.expect_run_turn().times(0);
    let m = repairing(&script, sessions, engine, 1, None);
    let result = m
        .process_input(input(session.id, "I want to kill myself"))
        .await
        .unwrap();
    assert_eq!(result.last_ai_message(), "CRISIS - line: 1");
    let handoff = records.lock().unwrap()[0]
        .session
        .state
        .safety
        .handoff
        .clone()
        .unwrap();
    assert_eq!(handoff.reason, HandoffReason::Crisis);
    assert_eq!(handoff.resume_status, ExecutionStatus::WaitingInput);
}

#[tokio::test]
async fn after_the_safety_cooldown_a_person_handoff_is_released_and_the_script_resumes() {
    let script = script();
    let session = waiting_for_person(&script, FixedClock.now() - chrono::Duration::hours(2));
    let mut sessions = sessions_claiming(&session, 1);
    let records = committed(&mut sessions);
    let mut engine = MockScriptEngine::new();
    engine
        .expect_run_turn()
        .times(1)
        .withf(|r| r.state.status == ExecutionStatus::WaitingInput)
        .returning(|r| Ok(outcome_from(&r, ExecutionStatus::WaitingInput)));
    let m = repairing(
        &script,
        sessions,
        engine,
        0,
        Some(Duration::from_secs(3600)),
    );
    let result = m.process_input(input(session.id, "小明")).await.unwrap();
    assert_eq!(result.session_status, SessionStatus::Active);
    assert!(records.lock().unwrap()[0]
        .session
        .state
        .safety
        .handoff
        .is_none());
}

#[tokio::test]
async fn a_request_for_a_person_alerts_the_on_call_webhook_only_when_configured() {
    for (text, pattern) in [
        ("我想和真人聊聊", "zh.human"),
        ("Can I talk to a real person?", "en.human"),
    ] {
        let script = script();
        let session = asking(&script);
        let mut sessions = sessions_claiming(&session, 1);
        let records = committed(&mut sessions);
        let mut engine = MockScriptEngine::new();
        engine.expect_run_turn().times(0);
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&alerts);
        let commits = Arc::clone(&records);
        let mut notifier = MockSafetyNotifier::new();
        notifier.expect_notify().times(1).returning(move |alert| {
            assert_eq!(
                commits.lock().unwrap().len(),
                1,
                "notified before the commit"
            );
            kept.lock().unwrap().push(alert);
        });
        let mut policy = repair_policy();
        policy.notify_on_human = true;
        let m = manager(scripts_returning(&script), sessions, engine)
            .with_safety(SafetyProtocol::new(safety_policy(None), Arc::new(notifier)))
            .with_repair(RepairProtocol::new(policy));
        let result = m.process_input(input(session.id, text)).await.unwrap();
        assert_eq!(result.session_status, SessionStatus::Handoff);
        let alert = alerts.lock().unwrap()[0].clone();
        assert_eq!(alert.kind, crate::safety::AlertKind::HumanRequest);
        assert_eq!(alert.alert_id, result.turn_id);
        assert_eq!(alert.level, RiskLevel::None);
        assert_eq!(alert.sources, [SignalSource::Local]);
        assert_eq!(alert.pattern_ids, [pattern]);
        assert!(alert.handoff);
    }
}
