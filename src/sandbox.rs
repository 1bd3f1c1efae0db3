//! The sandbox: the vendors of `VENDORS.md` simulated on loopback, so that tests, the demo and the
//! benches exercise the same quirks offline. It sits beside the request path, never on it: the
//! proxy talks to it exactly as it would talk to the real vendors. `authrelay sandbox` serves it
//! alone with the demo credentials below; `authrelay demo` puts the proxy in front of it.
//!
//! One HTTP server (HTTP/1.1 and h2c on one port); the first path segment names the vendor:
//!
//! ```text
//! POST /cross-river/connect/token        client_secret_post only; three wrong secrets lock the client
//! GET  /cross-river/api/SignupCard/TestOauth
//! *    /cross-river/api/payments/...     echo; 403 unless the scope holds payments.read/.write
//! *    /cross-river/api/...              echo
//! GET  /crossbeam/authorize              approves the demo user: 302 back with a code; PKCE S256
//! POST /crossbeam/oauth/token            authorization_code; refresh_token rotates, reuse revokes
//! GET  /crossbeam/api/v0.1/users/me      the demo user's organizations
//! *    /crossbeam/api/...                echo; needs Xbeam-Organization, else 403
//! POST /cultureamp/v1/oauth2/token       Basic or body auth; scope `target-entity:<uuid>:<perms>`
//! *    /cultureamp/v1/...                echo
//! GET  /generic/authorize                approves: 302 back with a code; PKCE S256 required
//! POST /generic/oauth/token              client_credentials, authorization_code, refresh_token
//!                                        (rotates, reuse revokes); Basic, form or JSON body auth;
//!                                        records the shape it saw
//! *    /generic/api/...                  echo
//! GET  /xref/oauth/open-api/{client_id}  approves: 302 to redirect_url (or redirect_uri) with
//!                                        state and code
//! POST /xref/oauth/tokens                JSON body only; a token that never expires
//! POST /xref/oauth/deauthorize           `Authorization: Token`; revokes that token
//! *    /xref/api/...                     echo; `Authorization: Token` only
//! *    /partner/api/...                  echo, static personal access token only
//! GET  /_sandbox/stats   POST /_sandbox/knobs   POST /_sandbox/revoke
//! ```
//!
//! The three authorize pages take one parameter no real vendor has, standing in for the person's
//! click on the consent page:
//!
//! ```text
//! sandbox_decision=approve   (the default) 302 back with code and state
//! sandbox_decision=deny      302 back with error=access_denied, error_description and state,
//!                            as when the person clicks "Deny"; no code is issued
//! ```
//!
//! Request checks come first either way: a refused request is a 400 JSON answer, never a redirect.
//!
//! Under every API prefix, `.../_bytes?n=N`, `.../_status/NNN` and `.../_redirect` answer a
//! streamed body of N bytes, that status, or a 302 (`?to=URL&status=307` pick the target and the
//! status; see `echo.rs`). The knobs shape the OAuth
//! token answers; Xref's tokens stay opaque and never expire whatever they say.

mod admin;
mod api_auth;
mod authorize;
mod codes;
mod cross_river;
mod crossbeam;
mod cultureamp;
mod echo;
mod generic;
mod reply;
mod routes;
mod server;
mod state;
mod stats;
mod token_endpoint;
mod token_request;
mod tokens;
mod xref;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::secret::Secret;
use state::SandboxState;
pub use stats::{ClientStats, SandboxStats};

/// Demo client id that Cross River accepts out of the box.
pub const CROSS_RIVER_CLIENT_ID: &str = "cr-demo-client";
/// Secret of [`CROSS_RIVER_CLIENT_ID`].
pub const CROSS_RIVER_CLIENT_SECRET: &str = "cr-demo-secret";
/// Demo client id that Culture Amp accepts out of the box.
pub const CULTURE_AMP_CLIENT_ID: &str = "ca-demo-client";
/// Secret of [`CULTURE_AMP_CLIENT_ID`].
pub const CULTURE_AMP_CLIENT_SECRET: &str = "ca-demo-secret";
/// Demo client id that the generic OAuth vendor accepts out of the box.
pub const GENERIC_CLIENT_ID: &str = "gen-demo-client";
/// Secret of [`GENERIC_CLIENT_ID`].
pub const GENERIC_CLIENT_SECRET: &str = "gen-demo-secret";
/// Demo client id that Crossbeam accepts out of the box.
pub const CROSSBEAM_CLIENT_ID: &str = "cb-demo-client";
/// Secret of [`CROSSBEAM_CLIENT_ID`].
pub const CROSSBEAM_CLIENT_SECRET: &str = "cb-demo-secret";
/// The one Crossbeam user every authorization approves as.
pub const CROSSBEAM_USER_EMAIL: &str = "demo.user@example.com";
/// The demo user's organizations as `(name, uuid)`; the uuid goes in `Xbeam-Organization`.
pub const CROSSBEAM_ORGS: &[(&str, &str)] = &[
    ("Demo Partner Org", "02fde942-c7cd-4f12-9d4e-07ee8a57c8c6"),
    ("Demo Second Org", "7c1e4b2a-93d5-4f6e-8a0b-5d2c9e3f1a47"),
];
/// Demo client id that Xref accepts out of the box.
pub const XREF_CLIENT_ID: &str = "xref-demo-client";
/// Secret of [`XREF_CLIENT_ID`].
pub const XREF_CLIENT_SECRET: &str = "xref-demo-secret";
/// The integrated account every Xref authorization connects.
pub const XREF_ACCOUNT_ID: &str = "5f0c2a9e7b3d41c8a6e2d9b04f1c7a35";
/// Personal access token that the partner API accepts out of the box.
pub const PARTNER_PAT: &str = "pat-demo-token";

