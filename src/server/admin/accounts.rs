//! The connected-accounts endpoints: `GET /connect/{provider}?account=` (302 to the vendor),
//! `GET /callback/{provider}` (the vendor's redirect back), `GET /accounts`,
//! `POST /accounts/{provider}/{account}/remove` and `GET /accounts/{provider}/{account}/orgs`.

use http::header::LOCATION;
use http::{HeaderValue, Response, StatusCode};

use super::{Admin, json, json_error, page, see_other};
use crate::accounts::{self, AccountError};
use crate::upstream::ProxyBody;

// === impl Admin ===

impl Admin {
    /// `GET /connect/{provider}?account=NAME`: 302 to the vendor's authorize page.
    pub(super) fn connect(&self, provider: &str, account: &str) -> Response<ProxyBody> {
        let state = self.state.load();
        match self.pending.begin(&state, provider, account) {
            Ok(url) => redirect(StatusCode::FOUND, &url),
            Err(error) => account_error(&error),
        }
    }

    /// The page's Connect form: 303 to the vendor, or the page's error.
    pub(super) fn connect_from_page(&self, provider: &str, account: &str) -> Response<ProxyBody> {
        let state = self.state.load();
        match self.pending.begin(&state, provider, account) {
            Ok(url) => redirect(StatusCode::SEE_OTHER, &url),
            Err(error) => page::message(error_status(&error), "Cannot connect", &error.to_string()),
        }
    }

    /// `GET /callback/{provider}?state=...&code=...`: a small page naming the account connected
    /// (or why not). Neither the code nor any token appears in it.
    pub(super) async fn callback(
        &self,
        provider: &str,
        query: Option<&str>,
    ) -> Response<ProxyBody> {
        let state = self.state.load_full();
        match self.pending.complete(&state, provider, query).await {
            Ok(connected) => page::message(
                StatusCode::OK,
                "Account connected",
                &format!(
                    "Account {} of provider {} is connected. Routes naming it now carry its token.",
                    connected.account, connected.provider
                ),
            ),
            Err(error) => {
                tracing::warn!(provider, %error, "authorization callback refused");
                page::message(error_status(&error), "Not connected", &error.to_string())
            }
        }
    }

    /// `GET /accounts`: every connected account, never a token.
    pub(super) async fn list_accounts(&self) -> Response<ProxyBody> {
        let state = self.state.load_full();
        match accounts::list(&state).await {
            Ok(views) => json(
                StatusCode::OK,
                serde_json::json!({ "accounts": views }).to_string(),
            ),
            Err(error) => account_error(&error),
        }
    }

    /// `POST /accounts/{provider}/{account}/remove[?force=true]`.
    pub(super) async fn remove(
        &self,
        provider: &str,
        account: &str,
        force: bool,
        from_page: bool,
    ) -> Response<ProxyBody> {
        let state = self.state.load_full();
        match accounts::remove(&state, provider, account, force).await {
            Ok(_) if from_page => see_other("/"),
            Ok(removed) => json(
                StatusCode::OK,
                serde_json::to_string(&removed).unwrap_or_default(),
            ),
            Err(error) if from_page => {
                page::message(error_status(&error), "Not removed", &error.to_string())
            }
            Err(error) => account_error(&error),
        }
    }

    /// `GET /accounts/{provider}/{account}/orgs`: Crossbeam's organizations of the account.
    pub(super) async fn organizations(&self, provider: &str, account: &str) -> Response<ProxyBody> {
        let state = self.state.load_full();
        match accounts::organizations(&state, provider, account).await {
            Ok(orgs) => json(
                StatusCode::OK,
                serde_json::json!({ "organizations": orgs }).to_string(),
            ),
            Err(error) => account_error(&error),
        }
    }
}

fn redirect(status: StatusCode, url: &str) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(url) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "bad_authorize_url");
    };
    let mut response = super::respond(status, "text/plain; charset=utf-8", bytes::Bytes::new());
    response.headers_mut().insert(LOCATION, location);
    // The vendor must not learn the admin's URL from a Referer.
    response
        .headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn error_status(error: &AccountError) -> StatusCode {
    match error {
        AccountError::UnknownProvider(_) | AccountError::UnknownAccount { .. } => {
            StatusCode::NOT_FOUND
        }
        AccountError::NotAuthorizationCode(_)
        | AccountError::BadAccountName(_)
        | AccountError::BadState
        | AccountError::NoCode
        | AccountError::Denied(_)
        | AccountError::NoOrganizations(_) => StatusCode::BAD_REQUEST,
        AccountError::Exchange(_)
        | AccountError::Revoke(_)
        | AccountError::Vendor(_)
        | AccountError::Token(_) => StatusCode::BAD_GATEWAY,
        AccountError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A stable code for scripts, beside the message.
fn error_code(error: &AccountError) -> &'static str {
    match error {
        AccountError::UnknownProvider(_) => "unknown_provider",
        AccountError::NotAuthorizationCode(_) => "not_authorization_code",
        AccountError::BadAccountName(_) => "bad_account_name",
        AccountError::UnknownAccount { .. } => "no_account",
        AccountError::BadState => "bad_state",
        AccountError::NoCode => "no_code",
        AccountError::Denied(_) => "access_denied",
        AccountError::Exchange(_) => "code_exchange_failed",
        AccountError::Revoke(_) => "revocation_failed",
        AccountError::NoOrganizations(_) => "no_organizations_endpoint",
        AccountError::Vendor(_) => "vendor_error",
        AccountError::Store(_) => "store_error",
        AccountError::Token(_) => "token_unavailable",
    }
}

fn account_error(error: &AccountError) -> Response<ProxyBody> {
    json(
        error_status(error),
        serde_json::json!({ "error": error_code(error), "message": error.to_string() }).to_string(),
    )
}
