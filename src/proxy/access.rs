//! After each request: one access log line (target `authrelay::access`) and the route's retry
//! count. The line holds config names, the method, the status and sizes: never a path, a query
//! string or a header value.

use http::header::CONTENT_LENGTH;
use http::{Method, Response};
use tokio::time::Instant;

use super::retry::{Attempts, RetryOutcome};
use crate::config::RouteConfig;
use crate::metrics::names;
use crate::state::State;
use crate::upstream::ProxyBody;

/// What one request came to, as the access log and the metrics record it.
pub(super) struct Outcome<'a> {
    pub route: Option<&'a RouteConfig>,
    pub caller: Option<&'a str>,
    pub method: &'a Method,
    pub attempts: &'a Attempts,
    pub relay_error: Option<&'static str>,
    pub started: Instant,
}

/// Logs the access line of one request and counts it (and its 401 retry, if it had one).
pub(super) fn record(state: &State, outcome: Outcome<'_>, response: &Response<ProxyBody>) {
    let Outcome {
        route,
        caller,
        method,
        attempts,
        relay_error,
        started,
    } = outcome;
    if let Some(metrics) = route.and_then(|route| state.metrics.route(&route.name)) {
        match attempts.retry {
            RetryOutcome::NotNeeded => {}
            RetryOutcome::Recovered => metrics.retry_recovered(),
            RetryOutcome::Failed => metrics.retry_failed(),
            RetryOutcome::NotReplayable => metrics.retry_not_replayable(),
        }
    }
    let caller = match (caller, relay_error) {
        (Some(name), _) => name,
        (None, Some("caller_unknown")) => names::CALLER_UNKNOWN,
        (None, _) => names::CALLER_ANONYMOUS,
    };
    let route_name = route.map_or(names::NO_ROUTE, |route| route.name.as_str());
    state
        .metrics
        .caller_request(caller, route_name, response.status());
    tracing::info!(
        target: "authrelay::access",
        route = route.map_or("-", |route| route.name.as_str()),
        provider = route.map_or("-", |route| route.provider.as_str()),
        account = attempts.account.as_deref().unwrap_or("-"),
        caller,
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
