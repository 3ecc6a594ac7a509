//! The OpenAPI document tells the truth: what it declares (security, the
//! failures every route can answer, constraints, links, methods) is what
//! the server does. Driven by the document itself, so a route added later
//! is held to the same rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::http::{header, Method};
use actix_web::test::TestRequest;
use heartrule_http_adapter::{openapi_json, HttpConfig};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use support::*;

const ID: &str = "00000000-0000-4000-8000-00000000000a";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    openapi_json().clone()
}

/// Every `(path, method, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                all.push((path.clone(), method.to_owned(), operation.clone()));
            }
        }
    }
    assert!(all.len() >= 20, "the document lists the routes");
    all
}

/// A concrete URI for a templated path.
fn concrete(path: &str) -> String {
    path.replace("{id}", ID)
        .replace("{userId}", "user-1")
        .replace("{number}", "1")
}

/// Asserts `operation` declares `status` with the common error body.
fn declares_error(path: &str, method: &str, operation: &Value, status: &str) {
    let response = &operation["responses"][status];
    assert!(
        response.is_object(),
        "{method} {path} does not declare {status}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let refs = schema.to_string();
    assert!(
        refs.contains("#/components/schemas/ErrorBody"),
        "{method} {path} {status} is not an ErrorBody: {schema}"
    );
}

fn is_protected(path: &str) -> bool {
    path.starts_with("/api/")
}

#[test]
fn every_api_operation_needs_a_bearer_token_and_public_ones_do_not() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    for (path, method, operation) in operations(&doc) {
        if is_protected(&path) {
            assert_eq!(
                operation["security"],
                json!([{"bearerAuth": []}]),
                "{method} {path}"
            );
        } else {
            assert!(
                operation.get("security").is_none(),
                "{method} {path} is public and needs no token"
            );
        }
    }
    for public in [
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
    ] {
        assert!(doc["paths"][public]["get"].is_object(), "{public}");
    }
}

#[test]
fn every_api_operation_declares_401_429_and_503_and_every_json_body_413_and_415() {
    let doc = document();
    for (path, method, operation) in operations(&doc) {
        if is_protected(&path) {
            for status in ["401", "429", "503"] {
                declares_error(&path, &method, &operation, status);
            }
            assert!(
                operation["responses"]["429"]["headers"]["Retry-After"].is_object(),
                "{method} {path}: 429 carries Retry-After"
            );
        }
        if let Some(body) = operation.get("requestBody") {
            assert!(
                body["content"]["application/json"].is_object(),
                "{method} {path} takes JSON"
            );
            for status in ["413", "415"] {
                declares_error(&path, &method, &operation, status);
            }
        }
    }
}

#[test]
fn role_ownership_and_turn_failures_are_declared_where_they_happen() {
    let doc = document();
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    for (method, path) in [
        ("post", "/api/scripts"),
        ("post", "/api/scripts/import"),
        ("post", "/api/scripts/{id}/validate"),
        ("put", "/api/projects/{id}/draft"),
        ("post", "/api/projects/{id}/publish"),
        ("post", "/api/projects/{id}/rollback"),
        ("put", "/api/projects/{id}/current-version"),
        ("post", "/api/projects/{id}/versions/{number}/restore"),
        ("post", "/api/sessions"),
        ("get", "/api/users/{userId}/sessions"),
    ] {
        declares_error(path, method, &op(method, path), "403");
    }
    // A session of another user is reported as missing.
    for (path, method, operation) in operations(&doc) {
        if path.starts_with("/api/sessions/{id}") {
            declares_error(&path, &method, &operation, "404");
        }
    }
    for (method, path) in [
        ("post", "/api/sessions/{id}/messages"),
        ("post", "/api/chat"),
        ("post", "/api/chat/stream"),
    ] {
        let operation = op(method, path);
        declares_error(path, method, &operation, "404");
        declares_error(path, method, &operation, "409");
        assert!(
            operation["responses"]["409"]["headers"]["Retry-After"].is_object(),
            "{method} {path}"
        );
    }
}

