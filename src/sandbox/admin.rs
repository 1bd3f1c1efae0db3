//! `/_sandbox/*`: the knobs and stats over HTTP, for scripts and demos that cannot hold a
//! `SandboxHandle`. `GET stats`, `POST knobs` (JSON, every field optional), `POST revoke`.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::reply::{self, ResponseBody};
use super::state::SandboxState;
use super::{ExpiresIn, Failure, TokenFormat};

const MAX_KNOBS_BODY: usize = 64 * 1024;

/// `{"token_ttl_secs":5,"expires_in":"omit","token_format":"opaque",
///   "fail_next":{"count":2,"status":429,"retry_after_secs":3},"latency_ms":10}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobsUpdate {
    token_ttl_secs: Option<u64>,
    expires_in: Option<ExpiresIn>,
    token_format: Option<TokenFormat>,
    fail_next: Option<FailNext>,
    latency_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    count: u32,
    /// 429 or 500.
    status: u16,
    /// For 429; 1 when absent.
    retry_after_secs: Option<u64>,
}

/// Answers `/_sandbox/{rest}`.
pub(super) async fn handle(
    state: &SandboxState,
    rest: &str,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    match (request.method(), rest) {
        (&Method::GET, "stats") => match serde_json::to_value(state.stats()) {
            Ok(stats) => reply::json(StatusCode::OK, &stats),
            Err(_) => reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "stats not serializable",
            ),
        },
        (&Method::POST, "knobs") => set_knobs(state, request).await,
        (&Method::POST, "revoke") => {
            let revoked = state.revoke_all_tokens();
            reply::json(StatusCode::OK, &serde_json::json!({"revoked": revoked}))
        }
        (_, "stats") => reply::method_not_allowed("GET"),
        (_, "knobs" | "revoke") => reply::method_not_allowed("POST"),
        _ => reply::not_found(),
    }
}

async fn set_knobs(state: &SandboxState, request: Request<Incoming>) -> Response<ResponseBody> {
    let bad_request =
        |description: &str| reply::error(StatusCode::BAD_REQUEST, "invalid_request", description);
    let Ok(body) = Limited::new(request.into_body(), MAX_KNOBS_BODY)
        .collect()
        .await
    else {
        return bad_request("body unreadable or larger than 64 KiB");
    };
    let update: KnobsUpdate = match serde_json::from_slice(&body.to_bytes()) {
        Ok(update) => update,
        Err(error) => return bad_request(&error.to_string()),
    };
    // Everything is validated before anything is applied: a rejected update changes nothing.
    let fail_next = match update.fail_next {
        None => None,
        Some(FailNext {
            count, status: 500, ..
        }) => Some((count, Failure::ServerError)),
        Some(FailNext {
            count,
            status: 429,
            retry_after_secs,
        }) => {
            let retry_after = Duration::from_secs(retry_after_secs.unwrap_or(1));
            Some((count, Failure::RateLimited { retry_after }))
        }
        Some(_) => return bad_request("fail_next.status must be 429 or 500"),
    };
    state.update_knobs(|knobs| {
        if let Some(secs) = update.token_ttl_secs {
            knobs.token_ttl = Some(Duration::from_secs(secs));
        }
        if let Some(expires_in) = update.expires_in {
            knobs.expires_in = expires_in;
        }
        if let Some(format) = update.token_format {
            knobs.token_format = format;
        }
        if let Some(fail_next) = fail_next {
            knobs.fail_next = fail_next;
        }
        if let Some(millis) = update.latency_ms {
            knobs.latency = Duration::from_millis(millis);
        }
    });
    reply::json(StatusCode::OK, &serde_json::json!({"ok": true}))
}
