//! `POST /api/chat/stream` (SSE) and the WebSocket chat against the real
//! `openai` provider in streaming mode.

use crate::support::counselor::{counselor, is_stream};
use crate::support::{eventually, rows, FakeServer, Reply, Services, TestApp};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Two simple questions and a goodbye.
const TWO_QUESTIONS: &str = r#"
session:
  session_id: stream_demo
  session_name: "Streaming"
  phases:
    - phase_id: only_phase
      topics:
        - topic_id: only_topic
          actions:
            - action_id: first_question
              action_type: ai_ask
              config:
                content: "询问来访者今天感觉如何"
            - action_id: second_question
              action_type: ai_ask
              config:
                content: "询问来访者最近睡得怎么样？晚上大概几点睡着，早上几点醒来"
            - action_id: goodbye
              action_type: ai_say
              config:
                content: "谢谢你的分享，我们下次见。"
                require_acknowledgment: false
"#;
const SECOND_QUESTION: &str = "询问来访者最近睡得怎么样？晚上大概几点睡着，早上几点醒来";

async fn import_two_questions(app: &TestApp) -> String {
    let imported = app
        .post(
            "/api/scripts/import",
            &json!({"yamlContent": TWO_QUESTIONS, "scriptName": "stream_demo"}),
        )
        .await
        .ok();
    imported["data"]["scriptId"].as_str().unwrap().to_owned()
}

/// `(event, data)` pairs of an SSE body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            (
                event,
                serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {block}")),
            )
        })
        .collect()
}

async fn stream_turn(app: &TestApp, session: &str, message: &str) -> Vec<(String, Value)> {
    let response = app
        .http
        .post(app.at("/api/chat/stream"))
        .json(&json!({"sessionId": session, "message": message}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    sse_events(&response.text().await.unwrap())
}

#[actix_web::test]
async fn sse_streams_chunks_then_state_then_done_and_the_text_is_the_message() {
    let services = Services::new().await;
    let llm = FakeServer::start(|_, request| counselor(request)).await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = import_two_questions(&app).await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();

    let events = stream_turn(&app, session, "还不错").await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let chunks = names.iter().take_while(|n| **n == "chunk").count();
    // Two sentences: the output guard releases each once it passed.
    assert!(chunks >= 2, "several chunks: {names:?}");
    assert_eq!(&names[chunks..], ["state", "done"], "{names:?}");
    let streamed: String = events[..chunks]
        .iter()
        .map(|(_, data)| data["chunk"].as_str().unwrap())
        .collect();
    let state = &events[chunks].1;
    assert_eq!(streamed, SECOND_QUESTION);
    assert_eq!(state["aiMessage"], streamed);
    assert_eq!(state["position"]["actionId"], "second_question");
    assert_eq!(events[chunks + 1].1, json!({"done": true}));
    assert!(
        llm.requests().iter().any(is_stream),
        "the provider streamed"
    );

    let history = app
        .get(&format!("/api/sessions/{session}/messages"))
        .await
        .ok();
    let last = history["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], SECOND_QUESTION);
    app.stop().await;
}

#[actix_web::test]
async fn a_client_leaving_mid_stream_does_not_stop_the_turn_from_committing_once() {
    let services = Services::new().await;
    let llm = FakeServer::start(|_, request| {
        let reply = counselor(request);
        if is_stream(request) {
            reply.delayed(Duration::from_millis(300))
        } else {
            reply
        }
    })
    .await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = import_two_questions(&app).await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap().to_owned();

    let response = app
        .http
        .post(app.at("/api/chat/stream"))
        .json(&json!({"sessionId": session, "message": "我先走了"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    drop(response);

    let db = &services.db;
    let user_rows = format!("session_id = '{session}' AND role = 'user' AND content = '我先走了'");
    eventually(Duration::from_secs(5), "the turn commits", || async {
        db.count("messages", &user_rows).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.count("messages", &user_rows).await,
        1,
        "committed exactly once"
    );
    let stored = rows(
        db,
        &format!("SELECT turn_count, last_message_seq FROM sessions WHERE id = '{session}'"),
    )
    .await;
    assert_eq!(stored[0]["turn_count"], 2, "{stored:?}");
    let count = db
        .count("messages", &format!("session_id = '{session}'"))
        .await;
    assert_eq!(stored[0]["last_message_seq"], json!(count));
    let session_body = app.get(&format!("/api/sessions/{session}")).await.ok();
    assert_eq!(session_body["position"]["actionId"], "second_question");

    // The session goes on normally.
    let turn = app.send(&session, "十二点睡，七点醒").await.ok();
    assert_eq!(turn["sessionStatus"], "completed", "{turn}");
    app.stop().await;
}

#[actix_web::test]
async fn a_malformed_stream_ends_in_an_error_event_and_a_retry_succeeds() {
    let services = Services::new().await;
    let broken = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&broken);
    let llm = FakeServer::start(move |_, request| {
        if is_stream(request) && flag.load(Ordering::SeqCst) {
            Reply::raw_stream(&[
                "data: {\"choices\": [{\"delta\": {\"content\": \"半\n\n",
                "data: [DONE]\n\n",
            ])
        } else {
            counselor(request)
        }
    })
    .await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = import_two_questions(&app).await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();

    let events = stream_turn(&app, session, "还行").await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["error"]["code"], "LLM_SERVICE_ERROR", "{data}");
    assert!(events.iter().all(|(name, _)| name != "state"));
    let db = &services.db;
    assert_eq!(
        db.count(
            "messages",
            &format!("session_id = '{session}' AND role = 'user'")
        )
        .await,
        0
    );
    assert_eq!(
        db.count(
            "failed_turns",
            &format!("session_id = '{session}' AND user_input = '还行'")
        )
        .await,
        1
    );

    broken.store(false, Ordering::SeqCst);
    let events = stream_turn(&app, session, "还行").await;
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    assert_eq!(
        db.count(
            "messages",
            &format!("session_id = '{session}' AND role = 'user'")
        )
        .await,
        1
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_websocket_chat_turn_streams_chunks_then_the_turn() {
    use awc::ws::{Frame, Message};

    let services = Services::new().await;
    let llm = FakeServer::start(|_, request| counselor(request)).await;
    let app = TestApp::start(&services.env().openai(llm.base_url())).await;
    let script = import_two_questions(&app).await;
    let created = app.create_session(&script).await;
    let session = created["sessionId"].as_str().unwrap();

    let ws_url = app
        .at(&format!("/api/sessions/{session}/ws"))
        .replace("http://", "ws://");
    let (_, mut socket) = awc::Client::new().ws(ws_url).connect().await.unwrap();
    socket
        .send(Message::Text(
            json!({"type": "message", "content": "还不错"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut streamed = String::new();
    let turn = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket stays open")
            .unwrap();
        match frame {
            Frame::Text(bytes) => {
                let value: Value = serde_json::from_slice(&bytes).unwrap();
                match value["type"].as_str() {
                    Some("chunk") => streamed.push_str(value["text"].as_str().unwrap()),
                    Some("turn") => break value,
                    other => panic!("unexpected frame {other:?}: {value}"),
                }
            }
            Frame::Ping(bytes) => socket.send(Message::Pong(bytes)).await.unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert_eq!(streamed, SECOND_QUESTION);
    assert_eq!(turn["aiMessage"], SECOND_QUESTION);
    assert_eq!(turn["position"]["actionId"], "second_question");
    socket.send(Message::Close(None)).await.unwrap();
    assert_eq!(
        services
            .db
            .count(
                "messages",
                &format!("session_id = '{session}' AND role = 'user'")
            )
            .await,
        1
    );
    app.stop().await;
}