#[test]
fn links_lead_to_real_operations_parameters_and_fields() {
    let doc = document();
    let all = operations(&doc);
    let by_id = |id: &str| {
        all.iter()
            .find(|(_, _, op)| op["operationId"] == id)
            .unwrap_or_else(|| panic!("no operation {id}"))
            .2
            .clone()
    };
    let mut links = 0;
    for (path, method, operation) in &all {
        for (status, response) in operation["responses"].as_object().unwrap() {
            let Some(map) = response.get("links").and_then(Value::as_object) else {
                continue;
            };
            for (name, link) in map {
                links += 1;
                let what = format!("{method} {path} {status} link {name}");
                let target = by_id(link["operationId"].as_str().expect(&what));
                for parameter in link
                    .get("parameters")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(p, _)| p)
                {
                    assert!(
                        target["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == parameter.as_str()),
                        "{what}: the target has no parameter {parameter}"
                    );
                }
                if let Some(body) = link.get("requestBody") {
                    let schema = target["requestBody"]["content"]["application/json"]["schema"]
                        ["$ref"]
                        .as_str()
                        .expect(&what);
                    let properties =
                        &doc.pointer(schema.trim_start_matches('#')).unwrap()["properties"];
                    for field in body.as_object().expect(&what).keys() {
                        assert!(properties.get(field).is_some(), "{what}: no field {field}");
                    }
                }
            }
        }
    }
    // Sessions are reachable from their creation, scripts from the catalog.
    let created = &doc["paths"]["/api/sessions"]["post"]["responses"]["200"]["links"];
    assert!(created["PostMessage"].is_object() && created["Chat"].is_object());
    assert!(
        doc["paths"]["/api/scripts"]["get"]["responses"]["200"]["links"]["CreateSession"]
            .is_object()
    );
    assert!(links >= 10, "{links} links");
}

#[actix_web::test]
async fn every_405_names_the_methods_the_route_accepts() {
    let doc = document();
    let h = Harness::default_config();
    let app = h.service().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let documented: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if documented.contains(method) {
                continue;
            }
            let request = TestRequest::default()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&concrete(path));
            let reply = call(&app, request).await;
            reply.error(405, "METHOD_NOT_ALLOWED");
            let allowed: BTreeSet<String> = reply
                .header("allow")
                .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allowed, documented, "{method} {path}");
        }
    }
}

#[actix_web::test]
async fn every_json_body_route_answers_415_and_413_as_declared() {
    let doc = document();
    let h = Harness::new(HttpConfig {
        body_limit_bytes: 64,
        ..HttpConfig::default()
    });
    let app = h.service().await;
    let mut routes = 0;
    for (path, method, operation) in operations(&doc) {
        if operation.get("requestBody").is_none() {
            continue;
        }
        routes += 1;
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let uri = concrete(&path);
        let as_text = TestRequest::default()
            .method(method.clone())
            .uri(&uri)
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload("{}");
        call(&app, as_text)
            .await
            .error(415, "UNSUPPORTED_MEDIA_TYPE");
        let too_large = TestRequest::default()
            .method(method)
            .uri(&uri)
            .set_json(json!({"padding": "x".repeat(100)}));
        call(&app, too_large).await.error(413, "PAYLOAD_TOO_LARGE");
    }
    assert!(routes >= 6, "{routes} JSON routes");
}

/// The values of a string enum schema of the document.
fn enum_values(doc: &Value, schema: &str) -> Vec<String> {
    doc["components"]["schemas"][schema]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema} is an enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn documented_enums_are_exactly_what_the_server_accepts() {
    let doc = document();
    let h = Harness::default_config();
    let app = h.service().await;
    let list = &doc["paths"]["/api/scripts"]["get"]["parameters"];
    let parameter_schema = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .to_string()
    };
    assert!(parameter_schema("type").contains("ScriptTypeName"));
    assert!(parameter_schema("status").contains("ScriptStatusName"));
    for value in enum_values(&doc, "ScriptTypeName") {
        let reply = get(&app, &format!("/api/scripts?type={value}")).await;
        assert_eq!(reply.status, 200, "type {value}: {}", reply.text);
    }
    for value in enum_values(&doc, "ScriptStatusName") {
        let reply = get(&app, &format!("/api/scripts?status={value}")).await;
        assert_eq!(reply.status, 200, "status {value}: {}", reply.text);
    }
    for query in ["type=Session", "type=script", "status=live", "status="] {
        get(&app, &format!("/api/scripts?{query}"))
            .await
            .error(400, "INVALID_REQUEST");
    }
    // A valid mode gets as far as looking the script up.
    let validate = format!("/api/scripts/{ID}/validate");
    for value in enum_values(&doc, "LoadModeName") {
        let reply = call(
            &app,
            TestRequest::post().uri(&format!("{validate}?mode={value}")),
        )
        .await;
        reply.error(404, "SCRIPT_NOT_FOUND");
    }
    call(
        &app,
        TestRequest::post().uri(&format!("{validate}?mode=lenient")),
    )
    .await
    .error(400, "INVALID_REQUEST");
    // scriptType of the body: a documented value is past validation (the
    // empty YAML then fails to parse), another is refused as a request error.
    let create = |script_type: &str| json!({"scriptName": "n", "scriptType": script_type, "scriptContent": "x: [", "author": "a"});
    for value in enum_values(&doc, "ScriptTypeName") {
        let reply = post(&app, "/api/scripts", create(&value)).await;
        reply.error(400, "SCRIPT_PARSE_ERROR");
    }
    post(&app, "/api/scripts", create("story"))
        .await
        .error(400, "INVALID_REQUEST");
}

