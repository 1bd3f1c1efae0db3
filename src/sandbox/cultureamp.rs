//! Culture Amp's token endpoint (VENDORS.md §4): a form body, the client authenticated by Basic
//! or by the body, and a required scope of the form `target-entity:<uuid>:<perm>[,<perm>...]`
//! (several such scopes space separated). Tokens live 3599 s unless the ttl knob says otherwise.

use super::Vendor;
use super::state::{ClientCheck, SandboxState};
use super::token_endpoint::{Grant, OAuthError, require_client_credentials};
use super::token_request::{BodyFormat, TokenRequest};

/// Accepts or refuses one token request.
pub(super) fn grant(state: &SandboxState, request: &TokenRequest) -> Result<Grant, OAuthError> {
    if request.body_format != BodyFormat::Form {
        return Err(OAuthError::invalid_request(
            "expected application/x-www-form-urlencoded",
        ));
    }
    require_client_credentials(request)?;
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(OAuthError::invalid_client(
            request.client_auth,
            "client authentication missing",
        ));
    };
    let check = state.check_client(
        Vendor::CultureAmp,
        client_id,
        request.client_secret.as_ref(),
    );
    if check != ClientCheck::Valid {
        return Err(OAuthError::invalid_client(
            request.client_auth,
            "invalid client credentials",
        ));
    }
    let Some(scope) = request.scope() else {
        return Err(OAuthError::invalid_scope(
            "scope required: target-entity:<uuid>:<permissions>",
        ));
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.is_empty() || !scopes.iter().all(|scope| is_target_entity_scope(scope)) {
        return Err(OAuthError::invalid_scope(
            "scope must be target-entity:<uuid>:<permissions>",
        ));
    }
    Ok(Grant::client_credentials(client_id, Some(scopes.join(" "))))
}

/// `target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read,performance-evaluations-read`
fn is_target_entity_scope(scope: &str) -> bool {
    let mut parts = scope.splitn(3, ':');
    let (Some("target-entity"), Some(entity), Some(permissions)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_uuid(entity)
        && permissions.split(',').all(|permission| {
            !permission.is_empty()
                && permission
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

/// Hyphenated 8-4-4-4-12 hex, any case.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| {
            group.len() == len && group.bytes().all(|byte| byte.is_ascii_hexdigit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_shape() {
        assert!(is_target_entity_scope(
            "target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"
        ));
        assert!(is_target_entity_scope(
            "target-entity:8ED17DCE-9eca-4383-a9e1-54f82c362b6d:employees-read,performance-evaluations-read"
        ));
        assert!(!is_target_entity_scope(
            "target-entity:not-a-uuid:employees-read"
        ));
        assert!(!is_target_entity_scope(
            "target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:"
        ));
        assert!(!is_target_entity_scope(
            "target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:a,,b"
        ));
        assert!(!is_target_entity_scope("employees-read"));
    }
}
