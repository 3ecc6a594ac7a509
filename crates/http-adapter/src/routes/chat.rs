//! Chat routes: typed errors, and a real streamed turn.

use super::run_turn;
use super::sessions::turn_response;
use crate::auth::CurrentActor;
use crate::context::RequestContext;
use crate::dto::{ChatBody, ChatRequest, IdempotencyKeyHeader, StreamEventBody, TurnBody};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::idempotency_key;
use crate::openapi::responses::{JsonBody, Protected, SessionNotFound, TurnConflict};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use heartrule_domain::{ContentSink, ProcessInput, SessionId, StartedTurn};
use serde::Serialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tracing::Instrument;

const CHAT_ROUTE: &str = "POST /api/chat";
const STREAM_ROUTE: &str = "POST /api/chat/stream";

fn validate(body: &ChatRequest) -> Result<SessionId, ApiError> {
    if body.message.is_empty() {
        return Err(ApiError::invalid_request("`message` must not be empty"));
    }
    Ok(SessionId::from(body.session_id))
}

/// Runs one turn (the original chat shape).
#[utoipa::path(
    post,
    path = "/api/chat",
    tag = "chat",
    params(IdempotencyKeyHeader),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The turn's result", body = ChatBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        SessionNotFound, TurnConflict, JsonBody, Protected
    )
)]
pub async fn chat(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    body: web::Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let session_id = validate(&body)?;
    let idempotency = idempotency_key(&request, CHAT_ROUTE, &body)?;
    let result = run_turn(
        &state.conversations,
        actor,
        ProcessInput {
            session_id,
            content: body.message,
            idempotency,
            sink: None,
        },
    )
    .await?;
    Ok(turn_response(&result, &ChatBody::from(&result)))
}

/// One server-sent event, already encoded.
fn sse_event(name: &str, data: &impl Serialize) -> Bytes {
    // serde_json escapes newlines inside strings, so `data` stays one line.
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        json!({"error": {"code": "INTERNAL_SERVER_ERROR", "message": format!("event could not be encoded: {e}")}})
            .to_string()
    });
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Forwards the AI message text of a turn to the SSE stream as it is generated.
struct SseSink {
    events: UnboundedSender<Bytes>,
}

impl ContentSink for SseSink {
    fn delta(&self, action_id: &str, text: &str) {
        // A failed send means the client went away; the turn runs on and
        // commits whole regardless, so there is nobody left to tell.
        let _client_gone = self
            .events
            .send(sse_event(
                "chunk",
                &json!({"chunk": text, "actionId": action_id}),
            ))
            .is_err();
    }

    fn retract(&self, action_id: &str) {
        let _client_gone = self
            .events
            .send(sse_event("retract", &json!({"actionId": action_id})))
            .is_err();
    }
}

/// Runs one turn and streams it as server-sent events.
#[utoipa::path(
    post,
    path = "/api/chat/stream",
    tag = "chat",
    description = "Runs the real turn and streams it as server-sent events: `event: chunk` \
        (`{\"chunk\",\"actionId\"}`, the AI message text as the LLM produces it, released \
        sentence by sentence once the output guard passed it), `event: retract` \
        (`{\"actionId\"}`: discard what was shown of that action's message; the chunks that \
        follow replace it, a regenerated reply or the script's own text), then \
        `event: state` (the same body as `POST /api/sessions/{id}/messages`), then \
        `event: done` (`{\"done\":true}`); a failure is `event: error` (`{\"error\":{…}}`). \
        The turn runs in its own task and is NOT cancelled when the client disconnects: \
        it commits whole, and the client can read the result with \
        `GET /api/sessions/{id}/messages`.",
    params(IdempotencyKeyHeader),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "`text/event-stream`: (chunk | retract)* → state → done, or error; a replayed key sends no chunks. Errors before the stream starts are plain JSON.", content_type = "text/event-stream", body = StreamEventBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        SessionNotFound, TurnConflict, JsonBody, Protected
    )
)]
pub async fn chat_stream(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    body: web::Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let session_id = validate(&body)?;
    let idempotency = idempotency_key(&request, STREAM_ROUTE, &body)?;
    let context = RequestContext::of(&request);
    let (events, receiver) = unbounded_channel::<Bytes>();
    let input = ProcessInput {
        session_id,
        content: body.message,
        idempotency,
        sink: Some(Arc::new(SseSink {
            events: events.clone(),
        })),
    };
    let conversations = Arc::clone(&state.conversations);
    let include_debug_info = state.config.include_debug_info;
    // The claim decides the response: an unknown or busy session is a
    // plain JSON error, before any event is sent.
    let (started, start) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    // Claim and run in one spawned task, not polled by the response: a
    // client that disconnects cannot cancel the turn halfway or strand its
    // lease.
    actix_web::rt::spawn(
        async move {
            let outcome = match conversations.start_turn(&actor, input).await {
                Err(error) => {
                    // The handler answers with it, unless it is gone too.
                    let _ = started.send(Err(ApiError::from(error)));
                    return;
                }
                Ok(StartedTurn::Replayed(result)) => {
                    let _ = started.send(Ok(()));
                    Ok(*result)
                }
                Ok(StartedTurn::Claimed(turn)) => {
                    let _ = started.send(Ok(()));
                    turn.run().await
                }
            };
            let final_events = match outcome {
                Ok(result) => vec![
                    sse_event("state", &TurnBody::new(&result, include_debug_info)),
                    sse_event("done", &json!({"done": true})),
                ],
                Err(error) => {
                    let error = ApiError::from(error);
                    error.log(&context);
                    vec![sse_event("error", &error.body(&context))]
                }
            };
            for event in final_events {
                if events.send(event).is_err() {
                    tracing::debug!("stream client disconnected before the end of the turn");
                    break;
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
    start
        .await
        .map_err(|_| ApiError::internal("the turn's task ended before the turn started"))??;

    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok::<_, Infallible>(event), receiver))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}
