//! The one retry after an upstream `401`: keep the request body when it is small enough to send
//! twice, and on `401` invalidate exactly the token that was used, obtain a fresh one through the
//! single flight and replay once. Larger bodies stream and are never replayed; neither is a
//! request that failed on the network (the vendor may have acted on it).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::ProxyError;
use super::deadline::Deadline;
use crate::config::RouteConfig;
use crate::credential::Credential;
use crate::state::State;
use crate::upstream::{BoxError, CallerBodyFailed, ProxyBody};

/// A request body, either held whole (replayable) or still streaming.
pub enum RequestBody {
    Buffered(Bytes),
    Streaming(ProxyBody),
}

/// How the request fared with respect to the 401 retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryOutcome {
    /// No 401, or a provider that cannot refresh (static tokens).
    #[default]
    NotNeeded,
    /// 401, fresh token, replay answered something else.
    Recovered,
    /// 401 again after the replay (passed to the caller), or no fresh token for the replay.
    Failed,
    /// 401 on a request whose body was too large to keep; passed to the caller.
    NotReplayable,
}

/// What the upstream attempts of one request came to, for the access log and the metrics.
#[derive(Debug, Default)]
pub struct Attempts {
    pub retry: RetryOutcome,
    /// Time spent waiting for upstream response headers, over every attempt; `None` when no
    /// request was sent upstream.
    pub upstream: Option<Duration>,
    /// The connected account whose token the request used (or asked for), for the access log.
    pub account: Option<String>,
}

/// The parts of the outgoing request that are sent again on a replay.
pub struct Outgoing {
    pub method: Method,
    pub uri: Uri,
    /// Headers without credentials; each attempt adds its own.
    pub headers: HeaderMap,
}

// === impl RetryOutcome ===

impl RetryOutcome {
    /// The outcome as the access log spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOutcome::NotNeeded => "none",
            RetryOutcome::Recovered => "recovered",
            RetryOutcome::Failed => "failed",
            RetryOutcome::NotReplayable => "not_replayable",
        }
    }
}

// === impl RequestBody ===

impl RequestBody {
    /// Buffers `body` when it may need a replay and fits in `max_replay` bytes; otherwise it
    /// streams (with what was already read put back in front). `max_body` and the `deadline`
    /// for the whole body are enforced either way.
    pub async fn prepare(
        body: Incoming,
        replay_wanted: bool,
        max_replay: u64,
        max_body: u64,
        deadline: Instant,
    ) -> Result<RequestBody, ProxyError> {
        let limit = |body: ProxyBody| -> ProxyBody {
            let body = Deadline::new(body, deadline).boxed();
            match usize::try_from(max_body) {
                Ok(max) => Limited::new(body, max).boxed(),
                Err(_) => body,
            }
        };
        let declared = body.size_hint().exact();
        if !replay_wanted || declared.is_some_and(|length| length > max_replay) {
            return Ok(RequestBody::Streaming(limit(caller_body(body))));
        }
        if body.is_end_stream() {
            return Ok(RequestBody::Buffered(Bytes::new()));
        }
        let mut body = body;
        let mut held = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(ProxyError::BodyTimeout),
                Ok(None) => break,
                Ok(Some(frame)) => frame,
            };
            let frame = frame.map_err(|error| ProxyError::ClientBody(error.into()))?;
            // Trailers are dropped when buffering: hyper's h1 client would not send them anyway.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            held.extend_from_slice(&data);
            if held.len() as u64 > max_body {
                return Err(ProxyError::BodyTooLarge);
            }
            if held.len() as u64 > max_replay {
                // Too big to keep: send what was read, then the rest as it arrives.
                let prefix = Full::new(held.freeze()).map_err(|never| match never {});
                return Ok(RequestBody::Streaming(limit(chain(
                    prefix,
                    caller_body(body),
                ))));
            }
        }
        Ok(RequestBody::Buffered(held.freeze()))
    }

    fn into_body(self) -> ProxyBody {
        match self {
            RequestBody::Buffered(bytes) => {
                Full::new(bytes).map_err(|never| match never {}).boxed()
            }
            RequestBody::Streaming(body) => body,
        }
    }
}

