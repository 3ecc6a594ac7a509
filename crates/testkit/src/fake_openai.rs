//! A fake OpenAI-compatible server: HTTP/1.1 on 127.0.0.1:0, a task per
//! connection, keep-alive, answering each request with a [`Reply`] chosen
//! by a handler, and counting requests and requests in flight.
//!
//! Two uses: tests script the replies request by request
//! ([`FakeServer::start`], [`FakeServer::always`]) and read back what was
//! sent ([`FakeServer::requests`]); load runs model a real provider with
//! [`FakeServer::with_latency`], which answers every chat completion, plain
//! or streamed, after a fixed delay and only counts the requests.
//!
//! Bodies of known length carry `content-length`; streamed bodies are sent
//! chunked, each piece its own chunk. Either way the connection stays open
//! for the next request unless the client asked to close it.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The model the fake's completions name.
pub const FAKE_MODEL: &str = "fake-model-2024";

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

    /// Whether the body asks for a streamed completion (`"stream": true`).
    pub fn wants_stream(&self) -> bool {
        serde_json::from_slice::<Value>(&self.body)
            .is_ok_and(|body| body["stream"].as_bool() == Some(true))
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

enum Body {
    Full(Vec<u8>),
    /// Pieces written one after another, each after its delay; chunked.
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

/// The wait between the pieces of [`Reply::sse`] and [`Reply::raw_stream`]
/// unless [`Reply::piece_gap`] says otherwise.
const PIECE_GAP: Duration = Duration::from_millis(3);

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
            .map(|data| (PIECE_GAP, format!("data: {data}\n\n").into_bytes()))
            .collect();
        Self::stream_pieces(pieces)
    }

    /// A streamed body written verbatim in these pieces.
    pub fn raw_stream(pieces: &[&str]) -> Self {
        let pieces = pieces
            .iter()
            .map(|piece| (PIECE_GAP, piece.as_bytes().to_vec()))
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

    /// Sets the wait before each streamed piece (no effect on a full body).
    pub fn piece_gap(mut self, gap: Duration) -> Self {
        if let Body::Pieces(pieces) = &mut self.body {
            for (delay, _) in pieces {
                *delay = gap;
            }
        }
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
        "model": FAKE_MODEL,
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
        "model": FAKE_MODEL,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    })
    .to_string()];
    for (index, piece) in pieces.iter().enumerate() {
        let finish = (index + 1 == pieces.len()).then_some("stop");
        events.push(
            json!({
                "model": FAKE_MODEL,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]
            })
            .to_string(),
        );
    }
    events.push(
        json!({
            "model": FAKE_MODEL,
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

/// `text` in pieces of at most `size` characters (none for an empty text).
fn split_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|piece| piece.iter().collect())
        .collect()
}

type Handler = dyn Fn(usize, &RecordedRequest) -> Reply + Send + Sync;

struct State {
    handler: Box<Handler>,
    /// Off for load runs, which send far too many requests to keep.
    record: bool,
    requests: Mutex<Vec<RecordedRequest>>,
    count: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl State {
    /// Counts (and, when recording, keeps) a request; returns its 0-based number.
    fn register(&self, request: &RecordedRequest) -> usize {
        if self.record {
            let mut requests = self.requests.lock().unwrap();
            requests.push(request.clone());
            self.count.fetch_add(1, Ordering::SeqCst);
            requests.len() - 1
        } else {
            self.count.fetch_add(1, Ordering::SeqCst)
        }
    }
}

pub struct FakeServer {
    base_url: String,
    state: Arc<State>,
    /// Owns the connection tasks: aborting it (on drop) ends them all.
    accept_loop: JoinHandle<()>,
    /// Tokens reported so far (only [`FakeServer::with_latency`] counts).
    usage: Arc<TokenCounters>,
}

/// Tokens a fake reported in its `usage`, summed over its replies.
#[derive(Debug, Default)]
struct TokenCounters {
    prompt: AtomicU64,
    completion: AtomicU64,
}

/// Tokens billed so far: prompt (input) and completion (output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
}

impl std::ops::Add for TokenUsage {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            prompt: self.prompt + other.prompt,
            completion: self.completion + other.completion,
        }
    }
}

/// The tokens between two readings (counters only grow; saturating anyway).
impl std::ops::Sub for TokenUsage {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            prompt: self.prompt.saturating_sub(earlier.prompt),
            completion: self.completion.saturating_sub(earlier.completion),
        }
    }
}

/// The token estimate the fake bills with (the mock provider's rule too):
/// one token per four characters, rounded up. Real tokenizers give about
/// that for English prose; other languages and code run higher.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// The prompt tokens of a chat completion request: [`estimate_tokens`] of
/// every message's text content together (0 for a body that is not one).
pub fn prompt_tokens(body: &[u8]) -> u32 {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let text: String = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message["content"].as_str())
        .collect();
    estimate_tokens(&text)
}

