//! The counting OTLP receiver accepts exports without decoding them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartrule_testkit::otlp::OtlpTestReceiver;

#[tokio::test]
async fn the_counting_receiver_counts_exports_and_bytes() {
    let receiver = OtlpTestReceiver::start_counting().unwrap();
    let client = reqwest::Client::new();
    for bytes in [10, 32] {
        let response = client
            .post(format!("{}/v1/traces", receiver.endpoint()))
            .header("content-type", "application/x-protobuf")
            // Not a valid export: the counting receiver does not look.
            .body(vec![0xff_u8; bytes])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(receiver.export_requests(), 2);
    assert_eq!(receiver.export_bytes(), 42);
    assert!(receiver.spans().is_empty());
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());
}
