//! The admin listener: `/healthz` (the process serves), `/readyz` (config loaded, listeners
//! bound) and `/metrics` (Prometheus text format).

mod scrape;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::secret::same_text;
use crate::state::SharedState;
use crate::store::TokenStore;
use crate::upstream::ProxyBody;

/// Answers admin requests from the live state.
#[derive(Clone)]
pub struct Admin {
    state: SharedState,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
}

// === impl Admin ===

impl Admin {
    pub fn new(state: SharedState, store: Arc<dyn TokenStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            state,
            store,
            metrics,
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let path = request.uri().path();
        if path != "/healthz" && !self.authorized(request.headers()) {
            let mut response = json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"admin_token_required"}"#.to_string(),
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authrelay-admin\""),
            );
            return response;
        }
        match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/metrics") => self.metrics(),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                // The admin listener only serves once the config is loaded and every listener is
                // bound, so reaching this handler is readiness.
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
                let body = serde_json::json!({ "status": "ready", "providers": providers });
                json(StatusCode::OK, body.to_string())
            }
            (&Method::POST, path) if reset_target(path).is_some() => {
                self.reset(reset_target(path).unwrap_or_default()).await
            }
            _ => json(
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found"}"#.to_string(),
            ),
        }
    }
}

impl Admin {
    /// `POST /providers/{name}/reset`: forget a rejection or backoff, so the next request tries
    /// the credentials again (after an operator fixed them at the vendor).
    async fn reset(&self, name: &str) -> Response<ProxyBody> {
        let state = self.state.load_full();
        if !state.config.providers.contains_key(name) {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": "unknown_provider" }).to_string(),
            );
        }
        match state.credentials.reset(name, self.store.as_ref()).await {
            Ok(cleared) => {
                tracing::warn!(provider = %name, cleared, "provider reset by an operator");
                let body = serde_json::json!({ "provider": name, "reset": true, "stored_rejections_cleared": cleared });
                json(StatusCode::OK, body.to_string())
            }
            Err(error) => {
                tracing::error!(provider = %name, %error, "reset failed");
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": "store_error" }).to_string(),
                )
            }
        }
    }
}

impl Admin {
    /// True when no admin token is configured, or the request carries it as a bearer token.
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let state = self.state.load();
        let Some(expected) = state
            .config
            .admin
            .as_ref()
            .and_then(|admin| admin.token.as_ref())
        else {
            return true;
        };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        presented.is_some_and(|token| same_text(token, expected.expose()))
    }
}

/// The provider named by `/providers/{name}/reset`.
fn reset_target(path: &str) -> Option<&str> {
    path.strip_prefix("/providers/")?.strip_suffix("/reset")
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

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