impl FakeServer {
    /// Starts a server that records every request; `handler` gets the
    /// 0-based request number and the request.
    pub async fn start(
        handler: impl Fn(usize, &RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::spawn(Box::new(handler), true).await
    }

    /// Always answers with `reply()`.
    pub async fn always(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Self {
        Self::start(move |_, _| reply()).await
    }

    /// A stand-in for a real provider under load: every chat completion is
    /// answered with `text` after `latency` (a streamed request gets the
    /// text as server-sent events, all sent once the latency has passed).
    /// Requests are counted, not kept. The reported `usage` is what a
    /// provider would bill, estimated at [`estimate_tokens`]: the prompt's
    /// tokens from the request's messages, the completion's from `text`;
    /// [`FakeServer::token_usage`] sums them.
    pub async fn with_latency(latency: Duration, text: &str) -> Self {
        let completion_tokens = estimate_tokens(text);
        let pieces = split_chars(text, 8);
        let text = text.to_owned();
        let usage = Arc::new(TokenCounters::default());
        let counters = Arc::clone(&usage);
        let handler = move |_: usize, request: &RecordedRequest| {
            let prompt_tokens = prompt_tokens(&request.body);
            counters
                .prompt
                .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
            counters
                .completion
                .fetch_add(u64::from(completion_tokens), Ordering::Relaxed);
            let reply = if request.wants_stream() {
                let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
                Reply::sse(&stream_events(&pieces, prompt_tokens, completion_tokens))
                    .piece_gap(Duration::ZERO)
            } else {
                let full = completion(&text, prompt_tokens, completion_tokens).to_string();
                Reply::text(200, &full).header("content-type", "application/json")
            };
            reply.delayed(latency)
        };
        let mut server = Self::spawn(Box::new(handler), false).await;
        server.usage = usage;
        server
    }

    async fn spawn(handler: Box<Handler>, record: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(State {
            handler,
            record,
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let loop_state = Arc::clone(&state);
        let accept_loop = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else {
                            return;
                        };
                        // Small writes (SSE pieces, chunk trailers) go out at once.
                        let _ = socket.set_nodelay(true);
                        loop_state.connections.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve(socket, Arc::clone(&loop_state)));
                    }
                    // Reaps finished connections so the set stays small.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Self {
            base_url: format!("http://{address}/v1"),
            state,
            accept_loop,
            usage: Arc::new(TokenCounters::default()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Tokens the replies reported so far (zero unless made by
    /// [`FakeServer::with_latency`]).
    pub fn token_usage(&self) -> TokenUsage {
        TokenUsage {
            prompt: self.usage.prompt.load(Ordering::Relaxed),
            completion: self.usage.completion.load(Ordering::Relaxed),
        }
    }

    pub fn request_count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// How many connections clients opened (fewer than requests when they
    /// keep connections alive).
    pub fn connection_count(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request received, in order (none for [`FakeServer::with_latency`],
    /// which only counts).
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
    format!("http://127.0.0.1:{}/v1", crate::closed_port())
}

/// Serves the requests of one connection until the client closes it, asks
/// for it to be closed, or a reply hangs.
async fn serve(mut socket: TcpStream, state: Arc<State>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buffer).await {
        let index = state.register(&request);
        let reply = (state.handler)(index, &request);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(reply.delay).await;
        // Counted as answered before the answer is written, so a client that
        // sends its next request as soon as it has read this one is never
        // seen overlapping with it.
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        let close = request.wants_close();
        if write_reply(&mut socket, reply, close).await.is_err() || close {
            break;
        }
    }
    let _ = socket.shutdown().await;
}

/// Writes `reply`; an error (or a hanging reply, which never returns) ends
/// the connection.
async fn write_reply(socket: &mut TcpStream, reply: Reply, close: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    if close {
        head.push_str("connection: close\r\n");
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &reply.body {
        Body::Full(body) => head.push_str(&format!("content-length: {}\r\n", body.len())),
        Body::Pieces(_) => head.push_str("transfer-encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    match reply.body {
        Body::Full(body) => {
            // One write, so head and body leave together.
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            socket.write_all(&bytes).await?;
        }
        Body::Pieces(pieces) => {
            socket.write_all(head.as_bytes()).await?;
            for (delay, piece) in pieces {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if piece.is_empty() {
                    // An empty chunk would end the body.
                    continue;
                }
                let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                chunk.extend_from_slice(&piece);
                chunk.extend_from_slice(b"\r\n");
                socket.write_all(&chunk).await?;
                socket.flush().await?;
            }
            if !reply.hang_after {
                socket.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
    socket.flush().await?;
    if reply.hang_after {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Err(std::io::Error::other("the reply hung"));
    }
    Ok(())
}

/// Reads the next request from `socket`; `buffer` keeps bytes received
/// beyond it (the start of the next request) between calls.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<RecordedRequest> {
    let mut chunk = [0u8; 8192];
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
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::{estimate_tokens, prompt_tokens, split_chars};
    use serde_json::json;

    #[test]
    fn prompt_tokens_are_a_quarter_of_the_messages_characters() {
        // 4 + 6 characters together: 10 / 4 rounded up.
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "abcd"},
            {"role": "user", "content": "你好世界ef"},
        ]});
        assert_eq!(prompt_tokens(body.to_string().as_bytes()), 3);
        assert_eq!(prompt_tokens(b"not json"), 0);
        assert_eq!(
            prompt_tokens(json!({"messages": []}).to_string().as_bytes()),
            0
        );
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(""), 0);
    }

    #[test]
    fn text_is_split_by_characters() {
        assert_eq!(split_chars("你好世界abc", 2), ["你好", "世界", "ab", "c"]);
        assert!(split_chars("", 8).is_empty());
    }
}
