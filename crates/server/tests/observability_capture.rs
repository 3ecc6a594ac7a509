//! `telemetry.capture_content: true`: the LLM call's span carries the prompt
//! (`gen_ai.prompt`, which holds the user's words) and the completion
//! (`gen_ai.completion`); the HTTP layer records nothing more than with the
//! default. One global telemetry init per test binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_obs;

use heartrule_testkit::otlp::ReceivedSpan;
use std::time::{Duration, Instant};
use support_obs::{fake_reply_text, TracedServer, SECRET_MESSAGE};

const HTTP_SPAN_NAME: &str = "HTTP POST /api/sessions/{id}/messages";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capture_content_puts_prompt_and_completion_on_the_llm_span_only() {
    let traced = TracedServer::start(true).await;
    let TracedServer {
        receiver,
        logs,
        telemetry,
        client,
        session_id,
        seen_before,
        ..
    } = &traced;
    let seen_before = *seen_before;
    client.post_message(session_id, SECRET_MESSAGE, None).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans: Vec<ReceivedSpan> = loop {
        tokio::task::block_in_place(|| telemetry.flush()).unwrap();
        let spans = receiver.spans();
        if spans[seen_before..]
            .iter()
            .any(|span| span.name == HTTP_SPAN_NAME)
        {
            break spans[seen_before..].to_vec();
        }
        assert!(Instant::now() < deadline, "{:?}", receiver.errors());
        std::thread::sleep(Duration::from_millis(50));
    };

    let chats: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.name.starts_with("chat "))
        .collect();
    assert!(!chats.is_empty(), "the turn called the LLM");
    for chat in &chats {
        assert!(chat.attributes.contains_key("gen_ai.prompt"), "{chat:?}");
        assert_eq!(chat.attributes["gen_ai.completion"], fake_reply_text());
    }
    assert!(
        chats
            .iter()
            .any(|chat| chat.attributes["gen_ai.prompt"].contains(SECRET_MESSAGE)),
        "the user's words are in a captured prompt: {chats:#?}"
    );
    // Only the LLM spans carry conversation text.
    for span in spans.iter().filter(|span| !span.name.starts_with("chat ")) {
        assert!(
            span.attributes
                .values()
                .all(|value| !value.contains(SECRET_MESSAGE)),
            "{span:#?}"
        );
    }
    let http = spans
        .iter()
        .find(|span| span.name == HTTP_SPAN_NAME)
        .unwrap();
    assert!(
        !http.attributes.keys().any(|key| key.starts_with("gen_ai.")),
        "{http:#?}"
    );
    // Log lines outside the LLM span stay free of the words too.
    let lines = logs.json_lines().expect("JSON log lines");
    for line in lines.iter().filter(|line| line["span"]["name"] != "chat") {
        assert!(!line.to_string().contains(SECRET_MESSAGE), "{line}");
    }

    traced.stop().await;
}
