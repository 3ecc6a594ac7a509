//! `GET /openapi.json` documents every route the server serves.

use crate::support::{Services, TestApp};
use serde_json::json;

/// Every path and method the HTTP adapter registers.
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
    ("post", "/api/projects/{id}/test"),
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
];

#[actix_web::test]
async fn the_openapi_document_is_openapi_3_and_lists_every_route() {
    let services = Services::new().await;
    let app = TestApp::start(&services.env()).await;
    let doc = app.get("/openapi.json").await.ok();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[*method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
    }
    // Every documented operation is served (no 404 from the router).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not in the route list"
            );
        }
    }
    // Every $ref resolves inside the document.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = &reference[..reference.find('"').unwrap()];
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }
    // The docs page is served.
    let docs = app.http.get(app.at("/docs")).send().await.unwrap();
    assert!(docs.status().is_success() || docs.status().is_redirection());
    app.stop().await;
}

/// What the contract run found on PostgreSQL: numbers at the edges of f64
/// read back from `jsonb` (printed there in full, 309 digits for f64::MAX),
/// and text with NUL, which PostgreSQL cannot store, refused up front.
#[actix_web::test]
async fn postgres_keeps_extreme_numbers_and_never_sees_nul() {
    let services = Services::new().await;
    let app = TestApp::start(&services.env()).await;
    let script_id = app.script_id("hello").await;
    let extremes = json!({"max": f64::MAX, "min": f64::MIN, "tiny": 5e-324, "small": 9.3e-96});
    let created = app
        .post(
            "/api/sessions",
            &json!({"userId": "edges", "scriptId": script_id, "initialVariables": extremes}),
        )
        .await
        .ok();
    let session_id = created["sessionId"].as_str().unwrap();
    let session = app.get(&format!("/api/sessions/{session_id}")).await.ok();
    for (name, value) in extremes.as_object().unwrap() {
        assert_eq!(&session["variables"][name], value, "{name}");
    }
    let listed = app.get("/api/users/edges/sessions").await.ok();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    app.post(
        "/api/sessions",
        &json!({"userId": "a\u{0}b", "scriptId": script_id}),
    )
    .await
    .error(400, "INVALID_REQUEST");
    app.get("/api/users/a%00b/sessions")
        .await
        .error(400, "INVALID_REQUEST");
    app.stop().await;
}
