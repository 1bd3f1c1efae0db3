//! The path every token request takes: read the body, count it, maybe answer an injected
//! failure, let the vendor decide (`cross_river.rs`, `crossbeam.rs`, `cultureamp.rs`,
//! `generic.rs`, `xref.rs`), then issue and answer in the vendor's shape.

use std::time::Duration;

use http::header::{CACHE_CONTROL, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::codes::{ApprovedCode, CodeExchange};
use super::reply::{self, ResponseBody};
use super::state::SandboxState;
use super::token_request::TokenRequest;
use super::tokens::{FamilyId, Rotation, TokenGrant};
use super::{
    ClientAuth, ExpiresIn, Failure, TokenFormat, Vendor, cross_river, crossbeam, cultureamp,
    generic, xref,
};

/// Token requests are a few parameters; anything bigger is refused unread.
const MAX_TOKEN_REQUEST_BODY: usize = 64 * 1024;

/// What a vendor grants once it accepted a request.
#[derive(Debug)]
pub(super) struct Grant {
    pub client_id: String,
    /// Echoed in the response when present; the API checks calls against it.
    pub scope: Option<String>,
    /// The token family the access token joins (Crossbeam, generic): revoked together on theft.
    pub family: Option<FamilyId>,
    /// Answered as `refresh_token` (Crossbeam with `offline_access`, generic codes).
    pub refresh_token: Option<String>,
    pub answer: AnswerShape,
}

/// How the token response is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AnswerShape {
    /// RFC 6749 §5.1: `access_token`, `token_type`, `expires_in` (by the knob), `scope`.
    OAuth,
    /// Xref: `{"access_token", "xref_account_id"}` and nothing else; the token never expires.
    Xref { account_id: &'static str },
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
#[derive(Debug)]
pub(super) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    /// RFC 6749: a failed Basic authentication answers 401 with a `WWW-Authenticate: Basic`.
    basic_challenge: bool,
}

// === impl Grant ===

impl Grant {
    /// A client credentials grant: a token for the client itself, in the RFC's answer shape.
    pub(super) fn client_credentials(client_id: &str, scope: Option<String>) -> Self {
        Self {
            client_id: client_id.to_owned(),
            scope,
            family: None,
            refresh_token: None,
            answer: AnswerShape::OAuth,
        }
    }
}

// === impl OAuthError ===

impl OAuthError {
    pub(super) fn invalid_request(description: &'static str) -> Self {
        Self::bad_request("invalid_request", description)
    }

    pub(super) fn invalid_scope(description: &'static str) -> Self {
        Self::bad_request("invalid_scope", description)
    }

    /// Unknown client or wrong secret: 401 when the client used Basic, 400 otherwise.
    pub(super) fn invalid_client(auth: Option<ClientAuth>, description: &'static str) -> Self {
        match auth {
            Some(ClientAuth::Basic) => Self::invalid_basic_client(description),
            _ => Self::bad_request("invalid_client", description),
        }
    }

    /// A rejected client at a vendor that always answers 401 for it (Crossbeam), with no
    /// `WWW-Authenticate` since the secret came in the body.
    pub(super) fn unauthorized_client(description: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description,
            basic_challenge: false,
        }
    }

    /// A code, verifier or refresh token that is not (or no longer) good.
    pub(super) fn invalid_grant(description: &'static str) -> Self {
        Self::bad_request("invalid_grant", description)
    }

    pub(super) fn unsupported_grant_type(description: &'static str) -> Self {
        Self::bad_request("unsupported_grant_type", description)
    }

    pub(super) fn invalid_basic_client(description: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description,
            basic_challenge: true,
        }
    }

    fn bad_request(error: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description,
            basic_challenge: false,
        }
    }

    fn into_response(self) -> Response<ResponseBody> {
        let mut response = reply::error(self.status, self.error, self.description);
        if self.basic_challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sandbox\""),
            );
        }
        response
    }
}

/// Cross River and Culture Amp speak only the client credentials grant.
pub(super) fn require_client_credentials(request: &TokenRequest) -> Result<(), OAuthError> {
    match request.param("grant_type") {
        Some("client_credentials") => Ok(()),
        Some(_) => Err(OAuthError::unsupported_grant_type(
            "only client_credentials",
        )),
        None => Err(OAuthError::invalid_request("grant_type missing")),
    }
}

