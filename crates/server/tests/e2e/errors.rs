//! Domain errors and malformed requests: every failure is a typed
//! 4xx body with the request id.

use crate::support::{repo_root, Response, Services, TestApp};
use serde_json::json;

const UNKNOWN: &str = "00000000-0000-4000-8000-00000000abcd";

#[actix_web::test]
async fn case_33_domain_errors_have_their_codes_types_and_recovery() {
    let services = Services::new().await;
    let app = TestApp::start(&services.env()).await;

    let body = app
        .post(
            "/api/sessions",
            &json!({"userId": "u", "scriptId": UNKNOWN}),
        )
        .await
        .error(404, "SCRIPT_NOT_FOUND");
    assert_eq!(body["error"]["type"], "configuration");
    assert_eq!(body["error"]["message"], "Script not found");

    let body = app
        .send(UNKNOWN, "hello")
        .await
        .error(404, "SESSION_NOT_FOUND");
    assert_eq!(body["error"]["message"], "Session not found or expired");
    assert_eq!(body["error"]["recovery"]["canRetry"], false);
    assert_eq!(body["error"]["type"], "session");

    for path in [
        "/api/sessions/not-a-uuid",
        "/api/sessions/not-a-uuid/messages",
        "/api/sessions/not-a-uuid/variables",
        "/api/scripts/not-a-uuid",
    ] {
        let body = app.get(path).await.error(400, "INVALID_REQUEST");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("UUID"),
            "{path}: {body}"
        );
    }

    let deprecated =
        std::fs::read_to_string(repo_root().join("examples/scripts/deprecated_fields.yaml"))
            .unwrap();
    let strict = app
        .post(
            "/api/scripts/import?mode=strict",
            &json!({"yamlContent": deprecated, "scriptName": "strict_deprecated"}),
        )
        .await;
    assert_eq!(strict.status.as_u16(), 400, "{}", strict.text);
    let body = strict.json();
    assert_eq!(body["success"], false);
    let errors = body["errors"].as_array().expect("errors[]");
    assert!(!errors.is_empty());
    assert!(
        errors.iter().any(|e| e["path"]
            .as_str()
            .unwrap_or_default()
            .contains("content_template")
            || e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("content_template")),
        "{body}"
    );
    // Compatible mode (the default) loads it, with warnings.
    let compatible = app
        .post(
            "/api/scripts/import",
            &json!({"yamlContent": deprecated, "scriptName": "compatible_deprecated"}),
        )
        .await
        .ok();
    assert!(!compatible["data"]["warnings"]
        .as_array()
        .unwrap()
        .is_empty());
    app.stop().await;
}

#[actix_web::test]
async fn malformed_requests_get_typed_4xx_bodies_with_a_request_id() {
    let services = Services::new().await;
    let app = TestApp::start(
        &services
            .env()
            .set("HEARTRULE__HTTP__BODY_LIMIT_BYTES", "512"),
    )
    .await;
    let raw = |content_type: &'static str, body: String| {
        let request = app
            .http
            .post(app.at("/api/sessions"))
            .header("content-type", content_type)
            .body(body);
        async move { Response::read(request.send().await.unwrap()).await }
    };

    raw("application/json", "{\"userId\": ".into())
        .await
        .error(400, "INVALID_REQUEST");
    raw(
        "text/plain",
        json!({"userId": "u", "scriptId": UNKNOWN}).to_string(),
    )
    .await
    .error(415, "UNSUPPORTED_MEDIA_TYPE");
    let body = raw("application/json", json!({"userId": "u"}).to_string())
        .await
        .error(400, "INVALID_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scriptId")
            || body["error"]["details"]
                .as_str()
                .unwrap_or_default()
                .contains("scriptId"),
        "{body}"
    );
    let big = json!({"userId": "x".repeat(2048), "scriptId": UNKNOWN}).to_string();
    raw("application/json", big)
        .await
        .error(413, "PAYLOAD_TOO_LARGE");

    app.get("/api/nowhere").await.error(404, "NOT_FOUND");
    let wrong_method = Response::read(
        app.http
            .delete(app.at("/api/sessions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    wrong_method.error(405, "METHOD_NOT_ALLOWED");
    // Successful responses carry the request id too.
    let health = app.get("/health").await;
    assert!(health.header("x-request-id").is_some());
    app.stop().await;
}
