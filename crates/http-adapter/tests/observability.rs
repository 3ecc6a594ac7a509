//! What the adapter exposes about itself: the OpenAPI document and Swagger
//! UI, and HTTP metrics labelled by route template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::http::Method;
use actix_web::test::TestRequest;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use support::*;

/// Every route the adapter serves, as `METHOD path`.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("post", "/api/sessions"),
    ("get", "/api/sessions/{id}"),
    ("get", "/api/sessions/{id}/messages"),
    ("post", "/api/sessions/{id}/messages"),
    ("post", "/api/sessions/{id}/release"),
    ("post", "/api/sessions/{id}/replay"),
    ("get", "/api/sessions/{id}/variables"),
    ("get", "/api/sessions/{id}/ws"),
    ("get", "/api/users/{userId}/sessions"),
    ("get", "/api/users/{userId}/usage"),
    ("post", "/api/chat"),
    ("post", "/api/chat/stream"),
    ("get", "/api/scripts"),
    ("post", "/api/scripts"),
    ("post", "/api/scripts/import"),
    ("get", "/api/scripts/{id}"),
    ("post", "/api/scripts/{id}/validate"),
    ("get", "/api/admin/audit-events"),
    ("get", "/api/admin/users/{userId}/export"),
    ("delete", "/api/admin/users/{userId}"),
    ("get", "/api/projects/{id}/draft"),
    ("put", "/api/projects/{id}/draft"),
    ("post", "/api/projects/{id}/publish"),
    ("get", "/api/projects/{id}/versions"),
    ("get", "/api/projects/{id}/versions/{number}"),
    ("post", "/api/projects/{id}/versions/{number}/restore"),
    ("get", "/api/projects/{id}/versions/{number}/diff"),
    ("post", "/api/projects/{id}/rollback"),
    ("put", "/api/projects/{id}/current-version"),
    ("get", "/api/projects"),
    ("post", "/api/projects"),
    ("get", "/api/projects/{id}"),
    ("put", "/api/projects/{id}"),
    ("post", "/api/projects/{id}/deprecate"),
    ("post", "/api/projects/{id}/restore"),
    ("post", "/api/projects/{id}/copy"),
    ("get", "/api/projects/{id}/files"),
    ("post", "/api/projects/{id}/files"),
    ("get", "/api/projects/{id}/files/{path}"),
    ("put", "/api/projects/{id}/files/{path}"),
    ("delete", "/api/projects/{id}/files/{path}"),
    ("get", "/api/projects/{id}/template-schemes"),
    ("post", "/api/projects/{id}/template-schemes"),
    ("post", "/api/projects/{id}/test"),
];

#[actix_web::test]
async fn openapi_lists_every_route_and_each_is_served() {
    let mut h = Harness::default_config();
    h.state = h
        .state
        .clone()
        .with_metrics_renderer(Arc::new(|| "# no metrics yet\n".to_owned()));
    let app = h.service().await;
    let doc = get(&app, "/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc.body["info"]["title"], "HeartRule Engine API");

    let documented: BTreeSet<(String, String)> = doc.body["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| !matches!(k.as_str(), "parameters" | "summary" | "description"))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    for schema in [
        "TurnBody",
        "ErrorBody",
        "CreateSessionRequest",
        "ScriptBody",
    ] {
        assert!(
            doc.body["components"]["schemas"].get(schema).is_some(),
            "schema {schema}"
        );
    }
    let stream_doc = doc.body["paths"]["/api/chat/stream"]["post"]["description"]
        .as_str()
        .unwrap();
    assert!(stream_doc.contains("NOT cancelled when the client disconnects"));

    // Every documented route is really routed: no 404 NOT_FOUND, no 405.
    for (method, path) in ROUTES {
        let uri = path
            .replace("{id}", "00000000-0000-4000-8000-0000000000ff")
            .replace("{userId}", "someone")
            .replace("{number}", "1")
            .replace("{path}", "techniques/a.yaml");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let reply = call(
            &app,
            TestRequest::default()
                .method(method.clone())
                .uri(&uri)
                .set_json(json!({})),
        )
        .await;
        assert_ne!(reply.status.as_u16(), 405, "{method} {uri}: {}", reply.text);
        assert_ne!(reply.body["error"]["code"], "NOT_FOUND", "{method} {uri}");
    }
}

#[actix_web::test]
async fn swagger_ui_is_served_from_vendored_assets() {
    let h = Harness::default_config();
    let app = h.service().await;
    let redirect = get(&app, "/docs").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/docs/"));

    let index = get(&app, "/docs/").await;
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(index.text.to_lowercase().contains("swagger"));

    let bundle = get(&app, "/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.text.len() > 100_000, "the real bundle, not a stub");
    let initializer = get(&app, "/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status, 200);
    assert!(initializer.text.contains("/openapi.json"));

    let missing = get(&app, "/docs/no-such-file.js").await;
    missing.error(404, "NOT_FOUND");
}

#[actix_web::test]
async fn metrics_use_route_templates_as_labels() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut h = Harness::default_config();
    h.state = h
        .state
        .clone()
        .with_metrics_renderer(Arc::new(move || handle.render()));
    let app = h.service().await;

    let session = "00000000-0000-4000-8000-0000000000aa";
    get(&app, &format!("/api/sessions/{session}")).await;
    get(&app, &format!("/api/sessions/{session}/messages")).await;
    get(&app, "/api/users/user-42/sessions").await;
    get(&app, "/no/such/route/123").await;
    get(&app, "/health").await;

    let scrape = get(&app, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = &scrape.text;
    assert!(
        text.contains("http_server_request_duration_seconds"),
        "{text}"
    );
    assert!(text.contains("http_server_active_requests"), "{text}");
    for label in [
        r#"route="/api/sessions/{id}""#,
        r#"route="/api/sessions/{id}/messages""#,
        r#"route="/api/users/{userId}/sessions""#,
        r#"route="unmatched""#,
        r#"route="/health""#,
        r#"status="404""#,
        r#"method="GET""#,
    ] {
        assert!(text.contains(label), "missing {label} in\n{text}");
    }
    for raw in [session, "user-42", "/no/such/route"] {
        assert!(!text.contains(raw), "raw path part {raw} became a label");
    }
    let active_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_active_requests{"))
        .collect();
    assert!(!active_lines.is_empty());
    for line in active_lines {
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let scraping = line.contains(r#"route="/metrics""#);
        assert_eq!(value, if scraping { 1.0 } else { 0.0 }, "{line}");
    }
}
