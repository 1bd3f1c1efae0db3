//! Prometheus metrics: one [`Metrics`] per process, registered into a registry the caller
//! passes in, so counters survive config reloads. Labelled handles are resolved once per route
//! and provider when a state is built ([`RouteMetrics`], [`ProviderMetrics`]), never per request.
//!
//! Labels come only from config names and the fixed sets of [`names`]: never a path, a header
//! value, a token or a key. Gauges that depend on time (seconds to expiry, provider state) are
//! computed from the live state at scrape time, in [`Metrics::render`].

pub mod names;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, TextEncoder,
};

pub use prometheus::Error as MetricsError;
pub use prometheus::{Registry, TEXT_FORMAT};

/// Upstream latency buckets, 100 µs to 30 s: a loopback vendor answers in well under a
/// millisecond, a slow report endpoint in tens of seconds.
const UPSTREAM_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Token request latency buckets, 1 ms to the 10 s token request timeout.
const TOKEN_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every authrelay metric, registered once into one registry.
pub struct Metrics {
    registry: Registry,
    token_requests: IntCounterVec,
    token_request_duration: HistogramVec,
    token_cache: IntCounterVec,
    token_expiry: GaugeVec,
    retries: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    relay_errors: IntCounterVec,
    caller_requests: IntCounterVec,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
    provider_state: IntGaugeVec,
    credentials_rejected: IntGauge,
    accounts_reauthorization_required: IntGauge,
    store_errors: IntCounter,
    store_up: IntGauge,
    /// A scrape resets and refills the time-dependent gauges: one scrape at a time.
    scrape: Mutex<()>,
}

/// The handles of one provider's token cache.
#[derive(Clone)]
pub struct ProviderMetrics {
    /// Indexed by [`TokenOutcome`].
    requests: [IntCounter; 4],
    duration: Histogram,
    hit: IntCounter,
    miss: IntCounter,
    early_renewal: IntCounter,
}

/// How a token request ended, as `authrelay_token_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    Ok = 0,
    /// The vendor rejected the credentials.
    Rejected = 1,
    /// 5xx, timeout, connection failure, unusable answer.
    Transient = 2,
    RateLimited = 3,
}

/// The handles of one route.
pub struct RouteMetrics {
    /// Indexed like [`names::STATUS_CLASSES`].
    upstream_requests: [IntCounter; 6],
    upstream_duration: Histogram,
    retry_recovered: IntCounter,
    retry_failed: IntCounter,
    retry_not_replayable: IntCounter,
}

/// The handles the request path of one state uses: one [`RouteMetrics`] per route, and the
/// relay error counter.
pub struct ProxyMetrics {
    routes: HashMap<String, RouteMetrics>,
    relay_errors: IntCounterVec,
    caller_requests: IntCounterVec,
}

/// What a scrape shows of one provider (later: one provider and account).
#[derive(Debug, Clone, Copy)]
pub struct ProviderGauges<'a> {
    pub provider: &'a str,
    /// [`names::NO_ACCOUNT`] for a provider's own token.
    pub account: &'a str,
    /// One of [`names::PROVIDER_STATES`].
    pub state: &'static str,
    /// Time left on the cached token; `None` when none is cached or it never expires.
    pub expires_in: Option<Duration>,
}

// === impl Metrics ===

