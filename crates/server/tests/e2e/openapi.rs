//! `GET /openapi.json` documents every route the server serves.

use crate::support::{Services, TestApp};

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
    ("get", "/api/sessions/{id}/variables"),
    ("get", "/api/sessions/{id}/ws"),
    ("get", "/api/users/{userId}/sessions"),
    ("post", "/api/chat"),
    ("post", "/api/chat/stream"),
    ("get", "/api/scripts"),
    ("post", "/api/scripts"),
    ("post", "/api/scripts/import"),
    ("get", "/api/scripts/{id}"),
    ("post", "/api/scripts/{id}/validate"),
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
