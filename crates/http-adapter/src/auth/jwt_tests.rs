#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::json;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";
const RS256_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rs256-private.pem");
const RS256_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rs256-public.pem");
const OTHER_PRIVATE: &[u8] = include_bytes!("../../tests/keys/other-private.pem");
const JWKS: &str = include_str!("../../tests/keys/jwks.json");

fn settings() -> JwtSettings {
    JwtSettings {
        hs256_secret: None,
        rs256_public_key_pem: None,
        jwks_json: None,
        issuer: "heartrule".into(),
        audience: "heartrule-api".into(),
        leeway: Duration::from_secs(30),
        roles_claim: "roles".into(),
    }
}

fn hs256_only() -> JwtAuthenticator {
    JwtAuthenticator::new(&JwtSettings {
        hs256_secret: Some(SECRET.to_vec()),
        ..settings()
    })
    .unwrap()
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

/// Valid claims for the client `alice`, changed by `edit`.
fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
    let mut claims = json!({
        "sub": "alice",
        "iss": "heartrule",
        "aud": "heartrule-api",
        "iat": now(),
        "exp": now() + 600,
        "roles": ["client"],
    })
    .as_object()
    .unwrap()
    .clone();
    edit(&mut claims);
    claims
}

fn sign(header: Header, claims: &Map<String, Value>, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Map<String, Value>) -> String {
    sign(
        Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

fn rs256(kid: Option<&str>, private: &[u8], claims: &Map<String, Value>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    sign(header, claims, &EncodingKey::from_rsa_pem(private).unwrap())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The refusal of `token`, checked never to echo it.
fn refusal(authenticator: &JwtAuthenticator, token: &str) -> String {
    let failure = authenticator
        .authenticate(Some(&bearer(token)))
        .expect_err("the token must be refused")
        .0;
    assert!(!failure.contains(token), "the token is echoed: {failure}");
    failure
}

#[test]
fn a_valid_hs256_token_proves_its_subject_and_roles() {
    let token = hs256(&claims(|c| {
        c.insert("roles".into(), json!(["editor", "client"]));
    }));
    let actor = hs256_only().authenticate(Some(&bearer(&token))).unwrap();
    assert_eq!(actor.subject(), "alice");
    assert_eq!(actor.roles(), &[Role::Client, Role::Editor]);
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let auth = hs256_only();
    let expired = hs256(&claims(|c| {
        c.insert("exp".into(), json!(now() - 120));
    }));
    assert_eq!(refusal(&auth, &expired), "the token has expired");
    let early = hs256(&claims(|c| {
        c.insert("nbf".into(), json!(now() + 300));
    }));
    assert_eq!(refusal(&auth, &early), "the token is not valid yet (nbf)");
    // Within the 30 s allowance both pass: clocks drift.
    let just_expired = hs256(&claims(|c| {
        c.insert("exp".into(), json!(now() - 5));
        c.insert("nbf".into(), json!(now() + 5));
    }));
    assert!(auth.authenticate(Some(&bearer(&just_expired))).is_ok());
}

#[test]
fn wrong_issuer_audience_and_signature_are_named() {
    let auth = hs256_only();
    let wrong_audience = hs256(&claims(|c| {
        c.insert("aud".into(), json!("another-api"));
    }));
    assert_eq!(refusal(&auth, &wrong_audience), "wrong audience (aud)");
    let wrong_issuer = hs256(&claims(|c| {
        c.insert("iss".into(), json!("someone-else"));
    }));
    assert_eq!(refusal(&auth, &wrong_issuer), "wrong issuer (iss)");
    let forged = sign(
        Header::new(Algorithm::HS256),
        &claims(|_| {}),
        &EncodingKey::from_secret(b"not-the-server-secret-but-long-enough"),
    );
    assert_eq!(refusal(&auth, &forged), "bad signature");
    // A valid token whose payload was swapped keeps its old signature.
    let valid = hs256(&claims(|_| {}));
    let admin_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&claims(|c| {
            c.insert("roles".into(), json!(["admin"]));
        }))
        .unwrap(),
    );
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!("{}.{admin_payload}.{}", parts[0], parts[2]);
    assert_eq!(refusal(&auth, &tampered), "bad signature");
}

#[test]
fn alg_none_is_refused_whatever_it_claims() {
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let payload = b64(Value::Object(claims(|c| {
        c.insert("roles".into(), json!(["admin"]));
    })));
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let reason = refusal(&hs256_only(), &token);
            assert!(
                reason.starts_with("unsupported token algorithm"),
                "{reason}"
            );
        }
    }
}