/// `grant_type=authorization_code` at a vendor that binds codes to a redirect URI: the code,
/// repeated `redirect_uri` and `code_verifier` against what the authorize page approved for
/// `client_id`, already authenticated.
pub(super) fn redeem_code(
    state: &SandboxState,
    vendor: Vendor,
    client_id: &str,
    request: &TokenRequest,
) -> Result<ApprovedCode, OAuthError> {
    let code = request
        .secret_param("code")
        .ok_or(OAuthError::invalid_request("code missing"))?;
    let exchange = CodeExchange {
        vendor,
        client_id,
        redirect_uri: request.param("redirect_uri"),
        code_verifier: request.secret_param("code_verifier"),
    };
    state
        .redeem_code(code, exchange)
        .map_err(|rejection| OAuthError::invalid_grant(rejection.description()))
}

/// `grant_type=refresh_token` with rotation, for `client_id`, already authenticated.
pub(super) fn rotate_refresh_token(
    state: &SandboxState,
    vendor: Vendor,
    client_id: &str,
    request: &TokenRequest,
) -> Result<Rotation, OAuthError> {
    let presented = request
        .secret_param("refresh_token")
        .ok_or(OAuthError::invalid_request("refresh_token missing"))?;
    state
        .rotate_refresh_token(vendor, client_id, presented)
        .map_err(|rejection| OAuthError::invalid_grant(rejection.description()))
}

/// Answers one token request for `vendor`.
pub(super) async fn handle(
    state: &SandboxState,
    vendor: Vendor,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let parsed = match Limited::new(body, MAX_TOKEN_REQUEST_BODY).collect().await {
        Ok(collected) => TokenRequest::parse(&parts.headers, &collected.to_bytes()),
        Err(_) => Err(OAuthError::invalid_request(
            "body unreadable or larger than 64 KiB",
        )),
    };
    state.record_token_request(parsed.as_ref().ok());
    if let Some(failure) = state.take_injected_failure() {
        return failure_response(failure);
    }
    let granted = parsed.and_then(|request| match vendor {
        Vendor::CrossRiver => cross_river::grant(state, &request),
        Vendor::Crossbeam => crossbeam::grant(state, &request),
        Vendor::CultureAmp => cultureamp::grant(state, &request),
        Vendor::Generic => generic::grant(state, &request),
        Vendor::Xref => xref::grant(state, &request),
    });
    match granted {
        Ok(grant) => issue(state, vendor, grant),
        Err(error) => error.into_response(),
    }
}

/// The access token and the answer in the grant's shape; the OAuth shape follows the knobs.
fn issue(state: &SandboxState, vendor: Vendor, grant: Grant) -> Response<ResponseBody> {
    let knobs = state.knobs();
    let (ttl, format) = match grant.answer {
        // Xref tokens are opaque and live until deauthorized, whatever the knobs say.
        AnswerShape::Xref { .. } => (Duration::MAX, TokenFormat::Opaque),
        AnswerShape::OAuth => (
            knobs
                .token_ttl
                .unwrap_or_else(|| vendor.default_token_ttl()),
            knobs.token_format,
        ),
    };
    let token = state.issue_token(
        TokenGrant {
            vendor,
            client_id: &grant.client_id,
            scope: grant.scope.as_deref(),
            family: grant.family,
        },
        ttl,
        format,
    );
    let mut body = serde_json::Map::new();
    body.insert("access_token".into(), token.into());
    match grant.answer {
        AnswerShape::Xref { account_id } => {
            body.insert("xref_account_id".into(), account_id.into());
        }
        AnswerShape::OAuth => {
            body.insert("token_type".into(), "Bearer".into());
            match knobs.expires_in {
                ExpiresIn::Number => {
                    body.insert("expires_in".into(), ttl.as_secs().into());
                }
                ExpiresIn::String => {
                    body.insert("expires_in".into(), ttl.as_secs().to_string().into());
                }
                ExpiresIn::Omit => {}
            }
            if let Some(scope) = grant.scope {
                body.insert("scope".into(), scope.into());
            }
            if let Some(refresh_token) = grant.refresh_token {
                body.insert("refresh_token".into(), refresh_token.into());
            }
        }
    }
    let mut response = reply::json(StatusCode::OK, &serde_json::Value::Object(body));
    // RFC 6749 §5.1: token responses must not be cached.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn failure_response(failure: Failure) -> Response<ResponseBody> {
    match failure {
        Failure::ServerError => reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "injected by the sandbox",
        ),
        Failure::RateLimited { retry_after } => {
            let mut response = reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "injected by the sandbox",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
            response
        }
    }
}
