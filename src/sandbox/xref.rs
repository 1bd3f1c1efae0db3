//! Xref (VENDORS.md §3): an account-level code flow with the client_id in the authorize path, no
//! scope and no PKCE; the code is exchanged with a JSON body only, for an opaque token that never
//! expires and comes with the integrated account's id. API calls use `Authorization: Token`, and
//! the same header on `POST /oauth/deauthorize` revokes the token.

use std::collections::BTreeMap;

use http::{HeaderMap, Response, StatusCode};

use super::authorize::{
    self, Decision, check_redirect, decision, query_params, redirect_back, redirect_denied,
};
use super::codes::{ApprovedCode, CodeExchange};
use super::reply::{self, ResponseBody};
use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{AnswerShape, Grant, OAuthError};
use super::token_request::{BodyFormat, TokenRequest};
use super::{Vendor, XREF_ACCOUNT_ID, api_auth};

/// `GET /xref/oauth/open-api/{client_id}?state=...&redirect_url=...`: approves for the demo
/// account and redirects back with `state` and a code, or with `error=access_denied` under
/// `sandbox_decision=deny`. Real Xref redirects to the URL registered with the client and ignores
/// extra parameters; the sandbox has no registration, so the caller names it (HTTPS, or loopback).
pub(super) fn authorize(
    state: &SandboxState,
    client_id: &str,
    query: Option<&str>,
) -> Response<ResponseBody> {
    answer_authorize(state, client_id, query).unwrap_or_else(authorize::invalid_request)
}

/// The redirect back, or why the request is refused.
fn answer_authorize(
    state: &SandboxState,
    client_id: &str,
    query: Option<&str>,
) -> Result<Response<ResponseBody>, &'static str> {
    let params = query_params(query)?;
    if state.check_client(Vendor::Xref, client_id, None) == ClientCheck::UnknownClient {
        return Err("unknown client_id");
    }
    let redirect_url = redirect_target(&params)?;
    check_redirect(redirect_url, true)?;
    let given_state = params.get("state").map(String::as_str);
    if decision(&params)? == Decision::Deny {
        return Ok(redirect_denied(redirect_url, given_state));
    }
    let code = approve(state, client_id);
    let mut back = Vec::new();
    if let Some(state) = given_state {
        back.push(("state", state));
    }
    back.push(("code", code.as_str()));
    Ok(redirect_back(redirect_url, &back))
}

/// `redirect_url` as Xref documents it, or `redirect_uri` as a standard client sends it. Both
/// may come (a client adding the standard name to a vendor URL that already has Xref's); then
/// they must agree, since one registered URL could not match two.
fn redirect_target(params: &BTreeMap<String, String>) -> Result<&str, &'static str> {
    match (params.get("redirect_url"), params.get("redirect_uri")) {
        (Some(url), Some(uri)) if url != uri => Err("redirect_url and redirect_uri differ"),
        (Some(target), _) | (None, Some(target)) => Ok(target),
        (None, None) => Err("redirect_url missing"),
    }
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

/// `POST /xref/oauth/tokens` with `{"client_id","client_secret","code"}`. Other fields, such as
/// the `grant_type` and `redirect_uri` a standard client adds, are ignored as Xref does: the
/// code is bound to the client alone.
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
    if !state.deauthorize_xref_token(token) {
        return reply::invalid_token(
            api_auth::Scheme::Token.challenge(),
            "token unknown or revoked",
        );
    }
    reply::json(StatusCode::OK, &serde_json::json!({"deauthorized": true}))
}