/// A simulated vendor that issues tokens (the partner API only knows static PATs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Cross River: `/cross-river`.
    CrossRiver,
    /// Crossbeam: `/crossbeam`.
    Crossbeam,
    /// Culture Amp: `/cultureamp`.
    CultureAmp,
    /// A standard OAuth 2.0 vendor: `/generic`.
    Generic,
    /// Xref: `/xref`.
    Xref,
}

/// How token responses carry `expires_in`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiresIn {
    /// `"expires_in": 3600`, as the RFC says.
    #[default]
    Number,
    /// `"expires_in": "3600"`, as some vendors do.
    String,
    /// No `expires_in` at all: the client must use the JWT `exp` or its default lifetime.
    Omit,
}

/// What the issued access tokens look like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// A signed JWT whose payload holds `sub`, `exp`, `iat`, `jti`.
    #[default]
    Jwt,
    /// A random string with no readable expiry (the sandbox still expires it after the ttl).
    Opaque,
}

/// An injected token endpoint failure (see [`SandboxHandle::fail_next_token_requests`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `500 {"error":"server_error"}`.
    ServerError,
    /// `429` with `Retry-After: <whole seconds>`.
    RateLimited {
        /// Sent as `Retry-After` in whole seconds.
        retry_after: Duration,
    },
}

/// The client authentication shape a token request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `Authorization: Basic` (client_secret_basic).
    Basic,
    /// `client_secret` in a form body (client_secret_post).
    Post,
    /// `client_secret` in a JSON body.
    Json,
}

/// Builder of a sandbox: which clients exist and the starting token lifetime.
#[derive(Debug)]
pub struct Sandbox {
    clients: Vec<(Vendor, String, Secret)>,
    partner_tokens: Vec<Secret>,
    token_ttl: Option<Duration>,
}

/// A running sandbox. Dropping it stops the server; [`SandboxHandle::shutdown`] waits for that.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    state: Arc<SandboxState>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

// === impl Vendor ===

impl Vendor {
    /// The first path segment the vendor lives under, also its name in echo answers.
    pub fn path_name(self) -> &'static str {
        match self {
            Vendor::CrossRiver => "cross-river",
            Vendor::Crossbeam => "crossbeam",
            Vendor::CultureAmp => "cultureamp",
            Vendor::Generic => "generic",
            Vendor::Xref => "xref",
        }
    }

    /// Token lifetime when no ttl knob is set: Crossbeam documents 24 hours, Culture Amp 3599 s,
    /// the others an hour (Xref's tokens never expire and ignore this).
    fn default_token_ttl(self) -> Duration {
        match self {
            Vendor::Crossbeam => Duration::from_secs(24 * 3600),
            Vendor::CultureAmp => Duration::from_secs(3599),
            Vendor::CrossRiver | Vendor::Generic | Vendor::Xref => Duration::from_secs(3600),
        }
    }
}

// === impl Sandbox ===

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A sandbox with the demo credentials (the `pub const`s above) and vendor default lifetimes.
    pub fn new() -> Self {
        Self {
            clients: vec![
                (
                    Vendor::CrossRiver,
                    CROSS_RIVER_CLIENT_ID.into(),
                    Secret::new(CROSS_RIVER_CLIENT_SECRET),
                ),
                (
                    Vendor::Crossbeam,
                    CROSSBEAM_CLIENT_ID.into(),
                    Secret::new(CROSSBEAM_CLIENT_SECRET),
                ),
                (
                    Vendor::CultureAmp,
                    CULTURE_AMP_CLIENT_ID.into(),
                    Secret::new(CULTURE_AMP_CLIENT_SECRET),
                ),
                (
                    Vendor::Generic,
                    GENERIC_CLIENT_ID.into(),
                    Secret::new(GENERIC_CLIENT_SECRET),
                ),
                (
                    Vendor::Xref,
                    XREF_CLIENT_ID.into(),
                    Secret::new(XREF_CLIENT_SECRET),
                ),
            ],
            partner_tokens: vec![Secret::new(PARTNER_PAT)],
            token_ttl: None,
        }
    }

    /// Registers one more client of `vendor`.
    pub fn client(mut self, vendor: Vendor, client_id: &str, client_secret: &str) -> Self {
        self.clients
            .push((vendor, client_id.to_owned(), Secret::new(client_secret)));
        self
    }

    /// Registers one more personal access token for the partner API.
    pub fn partner_token(mut self, token: &str) -> Self {
        self.partner_tokens.push(Secret::new(token));
        self
    }

    /// Lifetime of every issued token, for all vendors but Xref (default 3600 s, Culture Amp
    /// 3599 s, Crossbeam 24 h).
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = Some(ttl);
        self
    }

    /// Binds `bind` (use `127.0.0.1:0` in tests) and serves until the handle is shut down or dropped.
    pub async fn start(self, bind: SocketAddr) -> io::Result<SandboxHandle> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SandboxState::new(
            self.clients,
            self.partner_tokens,
            self.token_ttl,
        )?);
        let stop = CancellationToken::new();
        let server = tokio::spawn(server::serve(listener, Arc::clone(&state), stop.clone()));
        tracing::info!(%addr, "sandbox vendors listening");
        Ok(SandboxHandle {
            addr,
            state,
            stop,
            server,
        })
    }
}

