//! A standard OAuth 2.0 vendor (VENDORS.md §5, and the Auth0 style of §1): client credentials with
//! any of the three client authentication shapes (Basic, form body, JSON body). It accepts any
//! scope and extra parameters such as `audience`; the stats record the shape and parameters seen,
//! so tests can check what a preset actually sent.

use super::Vendor;
use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{Grant, OAuthError, require_client_credentials};
use super::token_request::TokenRequest;

/// Accepts or refuses one token request.
pub(super) fn grant(state: &SandboxState, request: &TokenRequest) -> Result<Grant, OAuthError> {
    require_client_credentials(request)?;
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
    Ok(Grant::client_credentials(
        client_id,
        request.scope().map(str::to_owned),
    ))
}
