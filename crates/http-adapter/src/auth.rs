//! Authentication at the HTTP edge: an [`Authenticator`] turns a request's
//! `Authorization` header into an [`Actor`], the middleware stores it (or the
//! reason it was refused) in the request, and handlers that need an actor take
//! a [`CurrentActor`]. Routes that take none (health, metrics, the document)
//! stay public without a list of exceptions to keep in step.
//!
//! What an actor may do is decided by the domain services, not here.
//! [`jwt::JwtAuthenticator`] is the authenticator of `auth.mode: jwt`.

pub mod jwt;

pub use jwt::{issue_hs256, JwtAuthenticator, JwtSettings, JwtSetupError, TokenRequest};

use crate::error::ApiError;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{body::MessageBody, FromRequest, HttpMessage, HttpRequest};
use heartrule_domain::Actor;
use std::future::{ready, Ready};
use std::sync::Arc;

/// Why credentials were refused; the text is sent to the client as the 401's
/// `details`, so it names the failed check and never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthFailure(pub String);

/// Turns the `Authorization` header of a request (absent or not) into an actor.
pub trait Authenticator: Send + Sync {
    /// The actor the credentials prove, or why they prove none.
    fn authenticate(&self, authorization: Option<&str>) -> Result<Actor, AuthFailure>;
}

/// Authentication off: every request acts as [`Actor::local_operator`],
/// whatever it sends. For local use, tests and trusted networks only.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthenticationOff;

impl Authenticator for AuthenticationOff {
    fn authenticate(&self, _authorization: Option<&str>) -> Result<Actor, AuthFailure> {
        Ok(Actor::local_operator())
    }
}

/// Runs the authenticator on every request and leaves the outcome in the
/// request's extensions for [`CurrentActor`] (and the rate limiter) to read.
pub(crate) async fn authenticate(
    authenticator: Arc<dyn Authenticator>,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    let outcome = authenticator.authenticate(header);
    match outcome {
        Ok(actor) => {
            request.extensions_mut().insert(actor);
        }
        Err(failure) => {
            request.extensions_mut().insert(failure);
        }
    }
    next.call(request).await
}

/// The authenticated actor of a request; a handler taking it answers `401
/// UNAUTHORIZED` when the request proved none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentActor(pub Actor);

impl FromRequest for CurrentActor {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let extensions = request.extensions();
        ready(match extensions.get::<Actor>() {
            Some(actor) => Ok(Self(actor.clone())),
            None => Err(ApiError::unauthorized(
                extensions
                    .get::<AuthFailure>()
                    .map_or_else(|| "no credentials were checked".to_owned(), |f| f.0.clone()),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};

    /// Accepts exactly `Bearer good` as the client `alice`.
    struct OneToken;

    impl Authenticator for OneToken {
        fn authenticate(&self, authorization: Option<&str>) -> Result<Actor, AuthFailure> {
            match authorization {
                Some("Bearer good") => Ok(Actor::client("alice")),
                Some(_) => Err(AuthFailure("the token's signature is invalid".into())),
                None => Err(AuthFailure("no bearer token".into())),
            }
        }
    }

    async fn whoami(actor: CurrentActor) -> HttpResponse {
        HttpResponse::Ok().body(actor.0.subject().to_owned())
    }

    async fn public() -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn call(
        authenticator: Arc<dyn Authenticator>,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, String, Option<String>) {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(move |req, next| {
                    authenticate(Arc::clone(&authenticator), req, next)
                }))
                .route("/whoami", web::get().to(whoami))
                .route("/public", web::get().to(public)),
        )
        .await;
        let mut request = test::TestRequest::get().uri(path);
        if let Some(token) = token {
            request = request.insert_header((AUTHORIZATION, token));
        }
        let response = test::call_service(&app, request.to_request()).await;
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = test::read_body(response).await;
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            challenge,
        )
    }

    #[actix_web::test]
    async fn a_proven_actor_reaches_the_handler() {
        let (status, body, _) = call(Arc::new(OneToken), "/whoami", Some("Bearer good")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "alice");
    }

    #[actix_web::test]
    async fn refused_or_missing_credentials_answer_401_with_the_reason() {
        for (token, reason) in [
            (Some("Bearer forged"), "the token's signature is invalid"),
            (None, "no bearer token"),
        ] {
            let (status, body, challenge) = call(Arc::new(OneToken), "/whoami", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(body.contains("\"UNAUTHORIZED\""), "{body}");
            assert!(body.contains(reason), "{body}");
            assert!(
                !body.contains("forged"),
                "the token is never echoed: {body}"
            );
            assert_eq!(challenge.as_deref(), Some("Bearer"));
        }
    }

    #[actix_web::test]
    async fn routes_without_an_actor_stay_public() {
        let (status, _, _) = call(Arc::new(OneToken), "/public", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[actix_web::test]
    async fn with_authentication_off_everyone_is_the_local_operator() {
        let (status, body, _) = call(Arc::new(AuthenticationOff), "/whoami", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, heartrule_domain::LOCAL_OPERATOR_SUBJECT);
    }
}
