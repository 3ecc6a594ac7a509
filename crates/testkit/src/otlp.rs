//! An in-process OTLP trace receiver on 127.0.0.1: accepts OTLP/HTTP
//! protobuf (`POST /v1/traces`) and OTLP/gRPC (h2c, `TraceService/Export`).
//! Tests start it with [`OtlpTestReceiver::start`], which decodes every
//! export and keeps the spans for assertions; load runs with
//! [`OtlpTestReceiver::start_counting`], a stand-in for a collector that
//! reads each export and counts it and its bytes without decoding (so the
//! receiver adds little CPU of its own to what is measured).

use http_body_util::combinators::WithTrailers;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as OtlpStatus};
use prost::Message;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const HTTP_TRACES_PATH: &str = "/v1/traces";
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One exported span, with ids as lowercase hex and attribute values as text.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span (of this service; its parent may be remote).
    pub parent_span_id: Option<String>,
    /// e.g. `SPAN_KIND_SERVER`.
    pub kind: String,
    /// e.g. `STATUS_CODE_UNSET`, `STATUS_CODE_ERROR`.
    pub status: String,
    pub attributes: BTreeMap<String, String>,
    /// Names of the span's events (tracing events inside the span).
    pub events: Vec<String>,
    /// Attributes of the resource that exported the span (`service.name`, …).
    pub resource: BTreeMap<String, String>,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    export_requests: usize,
    export_bytes: usize,
    errors: Vec<String>,
}

#[derive(Default)]
struct Shared {
    /// Count exports without decoding them (no spans are kept).
    counting_only: bool,
    received: Mutex<Received>,
    arrived: Condvar,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_export(&self, request: &ExportTraceServiceRequest, bytes: usize) {
        let spans = flatten(request);
        let mut received = self.received();
        received.export_requests += 1;
        received.export_bytes += bytes;
        received.spans.extend(spans);
        self.arrived.notify_all();
    }

    fn count_export(&self, bytes: usize) {
        let mut received = self.received();
        received.export_requests += 1;
        received.export_bytes += bytes;
        self.arrived.notify_all();
    }

    fn record_error(&self, error: String) {
        self.received().errors.push(error);
    }
}

/// The receiver; it serves on its own thread until dropped.
pub struct OtlpTestReceiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for OtlpTestReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpTestReceiver")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl OtlpTestReceiver {
    /// Binds 127.0.0.1 on a free port and starts serving (its own thread and
    /// Tokio runtime, so it works from plain and async tests alike).
    ///
    /// # Errors
    /// Binding the port or starting the thread/runtime failed.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(Shared::default())
    }

    /// Like [`OtlpTestReceiver::start`], but every export is only counted
    /// (see [`OtlpTestReceiver::export_requests`] and
    /// [`OtlpTestReceiver::export_bytes`]); [`OtlpTestReceiver::spans`]
    /// stays empty.
    ///
    /// # Errors
    /// Binding the port or starting the thread/runtime failed.
    pub fn start_counting() -> std::io::Result<Self> {
        Self::start_with(Shared {
            counting_only: true,
            ..Shared::default()
        })
    }

    fn start_with(shared: Shared) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(shared);
        let (stop, stop_requested) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("otlp-test-receiver".to_owned())
            .spawn(move || runtime.block_on(serve(listener, serving, stop_requested)))?;
        Ok(Self {
            address,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base URL for `traces.endpoint` (either protocol), e.g. `http://127.0.0.1:40123`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The spans received so far, in arrival order.
    #[must_use]
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.received().spans.clone()
    }

    /// Waits until at least `count` spans arrived or `timeout` passed, then
    /// returns what arrived.
    #[must_use]
    pub fn wait_for_spans(&self, count: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received();
        while received.spans.len() < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            received = self
                .shared
                .arrived
                .wait_timeout(received, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        received.spans.clone()
    }

    /// How many export requests were accepted.
    #[must_use]
    pub fn export_requests(&self) -> usize {
        self.shared.received().export_requests
    }

    /// The bytes of the accepted export requests' messages.
    #[must_use]
    pub fn export_bytes(&self) -> usize {
        self.shared.received().export_bytes
    }

    /// Requests the receiver could not serve (undecodable bodies, wrong
    /// paths, connection failures), for diagnosing a failed test.
    #[must_use]
    pub fn errors(&self) -> Vec<String> {
        self.shared.received().errors.clone()
    }
}

impl Drop for OtlpTestReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server loop may already have ended on its own error.
            let _already_stopped = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                self.shared
                    .record_error("the receiver thread panicked".to_owned());
            }
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop_requested: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            shared.record_error(format!("listener: {error}"));
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop_requested => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let handler_state = Arc::clone(&shared);
                        let service = hyper::service::service_fn(move |request| {
                            handle(request, Arc::clone(&handler_state))
                        });
                        // HTTP/1.1 for OTLP/HTTP, HTTP/2 prior knowledge (h2c) for gRPC.
                        let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(error) = served {
                            shared.record_error(format!("connection: {error}"));
                        }
                    });
                }
                Err(error) => shared.record_error(format!("accept: {error}")),
            },
        }
    }
}

