//! Authentication and authorisation end to end: the real server with
//! `auth.mode: jwt` (in-memory store, mock LLM), real tokens, and every
//! route against every role: allowed, refused (`403`) or hidden (`404`).

use crate::process::heartrule;
use crate::support::{repo_root, Env, Response, TestApp};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use heartrule_domain::Role;
use heartrule_testkit::server::RunningServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "e2e-auth-secret-of-at-least-32-bytes";

fn env() -> Env {
    Env::base()
        .set("HEARTRULE__AUTH__MODE", "jwt")
        .set("HEARTRULE__AUTH__HS256_SECRET", SECRET)
}

/// A token for `subject` with `roles`, as `heartrule token` issues it.
fn token(env: &Env, subject: &str, roles: &[Role]) -> String {
    heartrule_server::issue_token(&env.config(), subject, roles, Duration::from_secs(600)).unwrap()
}

/// Who calls, by name in assertion messages.
struct Caller {
    name: &'static str,
    token: Option<String>,
}

struct Callers {
    alice: Caller,
    bob: Caller,
    editor: Caller,
    admin: Caller,
    nobody: Caller,
}

impl Callers {
    fn new(env: &Env) -> Self {
        let caller = |name, subject, roles: &[Role]| Caller {
            name,
            token: Some(token(env, subject, roles)),
        };
        Self {
            alice: caller("alice (client)", "alice", &[Role::Client]),
            bob: caller("bob (client)", "bob", &[Role::Client]),
            editor: caller("ed (editor)", "ed", &[Role::Editor]),
            admin: caller("root (admin)", "root", &[Role::Admin]),
            nobody: Caller {
                name: "no token",
                token: None,
            },
        }
    }
}

async fn call(
    app: &TestApp,
    caller: &Caller,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app.http.request(method, app.at(path));
    if let Some(token) = &caller.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    Response::read(request.send().await.unwrap()).await
}

/// Asserts `expected` (200, 401, 403 or 404 with the codes of this API).
fn expect(response: &Response, expected: u16, what: &str) {
    match expected {
        200 => assert_eq!(response.status.as_u16(), 200, "{what}: {}", response.text),
        401 => {
            response.error(401, "UNAUTHORIZED");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer"),
                "{what}"
            );
        }
        403 => {
            response.error(403, "FORBIDDEN");
        }
        404 => {
            response.error(404, "SESSION_NOT_FOUND");
        }
        other => panic!("no expectation {other}"),
    }
}

