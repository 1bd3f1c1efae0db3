//! Crossbeam (VENDORS.md §1): an Auth0-style authorization code flow for one demo user, with an
//! `audience` parameter, `openid` required, PKCE (S256) when the client asks for it, and refresh
//! tokens only with `offline_access`. Refresh tokens rotate: each use retires the one presented,
//! and a retired one coming back revokes its whole family. API calls need the
//! `Xbeam-Organization` header naming one of the user's organizations, except `users/me`.

use http::{HeaderMap, Method, StatusCode};

use super::authorize::{
    self, Decision, code_request, decision, pkce_challenge, query_params, redirect_denied,
    redirect_with_code,
};
use super::codes::ApprovedCode;
use super::reply::{self, ResponseBody};
use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{AnswerShape, Grant, OAuthError, redeem_code, rotate_refresh_token};
use super::token_request::TokenRequest;
use super::tokens::FamilyId;
use super::{CROSSBEAM_ORGS, CROSSBEAM_USER_EMAIL, ClientAuth, Vendor};

/// The `audience` every authorize request names (Auth0's API identifier).
const AUDIENCE: &str = "https://api.getcrossbeam.com";

/// Every scope Crossbeam grants; `openid` is required, `offline_access` brings a refresh token.
const ALLOWED_SCOPES: [&str; 6] = [
    "openid",
    "offline_access",
    "read:partnerships",
    "read:reports",
    "read:populations",
    "write:activity-timeline",
];

/// What the library helpers connect with: everything, refresh tokens included.
const FULL_SCOPE: &str =
    "openid offline_access read:partnerships read:reports read:populations write:activity-timeline";

/// Names the organization an API call is about.
const ORGANIZATION_HEADER: &str = "xbeam-organization";

/// Lists the user's organizations; the one API path that needs no organization header.
pub(super) const USERS_ME_PATH: &str = "/crossbeam/api/v0.1/users/me";

/// `GET /crossbeam/authorize`: approves as the demo user and redirects back with a code, or with
/// `error=access_denied` under `sandbox_decision=deny`.
pub(super) fn authorize(state: &SandboxState, query: Option<&str>) -> http::Response<ResponseBody> {
    answer_authorize(state, query).unwrap_or_else(authorize::invalid_request)
}

/// The redirect back, or why the request is refused.
fn answer_authorize(
    state: &SandboxState,
    query: Option<&str>,
) -> Result<http::Response<ResponseBody>, &'static str> {
    let params = query_params(query)?;
    let request = code_request(state, Vendor::Crossbeam, &params)?;
    if params.get("audience").map(String::as_str) != Some(AUDIENCE) {
        return Err("audience must be https://api.getcrossbeam.com");
    }
    let scope = checked_scope(params.get("scope").map(String::as_str))?;
    let code_challenge = pkce_challenge(&params)?;
    if decision(&params)? == Decision::Deny {
        return Ok(redirect_denied(request.redirect_uri, request.state));
    }
    let code = state.approve_code(ApprovedCode {
        vendor: Vendor::Crossbeam,
        client_id: request.client_id.to_owned(),
        redirect_uri: Some(request.redirect_uri.to_owned()),
        code_challenge: code_challenge.map(str::to_owned),
        scope: Some(scope),
    });
    Ok(redirect_with_code(&request, &code))
}

/// The requested scopes, normalized to single spaces: `openid` among them, none unknown.
fn checked_scope(scope: Option<&str>) -> Result<String, &'static str> {
    let scopes: Vec<&str> = scope.unwrap_or_default().split_whitespace().collect();
    if !scopes.contains(&"openid") {
        return Err("scope must contain openid");
    }
    if scopes.iter().any(|scope| !ALLOWED_SCOPES.contains(scope)) {
        return Err("unknown scope");
    }
    Ok(scopes.join(" "))
}

/// A code approved for `client_id` with the full scope, as if the user had clicked through.
pub(super) fn approve(
    state: &SandboxState,
    client_id: &str,
    redirect_uri: &str,
    code_challenge: Option<&str>,
) -> String {
    state.approve_code(ApprovedCode {
        vendor: Vendor::Crossbeam,
        client_id: client_id.to_owned(),
        redirect_uri: Some(redirect_uri.to_owned()),
        code_challenge: code_challenge.map(str::to_owned),
        scope: Some(FULL_SCOPE.to_owned()),
    })
}

