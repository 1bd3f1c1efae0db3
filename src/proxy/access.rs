//! After each request: one access log line (target `authrelay::access`) and the route's retry
//! count. The line holds config names, the method, the status and sizes: never a path, a query
//! string or a header value.

use http::header::CONTENT_LENGTH;
use http::{Method, Response};
use tokio::time::Instant;

use super::retry::{Attempts, RetryOutcome};
use crate::config::RouteConfig;
use crate::state::State;
use crate::upstream::ProxyBody;

/// Logs the access line of one request and counts its 401 retry, if it had one.
pub(super) fn record(
    state: &State,
    route: Option<&RouteConfig>,
    method: &Method,
    attempts: &Attempts,
    response: &Response<ProxyBody>,
    relay_error: Option<&'static str>,
    started: Instant,
) {
    if let Some(metrics) = route.and_then(|route| state.metrics.route(&route.name)) {
        match attempts.retry {
            RetryOutcome::NotNeeded => {}
            RetryOutcome::Recovered => metrics.retry_recovered(),
            RetryOutcome::Failed => metrics.retry_failed(),
            RetryOutcome::NotReplayable => metrics.retry_not_replayable(),
        }
    }
    tracing::info!(
        target: "authrelay::access",
        route = route.map_or("-", |route| route.name.as_str()),
        provider = route.map_or("-", |route| route.provider.as_str()),
        // Per-account tokens and caller identities come with later issues.
        account = "-",
        caller = "-",
        %method,
        status = response.status().as_u16(),
        upstream_ms = attempts.upstream.map(|elapsed| elapsed.as_secs_f64() * 1000.0),
        retry = attempts.retry.as_str(),
        bytes = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok()),
        relay_error,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
}
