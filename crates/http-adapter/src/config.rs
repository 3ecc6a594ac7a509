//! Tunables of the HTTP adapter.

use std::time::Duration;

/// Settings of the HTTP layer. The server builds it from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest accepted JSON body; larger ones get `413 PAYLOAD_TOO_LARGE`.
    pub body_limit_bytes: usize,
    /// How often the WebSocket endpoint pings its client.
    pub ws_ping_interval: Duration,
    /// A WebSocket client that sends nothing (not even a pong) for this long is disconnected.
    pub ws_client_timeout: Duration,
    /// Whether turn responses carry `debugInfo` (every LLM call of the turn, prompts included).
    pub include_debug_info: bool,
    /// Largest page of `GET /api/sessions/{id}/messages`.
    pub history_page_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            ws_ping_interval: Duration::from_secs(15),
            ws_client_timeout: Duration::from_secs(45),
            include_debug_info: true,
            history_page_limit: 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = HttpConfig::default();
        assert_eq!(config.body_limit_bytes, 1_048_576);
        assert_eq!(config.ws_ping_interval, Duration::from_secs(15));
        assert_eq!(config.ws_client_timeout, Duration::from_secs(45));
        assert!(config.include_debug_info);
        assert_eq!(config.history_page_limit, 200);
    }
}
