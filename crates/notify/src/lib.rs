//! Outbound notifications. [`WebhookNotifier`] is the crisis protocol's
//! [`SafetyNotifier`]: it posts each alert as JSON to the configured on-call
//! endpoint, signed with HMAC-SHA256 over the exact body
//! (`X-HeartRule-Signature: sha256=<hex>`), retries with exponential backoff,
//! and records every attempt through the [`SafetyDeliveryLog`] port.
//!
//! `notify` returns at once: delivery runs on a spawned task, after the
//! turn that raised the alert has committed, so no pooled connection,
//! transaction or lease is ever held across the HTTP call.

use chrono::Utc;
use heartrule_domain::{
    DeliveryAttempt, DeliveryOutcome, MetricDecl, MetricSet, SafetyAlert, SafetyDeliveryLog,
    SafetyNotifier,
};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-heartrule-signature";
/// The header carrying the alert id (the same on every retry).
pub const ALERT_ID_HEADER: &str = "x-heartrule-alert-id";
/// The header carrying the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "x-heartrule-attempt";
/// Counter of webhook delivery attempts, label `outcome`.
pub const DELIVERIES_TOTAL: &str = "heartrule_safety_webhook_attempts_total";

/// The metrics this crate records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[MetricDecl::counter(
        DELIVERIES_TOTAL,
        &["outcome"],
        "Delivery attempts of safety alerts to the on-call webhook, by outcome (delivered, failed).",
    )],
};

/// Where and how alerts are sent.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC-SHA256 key the receiver checks the signature with.
    pub secret: SecretString,
    /// Attempts after the first one.
    pub retries: u32,
    /// Per attempt.
    pub timeout: Duration,
    /// Wait before the first retry; doubled before each further one.
    pub backoff: Duration,
}

/// Why the notifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("safety.webhook.url `{0}` is not an http(s) URL")]
    Url(String),
    #[error("the webhook HTTP client could not be built: {0}")]
    Client(String),
}

/// `sha256=<hex>` of `body` under `secret`: what the receiver recomputes.
#[must_use]
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` under `secret`, compared in
/// constant time (for receivers and tests).
#[must_use]
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// The body of an alert.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    alert: &'a SafetyAlert,
}

/// Posts alerts to the on-call webhook. Clones share the client and log.
#[derive(Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    config: Arc<WebhookConfig>,
    log: Arc<dyn SafetyDeliveryLog>,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &self.config.url)
            .field("retries", &self.config.retries)
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    /// A notifier posting to `config.url`, recording attempts in `log`.
    pub fn new(
        config: WebhookConfig,
        log: Arc<dyn SafetyDeliveryLog>,
    ) -> Result<Self, NotifyError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(NotifyError::Url(config.url));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        Ok(Self {
            client,
            config: Arc::new(config),
            log,
        })
    }

    /// Delivers `alert`, retrying until a 2xx answer or the attempts run
    /// out; every attempt is recorded. Returns the last outcome.
    pub async fn deliver(&self, alert: &SafetyAlert) -> DeliveryOutcome {
        let body = match serde_json::to_vec(&Envelope {
            kind: alert.kind.event_type(),
            alert,
        }) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(alert.id = %alert.alert_id, error = %e, "safety alert could not be encoded");
                return DeliveryOutcome::Failed;
            }
        };
        let signature = signature(self.config.secret.expose_secret().as_bytes(), &body);
        let attempts = self.config.retries.saturating_add(1);
        let mut wait = self.config.backoff;
        for attempt in 1..=attempts {
            let (outcome, http_status, error) = self.post(alert, &body, &signature, attempt).await;
            metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome.as_str()).increment(1);
            let record = DeliveryAttempt {
                alert_id: alert.alert_id,
                session_id: alert.session_id,
                attempt,
                outcome,
                http_status,
                error: error.clone(),
                attempted_at: Utc::now(),
            };
            if let Err(e) = self.log.record_delivery(&record).await {
                tracing::error!(
                    alert.id = %alert.alert_id,
                    attempt,
                    error = %e,
                    "safety webhook attempt could not be recorded"
                );
            }
            if outcome == DeliveryOutcome::Delivered {
                tracing::info!(alert.id = %alert.alert_id, attempt, "safety alert delivered");
                return outcome;
            }
            tracing::warn!(
                alert.id = %alert.alert_id,
                attempt,
                attempts,
                http.status = http_status,
                error = error.as_deref().unwrap_or(""),
                "safety webhook attempt failed"
            );
            if attempt < attempts {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        tracing::error!(
            alert.id = %alert.alert_id,
            session.id = %alert.session_id,
            attempts,
            "safety alert could not be delivered to the on-call webhook"
        );
        DeliveryOutcome::Failed
    }

    async fn post(
        &self,
        alert: &SafetyAlert,
        body: &[u8],
        signature: &str,
        attempt: u32,
    ) -> (DeliveryOutcome, Option<u16>, Option<String>) {
        let sent = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(ALERT_ID_HEADER, alert.alert_id.to_string())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => (
                DeliveryOutcome::Delivered,
                Some(response.status().as_u16()),
                None,
            ),
            Ok(response) => {
                let status = response.status();
                (
                    DeliveryOutcome::Failed,
                    Some(status.as_u16()),
                    Some(format!("the endpoint answered {status}")),
                )
            }
            Err(e) => (DeliveryOutcome::Failed, None, Some(e.to_string())),
        }
    }
}

impl SafetyNotifier for WebhookNotifier {
    fn notify(&self, alert: SafetyAlert) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let notifier = self.clone();
                runtime.spawn(async move {
                    notifier.deliver(&alert).await;
                });
            }
            Err(e) => tracing::error!(
                alert.id = %alert.alert_id,
                error = %e,
                "safety alert not sent: no async runtime to deliver it on"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let sig = signature(b"key", b"{\"a\":1}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert!(verify(b"key", b"{\"a\":1}", &sig));
        assert!(!verify(b"key", b"{\"a\":2}", &sig));
        assert!(!verify(b"other", b"{\"a\":1}", &sig));
        assert!(!verify(b"key", b"{\"a\":1}", "sha1=00"));
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
