//! The admin listener: `/healthz` (the process serves), `/readyz` (config loaded, listeners
//! bound), `/metrics` (Prometheus text format), the connected-accounts flow and API
//! (`admin/accounts.rs`) and the operator's page (`admin/page.rs`).
//!
//! Every request first passes the Host check (DNS rebinding), then the admin token (Bearer for
//! scripts, Basic for browsers) except `/healthz` and `/callback/*`, whose `state` is its own
//! credential. A POST from another site is refused; a form POST must carry the page's CSRF token.

mod accounts;
mod csrf;
mod page;
mod scrape;

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::accounts::PendingAuthorizations;
use crate::config::GrantConfig;
use crate::metrics::Metrics;
use crate::route::{is_loopback_name, request_host};
use crate::secret::same_text;
use crate::state::SharedState;
use crate::store::TokenStore;
use crate::upstream::ProxyBody;
use csrf::CsrfKey;

/// Answers admin requests from the live state.
#[derive(Clone)]
pub struct Admin {
    state: SharedState,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    /// Outlives reloads: a person mid-authorization must not lose the flow to a config change.
    pending: Arc<PendingAuthorizations>,
    csrf: Arc<CsrfKey>,
}

// === impl Admin ===

impl Admin {
    pub fn new(state: SharedState, store: Arc<dyn TokenStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            state,
            store,
            metrics,
            pending: Arc::default(),
            csrf: Arc::new(CsrfKey::generate()),
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let mut response = self.route(request).await;
        // Admin answers describe this process; no cache may keep them.
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        if !self.host_allowed(&request) {
            return json_error(StatusCode::MISDIRECTED_REQUEST, "misdirected_host");
        }
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        if path == "/healthz" && matches!(method, Method::GET | Method::HEAD) {
            return text(StatusCode::OK, "ok\n");
        }
        if let Some(provider) = path.strip_prefix("/callback/") {
            return self.callback(provider, request.uri().query()).await;
        }
        if !self.authorized(request.headers()) {
            let mut response = json_error(StatusCode::UNAUTHORIZED, "admin_token_required");
            let headers = response.headers_mut();
            // Browsers answer the Basic challenge with a login prompt; scripts send Bearer.
            headers.append(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"authrelay-admin\", charset=\"UTF-8\""),
            );
            headers.append(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authrelay-admin\""),
            );
            return response;
        }
        if method == Method::POST && cross_site(request.headers()) {
            return json_error(StatusCode::FORBIDDEN, "cross_site");
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET | &Method::HEAD, [""]) => self.page().await,
            (&Method::GET | &Method::HEAD, ["metrics"]) => self.metrics(),
            (&Method::GET | &Method::HEAD, ["readyz"]) => self.readyz(),
            (&Method::GET, ["accounts"]) => self.list_accounts().await,
            (&Method::GET, ["connect", provider]) => {
                // A link on another site must not start a connection in the operator's browser.
                if cross_site(request.headers()) {
                    return json_error(StatusCode::FORBIDDEN, "cross_site");
                }
                let account = query_param(request.uri().query(), "account");
                self.connect(provider, account.as_deref().unwrap_or_default())
            }
            (&Method::GET, ["accounts", provider, account, "orgs"]) => {
                self.organizations(provider, account).await
            }
            (&Method::POST, _) => self.post(&segments, request).await,
            _ => json_error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    /// State-changing requests: from a script (no form), or from the page (a form with the CSRF
    /// token, answered by a redirect back to the page).
    async fn post(&self, segments: &[&str], request: Request<Incoming>) -> Response<ProxyBody> {
        let query = request.uri().query().map(str::to_owned);
        let form = match read_form(request).await {
            Ok(form) => form,
            Err(response) => return response,
        };
        if let Some(form) = &form {
            let token = form_value(form, "csrf").unwrap_or_default();
            if !self.csrf.verify(&token) {
                return page::message(
                    StatusCode::FORBIDDEN,
                    "Refused",
                    "The page was too old or not this admin's own. Reload it and try again.",
                );
            }
        }
        let from_page = form.is_some();
        let field = |name: &str| {
            form.as_ref()
                .and_then(|form| form_value(form, name))
                .or_else(|| query_param(query.as_deref(), name))
        };
        match segments {
            ["connect", provider] if from_page => {
                let account = field("account").unwrap_or_default();
                self.connect_from_page(provider, &account)
            }
            ["accounts", provider, account, "remove"] => {
                let force = field("force").is_some_and(|value| value == "true");
                self.remove(provider, account, force, from_page).await
            }
            ["providers", name, "reset"] => self.reset(name, from_page).await,
            _ => json_error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    fn readyz(&self) -> Response<ProxyBody> {
        // The admin listener only serves once the config is loaded and every listener is
        // bound, so reaching this handler is readiness. A replica without Redis is still ready
        // (it serves the tokens it holds), but says it is degraded.
        let state = self.state.load();
        let providers: Vec<serde_json::Value> = state
            .credentials
            .snapshot()
            .into_iter()
            .map(|status| {
                serde_json::json!({
                    "provider": status.provider,
                    "account": status.account,
                    "state": status.state.as_str(),
                    "expires_in_seconds": status.expires_in.map(|d| d.as_secs()),
                    "retry_in_seconds": status.retry_in.map(|d| d.as_secs()),
                    // Grant errors carry statuses and OAuth codes only, never a secret.
                    "error": status.error.map(|error| error.to_string()),
                })
            })
            .collect();
        let health = self.store.health();
        let status = if health.reachable {
            "ready"
        } else {
            "degraded"
        };
        let mut body = serde_json::json!({ "status": status, "providers": providers });
        if health.shared {
            body["store"] = serde_json::json!({
                "kind": "redis",
                "reachable": health.reachable,
                "errors": health.errors,
                "last_error": if health.reachable { None } else { health.last_error },
            });
        }
        json(StatusCode::OK, body.to_string())
    }

    /// `POST /providers/{name}/reset`: forget a rejection or backoff, so the next request tries
    /// the credentials again (after an operator fixed them at the vendor).
    async fn reset(&self, name: &str, from_page: bool) -> Response<ProxyBody> {
        let state = self.state.load_full();
        if !state.config.providers.contains_key(name) {
            return json_error(StatusCode::NOT_FOUND, "unknown_provider");
        }
        match state.credentials.reset(name, self.store.as_ref()).await {
            Ok(cleared) => {
                tracing::warn!(provider = %name, cleared, "provider reset by an operator");
                if from_page {
                    return see_other("/");
                }
                let body = serde_json::json!({ "provider": name, "reset": true, "stored_rejections_cleared": cleared });
                json(StatusCode::OK, body.to_string())
            }
            Err(error) => {
                tracing::error!(provider = %name, %error, "reset failed");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "store_error")
            }
        }
    }

    /// True when no admin token is configured, or the request carries it: as a bearer token, or
    /// as the password of HTTP Basic (any user name).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let state = self.state.load();
        let Some(expected) = state
            .config
            .admin
            .as_ref()
            .and_then(|admin| admin.token.as_ref())
        else {
            return true;
        };
        let Some((scheme, credentials)) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
        else {
            return false;
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            return same_text(credentials.trim(), expected.expose());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let password = decoded
            .as_deref()
            .and_then(|pair| pair.split_once(':'))
            .map(|(_, password)| password);
        password.is_some_and(|password| same_text(password, expected.expose()))
    }

    /// The admin listener is loopback only, so a browser reaches it by a loopback name. Any
    /// other `Host` is a page on another site whose DNS name was rebound to 127.0.0.1, except the
    /// public name of a provider's `redirect_uri` on `/callback/*`: a front proxy that forwards
    /// the callback must not open the rest of the admin to the world.
    fn host_allowed(&self, request: &Request<Incoming>) -> bool {
        let host_header = request
            .headers()
            .get(HOST)
            .and_then(|value| value.to_str().ok());
        let Some(name) = request_host(request.uri(), host_header) else {
            // HTTP/1.0 scripts may send no Host; a browser always does.
            return true;
        };
        if is_loopback_name(name) {
            return true;
        }
        if !request.uri().path().starts_with("/callback/") {
            return false;
        }
        let state = self.state.load();
        state.config.providers.values().any(|provider| {
            matches!(&provider.grant, GrantConfig::AuthorizationCode(code)
                if code.redirect_uri.host_str().is_some_and(|h| h.eq_ignore_ascii_case(name)))
        })
    }
}