type Trailers = Ready<Option<Result<HeaderMap, Infallible>>>;
type ReplyBody = WithTrailers<Full<Bytes>, Trailers>;

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
) -> Response<ReplyBody> {
    let mut response =
        Response::new(Full::new(Bytes::from(body)).with_trailers(ready(trailers.map(Ok))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ReplyBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            shared.record_error(format!("{path}: reading the body: {error}"));
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                error.to_string().into_bytes(),
                None,
            ));
        }
    };
    let bytes = body.len();
    Ok(match (grpc, path.as_str()) {
        (false, HTTP_TRACES_PATH) if shared.counting_only => {
            shared.count_export(bytes);
            // An empty ExportTraceServiceResponse encodes to zero bytes.
            reply(StatusCode::OK, "application/x-protobuf", Vec::new(), None)
        }
        (false, HTTP_TRACES_PATH) => match ExportTraceServiceRequest::decode(body) {
            Ok(export) => {
                shared.record_export(&export, bytes);
                reply(
                    StatusCode::OK,
                    "application/x-protobuf",
                    ExportTraceServiceResponse::default().encode_to_vec(),
                    None,
                )
            }
            Err(error) => {
                shared.record_error(format!("{path}: {error}"));
                reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    error.to_string().into_bytes(),
                    None,
                )
            }
        },
        (true, GRPC_EXPORT_PATH) if shared.counting_only => {
            shared.count_export(bytes);
            grpc_reply(&[], "0", None)
        }
        (true, GRPC_EXPORT_PATH) => match grpc_message(&body).and_then(|message| {
            ExportTraceServiceRequest::decode(message).map_err(|error| error.to_string())
        }) {
            Ok(export) => {
                shared.record_export(&export, bytes);
                grpc_reply(
                    &ExportTraceServiceResponse::default().encode_to_vec(),
                    "0",
                    None,
                )
            }
            Err(error) => {
                shared.record_error(format!("{path}: {error}"));
                // 3 = INVALID_ARGUMENT
                grpc_reply(&[], "3", Some(&error))
            }
        },
        _ => {
            shared.record_error(format!("unexpected request to {path} (grpc: {grpc})"));
            reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not an OTLP trace endpoint".to_vec(),
                None,
            )
        }
    })
}

/// The message of a unary gRPC request: one uncompressed length-prefixed frame.
fn grpc_message(body: &[u8]) -> Result<&[u8], String> {
    let (header, message) = body
        .split_at_checked(5)
        .ok_or_else(|| "gRPC frame shorter than its 5-byte header".to_owned())?;
    if header[0] != 0 {
        return Err("compressed gRPC frames are not supported".to_owned());
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let length = usize::try_from(length).map_err(|error| error.to_string())?;
    message
        .get(..length)
        .ok_or_else(|| format!("gRPC frame announces {length} bytes, has {}", message.len()))
}

fn grpc_reply(
    message: &[u8],
    grpc_status: &'static str,
    grpc_message: Option<&str>,
) -> Response<ReplyBody> {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    // Our replies are a few bytes; the cast cannot truncate.
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(grpc_status));
    if let Some(text) = grpc_message.and_then(|text| HeaderValue::from_str(text).ok()) {
        trailers.insert("grpc-message", text);
    }
    reply(StatusCode::OK, "application/grpc", frame, Some(trailers))
}

fn flatten(request: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|resource| attributes(&resource.attributes))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                spans.push(ReceivedSpan {
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    kind: SpanKind::try_from(span.kind).map_or_else(
                        |_| span.kind.to_string(),
                        |kind| kind.as_str_name().to_owned(),
                    ),
                    status: span
                        .status
                        .as_ref()
                        .map_or(OtlpStatus::Unset, |status| {
                            OtlpStatus::try_from(status.code).unwrap_or(OtlpStatus::Unset)
                        })
                        .as_str_name()
                        .to_owned(),
                    attributes: attributes(&span.attributes),
                    events: span.events.iter().map(|event| event.name.clone()).collect(),
                    resource: resource.clone(),
                });
            }
        }
    }
    spans
}

fn attributes(key_values: &[KeyValue]) -> BTreeMap<String, String> {
    key_values
        .iter()
        .map(|key_value| {
            (
                key_value.key.clone(),
                key_value
                    .value
                    .as_ref()
                    .map(any_value_text)
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn any_value_text(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => hex(bytes),
        Some(any_value::Value::ArrayValue(array)) => format!(
            "[{}]",
            array
                .values
                .iter()
                .map(any_value_text)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(any_value::Value::KvlistValue(list)) => format!(
            "{{{}}}",
            list.values
                .iter()
                .map(|pair| format!(
                    "{}={}",
                    pair.key,
                    pair.value.as_ref().map(any_value_text).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(any_value::Value::StringValueStrindex(index)) => format!("strindex:{index}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            // Writing to a String cannot fail.
            let _infallible = write!(text, "{byte:02x}");
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_frames_are_unwrapped() {
        assert_eq!(grpc_message(&[0, 0, 0, 0, 2, 7, 9]).unwrap(), &[7, 9]);
        assert!(grpc_message(&[0, 0, 0]).is_err());
        assert!(grpc_message(&[1, 0, 0, 0, 0]).is_err());
        assert!(grpc_message(&[0, 0, 0, 0, 3, 1]).is_err());
    }

    #[test]
    fn values_render_as_text() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        let value = |value| AnyValue { value: Some(value) };
        assert_eq!(any_value_text(&value(any_value::Value::IntValue(-3))), "-3");
        assert_eq!(
            any_value_text(&value(any_value::Value::BoolValue(true))),
            "true"
        );
        assert_eq!(
            any_value_text(&value(any_value::Value::StringValue("x".into()))),
            "x"
        );
    }
}
