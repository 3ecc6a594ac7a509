//! WebSocket chat: `{"type":"message","content":"…"}` in; `chunk` frames
//! while the AI message is generated (a `retract` frame withdraws what was
//! sent of an action's message; the chunks after it replace it), then one
//! `turn` frame (the body of
//! `POST /api/sessions/{id}/messages`); `error` frames on failure.
//!
//! The server pings every `ws_ping_interval` and closes a connection that
//! sent nothing (not even a pong) for `ws_client_timeout`. A socket runs one
//! turn at a time; a turn is not cancelled by a disconnect.

use super::parse_id;
use crate::auth::CurrentActor;
use crate::context::RequestContext;
use crate::dto::TurnBody;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::responses::{Protected, SessionNotFound};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session as Socket};
use heartrule_domain::{Actor, ContentSink, Conversations, ProcessInput, SessionId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tracing::Instrument;

/// A client frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Message { content: String },
}

/// A server frame.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerFrame {
    #[serde(rename_all = "camelCase")]
    Chunk {
        action_id: String,
        text: String,
    },
    #[serde(rename_all = "camelCase")]
    Retract {
        action_id: String,
    },
    Turn(Box<TurnBody>),
    Error(Box<ErrorBody>),
}

/// What the turn task reports to the socket loop.
enum TurnEvent {
    Chunk { action_id: String, text: String },
    Retract { action_id: String },
    Finished(ServerFrame),
}

struct SocketSink {
    events: UnboundedSender<TurnEvent>,
}

impl ContentSink for SocketSink {
    fn delta(&self, action_id: &str, text: &str) {
        // The socket loop outlives every turn it starts; a failed send only
        // happens while the server shuts down, when nobody is listening.
        let _loop_gone = self
            .events
            .send(TurnEvent::Chunk {
                action_id: action_id.to_owned(),
                text: text.to_owned(),
            })
            .is_err();
    }

    fn retract(&self, action_id: &str) {
        let _loop_gone = self
            .events
            .send(TurnEvent::Retract {
                action_id: action_id.to_owned(),
            })
            .is_err();
    }
}

/// Opens a chat WebSocket on a session.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/ws",
    tag = "chat",
    description = "WebSocket chat. Client: `{\"type\":\"message\",\"content\":\"…\"}`. Server: \
        `{\"type\":\"chunk\",\"actionId\",\"text\"}`* (released sentence by sentence once the \
        output guard passed it; `{\"type\":\"retract\",\"actionId\"}` withdraws what was sent of \
        that action's message, and the chunks after it replace it) then `{\"type\":\"turn\", …same body as \
        POST /api/sessions/{id}/messages}`; failures `{\"type\":\"error\",\"error\":{…}}`. \
        One turn at a time per socket; the server pings periodically and closes idle clients.",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 400, description = "Not a WebSocket handshake, or `id` is not a UUID", body = ErrorBody),
        SessionNotFound, Protected
    )
)]
pub async fn session_socket(
    state: web::Data<AppState>,
    CurrentActor(actor): CurrentActor,
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let session_id: SessionId = parse_id("id", &id)?;
    // Before the handshake: someone else's session is a plain 404.
    state.conversations.get_session(&actor, session_id).await?;
    let (response, socket, frames) = actix_ws::handle(&request, payload).map_err(|error| {
        // The handshake error knows its status only through its response
        // (its `status_code()` is the default 500).
        ApiError::from_status(
            error.error_response().status(),
            Some(format!("WebSocket handshake failed: {error}")),
        )
    })?;
    let connection = Connection {
        conversations: Arc::clone(&state.conversations),
        actor,
        session_id,
        include_debug_info: state.config.include_debug_info,
        ping_interval: state.config.ws_ping_interval,
        client_timeout: state.config.ws_client_timeout,
        context: RequestContext::of(&request),
    };
    actix_web::rt::spawn(
        connection
            .run(socket, frames)
            .instrument(tracing::info_span!("websocket", session.id = %session_id)),
    );
    Ok(response)
}

struct Connection {
    conversations: Arc<dyn Conversations>,
    /// Every turn of the socket is this actor's.
    actor: Actor,
    session_id: SessionId,
    include_debug_info: bool,
    ping_interval: Duration,
    client_timeout: Duration,
    context: RequestContext,
}

impl Connection {
    async fn run(self, mut socket: Socket, mut frames: MessageStream) {
        let (events, mut turn_events) = unbounded_channel::<TurnEvent>();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ping_interval,
            self.ping_interval,
        );
        let mut last_heard = Instant::now();
        let mut turn_running = false;