/// A browser says where a request comes from: `Sec-Fetch-Site` (all current browsers), else
/// `Origin` on a POST. Scripts send neither and pass.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return false;
    };
    let host = headers.get(HOST).map(HeaderValue::as_bytes);
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host.as_bytes());
    origin_host.is_none() || origin_host != host
}

/// The body of a form POST, or `None` for a POST that is not a form (scripts). Bodies are
/// small here; anything over 8 KiB is refused.
async fn read_form(request: Request<Incoming>) -> Result<Option<String>, Response<ProxyBody>> {
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok(None);
    }
    let limited = http_body_util::Limited::new(request.into_body(), 8 * 1024);
    match limited.collect().await {
        Ok(body) => Ok(Some(String::from_utf8_lossy(&body.to_bytes()).into_owned())),
        Err(_) => Err(json_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")),
    }
}

fn form_value(form: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_value(query?, name)
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    respond(status, "application/json", Bytes::from(body))
}

fn json_error(status: StatusCode, code: &str) -> Response<ProxyBody> {
    json(status, serde_json::json!({ "error": code }).to_string())
}

/// `303 See Other` to `location`, after a form POST.
fn see_other(location: &str) -> Response<ProxyBody> {
    let mut response = respond(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_reads_fetch_metadata_then_origin() {
        let mut headers = HeaderMap::new();
        assert!(!cross_site(&headers));
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:9090"));
        headers.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9090"),
        );
        assert!(!cross_site(&headers));
        headers.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_site(&headers));
    }
}
