//! Streaming turns: SSE (`POST /api/chat/stream`) and the WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::body::MessageBody;
use actix_web::test::{self, TestRequest};
use actix_web::App;
use awc::ws::{CloseCode, Frame, Message};
use futures::{SinkExt, StreamExt};
use heartrule_http_adapter::{configure, HttpConfig};
use serde_json::{json, Value};
use std::pin::Pin;
use std::time::Duration;
use support::*;

/// Creates a session on [`STREAM_SCRIPT`] and returns its id.
async fn stream_session<S, B>(h: &Harness, app: &S) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: MessageBody,
{
    let script_id = create_script(app, "stream", STREAM_SCRIPT).await;
    queue_stream_first_turn(&h.llm);
    let created = create_session(app, &script_id).await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.body["sessionId"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn sse_streams_chunks_then_state_then_done() {
    let h = Harness::default_config();
    let app = h.service().await;
    let session_id = stream_session(&h, &app).await;
    queue_stream_second_turn(&h.llm);

    let reply = post(
        &app,
        "/api/chat/stream",
        json!({"sessionId": session_id, "message": "小明"}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(reply.header("x-request-id").is_some());
    let events = parse_sse(&reply.text);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    let chunks = names.iter().take_while(|n| **n == "chunk").count();
    assert!(chunks >= 2, "the message arrives in pieces: {names:?}");
    assert_eq!(names[chunks..], ["state", "done"], "{names:?}");
    // Every event is one the document declares.
    let documented =
        &heartrule_http_adapter::openapi_json()["components"]["schemas"]["StreamEventName"]["enum"];
    for name in &names {
        assert!(
            documented.as_array().unwrap().contains(&json!(name)),
            "{name} is not in {documented}"
        );
    }

    let streamed: String = events[..chunks]
        .iter()
        .map(|e| {
            assert_eq!(e.data["actionId"], "ask_mood");
            e.data["chunk"].as_str().unwrap()
        })
        .collect();
    let state = &events[chunks].data;
    assert_eq!(
        streamed, STREAM_MOOD_QUESTION,
        "only the `content` field is streamed"
    );
    assert_eq!(state["aiMessage"], streamed);
    assert_eq!(state["executionStatus"], "waiting_input");
    assert_eq!(state["variables"]["user_name"], "小明");
    assert_eq!(state["position"]["actionId"], "ask_mood");
    assert_eq!(events[chunks + 1].data, json!({"done": true}));

    let stored = get(&app, &format!("/api/sessions/{session_id}/messages")).await;
    let last = stored.body["data"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["content"], STREAM_MOOD_QUESTION);
}

#[actix_web::test]
async fn sse_errors_are_typed_events_and_unknown_sessions_plain_404() {
    let h = Harness::default_config();
    let app = h.service().await;
    let session_id = stream_session(&h, &app).await;
    h.llm.fail(heartrule_domain::LlmError::CircuitOpen);

    let reply = post(
        &app,
        "/api/chat/stream",
        json!({"sessionId": session_id, "message": "小明"}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = parse_sse(&reply.text);
    assert_eq!(events.len(), 1, "{}", reply.text);
    assert_eq!(events[0].name, "error");
    let error = &events[0].data["error"];
    assert_eq!(error["code"], "LLM_SERVICE_ERROR");
    assert_eq!(error["type"], "runtime");
    assert_eq!(error["context"]["requestId"], reply.request_id());

    let unknown = post(
        &app,
        "/api/chat/stream",
        json!({"sessionId": "00000000-0000-4000-8000-000000000003", "message": "hi"}),
    )
    .await;
    unknown.error(404, "SESSION_NOT_FOUND");
    assert!(unknown
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
}

/// Reads the next body frame of a streaming response.
async fn next_frame<B: MessageBody>(body: &mut Pin<Box<B>>) -> Option<String> {
    let bytes = futures::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await?;
    let bytes = bytes
        .map_err(Into::<Box<dyn std::error::Error>>::into)
        .unwrap();
    Some(String::from_utf8(bytes.to_vec()).unwrap())
}

#[actix_web::test]
async fn client_disconnect_mid_stream_leaves_one_whole_turn() {
    let h = Harness::default_config();
    let app = h.service().await;
    let session_id = stream_session(&h, &app).await;
    queue_stream_second_turn(&h.llm);
    let gate = h.llm.hold_streams();
    let response = test::call_service(
        &app,
        TestRequest::post()
            .uri("/api/chat/stream")
            .set_json(json!({"sessionId": session_id, "message": "小明"}))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.into_body());
    let first = tokio::time::timeout(Duration::from_secs(5), next_frame(&mut body))
        .await
        .expect("a first event within 5 s")
        .unwrap();
    assert!(first.starts_with("event: chunk\n"), "{first}");
    // The client goes away while the LLM is still streaming.
    drop(body);
    gate.add_permits(1);

    let uri = format!("/api/sessions/{session_id}/messages");
    let mut stored = Vec::new();
    for _ in 0..200 {
        stored = get(&app, &uri).await.body["data"]
            .as_array()
            .unwrap()
            .clone();
        if stored.len() > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let contents: Vec<&str> = stored
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.len(), 4, "{contents:?}");
    assert_eq!(contents[2], "小明", "the user's words are stored once");
    assert_eq!(
        contents[3], STREAM_MOOD_QUESTION,
        "the whole AI message is stored"
    );
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);

    let session = get(&app, &format!("/api/sessions/{session_id}")).await;
    assert_eq!(session.body["executionStatus"], "waiting_input");
    assert_eq!(session.body["position"]["actionId"], "ask_mood");
    assert_eq!(session.body["turnCount"], 2);
    assert!(session.body["lastError"].is_null());
    assert_eq!(h.llm.pending_replies(), 0);
}

fn ws_config() -> HttpConfig {
    HttpConfig {
        ws_ping_interval: Duration::from_millis(100),
        ws_client_timeout: Duration::from_millis(400),
        ..HttpConfig::default()
    }
}

async fn start_server(h: &Harness) -> actix_test::TestServer {
    let state = h.state.clone();
    actix_test::start(move || App::new().configure(configure(state.clone())))
}

/// Creates a [`STREAM_SCRIPT`] session through the running server.
async fn server_session(h: &Harness, srv: &actix_test::TestServer) -> String {
    let mut created = srv
        .post("/api/scripts")
        .send_json(&json!({"scriptName": "stream", "scriptType": "session", "scriptContent": STREAM_SCRIPT, "author": "t"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let script: Value = created.json().await.unwrap();
    queue_stream_first_turn(&h.llm);
    let mut session = srv
        .post("/api/sessions")
        .send_json(&json!({"userId": "ws-user", "scriptId": script["scriptId"]}))
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    let session: Value = session.json().await.unwrap();
    session["sessionId"].as_str().unwrap().to_owned()
}

/// The next text frame as JSON, answering pings on the way.
async fn next_json<S>(framed: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Frame, awc::error::WsProtocolError>>
        + futures::Sink<Message, Error = awc::error::WsProtocolError>
        + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), framed.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .unwrap();
        match frame {
            Frame::Text(bytes) => return serde_json::from_slice(&bytes).unwrap(),
            Frame::Ping(bytes) => framed.send(Message::Pong(bytes)).await.unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[actix_web::test]
async fn websocket_runs_a_turn_with_chunks_then_the_turn_body() {
    let h = Harness::new(ws_config());
    let mut srv = start_server(&h).await;
    let session_id = server_session(&h, &srv).await;
    queue_stream_second_turn(&h.llm);

    let mut framed = srv
        .ws_at(&format!("/api/sessions/{session_id}/ws"))
        .await
        .unwrap();
    framed
        .send(Message::Text(
            json!({"type": "message", "content": "小明"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut streamed = String::new();
    let turn = loop {
        let frame = next_json(&mut framed).await;
        match frame["type"].as_str().unwrap() {
            "chunk" => {
                assert_eq!(frame["actionId"], "ask_mood");
                streamed.push_str(frame["text"].as_str().unwrap());
            }
            "turn" => break frame,
            other => panic!("unexpected frame type {other}: {frame}"),
        }
    };
    assert_eq!(streamed, STREAM_MOOD_QUESTION);
    assert_eq!(turn["aiMessage"], STREAM_MOOD_QUESTION);
    assert_eq!(turn["executionStatus"], "waiting_input");
    assert_eq!(turn["variables"]["user_name"], "小明");
    assert!(turn["turnId"].is_string());

    framed.send(Message::Text("not json".into())).await.unwrap();
    let error = next_json(&mut framed).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["code"], "INVALID_REQUEST");
    framed.send(Message::Close(None)).await.unwrap();
}

#[actix_web::test]
async fn websocket_runs_one_turn_at_a_time() {
    let h = Harness::new(ws_config());
    let mut srv = start_server(&h).await;
    let session_id = server_session(&h, &srv).await;
    queue_stream_second_turn(&h.llm);
    let gate = h.llm.hold_streams();

    let mut framed = srv
        .ws_at(&format!("/api/sessions/{session_id}/ws"))
        .await
        .unwrap();
    let message = || {
        Message::Text(
            json!({"type": "message", "content": "小明"})
                .to_string()
                .into(),
        )
    };
    framed.send(message()).await.unwrap();
    let first_chunk = next_json(&mut framed).await;
    assert_eq!(first_chunk["type"], "chunk");
    framed.send(message()).await.unwrap();
    let busy = loop {
        let frame = next_json(&mut framed).await;
        if frame["type"] != "chunk" {
            break frame;
        }
    };
    assert_eq!(busy["type"], "error", "{busy}");
    assert_eq!(busy["error"]["code"], "TURN_IN_PROGRESS");

    gate.add_permits(1);
    let turn = loop {
        let frame = next_json(&mut framed).await;
        if frame["type"] == "turn" {
            break frame;
        }
        assert_eq!(frame["type"], "chunk", "{frame}");
    };
    assert_eq!(turn["aiMessage"], STREAM_MOOD_QUESTION);
    assert_eq!(h.llm.call_count(), 3, "the rejected message ran no turn");
}

#[actix_web::test]
async fn websocket_pings_and_closes_a_silent_client() {
    let h = Harness::new(ws_config());
    let mut srv = start_server(&h).await;
    let session_id = server_session(&h, &srv).await;
    let mut framed = srv
        .ws_at(&format!("/api/sessions/{session_id}/ws"))
        .await
        .unwrap();

    // Answering pings keeps the connection open past the timeout.
    let started = std::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(700) {
        match tokio::time::timeout(Duration::from_secs(2), framed.next()).await {
            Ok(Some(Ok(Frame::Ping(bytes)))) => {
                pings += 1;
                framed.send(Message::Pong(bytes)).await.unwrap();
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(pings >= 4, "pinged every 100 ms: {pings}");

    // Silence: the server closes the connection after the client timeout.
    let silent_since = std::time::Instant::now();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(3), framed.next()).await {
            Ok(Some(Ok(Frame::Ping(_)))) => continue,
            Ok(Some(Ok(Frame::Close(reason)))) => break reason,
            other => panic!("expected pings then a close, got {other:?}"),
        }
    };
    let waited = silent_since.elapsed();
    assert_eq!(close.unwrap().code, CloseCode::Policy);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
        "closed after about the 400 ms timeout: {waited:?}"
    );
}

#[actix_web::test]
async fn websocket_to_an_unknown_session_is_a_json_404() {
    let h = Harness::new(ws_config());
    let srv = start_server(&h).await;
    let mut response = srv
        .get("/api/sessions/00000000-0000-4000-8000-000000000004/ws")
        .insert_header(("Connection", "Upgrade"))
        .insert_header(("Upgrade", "websocket"))
        .insert_header(("Sec-WebSocket-Version", "13"))
        .insert_header(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("x-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SESSION_NOT_FOUND");

    let mut plain = srv
        .get("/api/sessions/00000000-0000-4000-8000-000000000004/ws")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 404, "the session is checked first");
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["success"], false);
}

#[actix_web::test]
async fn a_plain_get_of_a_session_socket_is_a_400_not_a_server_error() {
    let h = Harness::new(ws_config());
    let srv = start_server(&h).await;
    let session_id = server_session(&h, &srv).await;
    let mut plain = srv
        .get(format!("/api/sessions/{session_id}/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
    assert!(body["error"]["details"]
        .as_str()
        .unwrap()
        .contains("WebSocket handshake failed"));
}

/// A reply whose second sentence is a diagnosis, then a clean one.
const DIAGNOSIS_REPLY: &str =
    r#"{"content": "小明，谢谢你告诉我。你患有抑郁症，需要治疗。", "EXIT": "false"}"#;

#[actix_web::test]
async fn sse_withdraws_a_diagnosis_and_streams_its_regeneration() {
    // Without debug info: the LLM calls (the withdrawn reply among them)
    // stay out of the `state` event, so nothing at all carries it.
    let h = Harness::new(HttpConfig {
        include_debug_info: false,
        ..HttpConfig::default()
    });
    let app = h.service().await;
    let session_id = stream_session(&h, &app).await;
    h.llm.reply(DIAGNOSIS_REPLY);
    queue_stream_second_turn(&h.llm);

    let reply = post(
        &app,
        "/api/chat/stream",
        json!({"sessionId": session_id, "message": "小明"}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        !reply.text.contains("你患有"),
        "the client never receives the diagnosis: {}",
        reply.text
    );
    let events = parse_sse(&reply.text);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    let retract = names.iter().position(|n| *n == "retract").unwrap();
    assert_eq!(names[..retract], ["chunk"], "{names:?}");
    assert_eq!(events[0].data["chunk"], "小明，谢谢你告诉我。");
    assert_eq!(events[retract].data, json!({"actionId": "ask_mood"}));
    let documented =
        &heartrule_http_adapter::openapi_json()["components"]["schemas"]["StreamEventName"]["enum"];
    assert!(documented.as_array().unwrap().contains(&json!("retract")));

    let after: Vec<&SseEvent> = events[retract + 1..]
        .iter()
        .take_while(|e| e.name == "chunk")
        .collect();
    let replacement: String = after
        .iter()
        .map(|e| e.data["chunk"].as_str().unwrap())
        .collect();
    assert_eq!(replacement, STREAM_MOOD_QUESTION);
    assert_eq!(
        names[retract + 1 + after.len()..],
        ["state", "done"],
        "{names:?}"
    );
    let state = &events[retract + 1 + after.len()].data;
    assert_eq!(state["aiMessage"], STREAM_MOOD_QUESTION);

    let stored = get(&app, &format!("/api/sessions/{session_id}/messages")).await;
    let last = stored.body["data"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["content"], STREAM_MOOD_QUESTION);
    assert_eq!(h.llm.pending_replies(), 0);
}

#[actix_web::test]
async fn websocket_retracts_and_sends_the_scripted_text_when_the_retry_fails_too() {
    let h = Harness::new(HttpConfig {
        include_debug_info: false,
        ..ws_config()
    });
    let mut srv = start_server(&h).await;
    let session_id = server_session(&h, &srv).await;
    h.llm.reply(DIAGNOSIS_REPLY);
    h.llm
        .reply(r#"{"content": "小明，别担心。我保证你会好起来。", "EXIT": "false"}"#);

    let mut framed = srv
        .ws_at(&format!("/api/sessions/{session_id}/ws"))
        .await
        .unwrap();
    framed
        .send(Message::Text(
            json!({"type": "message", "content": "小明"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut frames = Vec::new();
    let turn = loop {
        let frame = next_json(&mut framed).await;
        if frame["type"] == "turn" {
            break frame;
        }
        frames.push(frame);
    };
    let scripted = "问问小明最近的心情";
    assert_eq!(
        frames,
        [
            json!({"type": "chunk", "actionId": "ask_mood", "text": "小明，谢谢你告诉我。"}),
            json!({"type": "retract", "actionId": "ask_mood"}),
            json!({"type": "chunk", "actionId": "ask_mood", "text": "小明，别担心。"}),
            json!({"type": "retract", "actionId": "ask_mood"}),
            json!({"type": "chunk", "actionId": "ask_mood", "text": scripted}),
        ]
    );
    assert_eq!(turn["aiMessage"], scripted);
    assert_eq!(turn["executionStatus"], "waiting_input");
    framed.send(Message::Close(None)).await.unwrap();
}