async fn hello_script(app: &TestApp, callers: &Callers) -> String {
    let list = call(app, &callers.admin, Method::GET, "/api/scripts", None)
        .await
        .ok();
    list["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|script| script["scriptName"] == "hello")
        .expect("the hello script is preloaded")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A new session of alice's, created by alice.
async fn alices_session(app: &TestApp, callers: &Callers, script: &str) -> String {
    call(
        app,
        &callers.alice,
        Method::POST,
        "/api/sessions",
        Some(json!({"userId": "alice", "scriptId": script})),
    )
    .await
    .ok()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn message_count(app: &TestApp, callers: &Callers, session: &str) -> usize {
    call(
        app,
        &callers.admin,
        Method::GET,
        &format!("/api/sessions/{session}/messages"),
        None,
    )
    .await
    .ok()["data"]
        .as_array()
        .unwrap()
        .len()
}

/// One WebSocket turn on the session: the `turn` frame, or `Err(status)`
/// when the handshake is refused.
async fn socket_turn(
    app: &TestApp,
    caller: &Caller,
    session: &str,
    content: &str,
) -> Result<Value, u16> {
    use awc::ws::{Frame, Message};
    let url = app
        .at(&format!("/api/sessions/{session}/ws"))
        .replace("http://", "ws://");
    let mut request = awc::Client::new().ws(url);
    if let Some(token) = &caller.token {
        request = request.bearer_auth(token);
    }
    let mut socket = match request.connect().await {
        Ok((_, socket)) => socket,
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
            return Err(status.as_u16())
        }
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    };
    socket
        .send(Message::Text(
            json!({"type": "message", "content": content})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket stays open")
            .unwrap();
        match frame {
            Frame::Text(bytes) => {
                let value: Value = serde_json::from_slice(&bytes).unwrap();
                match value["type"].as_str() {
                    Some("chunk") => {}
                    Some("turn") => {
                        socket.send(Message::Close(None)).await.unwrap();
                        return Ok(value);
                    }
                    other => panic!("unexpected frame {other:?}: {value}"),
                }
            }
            Frame::Ping(bytes) => socket.send(Message::Pong(bytes)).await.unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[actix_web::test]
async fn every_session_route_answers_each_role_as_specified() {
    let env = env();
    let app = TestApp::start(&env).await;
    let callers = Callers::new(&env);
    let c = &callers;
    let script = hello_script(&app, c).await;
    let session = alices_session(&app, c, &script).await;

    // Reads: the owner and admins; other users are told it does not exist.
    let readers = [
        (&c.alice, 200),
        (&c.bob, 404),
        (&c.editor, 404),
        (&c.admin, 200),
        (&c.nobody, 401),
    ];
    for path in [
        format!("/api/sessions/{session}"),
        format!("/api/sessions/{session}/messages"),
        format!("/api/sessions/{session}/variables"),
        format!("/api/sessions/{session}/variables?scoped=true"),
    ] {
        for (caller, expected) in &readers {
            let response = call(&app, caller, Method::GET, &path, None).await;
            expect(&response, *expected, &format!("{} GET {path}", caller.name));
        }
    }
    // A hidden session answers exactly as an unknown one.
    let unknown = call(
        &app,
        &c.bob,
        Method::GET,
        "/api/sessions/00000000-0000-4000-8000-000000000000",
        None,
    )
    .await;
    unknown.error(404, "SESSION_NOT_FOUND");

    // Turns by anyone but the owner and admins: hidden, and nothing taken.
    let before = message_count(&app, c, &session).await;
    for (caller, expected) in [(&c.bob, 404), (&c.editor, 404), (&c.nobody, 401)] {
        for (path, body) in [
            (
                format!("/api/sessions/{session}/messages"),
                json!({"content": "小明"}),
            ),
            (
                "/api/chat".to_owned(),
                json!({"sessionId": session, "message": "小明"}),
            ),
            (
                "/api/chat/stream".to_owned(),
                json!({"sessionId": session, "message": "小明"}),
            ),
        ] {
            let response = call(&app, caller, Method::POST, &path, Some(body)).await;
            // The stream route refuses in JSON, before any event.
            expect(&response, expected, &format!("{} POST {path}", caller.name));
        }
        assert_eq!(
            socket_turn(&app, caller, &session, "小明").await.err(),
            Some(expected),
            "{} opens the WebSocket",
            caller.name
        );
    }
    assert_eq!(message_count(&app, c, &session).await, before);
    // No lease was claimed by the refusals: the owner's turn goes at once.
    let turn = call(
        &app,
        &c.alice,
        Method::POST,
        &format!("/api/sessions/{session}/messages"),
        Some(json!({"content": "小明"})),
    )
    .await
    .ok();
    assert!(turn["aiMessage"].is_string(), "{turn}");

    // The owner and admins run turns by every route, each on a fresh session.
    for caller in [&c.alice, &c.admin] {
        let fresh = alices_session(&app, c, &script).await;
        let response = call(
            &app,
            caller,
            Method::POST,
            &format!("/api/sessions/{fresh}/messages"),
            Some(json!({"content": "小明"})),
        )
        .await;
        expect(&response, 200, &format!("{} POST messages", caller.name));

        let fresh = alices_session(&app, c, &script).await;
        let response = call(
            &app,
            caller,
            Method::POST,
            "/api/chat",
            Some(json!({"sessionId": fresh, "message": "小明"})),
        )
        .await;
        expect(&response, 200, &format!("{} POST /api/chat", caller.name));

        let fresh = alices_session(&app, c, &script).await;
        let response = call(
            &app,
            caller,
            Method::POST,
            "/api/chat/stream",
            Some(json!({"sessionId": fresh, "message": "小明"})),
        )
        .await;
        expect(&response, 200, &format!("{} stream", caller.name));
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/event-stream")),
            "{}",
            response.text
        );
        assert!(response.text.contains("event: done"), "{}", response.text);

        let fresh = alices_session(&app, c, &script).await;
        let turn = socket_turn(&app, caller, &fresh, "小明")
            .await
            .unwrap_or_else(|status| panic!("{} WebSocket refused: {status}", caller.name));
        assert!(turn["aiMessage"].is_string(), "{turn}");
    }

    // Session lists: another user's list is empty, whoever asks.
    for (caller, expected) in [
        (&c.alice, Some(true)),
        (&c.bob, Some(false)),
        (&c.editor, Some(false)),
        (&c.admin, Some(true)),
        (&c.nobody, None),
    ] {
        let response = call(&app, caller, Method::GET, "/api/users/alice/sessions", None).await;
        match expected {
            None => expect(&response, 401, caller.name),
            Some(sees) => {
                let list = response.ok();
                let ids: Vec<&str> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["sessionId"].as_str().or(s["id"].as_str()).unwrap())
                    .collect();
                assert_eq!(
                    ids.contains(&session.as_str()),
                    sees,
                    "{}: {list}",
                    caller.name
                );
                if !sees {
                    assert!(ids.is_empty(), "{}: {list}", caller.name);
                }
            }
        }
    }
    let own = call(&app, &c.bob, Method::GET, "/api/users/bob/sessions", None).await;
    assert_eq!(own.ok(), json!([]));

    // Creating a session for alice: alice herself or an admin.
    for (caller, expected) in [
        (&c.alice, 200),
        (&c.bob, 403),
        (&c.editor, 403),
        (&c.admin, 200),
        (&c.nobody, 401),
    ] {
        let response = call(
            &app,
            caller,
            Method::POST,
            "/api/sessions",
            Some(json!({"userId": "alice", "scriptId": script})),
        )
        .await;
        expect(
            &response,
            expected,
            &format!("{} creates for alice", caller.name),
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn scripts_are_read_by_every_role_and_written_by_editors_and_admins() {
    let env = env();
    let app = TestApp::start(&env).await;
    let c = Callers::new(&env);
    let script = hello_script(&app, &c).await;
    let yaml = std::fs::read_to_string(repo_root().join("examples/scripts/hello.yaml")).unwrap();
    for (caller, reads, writes) in [
        (&c.alice, 200, 403),
        (&c.bob, 200, 403),
        (&c.editor, 200, 200),
        (&c.admin, 200, 200),
        (&c.nobody, 401, 401),
    ] {
        for (method, path) in [
            (Method::GET, "/api/scripts".to_owned()),
            (Method::GET, format!("/api/scripts/{script}")),
            (
                Method::POST,
                format!("/api/scripts/{script}/validate?mode=compatible"),
            ),
        ] {
            let response = call(&app, caller, method.clone(), &path, None).await;
            expect(
                &response,
                reads,
                &format!("{} {method} {path}", caller.name),
            );
        }
        let name = format!("auth-e2e-{}", caller.name.split(' ').next().unwrap());
        let created = call(
            &app,
            caller,
            Method::POST,
            "/api/scripts",
            Some(json!({
                "scriptName": name, "scriptType": "session",
                "scriptContent": yaml, "author": "e2e"
            })),
        )
        .await;
        expect(
            &created,
            writes,
            &format!("{} creates a script", caller.name),
        );
        let imported = call(
            &app,
            caller,
            Method::POST,
            "/api/scripts/import",
            Some(json!({"scriptName": format!("{name}-import"), "yamlContent": yaml})),
        )
        .await;
        expect(
            &imported,
            writes,
            &format!("{} imports a script", caller.name),
        );
    }
    app.stop().await;
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
    let mut claims = json!({
        "sub": "alice", "iss": "heartrule", "aud": "heartrule-api",
        "exp": now() + 600, "roles": ["admin"],
    })
    .as_object()
    .unwrap()
    .clone();
    edit(&mut claims);
    claims
}

fn hs256(secret: &[u8], claims: &Map<String, Value>) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[actix_web::test]
async fn bad_tokens_are_401_naming_the_failed_check_never_the_token() {
    let env = env();
    let app = TestApp::start(&env).await;
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(Value::Object(claims(|_| {})))
    );
    let secret = SECRET.as_bytes();
    let cases = [
        (
            hs256(b"a-forged-secret-also-32-bytes-long!", &claims(|_| {})),
            "bad signature",
        ),
        (
            hs256(
                secret,
                &claims(|c| {
                    c.insert("exp".into(), json!(now() - 120));
                }),
            ),
            "the token has expired",
        ),
        (
            hs256(
                secret,
                &claims(|c| {
                    c.insert("aud".into(), json!("another-api"));
                }),
            ),
            "wrong audience (aud)",
        ),
        (
            hs256(
                secret,
                &claims(|c| {
                    c.insert("iss".into(), json!("someone-else"));
                }),
            ),
            "wrong issuer (iss)",
        ),
        (
            hs256(
                secret,
                &claims(|c| {
                    c.insert("nbf".into(), json!(now() + 600));
                }),
            ),
            "the token is not valid yet (nbf)",
        ),
        (alg_none, "unsupported token algorithm"),
    ];
    for (bad, reason) in &cases {
        for (method, path) in [
            (Method::GET, "/api/scripts"),
            (Method::GET, "/api/users/alice/sessions"),
            (Method::POST, "/api/chat/stream"),
        ] {
            let caller = Caller {
                name: "bad",
                token: Some(bad.clone()),
            };
            let body = (method == Method::POST).then(
                || json!({"sessionId": "00000000-0000-4000-8000-000000000000", "message": "hi"}),
            );
            let response = call(&app, &caller, method, path, body).await;
            let body = response.error(401, "UNAUTHORIZED");
            assert_eq!(body["error"]["type"], "security", "{body}");
            let details = body["error"]["details"].as_str().unwrap();
            assert!(details.starts_with(reason), "{path}: {details}");
            assert!(!response.text.contains(bad.as_str()), "the token is echoed");
        }
    }
    let missing = call(
        &app,
        &Caller {
            name: "none",
            token: None,
        },
        Method::GET,
        "/api/scripts",
        None,
    )
    .await;
    let body = missing.error(401, "UNAUTHORIZED");
    assert!(body["error"]["details"]
        .as_str()
        .unwrap()
        .starts_with("missing bearer token"));
    app.stop().await;
}

#[actix_web::test]
async fn public_routes_need_no_token() {
    let app = TestApp::start(&env()).await;
    let nobody = Caller {
        name: "no token",
        token: None,
    };
    for path in ["/", "/health", "/ready", "/openapi.json", "/docs", "/docs/"] {
        let response = call(&app, &nobody, Method::GET, path, None).await;
        assert_eq!(response.status.as_u16(), 200, "{path}: {}", response.text);
    }
    // This test server has no metrics renderer: a 404, not a 401.
    let metrics = call(&app, &nobody, Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status.as_u16(), 404, "{}", metrics.text);
    app.stop().await;
}

#[actix_web::test]
async fn rs256_tokens_verify_with_a_configured_jwks_file() {
    let keys = repo_root().join("crates/http-adapter/tests/keys");
    let env = Env::base()
        .set("HEARTRULE__AUTH__MODE", "jwt")
        .set(
            "HEARTRULE__AUTH__JWKS_FILE",
            &keys.join("jwks.json").display().to_string(),
        )
        .set("HEARTRULE__AUTH__ROLES_CLAIM", "realm_access.roles");
    let app = TestApp::start(&env).await;
    let private = std::fs::read(keys.join("rs256-private.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims(|c| {
            c.remove("roles");
            c.insert("realm_access".into(), json!({"roles": ["editor"]}));
        }),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let editor = Caller {
        name: "rs256 editor",
        token: Some(token),
    };
    let response = call(&app, &editor, Method::GET, "/api/scripts", None).await;
    expect(&response, 200, "an RS256 token of the JWKS");
    // HS256 is not configured here: an HMAC token is refused by algorithm.
    let hmac = Caller {
        name: "hs256",
        token: Some(hs256(SECRET.as_bytes(), &claims(|_| {}))),
    };
    let body = call(&app, &hmac, Method::GET, "/api/scripts", None)
        .await
        .error(401, "UNAUTHORIZED");
    assert!(body["error"]["details"]
        .as_str()
        .unwrap()
        .starts_with("unsupported token algorithm"));
    app.stop().await;
}

#[actix_web::test]
async fn jwt_mode_without_a_key_refuses_to_start() {
    let env = Env::base().set("HEARTRULE__AUTH__MODE", "jwt");
    let Err(error) = RunningServer::try_start(&env.config(), None).await else {
        panic!("a jwt server without a key started");
    };
    let error = format!("{error:#}");
    assert!(error.contains("auth.mode is jwt"), "{error}");
    assert!(error.contains("auth.hs256_secret"), "{error}");
    // A secret too short to be safe is refused as well.
    let env = env.set("HEARTRULE__AUTH__HS256_SECRET", "short");
    let Err(error) = RunningServer::try_start(&env.config(), None).await else {
        panic!("a jwt server with a 5-byte secret started");
    };
    assert!(format!("{error:#}").contains("at least 32"), "{error:#}");
}

#[actix_web::test]
async fn the_token_command_prints_a_token_the_server_accepts() {
    let output = heartrule()
        .args([
            "token",
            "--subject",
            "alice",
            "--role",
            "client",
            "--ttl",
            "5m",
        ])
        .env("HEARTRULE__AUTH__HS256_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let app = TestApp::start(&env()).await;
    let alice = Caller {
        name: "alice via heartrule token",
        token: Some(printed.trim().to_owned()),
    };
    let sessions = call(&app, &alice, Method::GET, "/api/users/alice/sessions", None).await;
    assert_eq!(sessions.ok(), json!([]));
    // Without a secret the command says what to set.
    let output = heartrule()
        .args(["token", "--subject", "alice", "--role", "client"])
        .env_remove("HEARTRULE__AUTH__HS256_SECRET")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.hs256_secret"));
    app.stop().await;
}

#[actix_web::test]
async fn only_admins_reach_the_audit_log_and_the_privacy_operations() {
    let env = env();
    let app = TestApp::start(&env).await;
    let c = Callers::new(&env);
    let script = hello_script(&app, &c).await;
    alices_session(&app, &c, &script).await;
    for caller in [&c.alice, &c.bob, &c.editor, &c.nobody] {
        let expected = if caller.token.is_some() { 403 } else { 401 };
        for (method, path) in [
            (Method::GET, "/api/admin/audit-events"),
            (Method::GET, "/api/admin/users/alice/export"),
            (Method::DELETE, "/api/admin/users/alice"),
        ] {
            let response = call(&app, caller, method.clone(), path, None).await;
            expect(
                &response,
                expected,
                &format!("{} {method} {path}", caller.name),
            );
        }
    }
    // Nothing of alice's went: the refused erasures did nothing.
    let export = call(
        &app,
        &c.admin,
        Method::GET,
        "/api/admin/users/alice/export",
        None,
    )
    .await
    .ok();
    assert_eq!(export["sessions"].as_array().unwrap().len(), 1);
    let erased = call(
        &app,
        &c.admin,
        Method::DELETE,
        "/api/admin/users/alice",
        None,
    )
    .await
    .ok();
    assert_eq!(erased["erased"]["sessions"], 1);
    // The audit log names the admin who did it, with the token's roles.
    let log = call(
        &app,
        &c.admin,
        Method::GET,
        "/api/admin/audit-events?targetType=user&targetId=alice",
        None,
    )
    .await
    .ok();
    let events = log["events"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["user.erase", "user.export"]);
    assert!(events
        .iter()
        .all(|e| e["actorSubject"] == "root" && e["actorRoles"] == json!(["admin"])));
    app.stop().await;
}
