//! The admin listener: `/healthz` (the process serves) and `/readyz` (config loaded, listeners bound).

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::state::SharedState;
use crate::upstream::ProxyBody;

/// Answers admin requests from the live state.
#[derive(Clone)]
pub struct Admin {
    state: SharedState,
}

// === impl Admin ===

impl Admin {
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                // The admin listener only serves once the config is loaded and every listener is
                // bound, so reaching this handler is readiness.
                let state = self.state.load();
                let providers: Vec<&str> =
                    state.config.providers.keys().map(String::as_str).collect();
                let body = serde_json::json!({ "status": "ready", "providers": providers });
                json(StatusCode::OK, body.to_string())
            }
            _ => json(
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found"}"#.to_string(),
            ),
        }
    }
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