        let close_reason = loop {
            tokio::select! {
                frame = frames.recv() => {
                    let Some(frame) = frame else { break None };
                    last_heard = Instant::now();
                    let outcome = match frame {
                        Ok(Message::Text(text)) => {
                            self.on_text(&text, &mut turn_running, &events, &mut socket).await
                        }
                        Ok(Message::Ping(bytes)) => socket.pong(&bytes).await,
                        Ok(Message::Pong(_) | Message::Nop) => Ok(()),
                        Ok(Message::Binary(_) | Message::Continuation(_)) => {
                            let error = ApiError::invalid_request("Only JSON text frames are accepted");
                            self.send(&mut socket, &self.error_frame(&error)).await
                        }
                        Ok(Message::Close(reason)) => break reason,
                        Err(protocol_error) => {
                            tracing::warn!(error = %protocol_error, "websocket protocol error");
                            break Some(CloseReason::from(CloseCode::Protocol));
                        }
                    };
                    if outcome.is_err() {
                        // The client closed the socket under us.
                        return;
                    }
                }
                Some(event) = turn_events.recv() => {
                    let frame = match event {
                        TurnEvent::Chunk { action_id, text } => ServerFrame::Chunk { action_id, text },
                        TurnEvent::Retract { action_id } => ServerFrame::Retract { action_id },
                        TurnEvent::Finished(frame) => {
                            turn_running = false;
                            frame
                        }
                    };
                    if self.send(&mut socket, &frame).await.is_err() {
                        return;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= self.client_timeout {
                        tracing::info!(
                            timeout_ms = self.client_timeout.as_millis() as u64,
                            "closing websocket: the client stopped answering"
                        );
                        break Some(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("client timed out".into()),
                        });
                    }
                    if socket.ping(b"").await.is_err() {
                        return;
                    }
                }
            }
        };
        if socket.close(close_reason).await.is_err() {
            tracing::debug!("websocket was already closed");
        }
    }

    async fn on_text(
        &self,
        text: &str,
        turn_running: &mut bool,
        events: &UnboundedSender<TurnEvent>,
        socket: &mut Socket,
    ) -> Result<(), actix_ws::Closed> {
        let content = match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Message { content }) => content,
            Err(parse_error) => {
                let error = ApiError::invalid_request(
                    "Expected a frame like {\"type\":\"message\",\"content\":\"…\"}",
                )
                .with_details(parse_error.to_string());
                return self.send(socket, &self.error_frame(&error)).await;
            }
        };
        if *turn_running {
            return self
                .send(socket, &self.error_frame(&ApiError::turn_in_progress()))
                .await;
        }
        *turn_running = true;
        self.start_turn(content, events.clone());
        Ok(())
    }

    /// Runs the turn in its own task so a closing socket cannot cut it short.
    fn start_turn(&self, content: String, events: UnboundedSender<TurnEvent>) {
        let conversations = Arc::clone(&self.conversations);
        let actor = self.actor.clone();
        let context = self.context.clone();
        let include_debug_info = self.include_debug_info;
        let input = ProcessInput {
            session_id: self.session_id,
            content,
            idempotency: None,
            sink: Some(Arc::new(SocketSink {
                events: events.clone(),
            })),
        };
        actix_web::rt::spawn(
            async move {
                let frame = match conversations.process_input(&actor, input).await {
                    Ok(result) => {
                        ServerFrame::Turn(Box::new(TurnBody::new(&result, include_debug_info)))
                    }
                    Err(error) => {
                        let error = ApiError::from(error);
                        error.log(&context);
                        ServerFrame::Error(Box::new(error.body(&context)))
                    }
                };
                if events.send(TurnEvent::Finished(frame)).is_err() {
                    tracing::debug!(
                        "websocket closed before the turn finished; the turn was committed"
                    );
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    fn error_frame(&self, error: &ApiError) -> ServerFrame {
        error.log(&self.context);
        ServerFrame::Error(Box::new(error.body(&self.context)))
    }

    async fn send(&self, socket: &mut Socket, frame: &ServerFrame) -> Result<(), actix_ws::Closed> {
        match serde_json::to_string(frame) {
            Ok(text) => socket.text(text).await,
            Err(error) => {
                tracing::error!(error = %error, "websocket frame could not be encoded");
                Ok(())
            }
        }
    }
}