impl Metrics {
    /// Creates every metric and registers it into `registry`. Fails only if `registry` already
    /// holds authrelay's metrics.
    pub fn new(registry: Registry) -> Result<Metrics, MetricsError> {
        use names::*;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
        };
        let metrics = Metrics {
            token_requests: counter(
                TOKEN_REQUESTS_TOTAL,
                "Token endpoint requests by provider, grant and outcome.",
                &[PROVIDER, GRANT, OUTCOME],
            )?,
            token_request_duration: histogram(
                TOKEN_REQUEST_DURATION_SECONDS,
                "Time a token endpoint took to answer.",
                &[PROVIDER],
                &TOKEN_BUCKETS,
            )?,
            token_cache: counter(
                TOKEN_CACHE_TOTAL,
                "Token cache lookups by provider and result (hit, miss, early_renewal).",
                &[PROVIDER, RESULT],
            )?,
            token_expiry: GaugeVec::new(
                Opts::new(
                    TOKEN_EXPIRY_SECONDS,
                    "Seconds until the cached token expires (0 once expired).",
                ),
                &[PROVIDER, ACCOUNT],
            )?,
            retries: counter(
                RETRIES_TOTAL,
                "Replays after an upstream 401, by route and outcome.",
                &[ROUTE, OUTCOME],
            )?,
            upstream_requests: counter(
                UPSTREAM_REQUESTS_TOTAL,
                "Requests sent upstream (replays included), by route and response status class.",
                &[ROUTE, STATUS_CLASS],
            )?,
            upstream_duration: histogram(
                UPSTREAM_DURATION_SECONDS,
                "Time from sending a request upstream to its response headers.",
                &[ROUTE],
                &UPSTREAM_BUCKETS,
            )?,
            relay_errors: counter(
                RELAY_ERRORS_TOTAL,
                "Answers authrelay made itself, by X-Relay-Error code.",
                &[CODE],
            )?,
            caller_requests: counter(
                CALLER_REQUESTS_TOTAL,
                "Requests answered, by caller, route and status class of the answer.",
                &[CALLER, ROUTE, STATUS_CLASS],
            )?,
            config_reloads: counter(
                CONFIG_RELOADS_TOTAL,
                "Configuration reloads by outcome.",
                &[OUTCOME],
            )?,
            config_last_reload_success: Gauge::with_opts(Opts::new(
                CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
                "Unix time of the last configuration loaded successfully (start-up included).",
            ))?,
            provider_state: IntGaugeVec::new(
                Opts::new(
                    PROVIDER_STATE,
                    "1 for the current state of each provider and account, 0 for the others.",
                ),
                &[PROVIDER, ACCOUNT, STATE],
            )?,
            credentials_rejected: IntGauge::with_opts(Opts::new(
                CREDENTIALS_REJECTED,
                "Providers whose credentials the vendor rejected.",
            ))?,
            accounts_reauthorization_required: IntGauge::with_opts(Opts::new(
                ACCOUNTS_REAUTHORIZATION_REQUIRED,
                "Accounts whose grant must be authorized again by a person.",
            ))?,
            store_errors: IntCounter::with_opts(Opts::new(
                STORE_ERRORS_TOTAL,
                "Token store operations that failed or timed out (Redis in a fleet).",
            ))?,
            store_up: IntGauge::with_opts(Opts::new(
                STORE_UP,
                "1 while the token store answers, 0 while a fleet replica cannot reach Redis.",
            ))?,
            scrape: Mutex::new(()),
            registry,
        };
        metrics.register_all()?;
        // Series of fixed label sets start at 0, so `increase()` sees their first event.
        for outcome in [RELOAD_OK, RELOAD_FAILED] {
            metrics.config_reloads.with_label_values(&[outcome]);
        }
        for code in RELAY_ERROR_CODES {
            metrics.relay_errors.with_label_values(&[code]);
        }
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), MetricsError> {
        let collectors: [Box<dyn prometheus::core::Collector>; 16] = [
            Box::new(self.token_requests.clone()),
            Box::new(self.token_request_duration.clone()),
            Box::new(self.token_cache.clone()),
            Box::new(self.token_expiry.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.upstream_requests.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.relay_errors.clone()),
            Box::new(self.caller_requests.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.config_last_reload_success.clone()),
            Box::new(self.provider_state.clone()),
            Box::new(self.credentials_rejected.clone()),
            Box::new(self.accounts_reauthorization_required.clone()),
            Box::new(self.store_errors.clone()),
            Box::new(self.store_up.clone()),
        ];
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The handles of `provider`'s token cache; `grant` is its grant's name
    /// (`client_credentials`, `refresh_token`).
    pub fn provider(&self, provider: &str, grant: &str) -> ProviderMetrics {
        use names::*;
        let request = |outcome| {
            self.token_requests
                .with_label_values(&[provider, grant, outcome])
        };
        let cache = |result| self.token_cache.with_label_values(&[provider, result]);
        ProviderMetrics {
            requests: [
                request(TOKEN_OK),
                request(TOKEN_REJECTED),
                request(TOKEN_TRANSIENT),
                request(TOKEN_RATE_LIMITED),
            ],
            duration: self.token_request_duration.with_label_values(&[provider]),
            hit: cache(CACHE_HIT),
            miss: cache(CACHE_MISS),
            early_renewal: cache(CACHE_EARLY_RENEWAL),
        }
    }

    /// The handles of the request path for the routes named `routes`.
    pub fn proxy<'a>(&self, routes: impl IntoIterator<Item = &'a str>) -> ProxyMetrics {
        let routes = routes
            .into_iter()
            .map(|route| (route.to_string(), self.route(route)))
            .collect();
        ProxyMetrics {
            routes,
            relay_errors: self.relay_errors.clone(),
            caller_requests: self.caller_requests.clone(),
        }
    }

    fn route(&self, route: &str) -> RouteMetrics {
        use names::*;
        let retry = |outcome| self.retries.with_label_values(&[route, outcome]);
        RouteMetrics {
            upstream_requests: STATUS_CLASSES
                .map(|class| self.upstream_requests.with_label_values(&[route, class])),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
            retry_recovered: retry(RETRY_RECOVERED),
            retry_failed: retry(RETRY_FAILED),
            retry_not_replayable: retry(RETRY_NOT_REPLAYABLE),
        }
    }

    /// Counts a configuration reload; a good one also sets the last-success time.
    pub fn record_reload(&self, ok: bool) {
        let outcome = if ok {
            names::RELOAD_OK
        } else {
            names::RELOAD_FAILED
        };
        self.config_reloads.with_label_values(&[outcome]).inc();
        if ok {
            self.record_config_loaded();
        }
    }

    /// Sets the last-success time without counting a reload (the configuration of start-up).
    pub fn record_config_loaded(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.config_last_reload_success.set(now.as_secs_f64());
    }

    /// Takes the store's health for the next scrape; `errors` is its count since start.
    pub fn record_store_health(&self, reachable: bool, errors: u64) {
        self.store_up.set(i64::from(reachable));
        let counted = self.store_errors.get();
        if errors > counted {
            self.store_errors.inc_by(errors - counted);
        }
    }

    /// Sets the time-dependent gauges from `providers` (the live state, now) and encodes every
    /// metric of the registry in the text format ([`TEXT_FORMAT`]). Providers left out (removed
    /// by a reload) disappear from those gauges.
    pub fn render<'a>(
        &self,
        providers: impl IntoIterator<Item = ProviderGauges<'a>>,
    ) -> Result<String, MetricsError> {
        let _one_scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.token_expiry.reset();
        self.provider_state.reset();
        let (mut rejected, mut reauthorize) = (0, 0);
        for gauges in providers {
            let ProviderGauges {
                provider,
                account,
                state,
                expires_in,
            } = gauges;
            for candidate in names::PROVIDER_STATES {
                self.provider_state
                    .with_label_values(&[provider, account, candidate])
                    .set(i64::from(candidate == state));
            }
            if let Some(remaining) = expires_in {
                self.token_expiry
                    .with_label_values(&[provider, account])
                    .set(remaining.as_secs_f64());
            }
            rejected += i64::from(state == names::STATE_CREDENTIALS_REJECTED);
            reauthorize += i64::from(
                state == names::STATE_REAUTHORIZATION_REQUIRED && account != names::NO_ACCOUNT,
            );
        }
        self.credentials_rejected.set(rejected);
        self.accounts_reauthorization_required.set(reauthorize);
        let mut body = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut body)?;
        String::from_utf8(body).map_err(|error| MetricsError::Msg(error.to_string()))
    }
}

