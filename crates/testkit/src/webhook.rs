//! An in-process webhook receiver: records every request (headers and
//! body) and answers each with the next of a scripted list of statuses
//! (then 200), so retries and failures can be tested.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedHook {
    pub path: String,
    /// Lowercase header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<ReceivedHook>>,
    statuses: Mutex<VecDeque<u16>>,
}

/// The receiver, listening on 127.0.0.1 until dropped.
pub struct WebhookReceiver {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// Starts a receiver answering `statuses` in order, then 200.
    pub async fn start(statuses: &[u16]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/safety", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            statuses: Mutex::new(statuses.iter().copied().collect()),
        });
        let state = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, Arc::clone(&state))
                    });
                    // A failed connection shows as a missing request in the test.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, shared, task }
    }

    /// The URL to configure as the webhook.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedHook> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until `count` requests have arrived.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedHook> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    shared.received.lock().unwrap().push(ReceivedHook {
        path,
        headers,
        body,
    });
    let status = shared.statuses.lock().unwrap().pop_front().unwrap_or(200);
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}
