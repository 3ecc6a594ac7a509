//! The fake OpenAI server under the load it is built for: hundreds of
//! concurrent requests, plain and streamed, over kept-alive connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_testkit::fake_openai::{estimate_tokens, FakeServer, Reply, TokenUsage};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TEXT: &str = r#"{"content": "好的，再多说一点？", "EXIT": "false"}"#;

fn body(stream: bool) -> Value {
    json!({
        "model": "fake",
        "messages": [
            {"role": "system", "content": "You are a counselor."},
            {"role": "user", "content": "hi"},
        ],
        "stream": stream,
    })
}

/// The `content` deltas of an SSE body, joined.
fn streamed_text(sse: &str) -> String {
    sse.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            let event: Value = serde_json::from_str(data).unwrap();
            event["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_server_answers_hundreds_of_concurrent_calls_plain_and_streamed() {
    let latency = Duration::from_millis(200);
    let server = FakeServer::with_latency(latency, TEXT).await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..300 {
        let (client, url) = (client.clone(), url.clone());
        calls.spawn(async move {
            let stream = index % 2 == 1;
            let response = client.post(&url).json(&body(stream)).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            if stream {
                assert_eq!(streamed_text(&text), TEXT, "{text}");
                assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
                let usage: Value = text
                    .split("\n\n")
                    .filter_map(|event| event.strip_prefix("data: "))
                    .filter_map(|data| serde_json::from_str::<Value>(data).ok())
                    .find_map(|event| event.get("usage").cloned())
                    .unwrap();
                assert_eq!(usage["prompt_tokens"], 6, "{text}");
            } else {
                let completion: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(completion["choices"][0]["message"]["content"], TEXT);
                // "You are a counselor." + "hi": 22 characters, 6 tokens.
                assert_eq!(completion["usage"]["prompt_tokens"], 6);
                assert_eq!(
                    completion["usage"]["completion_tokens"],
                    estimate_tokens(TEXT)
                );
            }
        });
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(server.request_count(), 300);
    assert_eq!(
        server.token_usage(),
        TokenUsage {
            prompt: 300 * 6,
            completion: 300 * u64::from(estimate_tokens(TEXT)),
        }
    );
    assert!(server.requests().is_empty(), "load requests are not kept");
    assert!(elapsed >= latency, "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(15),
        "the calls waited side by side, not one after another: {elapsed:?}"
    );
    assert!(server.max_in_flight() > 50, "{}", server.max_in_flight());
}

#[tokio::test]
async fn scripted_replies_keep_the_connection_unless_the_client_closes_it() {
    let server = FakeServer::start(|index, _| match index {
        0 => Reply::sse(&["one".to_owned(), "two".to_owned()]),
        _ => Reply::text(201, "plain").header("x-index", &index.to_string()),
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let streamed = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(streamed.text().await.unwrap(), "data: one\n\ndata: two\n\n");
    let plain = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(plain.status(), 201);
    assert_eq!(plain.headers()["x-index"], "1");
    assert_eq!(plain.text().await.unwrap(), "plain");
    assert_eq!(server.connection_count(), 1);

    let closing = client
        .post(&url)
        .header("connection", "close")
        .body("{\"n\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(closing.text().await.unwrap(), "plain");
    client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(server.connection_count(), 2);
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[2].json()["n"], 3);
    assert_eq!(requests[2].path, "/v1/chat/completions");
}