// === impl ProviderMetrics ===

impl ProviderMetrics {
    /// One token endpoint request and how long it took.
    pub fn token_request(&self, outcome: TokenOutcome, elapsed: Duration) {
        self.requests[outcome as usize].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn cache_hit(&self) {
        self.hit.inc();
    }

    pub fn cache_miss(&self) {
        self.miss.inc();
    }

    /// A hit that also started a background renewal.
    pub fn cache_early_renewal(&self) {
        self.early_renewal.inc();
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// One upstream request: its response status (`None`: no response) and time to headers.
    pub fn upstream(&self, status: Option<StatusCode>, elapsed: Duration) {
        let class = match status.map(|status| status.as_u16() / 100) {
            Some(class @ 1..=5) => usize::from(class - 1),
            _ => 5,
        };
        self.upstream_requests[class].inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    /// A replay after a 401 answered something else.
    pub fn retry_recovered(&self) {
        self.retry_recovered.inc();
    }

    /// A replay after a 401 got a 401 again, or no fresh token.
    pub fn retry_failed(&self) {
        self.retry_failed.inc();
    }

    /// A 401 on a request whose body was too large to keep for a replay.
    pub fn retry_not_replayable(&self) {
        self.retry_not_replayable.inc();
    }
}

// === impl ProxyMetrics ===

impl ProxyMetrics {
    /// The handles of route `name`; `None` only for a route of another state.
    pub fn route(&self, name: &str) -> Option<&RouteMetrics> {
        self.routes.get(name)
    }

    /// An answer authrelay made itself, by its `X-Relay-Error` code (a fixed set).
    pub fn relay_error(&self, code: &'static str) {
        self.relay_errors.with_label_values(&[code]).inc();
    }

    /// One answered request, by caller (a config name or [`names::CALLER_ANONYMOUS`] /
    /// [`names::CALLER_UNKNOWN`]), route (or [`names::NO_ROUTE`]) and status class.
    pub fn caller_request(&self, caller: &str, route: &str, status: StatusCode) {
        let class = names::STATUS_CLASSES[usize::from(status.as_u16() / 100).clamp(1, 5) - 1];
        self.caller_requests
            .with_label_values(&[caller, route, class])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

    use super::*;

    #[test]
    fn renders_contract_names_and_scrape_time_gauges() {
        let metrics = Metrics::new(Registry::new()).unwrap();
        let provider = metrics.provider("cross-river", "client_credentials");
        provider.token_request(TokenOutcome::Ok, Duration::from_millis(3));
        provider.cache_hit();
        let proxy = metrics.proxy(["cr"]);
        let route = proxy.route("cr").unwrap();
        route.upstream(Some(StatusCode::NO_CONTENT), Duration::from_micros(300));
        route.upstream(None, Duration::from_secs(1));
        proxy.relay_error("no_route");
        metrics.record_reload(false);
        let body = metrics
            .render([ProviderGauges {
                provider: "cross-river",
                account: names::NO_ACCOUNT,
                state: names::STATE_CREDENTIALS_REJECTED,
                expires_in: Some(Duration::from_secs(90)),
            }])
            .unwrap();
        for line in [
            r#"authrelay_token_requests_total{grant="client_credentials",outcome="ok",provider="cross-river"} 1"#,
            r#"authrelay_token_cache_total{provider="cross-river",result="hit"} 1"#,
            r#"authrelay_upstream_requests_total{route="cr",status_class="2xx"} 1"#,
            r#"authrelay_upstream_requests_total{route="cr",status_class="error"} 1"#,
            r#"authrelay_relay_errors_total{code="no_route"} 1"#,
            r#"authrelay_config_reloads_total{outcome="failed"} 1"#,
            r#"authrelay_config_reloads_total{outcome="ok"} 0"#,
            r#"authrelay_token_expiry_seconds{account="",provider="cross-river"} 90"#,
            r#"authrelay_provider_state{account="",provider="cross-river",state="credentials_rejected"} 1"#,
            r#"authrelay_provider_state{account="",provider="cross-river",state="ok"} 0"#,
            "authrelay_credentials_rejected 1",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} missing in\n{body}");
        }
        // A provider no longer in the state leaves the scrape-time gauges.
        let body = metrics.render([]).unwrap();
        assert!(!body.contains("authrelay_provider_state{"), "{body}");
        assert!(body.contains("authrelay_credentials_rejected 0"), "{body}");
    }
}
