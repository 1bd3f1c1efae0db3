//! What the sandbox reports about the traffic it saw: the handle's `stats()` and
//! `GET /_sandbox/stats` serve the same structure. Secrets never enter it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ClientAuth;

/// What the sandbox has seen, also served as JSON by `GET /_sandbox/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// Every request that reached the sandbox, whatever its path (unknown ones included), but
    /// for the `/_sandbox/` control endpoints: to tell "nothing arrived at all".
    #[serde(default)]
    pub requests: u64,
    /// Every request that reached a token endpoint, including unreadable ones.
    pub token_requests: u64,
    /// Every request that reached a vendor API, authorized or not.
    pub api_requests: u64,
    /// Per client_id, for token requests that named one.
    pub clients: BTreeMap<String, ClientStats>,
}

/// Token endpoint activity of one client_id. Never holds a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStats {
    /// Token requests that named this client, failed or not.
    pub token_requests: u64,
    /// Client authentication shape of the last request, if it carried a secret.
    pub last_client_auth: Option<ClientAuth>,
    /// `scope` of the last request.
    pub last_scope: Option<String>,
    /// Body parameters of the last request, `client_secret` left out; `code`, `code_verifier`
    /// and `refresh_token` appear with the value `[redacted]`.
    pub last_params: BTreeMap<String, String>,
    /// True once Cross River locked this client after three wrong secrets.
    pub locked: bool,
    /// Refresh token grants answered with new tokens (Crossbeam, generic).
    pub refresh_grants: u64,
    /// Token families revoked because a retired refresh token came back (Crossbeam, generic).
    pub families_revoked: u64,
    /// Authorization codes this client exchanged for tokens (Crossbeam, generic, Xref).
    #[serde(default)]
    pub code_grants: u64,
    /// Successful `POST /xref/oauth/deauthorize` calls that revoked one of this client's tokens.
    #[serde(default)]
    pub deauthorizations: u64,
}
