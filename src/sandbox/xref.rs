//! Xref (VENDORS.md §3): an account-level code flow with the client_id in the authorize path, no
//! scope and no PKCE; the code is exchanged with a JSON body only, for an opaque token that never
//! expires and comes with the integrated account's id. API calls use `Authorization: Token`, and
//! the same header on `POST /oauth/deauthorize` revokes the token.

use http::{HeaderMap, Response, StatusCode};

use super::authorize::{self, check_redirect, query_params, redirect_back};
use super::codes::{ApprovedCode, CodeExchange};
use super::reply::{self, ResponseBody};
use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{AnswerShape, Grant, OAuthError};
use super::token_request::{BodyFormat, TokenRequest};
use super::{Vendor, XREF_ACCOUNT_ID, api_auth};

/// `GET /xref/oauth/open-api/{client_id}?state=...&redirect_url=...`: approves for the demo
/// account and redirects back with `state` and a code. Real Xref redirects to the URL registered
/// with the client; the sandbox has no registration, so the caller names it (HTTPS, or loopback).
pub(super) fn authorize(
    state: &SandboxState,
    client_id: &str,
    query: Option<&str>,
) -> Response<ResponseBody> {
    let params = match query_params(query) {
        Ok(params) => params,
        Err(description) => return authorize::invalid_request(description),
    };
    if state.check_client(Vendor::Xref, client_id, None) == ClientCheck::UnknownClient {
        return authorize::invalid_request("unknown client_id");
    }
    let Some(redirect_url) = params.get("redirect_url") else {
        return authorize::invalid_request("redirect_url missing");
    };
    if let Err(description) = check_redirect(redirect_url, true) {
        return authorize::invalid_request(description);
    }
    let code = approve(state, client_id);
    let mut back = Vec::new();
    if let Some(state) = params.get("state") {
        back.push(("state", state.as_str()));
    }
    back.push(("code", code.as_str()));
    redirect_back(redirect_url, &back)
}

/// A code approved for `client_id`, as if an account user had clicked through.
pub(super) fn approve(state: &SandboxState, client_id: &str) -> String {
    state.approve_code(ApprovedCode {
        vendor: Vendor::Xref,
        client_id: client_id.to_owned(),
        redirect_uri: None,
        code_challenge: None,
        scope: None,
    })
}

/// `POST /xref/oauth/tokens` with `{"client_id","client_secret","code"}`.
pub(super) fn grant(state: &SandboxState, request: &TokenRequest) -> Result<Grant, OAuthError> {
    if request.body_format != BodyFormat::Json {
        return Err(OAuthError::invalid_request("expected application/json"));
    }
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(OAuthError::invalid_client(
            request.client_auth,
            "client_id missing",
        ));
    };
    let check = state.check_client(Vendor::Xref, client_id, request.client_secret.as_ref());
    if check != ClientCheck::Valid {
        return Err(OAuthError::invalid_client(
            request.client_auth,
            "invalid client credentials",
        ));
    }
    let code = request
        .secret_param("code")
        .ok_or(OAuthError::invalid_request("code missing"))?;
    let exchange = CodeExchange {
        vendor: Vendor::Xref,
        client_id,
        redirect_uri: None,
        code_verifier: None,
    };
    state
        .redeem_code(code, exchange)
        .map_err(|rejection| OAuthError::invalid_grant(rejection.description()))?;
    Ok(Grant {
        client_id: client_id.to_owned(),
        scope: None,
        family: None,
        refresh_token: None,
        answer: AnswerShape::Xref {
            account_id: XREF_ACCOUNT_ID,
        },
    })
}

/// `POST /xref/oauth/deauthorize` with `Authorization: Token <access_token>`: revokes it.
pub(super) fn deauthorize(state: &SandboxState, headers: &HeaderMap) -> Response<ResponseBody> {
    let token = match api_auth::presented_token(headers, api_auth::Scheme::Token) {
        Ok(token) => token,
        Err(description) => {
            return reply::invalid_token(api_auth::Scheme::Token.challenge(), description);
        }
    };
    if !state.revoke_token(Vendor::Xref, token) {
        return reply::invalid_token(
            api_auth::Scheme::Token.challenge(),
            "token unknown or revoked",
        );
    }
    reply::json(StatusCode::OK, &serde_json::json!({"deauthorized": true}))
}
