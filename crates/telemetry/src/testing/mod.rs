//! Test support for this crate and its users: a log writer that captures
//! lines and a strict Prometheus text parser (the OTLP receiver is in
//! `heartrule-testkit`).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tracing_subscriber::fmt::MakeWriter;

mod exposition;

pub use exposition::{ExposedSample, Exposition, ExpositionError};

/// A [`MakeWriter`] that keeps everything written to it, for
/// [`crate::build_subscriber`] / [`crate::init_with_writer`] in tests.
/// Clones share the buffer.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedLogs {
    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        // A test that panicked while writing leaves valid bytes behind.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything written so far.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer()).into_owned()
    }

    /// The non-empty lines written so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Every line parsed as JSON (for the `json` log format).
    ///
    /// # Errors
    /// The first line that is not a JSON document.
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        self.lines()
            .iter()
            .map(|line| serde_json::from_str(line))
            .collect()
    }

    /// Forgets what was written so far.
    pub fn clear(&self) {
        self.buffer().clear();
    }
}

/// The writer handed out per event by [`CapturedLogs`].
#[derive(Debug)]
pub struct CapturedWriter {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl io::Write for CapturedWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CapturedWriter {
            buffer: Arc::clone(&self.buffer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn captured_lines_are_shared_between_clones_and_parsed() {
        let logs = CapturedLogs::default();
        let mut writer = logs.clone().make_writer();
        writer.write_all(b"{\"a\":1}\n\n{\"b\":2}\n").unwrap();
        assert_eq!(logs.lines(), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(logs.json_lines().unwrap()[1]["b"], 2);
        writer.write_all(b"not json\n").unwrap();
        assert!(logs.json_lines().is_err());
        logs.clear();
        assert!(logs.text().is_empty());
    }
}