#[test]
fn an_rsa_public_key_used_as_an_hmac_secret_is_refused() {
    // The classic confusion: the attacker signs HS256 with the public key.
    let claims = claims(|c| {
        c.insert("roles".into(), json!(["admin"]));
    });
    let confused = sign(
        Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(RS256_PUBLIC),
    );
    let rsa_only = JwtAuthenticator::new(&JwtSettings {
        rs256_public_key_pem: Some(RS256_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    assert_eq!(
        refusal(&rsa_only, &confused),
        "unsupported token algorithm: this server accepts RS256"
    );
    // With both kinds of key, HS256 is checked against the secret only.
    let both = JwtAuthenticator::new(&JwtSettings {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_key_pem: Some(RS256_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    assert_eq!(refusal(&both, &confused), "bad signature");
    // And an algorithm no key is configured for is refused by name.
    let rs384 = sign(
        Header::new(Algorithm::RS384),
        &claims,
        &EncodingKey::from_rsa_pem(RS256_PRIVATE).unwrap(),
    );
    assert!(refusal(&both, &rs384).starts_with("unsupported token algorithm"));
}

#[test]
fn rs256_tokens_verify_with_the_pem_key() {
    let auth = JwtAuthenticator::new(&JwtSettings {
        rs256_public_key_pem: Some(RS256_PUBLIC.to_vec()),
        ..settings()
    })
    .unwrap();
    let token = rs256(None, RS256_PRIVATE, &claims(|_| {}));
    assert_eq!(
        auth.authenticate(Some(&bearer(&token))).unwrap().subject(),
        "alice"
    );
    let other = rs256(None, OTHER_PRIVATE, &claims(|_| {}));
    assert_eq!(refusal(&auth, &other), "bad signature");
}

#[test]
fn jwks_keys_are_picked_by_kid() {
    let auth = JwtAuthenticator::new(&JwtSettings {
        jwks_json: Some(JWKS.to_owned()),
        ..settings()
    })
    .unwrap();
    for (kid, private) in [("test-key-1", RS256_PRIVATE), ("test-key-2", OTHER_PRIVATE)] {
        let token = rs256(Some(kid), private, &claims(|_| {}));
        assert!(auth.authenticate(Some(&bearer(&token))).is_ok(), "{kid}");
    }
    let crossed = rs256(Some("test-key-1"), OTHER_PRIVATE, &claims(|_| {}));
    assert_eq!(refusal(&auth, &crossed), "bad signature");
    let unknown = rs256(Some("retired"), RS256_PRIVATE, &claims(|_| {}));
    assert_eq!(refusal(&auth, &unknown), "unknown signing key (kid)");
    let anonymous = rs256(None, RS256_PRIVATE, &claims(|_| {}));
    assert_eq!(
        refusal(&auth, &anonymous),
        "the token names no signing key (kid)"
    );
    // The HMAC key of the set is no way in.
    let hmac = sign(
        Header::new(Algorithm::HS256),
        &claims(|_| {}),
        &EncodingKey::from_secret(b"secret"),
    );
    assert!(refusal(&auth, &hmac).starts_with("unsupported token algorithm"));
}

#[test]
fn missing_or_malformed_credentials_are_named() {
    let auth = hs256_only();
    for header in [None, Some(""), Some("Bearer"), Some("Bearer   ")] {
        let failure = auth.authenticate(header).unwrap_err().0;
        assert!(
            failure.starts_with("missing bearer token"),
            "{header:?}: {failure}"
        );
    }
    let failure = auth.authenticate(Some("Basic YWxpY2U6cHc=")).unwrap_err().0;
    assert_eq!(failure, "the Authorization header is not a bearer token");
    let failure = auth.authenticate(Some("Bearer not.a.token")).unwrap_err().0;
    assert!(
        failure.starts_with("unsupported token algorithm"),
        "{failure}"
    );
    // The scheme is case-insensitive.
    let token = hs256(&claims(|_| {}));
    assert!(auth.authenticate(Some(&format!("bearer {token}"))).is_ok());
}

#[test]
fn required_claims_must_be_there() {
    let auth = hs256_only();
    for claim in ["sub", "exp", "iss", "aud"] {
        let token = hs256(&claims(|c| {
            c.remove(claim);
        }));
        assert_eq!(
            refusal(&auth, &token),
            format!("the token has no `{claim}` claim")
        );
    }
    let empty_subject = hs256(&claims(|c| {
        c.insert("sub".into(), json!(""));
    }));
    assert_eq!(
        refusal(&auth, &empty_subject),
        "the token's `sub` claim must be a non-empty string"
    );
}

#[test]
fn roles_of_other_applications_are_ignored_but_one_of_ours_is_needed() {
    let auth = hs256_only();
    let mixed = hs256(&claims(|c| {
        c.insert("roles".into(), json!(["offline_access", "admin"]));
    }));
    assert_eq!(
        auth.authenticate(Some(&bearer(&mixed))).unwrap().roles(),
        &[Role::Admin]
    );
    let foreign = hs256(&claims(|c| {
        c.insert("roles".into(), json!(["offline_access"]));
    }));
    assert!(refusal(&auth, &foreign).starts_with("the token grants none of the roles"));
    let missing = hs256(&claims(|c| {
        c.remove("roles");
    }));
    assert_eq!(refusal(&auth, &missing), "the token has no `roles` claim");
    let scalar = hs256(&claims(|c| {
        c.insert("roles".into(), json!("admin"));
    }));
    assert_eq!(
        refusal(&auth, &scalar),
        "the `roles` claim must be an array of strings"
    );
}

#[test]
fn a_nested_roles_claim_is_read_by_its_dotted_path() {
    let auth = JwtAuthenticator::new(&JwtSettings {
        hs256_secret: Some(SECRET.to_vec()),
        roles_claim: "realm_access.roles".into(),
        ..settings()
    })
    .unwrap();
    let token = hs256(&claims(|c| {
        c.remove("roles");
        c.insert("realm_access".into(), json!({"roles": ["editor"]}));
    }));
    assert_eq!(
        auth.authenticate(Some(&bearer(&token))).unwrap().roles(),
        &[Role::Editor]
    );
}

#[test]
fn issued_development_tokens_are_accepted() {
    for roles_claim in ["roles", "realm_access.roles"] {
        let auth = JwtAuthenticator::new(&JwtSettings {
            hs256_secret: Some(SECRET.to_vec()),
            roles_claim: roles_claim.into(),
            ..settings()
        })
        .unwrap();
        let token = issue_hs256(
            SECRET,
            &TokenRequest {
                subject: "bob",
                roles: &[Role::Client, Role::Editor],
                issuer: "heartrule",
                audience: "heartrule-api",
                roles_claim,
                ttl: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let actor = auth.authenticate(Some(&bearer(&token))).unwrap();
        assert_eq!(actor.subject(), "bob");
        assert_eq!(actor.roles(), &[Role::Client, Role::Editor]);
    }
}

#[test]
fn setup_refuses_missing_or_weak_keys() {
    assert_eq!(
        JwtAuthenticator::new(&settings()).unwrap_err(),
        JwtSetupError::NoKey
    );
    assert_eq!(
        JwtAuthenticator::new(&JwtSettings {
            hs256_secret: Some(b"short".to_vec()),
            ..settings()
        })
        .unwrap_err(),
        JwtSetupError::SecretTooShort(5)
    );
    assert!(matches!(
        JwtAuthenticator::new(&JwtSettings {
            rs256_public_key_pem: Some(b"-----BEGIN PUBLIC KEY-----\nnope\n".to_vec()),
            ..settings()
        }),
        Err(JwtSetupError::BadPublicKey(_))
    ));
    assert!(matches!(
        JwtAuthenticator::new(&JwtSettings {
            jwks_json: Some(r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#.into()),
            ..settings()
        }),
        Err(JwtSetupError::BadJwks(_))
    ));
    assert_eq!(
        JwtAuthenticator::new(&JwtSettings {
            hs256_secret: Some(SECRET.to_vec()),
            audience: " ".into(),
            ..settings()
        })
        .unwrap_err(),
        JwtSetupError::Empty("audience")
    );
    let shown = format!(
        "{:?}",
        JwtSettings {
            hs256_secret: Some(SECRET.to_vec()),
            ..settings()
        }
    );
    assert!(!shown.contains("a-test-secret"), "{shown}");
}