/// A new token family with the full scope; returns its first refresh token.
pub(super) fn connect_offline(state: &SandboxState, client_id: &str) -> String {
    state
        .open_offline_family(Vendor::Crossbeam, client_id, FULL_SCOPE)
        .1
}

/// `POST /crossbeam/oauth/token`: the `authorization_code` and `refresh_token` grants.
pub(super) fn grant(state: &SandboxState, request: &TokenRequest) -> Result<Grant, OAuthError> {
    let client_id = authenticate(state, request)?;
    let (scope, family, refresh_token) = match request.param("grant_type") {
        Some("authorization_code") => {
            let approved = redeem_code(state, Vendor::Crossbeam, client_id, request)?;
            connect(state, client_id, approved.scope.unwrap_or_default())
        }
        Some("refresh_token") => {
            let rotation = rotate_refresh_token(state, Vendor::Crossbeam, client_id, request)?;
            (
                rotation.scope,
                rotation.family,
                Some(rotation.refresh_token),
            )
        }
        Some(_) => {
            return Err(OAuthError::unsupported_grant_type(
                "authorization_code or refresh_token",
            ));
        }
        None => return Err(OAuthError::invalid_request("grant_type missing")),
    };
    Ok(Grant {
        client_id: client_id.to_owned(),
        scope: Some(scope),
        family: Some(family),
        refresh_token,
        answer: AnswerShape::OAuth,
    })
}

/// The family an approved code opens; a refresh token only with `offline_access`.
fn connect(
    state: &SandboxState,
    client_id: &str,
    scope: String,
) -> (String, FamilyId, Option<String>) {
    if scope
        .split_whitespace()
        .any(|scope| scope == "offline_access")
    {
        let (family, refresh_token) =
            state.open_offline_family(Vendor::Crossbeam, client_id, &scope);
        (scope, family, Some(refresh_token))
    } else {
        let family = state.open_family(Vendor::Crossbeam, client_id, &scope);
        (scope, family, None)
    }
}

/// client_id and client_secret in the body (form or JSON, as Auth0 takes); 401 otherwise.
fn authenticate<'r>(
    state: &SandboxState,
    request: &'r TokenRequest,
) -> Result<&'r str, OAuthError> {
    if request.client_auth == Some(ClientAuth::Basic) {
        return Err(OAuthError::unauthorized_client(
            "client_secret must be in the body",
        ));
    }
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(OAuthError::unauthorized_client("client_id missing"));
    };
    match state.check_client(Vendor::Crossbeam, client_id, request.client_secret.as_ref()) {
        ClientCheck::Valid => Ok(client_id),
        ClientCheck::MissingSecret => Err(OAuthError::unauthorized_client("client_secret missing")),
        ClientCheck::WrongSecret | ClientCheck::UnknownClient => Err(
            OAuthError::unauthorized_client("invalid client credentials"),
        ),
    }
}

/// Whether an API call must name an organization: all but `GET users/me`.
pub(super) fn needs_organization(method: &Method, path: &str) -> bool {
    !(method == Method::GET && path == USERS_ME_PATH)
}

/// Exactly one `Xbeam-Organization` header naming one of the demo user's organizations.
pub(super) fn names_user_organization(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(ORGANIZATION_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    CROSSBEAM_ORGS
        .iter()
        .any(|(_, uuid)| value.as_bytes().eq_ignore_ascii_case(uuid.as_bytes()))
}

/// `GET /v0.1/users/me`: the demo user and its organizations.
pub(super) fn users_me() -> http::Response<ResponseBody> {
    let organizations: Vec<serde_json::Value> = CROSSBEAM_ORGS
        .iter()
        .map(|(name, uuid)| serde_json::json!({"name": name, "uuid": uuid}))
        .collect();
    reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "user": {"email": CROSSBEAM_USER_EMAIL},
            "organizations": organizations,
        }),
    )
}
