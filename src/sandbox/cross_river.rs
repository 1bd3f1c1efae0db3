//! Cross River's token endpoint (VENDORS.md §2): a form body with the secret in the body only
//! (client_secret_post), `payments.*` scopes, and a lock-out: after three wrong secrets the
//! client stays locked, and even the right secret is refused. A proxy that retries a rejected
//! secret takes its customer down here, which is what the tests of the proxy must show it avoids.
//! On the API, a call under `payments/` outside the token's scope answers 403.

use http::Method;

use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{Grant, OAuthError, require_client_credentials};
use super::token_request::{BodyFormat, TokenRequest};
use super::{ClientAuth, Vendor};

/// Every scope Cross River grants; an omitted scope means all of them.
const ALLOWED_SCOPES: [&str; 2] = ["payments.read", "payments.write"];

/// API calls under this prefix need `payments.read` to read and `payments.write` to change.
const PAYMENTS_PREFIX: &str = "/cross-river/api/payments/";

/// The scope an API call needs, if any.
pub(super) fn required_scope(method: &Method, path: &str) -> Option<&'static str> {
    let payments = path.starts_with(PAYMENTS_PREFIX) || path == "/cross-river/api/payments";
    match *method {
        _ if !payments => None,
        Method::GET | Method::HEAD | Method::OPTIONS => Some("payments.read"),
        _ => Some("payments.write"),
    }
}

/// Accepts or refuses one token request.
pub(super) fn grant(state: &SandboxState, request: &TokenRequest) -> Result<Grant, OAuthError> {
    if request.body_format != BodyFormat::Form {
        return Err(OAuthError::invalid_request(
            "expected application/x-www-form-urlencoded",
        ));
    }
    require_client_credentials(request)?;
    // Cross River reads the secret from the body only: a Basic header counts as no secret, and
    // is answered 400 like any other credential error here.
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(OAuthError::invalid_client(None, "client_id missing"));
    };
    if state.is_locked(client_id) {
        return Err(OAuthError::invalid_client(None, "account locked"));
    }
    let body_secret = match request.client_auth {
        Some(ClientAuth::Post) => request.client_secret.as_ref(),
        _ => None,
    };
    match state.check_client(Vendor::CrossRiver, client_id, body_secret) {
        ClientCheck::Valid => {}
        ClientCheck::WrongSecret => {
            state.add_strike(client_id);
            return Err(OAuthError::invalid_client(
                None,
                "invalid client credentials",
            ));
        }
        ClientCheck::MissingSecret => {
            return Err(OAuthError::invalid_client(
                None,
                "client_secret missing from body",
            ));
        }
        ClientCheck::UnknownClient => {
            return Err(OAuthError::invalid_client(
                None,
                "invalid client credentials",
            ));
        }
    }
    let scope = match request.scope() {
        None => ALLOWED_SCOPES.join(" "),
        Some(requested) => {
            let scopes: Vec<&str> = requested.split_whitespace().collect();
            if scopes.is_empty() || scopes.iter().any(|scope| !ALLOWED_SCOPES.contains(scope)) {
                return Err(OAuthError::invalid_scope(
                    "allowed scopes: payments.read payments.write",
                ));
            }
            scopes.join(" ")
        }
    };
    Ok(Grant::client_credentials(client_id, Some(scope)))
}