/// Steps 2 and 3 with the retry: authorize, send, and on 401 invalidate, re-authorize, replay
/// once. `attempts` records the retry outcome and upstream time, whatever the result.
pub async fn send_with_retry(
    state: &State,
    route: &RouteConfig,
    credential: &Credential,
    outgoing: Outgoing,
    body: RequestBody,
    attempts: &mut Attempts,
) -> Result<Response<Incoming>, ProxyError> {
    let replay = match &body {
        RequestBody::Buffered(bytes) => Some(bytes.clone()),
        RequestBody::Streaming(_) => None,
    };
    let (request, used) = authorized(route, credential, &outgoing, body).await?;
    let response = send(state, route, request, attempts).await?;
    if response.status() != StatusCode::UNAUTHORIZED || !credential.can_refresh() {
        return Ok(response);
    }
    // The token is suspect either way: the next request should not be sent with it. While the
    // vendor refuses even fresh tokens, 401s pass through without a refresh.
    if !credential.invalidate(&used) {
        attempts.retry = RetryOutcome::Failed;
        return Ok(response);
    }
    let Some(bytes) = replay else {
        attempts.retry = RetryOutcome::NotReplayable;
        return Ok(response);
    };
    drop(response);
    tracing::info!(route = %route.name, provider = %route.provider, "upstream answered 401; replaying once with a fresh token");
    // Failed until the replay answers something other than 401.
    attempts.retry = RetryOutcome::Failed;
    let (request, _) =
        authorized(route, credential, &outgoing, RequestBody::Buffered(bytes)).await?;
    let response = send(state, route, request, attempts).await?;
    if response.status() == StatusCode::UNAUTHORIZED {
        credential.note_replay_failed();
    } else {
        attempts.retry = RetryOutcome::Recovered;
    }
    Ok(response)
}

/// Step 3, once: the upstream exchange, timed to the response headers and counted by status class.
async fn send(
    state: &State,
    route: &RouteConfig,
    request: Request<ProxyBody>,
    attempts: &mut Attempts,
) -> Result<Response<Incoming>, ProxyError> {
    let started = Instant::now();
    let result = state.upstream.send(route, request).await;
    let elapsed = started.elapsed();
    attempts.upstream = Some(attempts.upstream.unwrap_or_default() + elapsed);
    if let Some(metrics) = state.metrics.route(&route.name) {
        metrics.upstream(result.as_ref().ok().map(Response::status), elapsed);
    }
    Ok(result?)
}

async fn authorized(
    route: &RouteConfig,
    credential: &Credential,
    outgoing: &Outgoing,
    body: RequestBody,
) -> Result<
    (
        Request<ProxyBody>,
        std::sync::Arc<crate::credential::AccessToken>,
    ),
    ProxyError,
> {
    let mut headers = outgoing.headers.clone();
    let used = credential.authorize(route, &mut headers).await?;
    let mut request = Request::new(body.into_body());
    *request.method_mut() = outgoing.method.clone();
    *request.uri_mut() = outgoing.uri.clone();
    *request.headers_mut() = headers;
    Ok((request, used))
}

/// The caller's body as it streams, its errors marked as the caller's.
fn caller_body(body: Incoming) -> ProxyBody {
    body.map_err(|error| BoxError::from(CallerBodyFailed(error)))
        .boxed()
}

/// `first` then `second`, as one body.
fn chain<A, B>(first: A, second: B) -> ProxyBody
where
    A: Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    B: Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let frames =
        http_body_util::BodyStream::new(first).chain(http_body_util::BodyStream::new(second));
    BodyExt::boxed(http_body_util::StreamBody::new(frames))
}
