//! Response building shared by the sandbox's vendors: JSON answers and the OAuth error shapes.
//! Responses are assembled field by field, so nothing here can fail.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Every sandbox response body: whole JSON or streamed bytes.
pub(super) type ResponseBody = BoxBody<Bytes, Infallible>;

/// A whole body.
pub(super) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed()
}

/// `status` with `value` as an `application/json` body.
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"error": error, "error_description": description}`, the OAuth 2.0 error body.
pub(super) fn error(status: StatusCode, error: &str, description: &str) -> Response<ResponseBody> {
    json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    )
}

/// The API answer to a missing, malformed, unknown, expired or revoked token (RFC 6750 §3),
/// `challenge` naming the API's scheme (`Bearer error="invalid_token"`).
pub(super) fn invalid_token(challenge: &'static str, description: &str) -> Response<ResponseBody> {
    let mut response = error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// No vendor or sandbox route matched.
pub(super) fn not_found() -> Response<ResponseBody> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no sandbox route for this path",
    )
}

/// The route exists but not for this method.
pub(super) fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", allow);
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}
