//! Error responses many operations share, declared once. A handler's
//! annotation lists them beside its own responses, e.g.
//! `responses((status = 200, …), SessionNotFound, JsonBody, Protected)`.
//! Every body is the API's one error shape, [`ErrorBody`](crate::ErrorBody).

use std::collections::BTreeMap;
use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::RefOr;
use utoipa::IntoResponses;

/// An error response with the common body.
fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

/// `Retry-After` in whole seconds.
fn retry_after(description: &str) -> Header {
    let mut header = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0)),
    );
    header.description = Some(description.to_owned());
    header
}

fn responses<const N: usize>(list: [(u16, Response); N]) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, response)| (status.to_string(), RefOr::T(response)))
        .collect()
}

/// What every `/api` operation can answer whatever it does: a missing or
/// invalid bearer token, the rate limit, an unavailable dependency.
pub struct Protected;

impl IntoResponses for Protected {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut rate_limited = error(
            "`RATE_LIMITED`: too many requests from this subject or client; \
             `Retry-After` says when to try again. Or, on operations that run a turn, \
             `QUOTA_EXCEEDED`: a token budget is spent and the turn did not run; `details` \
             names the limit (`session`, `user_daily`, `global_hourly`), the tokens used, \
             the limit and `resetAt`; `Retry-After` counts the seconds to the reset (absent \
             for the session limit, which never resets: start a new session)",
        );
        rate_limited.headers.insert(
            "Retry-After".into(),
            retry_after("Seconds to wait before the next request (or until the quota resets)"),
        );
        responses([
            (
                401,
                error(
                    "`UNAUTHORIZED`: no bearer token, or one that is expired, badly signed \
                     or meant for another issuer or audience",
                ),
            ),
            (429, rate_limited),
            (
                503,
                error(
                    "`DATABASE_ERROR` (the store is unavailable or timed out) or \
                     `LLM_SERVICE_ERROR` (the model is unavailable); nothing was applied, retry later",
                ),
            ),
        ])
    }
}

/// What an operation that reads a JSON body can answer about the body itself.
pub struct JsonBody;

impl IntoResponses for JsonBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                413,
                error("`PAYLOAD_TOO_LARGE`: the body exceeds the server's limit"),
            ),
            (
                415,
                error("`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as `application/json`"),
            ),
        ])
    }
}

/// Operations on a session by id. Another user's session is reported as
/// missing, so its existence does not leak.
pub struct SessionNotFound;

impl IntoResponses for SessionNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            404,
            error("`SESSION_NOT_FOUND`: no such session, or it belongs to another user"),
        )])
    }
}

/// Operations that change the script catalog.
pub struct ScriptManager;

impl IntoResponses for ScriptManager {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            403,
            error("`FORBIDDEN`: managing scripts needs the `editor` or `admin` role"),
        )])
    }
}

/// The administration operations (audit log, export and erasure of a user).
pub struct AdminOnly;

impl IntoResponses for AdminOnly {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            403,
            error("`FORBIDDEN`: the audit log and the privacy operations need the `admin` role"),
        )])
    }
}

/// Operations on the sessions of a user named in the request.
pub struct UserAccess;

impl IntoResponses for UserAccess {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            403,
            error("`FORBIDDEN`: a client may act only for itself (the token's subject); admins for anyone"),
        )])
    }
}

/// Operations that run a turn.
pub struct TurnConflict;

impl IntoResponses for TurnConflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut conflict = error(
            "`TURN_IN_PROGRESS`: another message of this session is being processed (nothing \
             was taken; `Retry-After` says when to retry; a retry with the same \
             `Idempotency-Key` gets the first message's result once it is committed); or \
             `CONFLICT`: the key was used with another body, or the turn outlived its lease \
             and was superseded",
        );
        conflict.headers.insert(
            "Retry-After".into(),
            retry_after("With `TURN_IN_PROGRESS`: seconds to wait before retrying"),
        );
        responses([(409, conflict)])
    }
}