/// `minimum`/`minLength` of a schema property or parameter.
fn bound(schema: &Value, key: &str) -> i64 {
    schema[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no {key} in {schema}"))
}

#[actix_web::test]
async fn documented_bounds_are_exactly_what_the_server_accepts() {
    let doc = document();
    let h = Harness::default_config();
    let app = h.service().await;
    let schemas = &doc["components"]["schemas"];

    // Paging: the bound is accepted (the unknown session is then a 404), one
    // below it is refused.
    let parameters = doc["paths"]["/api/sessions/{id}/messages"]["get"]["parameters"].clone();
    let parameter = |name: &str| {
        parameters
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    for name in ["limit", "afterSeq"] {
        let minimum = bound(&parameter(name), "minimum");
        let uri = |n: i64| format!("/api/sessions/{ID}/messages?{name}={n}");
        get(&app, &uri(minimum))
            .await
            .error(404, "SESSION_NOT_FOUND");
        get(&app, &uri(minimum - 1))
            .await
            .error(400, "INVALID_REQUEST");
    }

    // Required non-empty strings: empty is refused, one character passes.
    let cases = [
        (
            "CreateSessionRequest",
            "userId",
            "/api/sessions",
            json!({"userId": "u", "scriptId": ID}),
            "SCRIPT_NOT_FOUND",
        ),
        (
            "ChatRequest",
            "message",
            "/api/chat",
            json!({"sessionId": ID, "message": "m"}),
            "SESSION_NOT_FOUND",
        ),
        (
            "CreateScriptRequest",
            "scriptName",
            "/api/scripts",
            json!({"scriptName": "n", "scriptType": "session", "scriptContent": "x: [", "author": "a"}),
            "SCRIPT_PARSE_ERROR",
        ),
        (
            "ImportScriptRequest",
            "scriptName",
            "/api/scripts/import",
            json!({"scriptName": "n", "yamlContent": "x: ["}),
            "SCRIPT_PARSE_ERROR",
        ),
        (
            "ImportScriptRequest",
            "yamlContent",
            "/api/scripts/import",
            json!({"scriptName": "n", "yamlContent": "x: ["}),
            "SCRIPT_PARSE_ERROR",
        ),
    ];
    for (schema, field, uri, valid, past_validation) in cases {
        assert_eq!(
            bound(&schemas[schema]["properties"][field], "minLength"),
            1,
            "{schema}.{field}"
        );
        let status = post(&app, uri, valid.clone()).await;
        status.error(
            if past_validation == "SCRIPT_PARSE_ERROR" {
                400
            } else {
                404
            },
            past_validation,
        );
        let mut empty = valid;
        empty[field] = json!("");
        let reply = post(&app, uri, empty).await;
        assert_eq!(reply.status, 400, "{schema}.{field}: {}", reply.text);
    }

    // Idempotency-Key: the declared pattern.
    let pattern = doc["paths"]["/api/chat"]["post"]["parameters"][0]["schema"]["pattern"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pattern, "^[!-~]{1,255}$");
    let with_key = |key: String| {
        TestRequest::post()
            .uri("/api/chat")
            .insert_header(("Idempotency-Key", key))
            .set_json(json!({"sessionId": ID, "message": "m"}))
    };
    call(&app, with_key("k".repeat(255)))
        .await
        .error(404, "SESSION_NOT_FOUND");
    for bad in ["k".repeat(256), "a b".to_owned(), "é".to_owned()] {
        let reply = call(&app, with_key(bad.clone())).await;
        assert_eq!(reply.status, 400, "{bad:?}: {}", reply.text);
    }
}

/// A valid body for every JSON route, by route.
fn valid_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/api/sessions",
            json!({"userId": "u", "scriptId": ID, "initialVariables": {"k": "v"}}),
        ),
        ("/api/sessions/{id}/messages", json!({"content": "hi"})),
        ("/api/chat", json!({"sessionId": ID, "message": "m"})),
        ("/api/chat/stream", json!({"sessionId": ID, "message": "m"})),
        (
            "/api/scripts",
            json!({"scriptName": "n", "scriptType": "session", "scriptContent": "x: [",
                   "author": "a", "description": "d", "tags": ["t"]}),
        ),
        (
            "/api/scripts/import",
            json!({"scriptName": "n", "yamlContent": "x: [", "description": "d"}),
        ),
        (
            "/api/projects/{id}/draft",
            json!({"content": "x: [", "revision": 0}),
        ),
        (
            "/api/projects/{id}/publish",
            json!({"mode": "strict", "releaseNote": "n", "draftRevision": 0}),
        ),
        ("/api/projects/{id}/rollback", json!({"targetVersion": 1})),
        ("/api/projects/{id}/test", json!({"tests": []})),
        (
            "/api/projects/{id}/current-version",
            json!({"versionNumber": 1}),
        ),
    ]
}