// === impl SandboxHandle ===

impl SandboxHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, `http://127.0.0.1:PORT`; vendors live under `/cross-river`, `/cultureamp`, ...
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lifetime of tokens issued from now on, for all vendors but Xref.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.state.update_knobs(|knobs| knobs.token_ttl = Some(ttl));
    }

    /// How token responses carry `expires_in` from now on.
    pub fn set_expires_in(&self, mode: ExpiresIn) {
        self.state.update_knobs(|knobs| knobs.expires_in = mode);
    }

    /// Shape of tokens issued from now on.
    pub fn set_token_format(&self, format: TokenFormat) {
        self.state.update_knobs(|knobs| knobs.token_format = format);
    }

    /// The next `n` token requests (any vendor) answer `failure` instead of being processed.
    /// They still count in the stats. Replaces any failures still pending.
    pub fn fail_next_token_requests(&self, n: u32, failure: Failure) {
        self.state
            .update_knobs(|knobs| knobs.fail_next = (n, failure));
    }

    /// Delay before every token and API answer (not the `/_sandbox` ones).
    pub fn set_latency(&self, latency: Duration) {
        self.state.update_knobs(|knobs| knobs.latency = latency);
    }

    /// The refresh token each live token family of `client_id` accepts next: what a test looks for
    /// in the proxy's store files, which must not hold it in plain text.
    pub fn current_refresh_tokens(&self, client_id: &str) -> Vec<String> {
        self.state.current_refresh_tokens(client_id)
    }

    /// Every token issued so far, refresh tokens included, is rejected from now on (PATs are not
    /// issued tokens).
    pub fn revoke_all_tokens(&self) {
        self.state.revoke_all_tokens();
    }

    /// Every access token issued so far is rejected from now on; refresh tokens keep working (a
    /// vendor that ended its sessions but not the grants).
    pub fn revoke_access_tokens(&self) {
        self.state.revoke_access_tokens();
    }

    /// A Crossbeam refresh token for `client_id`, as if the demo user had just connected with
    /// every scope and `offline_access`: a new token family whose first refresh token this is.
    /// Not counted as a token request.
    pub fn crossbeam_refresh_token(&self, client_id: &str) -> String {
        crossbeam::connect_offline(&self.state, client_id)
    }

    /// A Crossbeam authorization code, as if the demo user had approved `client_id` with every
    /// scope and `offline_access` and been sent to `redirect_uri`, for tests that skip the
    /// browser. `code_challenge` is an S256 challenge the token request must then answer.
    pub fn crossbeam_authorization_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        code_challenge: Option<&str>,
    ) -> String {
        crossbeam::approve(&self.state, client_id, redirect_uri, code_challenge)
    }

    /// A generic-vendor authorization code, as if the user had approved `client_id` with `scope`
    /// and been sent to `redirect_uri`, for tests that skip the browser. `code_challenge` is the
    /// S256 challenge (required by this vendor) the token request's `code_verifier` must answer.
    pub fn generic_authorization_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        code_challenge: &str,
        scope: Option<&str>,
    ) -> String {
        generic::approve(&self.state, client_id, redirect_uri, code_challenge, scope)
    }

    /// A generic-vendor refresh token for `client_id` with `scope`, as if an account had just
    /// been connected: a new token family whose first refresh token this is. Not counted as a
    /// token request.
    pub fn generic_refresh_token(&self, client_id: &str, scope: Option<&str>) -> String {
        generic::connect_offline(&self.state, client_id, scope)
    }

    /// An Xref authorization code for `client_id`, as if an account user had approved it.
    pub fn xref_code(&self, client_id: &str) -> String {
        xref::approve(&self.state, client_id)
    }

    /// A snapshot of what the sandbox has seen.
    pub fn stats(&self) -> SandboxStats {
        self.state.stats()
    }

    /// Token requests that named `client_id` so far, failed or not.
    pub fn token_requests(&self, client_id: &str) -> u64 {
        self.stats()
            .clients
            .get(client_id)
            .map_or(0, |client| client.token_requests)
    }

    /// Stops accepting, closes open connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Err(error) = (&mut self.server).await {
            tracing::warn!(%error, "sandbox server task ended abnormally");
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        self.server.abort();
    }
}
