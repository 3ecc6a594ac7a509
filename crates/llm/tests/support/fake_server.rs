//! A tiny HTTP/1.1 server on 127.0.0.1:0 that answers each request with a
//! scripted [`Reply`] and counts requests and requests in flight.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

enum Body {
    Full(Vec<u8>),
    /// Pieces written one after another, each after its delay; no length.
    Pieces(Vec<(Duration, Vec<u8>)>),
}

pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    /// Wait before the response head (the request counts as in flight meanwhile).
    delay: Duration,
    body: Body,
    /// Never finish: after the head and pieces, keep the connection open silently.
    hang_after: bool,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Self {
        Self::text(status, &value.to_string()).header("content-type", "application/json")
    }

    pub fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Body::Full(text.as_bytes().to_vec()),
            hang_after: false,
        }
    }

    /// A server-sent-events body: every `data` value as its own event,
    /// written a few milliseconds apart.
    pub fn sse(data: &[String]) -> Self {
        let pieces = data
            .iter()
            .map(|data| {
                (
                    Duration::from_millis(3),
                    format!("data: {data}\n\n").into_bytes(),
                )
            })
            .collect();
        Self::stream_pieces(pieces)
    }

    /// A streamed body written verbatim in these pieces.
    pub fn raw_stream(pieces: &[&str]) -> Self {
        let pieces = pieces
            .iter()
            .map(|piece| (Duration::from_millis(3), piece.as_bytes().to_vec()))
            .collect();
        Self::stream_pieces(pieces)
    }

    fn stream_pieces(pieces: Vec<(Duration, Vec<u8>)>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".to_owned(), "text/event-stream".to_owned())],
            delay: Duration::ZERO,
            body: Body::Pieces(pieces),
            hang_after: false,
        }
    }

    /// Accepts the request and never answers.
    pub fn hang() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            delay: Duration::from_secs(3600),
            body: Body::Full(Vec::new()),
            hang_after: true,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// After the streamed pieces, keep the connection open without sending more.
    pub fn then_hang(mut self) -> Self {
        self.hang_after = true;
        self
    }
}

/// An OpenAI chat completion body.
pub fn completion(text: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "fake-model-2024",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

/// The `data` values of a streamed completion of `pieces`, usage included, ending in `[DONE]`.
pub fn stream_events(pieces: &[&str], prompt_tokens: u32, completion_tokens: u32) -> Vec<String> {
    let mut events = vec![json!({
        "model": "fake-model-2024",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    })
    .to_string()];
    for (index, piece) in pieces.iter().enumerate() {
        let finish = (index + 1 == pieces.len()).then_some("stop");
        events.push(
            json!({
                "model": "fake-model-2024",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]
            })
            .to_string(),
        );
    }
    events.push(
        json!({
            "model": "fake-model-2024",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        })
        .to_string(),
    );
    events.push("[DONE]".to_owned());
    events
}

type Handler = dyn Fn(usize, &RecordedRequest) -> Reply + Send + Sync;

struct State {
    handler: Box<Handler>,
    requests: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

pub struct FakeServer {
    base_url: String,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

impl FakeServer {
    /// Starts a server; `handler` gets the 0-based request number and the request.
    pub async fn start(
        handler: impl Fn(usize, &RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(State {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let loop_state = Arc::clone(&state);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(socket, Arc::clone(&loop_state)));
            }
        });
        Self {
            base_url: format!("http://{address}/v1"),
            state,
            accept_loop,
        }
    }

    /// Always answers with `reply()`.
    pub async fn always(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Self {
        Self::start(move |_, _| reply()).await
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most requests that were received and not yet answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// A base URL on which nothing listens (connections are refused).
pub async fn refused_base_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/v1")
}

async fn serve(mut socket: TcpStream, state: Arc<State>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(request.clone());
        requests.len() - 1
    };
    let reply = (state.handler)(index, &request);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(reply.delay).await;
    // Counted as answered before the answer is written, so a client that
    // sends its next request as soon as it has read this one is never
    // seen overlapping with it.
    state.in_flight.fetch_sub(1, Ordering::SeqCst);

    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Body::Full(body) = &reply.body {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    match reply.body {
        Body::Full(body) => {
            if socket.write_all(&body).await.is_err() {
                return;
            }
        }
        Body::Pieces(pieces) => {
            for (delay, piece) in pieces {
                tokio::time::sleep(delay).await;
                if socket.write_all(&piece).await.is_err() || socket.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    if reply.hang_after {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let _ = socket.shutdown().await;
}

async fn read_request(socket: &mut TcpStream) -> Option<RecordedRequest> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}