#[actix_web::test]
async fn text_with_nul_is_refused_where_the_document_says_so() {
    let doc = document();
    let h = Harness::default_config();
    let app = h.service().await;
    let schemas = &doc["components"]["schemas"];
    let bodies = valid_bodies();
    let mut refused = 0;
    for (path, method, operation) in operations(&doc) {
        let Some(reference) =
            operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        else {
            continue;
        };
        let (_, valid) = bodies
            .iter()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("no valid body for {method} {path}"));
        let schema = &schemas[reference.trim_start_matches("#/components/schemas/")];
        for (field, property) in schema["properties"].as_object().unwrap() {
            let text = property.to_string();
            let bad = if property["pattern"].is_string() {
                json!("a\u{0}b")
            } else if property["items"]["pattern"].is_string() {
                json!(["a\u{0}b"])
            } else if text.contains("StorableJson") {
                json!({"k": [{"deep": "a\u{0}b"}]})
            } else {
                continue;
            };
            assert!(
                text.contains(r"^[^\\u0000]*$") || text.contains("StorableJson"),
                "{path} {field}: {text}"
            );
            let mut body = valid.clone();
            body[field] = bad;
            let request = TestRequest::default()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&concrete(&path))
                .set_json(body);
            let reply = call(&app, request).await;
            let error = reply.error(400, "INVALID_REQUEST");
            assert!(
                error["details"].as_str().unwrap().contains("U+0000"),
                "{path} {field}: {}",
                reply.text
            );
            refused += 1;
        }
    }
    assert!(refused >= 11, "{refused} text fields checked");

    // The user id of a path is text too.
    let user = &doc["paths"]["/api/users/{userId}/sessions"]["get"]["parameters"][0];
    assert_eq!(user["schema"]["pattern"], r"^[^\u0000]*$");
    get(&app, "/api/users/a%00b/sessions")
        .await
        .error(400, "INVALID_REQUEST");
    let fine = get(&app, "/api/users/a%20b/sessions").await;
    assert_eq!(fine.status, 200, "{}", fine.text);
}

#[actix_web::test]
async fn the_request_examples_of_the_document_are_accepted() {
    let doc = document();
    let h = Harness::default_config();
    let app = h.service().await;
    for (path, schema) in [
        ("/api/scripts", "CreateScriptRequest"),
        ("/api/scripts/import", "ImportScriptRequest"),
    ] {
        let example = doc["components"]["schemas"][schema]["example"].clone();
        assert!(example.is_object(), "{schema} has an example");
        let strict = post(&app, &format!("{path}?mode=strict"), example).await;
        assert_eq!(strict.status, 200, "{path}: {}", strict.text);
    }
}
