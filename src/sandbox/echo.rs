//! The vendor APIs' answer: an echo of what arrived, so tests can see exactly what the proxy sent
//! (headers as received, the raw query, body length and SHA-256 hashed while streaming). A path
//! ending in `_bytes?n=N`, `_status/NNN` or `_redirect[?to=URL&status=NNN]` asks for a streamed
//! body of N bytes, that status, or a redirect instead; `_upgrade` switches protocols to a byte
//! echo.

use std::convert::Infallible;

use aws_lc_rs::digest;
use bytes::Bytes;
use futures_util::stream;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

use super::reply::{self, ResponseBody};

/// `_bytes` sends its body in chunks of this size, all slices of one static buffer.
const CHUNK_SIZE: usize = 64 * 1024;
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

/// Where `_redirect` points without `to`: a name that never resolves, so following it fails
/// loudly.
const REDIRECT_TARGET: &str = "http://redirect-target.invalid/elsewhere";
/// The statuses `_redirect?status=` accepts.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// Answers an authorized API request for `vendor` (its path name, e.g. `cross-river`).
pub(super) async fn handle(
    vendor: &'static str,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let mut segments = request.uri().path().rsplit('/');
    match (segments.next(), segments.next()) {
        (Some("_bytes"), _) => stream_bytes(request.uri().query()),
        (Some("_redirect"), _) => redirect(request.uri().query()),
        (Some("_upgrade"), _) => upgrade(request),
        (Some(code), Some("_status")) => status(code),
        _ => echo(vendor, request).await,
    }
}

/// `_upgrade`: switches to a raw byte echo after `101` when asked with `Upgrade: websocket`
/// (the WebSocket handshake's key check is left out: the proxy passes bytes, not frames).
fn upgrade(mut request: Request<Incoming>) -> Response<ResponseBody> {
    let wants_websocket = request
        .headers()
        .get(UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !wants_websocket {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "_upgrade wants Upgrade: websocket",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
    });
    let mut response = Response::new(reply::full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(UPGRADE, HeaderValue::from_static("websocket"));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response
}

async fn echo(vendor: &'static str, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, mut body) = request.into_parts();
    // Hashed frame by frame: bodies of 100 MiB must not be held in memory.
    let mut sha256 = digest::Context::new(&digest::SHA256);
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    sha256.update(data);
                    body_len += data.len() as u64;
                }
            }
            Err(_) => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "request body broke off",
                );
            }
        }
    }
    let body_sha256: String = sha256
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect();
    reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "vendor": vendor,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_len": body_len,
            "body_sha256": body_sha256,
        }),
    )
}

/// `n` bytes with `Content-Length: n`, produced chunk by chunk as the client reads.
fn stream_bytes(query: Option<&str>) -> Response<ResponseBody> {
    let requested = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "n")
        .and_then(|(_, value)| value.parse::<u64>().ok());
    let Some(total) = requested else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "_bytes needs ?n=<byte count>",
        );
    };
    let chunks = stream::unfold(total, |remaining| async move {
        if remaining == 0 {
            return None;
        }
        let len =
            usize::try_from(remaining).map_or(CHUNK_SIZE, |remaining| remaining.min(CHUNK_SIZE));
        let chunk = Bytes::from_static(&CHUNK[..len]);
        Some((
            Ok::<_, Infallible>(Frame::data(chunk)),
            remaining - len as u64,
        ))
    });
    let mut response = Response::new(StreamBody::new(chunks).boxed());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(total));
    response
}

/// The status named in the path, 200..=599, with `{"status": NNN}` where a body is allowed.
fn status(code: &str) -> Response<ResponseBody> {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "_status needs a code in 200..=599",
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = Response::new(reply::full(Bytes::new()));
        *response.status_mut() = status;
        return response;
    }
    reply::json(status, &serde_json::json!({"status": status.as_u16()}))
}

/// A redirect to `to` (default [`REDIRECT_TARGET`]) with `status` (default 302), so tests can
/// point a vendor's redirect at a listener of their own and see whether anyone follows it.
fn redirect(query: Option<&str>) -> Response<ResponseBody> {
    let mut target = REDIRECT_TARGET.to_owned();
    let mut code = StatusCode::FOUND.as_u16();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*name {
            "to" => target = value.into_owned(),
            "status" => code = value.parse().unwrap_or_default(),
            _ => {}
        }
    }
    let status = REDIRECT_STATUSES
        .contains(&code)
        .then(|| StatusCode::from_u16(code).ok())
        .flatten();
    let (Some(status), Ok(location)) = (status, HeaderValue::from_str(&target)) else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "_redirect takes ?to=<URL>&status=<301|302|303|307|308>",
        );
    };
    let mut response = reply::json(status, &serde_json::json!({"location": target}));
    response.headers_mut().insert(LOCATION, location);
    response
}
