//! Bearer JWTs: an [`Authenticator`] that proves an [`Actor`] from a signed
//! token, and the development-token issuer.
//!
//! Accepted: `HS256` with a shared secret, and `RS256` with a public key
//! (a PEM file) or the keys of a JWKS file picked by the token's `kid`.
//! Only the algorithms of the configured keys are accepted, each with its
//! own key, so `alg: none` and algorithm confusion (an RSA public key used
//! as an HMAC secret) are refused. The signature, `exp`, `nbf`, `iss` and
//! `aud` are checked with a small clock-skew allowance; `sub` names the
//! actor and the roles claim (an array of strings) its roles. Role names
//! other than `client`, `editor` and `admin` are ignored, since an identity
//! provider's tokens carry roles of other applications; a token with none of
//! ours is refused.

use super::{AuthFailure, Authenticator};
use base64::Engine;
use heartrule_domain::{Actor, Role};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shortest accepted HS256 secret: as long as the hash (RFC 7518).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// What the authenticator is built from: at least one key, the expected
/// issuer and audience, the clock-skew allowance and where the roles are.
#[derive(Clone, Default)]
pub struct JwtSettings {
    /// The shared HS256 secret.
    pub hs256_secret: Option<Vec<u8>>,
    /// An RS256 public key, PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    pub rs256_public_key_pem: Option<Vec<u8>>,
    /// A JWKS document whose RSA keys verify RS256 tokens by `kid`.
    pub jwks_json: Option<String>,
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud` (one of the token's audiences).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim holding the roles; dots reach into objects
    /// (`realm_access.roles`).
    pub roles_claim: String,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never shows.
        f.debug_struct("JwtSettings")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("rs256_public_key_pem", &self.rs256_public_key_pem.is_some())
            .field("jwks_json", &self.jwks_json.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("roles_claim", &self.roles_claim)
            .finish()
    }
}

/// Why an authenticator could not be built; never shows a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSetupError {
    #[error("no key to verify tokens with: set an HS256 secret, an RS256 public key file or a JWKS file")]
    NoKey,
    #[error("the HS256 secret is {0} bytes; it must be at least {MIN_HS256_SECRET_BYTES}")]
    SecretTooShort(usize),
    #[error("the RS256 public key is not an RSA public key in PEM: {0}")]
    BadPublicKey(String),
    #[error("the JWKS document is invalid: {0}")]
    BadJwks(String),
    #[error("the {0} must not be empty")]
    Empty(&'static str),
    #[error("the token could not be signed: {0}")]
    Signing(String),
}

/// Verifies bearer JWTs; see the module documentation.
pub struct JwtAuthenticator {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    /// RS256 keys of the JWKS file, by `kid`.
    jwks: HashMap<String, DecodingKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    roles_claim: Vec<String>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("jwks_kids", &self.jwks.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Checks and loads the keys.
    pub fn new(settings: &JwtSettings) -> Result<Self, JwtSetupError> {
        let hs256 = match &settings.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(JwtSetupError::SecretTooShort(secret.len()))
            }
            Some(secret) => Some(DecodingKey::from_secret(secret)),
            None => None,
        };
        let rs256 = settings
            .rs256_public_key_pem
            .as_deref()
            .map(DecodingKey::from_rsa_pem)
            .transpose()
            .map_err(|e| JwtSetupError::BadPublicKey(e.to_string()))?;
        let jwks = match &settings.jwks_json {
            Some(json) => jwks_keys(json)?,
            None => HashMap::new(),
        };
        if hs256.is_none() && rs256.is_none() && jwks.is_empty() {
            return Err(JwtSetupError::NoKey);
        }
        let non_empty = |value: &str, what: &'static str| {
            if value.trim().is_empty() {
                Err(JwtSetupError::Empty(what))
            } else {
                Ok(value.to_owned())
            }
        };
        Ok(Self {
            hs256,
            rs256,
            jwks,
            issuer: non_empty(&settings.issuer, "issuer")?,
            audience: non_empty(&settings.audience, "audience")?,
            leeway_secs: settings.leeway.as_secs(),
            roles_claim: non_empty(&settings.roles_claim, "roles claim")?
                .split('.')
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The algorithms a token may use here, for the refusal message.
    fn accepted(&self) -> &'static str {
        match (
            self.hs256.is_some(),
            self.rs256.is_some() || !self.jwks.is_empty(),
        ) {
            (true, true) => "HS256 or RS256",
            (true, false) => "HS256",
            _ => "RS256",
        }
    }

    fn key_for(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<&DecodingKey, AuthFailure> {
        let unsupported = || {
            failure(format!(
                "unsupported token algorithm: this server accepts {}",
                self.accepted()
            ))
        };
        match algorithm {
            Algorithm::HS256 => self.hs256.as_ref().ok_or_else(unsupported),
            Algorithm::RS256 => match kid {
                Some(kid) if !self.jwks.is_empty() => match self.jwks.get(kid) {
                    Some(key) => Ok(key),
                    None => self
                        .rs256
                        .as_ref()
                        .ok_or_else(|| failure("unknown signing key (kid)")),
                },
                _ => self.rs256.as_ref().ok_or_else(|| {
                    if self.jwks.is_empty() {
                        unsupported()
                    } else {
                        failure("the token names no signing key (kid)")
                    }
                }),
            },
            _ => Err(unsupported()),
        }
    }

    fn roles(&self, claims: &Map<String, Value>) -> Result<Vec<Role>, AuthFailure> {
        let claim_name = self.roles_claim.join(".");
        let (first, rest) = self
            .roles_claim
            .split_first()
            .ok_or_else(|| failure("no roles claim is configured"))?;
        let mut value = claims.get(first);
        for part in rest {
            value = value.and_then(|v| v.get(part));
        }
        let names = match value {
            None => return Err(failure(format!("the token has no `{claim_name}` claim"))),
            Some(Value::Array(names)) => names,
            Some(_) => {
                return Err(failure(format!(
                    "the `{claim_name}` claim must be an array of strings"
                )))
            }
        };
        let mut roles = Vec::new();
        for name in names {
            let name = name.as_str().ok_or_else(|| {
                failure(format!(
                    "the `{claim_name}` claim must be an array of strings"
                ))
            })?;
            // Roles of other applications are not ours to refuse.
            if let Ok(role) = name.parse::<Role>() {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(failure(format!(
                "the token grants none of the roles client, editor, admin (claim `{claim_name}`)"
            )));
        }
        Ok(roles)
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        let token = bearer_token(authorization)?;
        let algorithm = header_algorithm(token).ok_or_else(|| {
            failure(format!(
                "unsupported token algorithm: this server accepts {}",
                self.accepted()
            ))
        })?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| rejection(e.kind()))?;
        let key = self.key_for(algorithm, header.kid.as_deref())?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| rejection(e.kind()))?
            .claims;
        let subject = match claims.get("sub") {
            Some(Value::String(subject)) if !subject.is_empty() => subject.clone(),
            _ => {
                return Err(failure(
                    "the token's `sub` claim must be a non-empty string",
                ))
            }
        };
        Ok(Actor::new(subject, self.roles(&claims)?))
    }
}

/// The token of a `Bearer` authorization.
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthFailure> {
    let header = authorization
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| failure("missing bearer token (Authorization: Bearer <token>)"))?;
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(failure("the Authorization header is not a bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(failure(
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    }
    Ok(token)
}

/// The `alg` of a token's header when it is one this crate can verify;
/// `None` for `none`, unknown names and unreadable headers alike.
fn header_algorithm(token: &str) -> Option<Algorithm> {
    let encoded = token.split('.').next()?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()?;
    let header: Value = serde_json::from_slice(&decoded).ok()?;
    header.get("alg")?.as_str()?.parse().ok()
}

/// The refusal of a token the library rejected, naming the failed check.
fn rejection(kind: &ErrorKind) -> AuthFailure {
    failure(match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "unsupported token algorithm".to_owned()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        _ => "malformed token".to_owned(),
    })
}

fn failure(reason: impl Into<String>) -> AuthFailure {
    AuthFailure(reason.into())
}

/// The RS256 keys of a JWKS document, by `kid`. Keys of other types or
/// algorithms, and keys without a `kid`, are skipped; a document with no
/// usable key is an error.
fn jwks_keys(json: &str) -> Result<HashMap<String, DecodingKey>, JwtSetupError> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|e| JwtSetupError::BadJwks(e.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let rs256 = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256));
        let (Some(kid), AlgorithmParameters::RSA(_), true) =
            (&jwk.common.key_id, &jwk.algorithm, rs256)
        else {
            continue;
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| JwtSetupError::BadJwks(format!("key `{kid}`: {e}")))?;
        keys.insert(kid.clone(), key);
    }
    if keys.is_empty() {
        return Err(JwtSetupError::BadJwks(
            "it holds no RSA key with a `kid` usable for RS256".into(),
        ));
    }
    Ok(keys)
}

/// A token to issue: `sub`, the roles, and how long it lasts.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub subject: &'a str,
    pub roles: &'a [Role],
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Where the roles go (dots nest, as for [`JwtSettings::roles_claim`]).
    pub roles_claim: &'a str,
    pub ttl: Duration,
}

/// Signs an HS256 token (`sub`, `iss`, `aud`, `iat`, `nbf`, `exp` and the
/// roles) with `secret`: development tokens, and tests.
pub fn issue_hs256(secret: &[u8], request: &TokenRequest<'_>) -> Result<String, JwtSetupError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(JwtSetupError::SecretTooShort(secret.len()));
    }
    if request.subject.is_empty() {
        return Err(JwtSetupError::Empty("subject"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| JwtSetupError::Signing(e.to_string()))?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), request.subject.into());
    claims.insert("iss".into(), request.issuer.into());
    claims.insert("aud".into(), request.audience.into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + request.ttl.as_secs()).into());
    let roles: Value = request
        .roles
        .iter()
        .map(|r| Value::from(r.as_str()))
        .collect();
    insert_nested(&mut claims, request.roles_claim, roles);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| JwtSetupError::Signing(e.to_string()))
}

/// Puts `value` at the dotted `path` of `claims`, creating objects on the way.
fn insert_nested(claims: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            claims.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = claims
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
