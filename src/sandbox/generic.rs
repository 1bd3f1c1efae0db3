//! A standard OAuth 2.0 vendor (VENDORS.md §5, and the Auth0 style of §1). Client credentials,
//! and connected accounts: an authorize page that requires PKCE (S256), then the
//! `authorization_code` grant and rotating refresh tokens, a retired one revoking its family as at
//! Crossbeam. Every grant takes any of the three client authentication shapes (Basic, form body,
//! JSON body) and any scope or extra parameter such as `audience`; the stats record the shape and
//! parameters seen, so tests can check what a preset actually sent.

use http::Response;

use super::Vendor;
use super::authorize::{
    self, Decision, code_request, decision, pkce_challenge, query_params, redirect_denied,
    redirect_with_code,
};
use super::codes::ApprovedCode;
use super::reply::ResponseBody;
use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{AnswerShape, Grant, OAuthError, redeem_code, rotate_refresh_token};
use super::token_request::TokenRequest;
use super::tokens::FamilyId;

/// The grants the token endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrantType {
    ClientCredentials,
    AuthorizationCode,
    RefreshToken,
}

/// `GET /generic/authorize`: approves and redirects back with a code, or with
/// `error=access_denied` under `sandbox_decision=deny`. A request without PKCE is refused.
pub(super) fn authorize(state: &SandboxState, query: Option<&str>) -> Response<ResponseBody> {
    answer_authorize(state, query).unwrap_or_else(authorize::invalid_request)
}

/// The redirect back, or why the request is refused.
fn answer_authorize(
    state: &SandboxState,
    query: Option<&str>,
) -> Result<Response<ResponseBody>, &'static str> {
    let params = query_params(query)?;
    let request = code_request(state, Vendor::Generic, &params)?;
    let code_challenge = pkce_challenge(&params)?.ok_or("PKCE required: code_challenge missing")?;
    if decision(&params)? == Decision::Deny {
        return Ok(redirect_denied(request.redirect_uri, request.state));
    }
    let scope = params.get("scope").map(String::as_str);
    let code = approve(
        state,
        request.client_id,
        request.redirect_uri,
        code_challenge,
        scope,
    );
    Ok(redirect_with_code(&request, &code))
}

/// A code approved for `client_id` with `scope`, bound to `redirect_uri` and an S256 challenge.
pub(super) fn approve(
    state: &SandboxState,
    client_id: &str,
    redirect_uri: &str,
    code_challenge: &str,
    scope: Option<&str>,
) -> String {
    state.approve_code(ApprovedCode {
        vendor: Vendor::Generic,
        client_id: client_id.to_owned(),
        redirect_uri: Some(redirect_uri.to_owned()),
        code_challenge: Some(code_challenge.to_owned()),
        scope: normalized_scope(scope),
    })
}

/// A new token family with `scope`; returns its first refresh token.
pub(super) fn connect_offline(
    state: &SandboxState,
    client_id: &str,
    scope: Option<&str>,
) -> String {
    let scope = normalized_scope(scope).unwrap_or_default();
    state
        .open_offline_family(Vendor::Generic, client_id, &scope)
        .1
}

/// `POST /generic/oauth/token`: accepts or refuses one token request.
pub(super) fn grant(state: &SandboxState, request: &TokenRequest) -> Result<Grant, OAuthError> {
    let grant_type = grant_type(request)?;
    let client_id = authenticate(state, request)?;
    match grant_type {
        GrantType::ClientCredentials => Ok(Grant::client_credentials(
            client_id,
            request.scope().map(str::to_owned),
        )),
        GrantType::AuthorizationCode => {
            let approved = redeem_code(state, Vendor::Generic, client_id, request)?;
            let scope = approved.scope.unwrap_or_default();
            let (family, refresh_token) =
                state.open_offline_family(Vendor::Generic, client_id, &scope);
            Ok(connected(client_id, scope, family, refresh_token))
        }
        GrantType::RefreshToken => {
            let rotation = rotate_refresh_token(state, Vendor::Generic, client_id, request)?;
            Ok(connected(
                client_id,
                rotation.scope,
                rotation.family,
                rotation.refresh_token,
            ))
        }
    }
}

fn grant_type(request: &TokenRequest) -> Result<GrantType, OAuthError> {
    match request.param("grant_type") {
        Some("client_credentials") => Ok(GrantType::ClientCredentials),
        Some("authorization_code") => Ok(GrantType::AuthorizationCode),
        Some("refresh_token") => Ok(GrantType::RefreshToken),
        Some(_) => Err(OAuthError::unsupported_grant_type(
            "client_credentials, authorization_code or refresh_token",
        )),
        None => Err(OAuthError::invalid_request("grant_type missing")),
    }
}

/// Any of the three shapes; 401 with a Basic challenge when Basic failed, 400 otherwise.
fn authenticate<'r>(
    state: &SandboxState,
    request: &'r TokenRequest,
) -> Result<&'r str, OAuthError> {
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(OAuthError::invalid_client(
            request.client_auth,
            "client authentication missing",
        ));
    };
    let check = state.check_client(Vendor::Generic, client_id, request.client_secret.as_ref());
    if check != ClientCheck::Valid {
        return Err(OAuthError::invalid_client(
            request.client_auth,
            "invalid client credentials",
        ));
    }
    Ok(client_id)
}

/// Tokens for a connected account: always a refresh token; `scope` answered unless none was asked.
fn connected(client_id: &str, scope: String, family: FamilyId, refresh_token: String) -> Grant {
    Grant {
        client_id: client_id.to_owned(),
        scope: Some(scope).filter(|scope| !scope.is_empty()),
        family: Some(family),
        refresh_token: Some(refresh_token),
        answer: AnswerShape::OAuth,
    }
}

/// Single spaces between scopes; `None` for no scope at all.
fn normalized_scope(scope: Option<&str>) -> Option<String> {
    let scopes: Vec<&str> = scope.unwrap_or_default().split_whitespace().collect();
    (!scopes.is_empty()).then(|| scopes.join(" "))
}
