//! `/metrics` on the admin listener: Prometheus text whose counters match what the sandbox saw,
//! scrape-time gauges for each provider, and never a token, secret, path or query in it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::collections::BTreeMap;

use authrelay::sandbox::{
    CROSS_RIVER_CLIENT_ID, CROSS_RIVER_CLIENT_SECRET, CULTURE_AMP_CLIENT_SECRET, PARTNER_PAT,
    Sandbox, Vendor,
};
use support::{TestProxy, assert_relay_error, client, echo, echoed_header, get, loopback};

/// A second Cross River client whose secret the proxy gets wrong.
const WRONG_CLIENT: &str = "cr-wrong-client";
const WRONG_CLIENT_RIGHT_SECRET: &str = "cr-wrong-client-right-secret";
const WRONG_CLIENT_WRONG_SECRET: &str = "cr-wrong-client-wrong-secret";

const YAML: &str = r#"
listeners:
  - bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
providers:
  cross-river:
    preset: cross-river
    token_url: {sandbox}/cross-river/connect/token
    client_id: cr-demo-client
    client_secret: cr-demo-secret
    scopes: [payments.read]
  rejected:
    preset: cross-river
    token_url: {sandbox}/cross-river/connect/token
    client_id: cr-wrong-client
    client_secret: cr-wrong-client-wrong-secret
  cultureamp:
    preset: cultureamp
    token_url: {sandbox}/cultureamp/v1/oauth2/token
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  partner:
    grant: static
    token: pat-demo-token
routes:
  - match: { path_prefix: /cross-river }
    upstream: {sandbox}/cross-river/api
    strip_prefix: true
    provider: cross-river
  - match: { path_prefix: /rejected }
    upstream: {sandbox}/cross-river/api
    strip_prefix: true
    provider: rejected
  - match: { path_prefix: /cultureamp }
    upstream: {sandbox}/cultureamp/v1
    strip_prefix: true
    provider: cultureamp
  - match: { path_prefix: /partner }
    upstream: {sandbox}/partner/api
    strip_prefix: true
    provider: partner
"#;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The scraped body and its samples.
struct Scrape {
    body: String,
    samples: Vec<Sample>,
}

#[tokio::test]
async fn metrics_match_the_sandbox_and_hold_no_secret() {
    let vendor = Sandbox::new()
        .client(Vendor::CrossRiver, WRONG_CLIENT, WRONG_CLIENT_RIGHT_SECRET)
        .start(loopback())
        .await
        .unwrap();
    let proxy = TestProxy::start(YAML, &vendor).await;
    let mut tokens = Vec::new();

    for i in 0..3 {
        let response = get(
            &proxy,
            &format!("/cross-river/path-marker?q=query-marker-{i}"),
        )
        .await;
        tokens.extend(echoed_header(&echo(response).await, "authorization"));
    }
    let response = get(&proxy, "/partner/items").await;
    tokens.extend(echoed_header(&echo(response).await, "authorization"));
    for _ in 0..2 {
        let response = get(&proxy, "/rejected/x").await;
        assert_relay_error(&response, 503, "credentials_rejected");
    }
    assert_relay_error(&get(&proxy, "/nowhere").await, 404, "no_route");
    assert_eq!(get(&proxy, "/cross-river/_status/503").await.status(), 503);
    // The vendor forgets its tokens: the next request gets 401, a fresh token and one replay.
    vendor.revoke_all_tokens();
    let response = get(&proxy, "/cross-river/after-revoke").await;
    tokens.extend(echoed_header(&echo(response).await, "authorization"));

    let scrape = scrape(&proxy).await;
    let value = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);

    // Token requests, as the sandbox counted them.
    assert_eq!(vendor.token_requests(CROSS_RIVER_CLIENT_ID), 2);
    let ok = [("provider", "cross-river"), ("outcome", "ok")];
    assert_eq!(value("authrelay_token_requests_total", &ok), 2.0);
    let cc = [("provider", "cross-river"), ("grant", "client_credentials")];
    assert_eq!(value("authrelay_token_requests_total", &cc), 2.0, "ok only");
    assert_eq!(vendor.token_requests(WRONG_CLIENT), 1);
    let rejected = [("provider", "rejected"), ("outcome", "rejected")];
    assert_eq!(value("authrelay_token_requests_total", &rejected), 1.0);
    let duration = [("provider", "cross-river")];
    assert_eq!(
        value("authrelay_token_request_duration_seconds_count", &duration),
        2.0
    );

    // Cache: the first request and the one after the 401 missed; the others hit.
    let cache = |result| {
        value(
            "authrelay_token_cache_total",
            &[("provider", "cross-river"), ("result", result)],
        )
    };
    assert_eq!(cache("miss"), 2.0);
    assert_eq!(
        cache("hit"),
        4.0,
        "two warm requests, the 503, the revoked one"
    );
    assert_eq!(cache("early_renewal"), 0.0);

    // The 401 retry, and the upstream requests as the sandbox saw them.
    let retry = |outcome| {
        value(
            "authrelay_retries_total",
            &[("route", "cross-river"), ("outcome", outcome)],
        )
    };
    assert_eq!(retry("recovered"), 1.0);
    assert_eq!(retry("failed"), 0.0);
    let class = |route, class| {
        value(
            "authrelay_upstream_requests_total",
            &[("route", route), ("status_class", class)],
        )
    };
    assert_eq!(class("cross-river", "2xx"), 4.0);
    assert_eq!(class("cross-river", "4xx"), 1.0);
    assert_eq!(class("cross-river", "5xx"), 1.0);
    assert_eq!(class("partner", "2xx"), 1.0);
    assert_eq!(class("rejected", "2xx") + class("rejected", "error"), 0.0);
    let upstream_total: f64 = scrape
        .all("authrelay_upstream_requests_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(upstream_total, vendor.stats().api_requests as f64);
    let cr_route = [("route", "cross-river")];
    assert_eq!(
        value("authrelay_upstream_duration_seconds_count", &cr_route),
        6.0
    );

    // Answers authrelay made itself.
    let relay = |code| value("authrelay_relay_errors_total", &[("code", code)]);
    assert_eq!(relay("credentials_rejected"), 2.0);
    assert_eq!(relay("no_route"), 1.0);

    // Gauges computed at scrape time.
    let state = |provider, state| {
        value(
            "authrelay_provider_state",
            &[("provider", provider), ("account", ""), ("state", state)],
        )
    };
    assert_eq!(state("cross-river", "ok"), 1.0);
    assert_eq!(state("cross-river", "backing_off"), 0.0);
    assert_eq!(state("rejected", "credentials_rejected"), 1.0);
    assert_eq!(state("rejected", "ok"), 0.0);
    assert_eq!(state("cultureamp", "not_yet_used"), 1.0);
    assert_eq!(state("partner", "ok"), 1.0);
    for provider in ["cross-river", "rejected", "cultureamp", "partner"] {
        let states: f64 = scrape
            .all("authrelay_provider_state")
            .filter(|s| s.labels["provider"] == provider)
            .map(|s| s.value)
            .sum();
        assert_eq!(states, 1.0, "{provider}: exactly one current state");
    }
    assert_eq!(value("authrelay_credentials_rejected", &[]), 1.0);
    assert_eq!(
        value("authrelay_accounts_reauthorization_required", &[]),
        0.0
    );
    let expiry = value(
        "authrelay_token_expiry_seconds",
        &[("provider", "cross-river"), ("account", "")],
    );
    assert!((3500.0..=3600.0).contains(&expiry), "{expiry}");
    assert_eq!(
        scrape.all("authrelay_token_expiry_seconds").count(),
        1,
        "only cached tokens that expire"
    );
    assert_eq!(
        value("authrelay_config_reloads_total", &[("outcome", "ok")]),
        0.0
    );
    assert!(
        value(
            "authrelay_config_last_reload_success_timestamp_seconds",
            &[]
        ) > 1.7e9
    );

    // Nothing issued, accepted or asked for appears: tokens, secrets, paths, query strings.
    assert!(tokens.len() >= 5, "{tokens:?}");
    let mut forbidden: Vec<String> = tokens
        .iter()
        .map(|value| value.trim_start_matches("Bearer ").to_string())
        .collect();
    forbidden.extend(
        [
            CROSS_RIVER_CLIENT_SECRET,
            CULTURE_AMP_CLIENT_SECRET,
            PARTNER_PAT,
            "cr-demo-secret",
            "ca-demo-secret",
            "pat-demo-token",
            WRONG_CLIENT_WRONG_SECRET,
            WRONG_CLIENT_RIGHT_SECRET,
            "path-marker",
            "query-marker",
            "nowhere",
            "after-revoke",
        ]
        .map(String::from),
    );
    for needle in &forbidden {
        assert!(!needle.is_empty());
        assert!(
            !scrape.body.contains(needle.as_str()),
            "{needle} in the metrics"
        );
    }
}

#[tokio::test]
async fn a_second_401_counts_a_failed_retry() {
    let vendor = support::sandbox().await;
    let proxy = TestProxy::start(YAML, &vendor).await;
    assert_eq!(get(&proxy, "/cross-river/_status/401").await.status(), 401);
    let scrape = scrape(&proxy).await;
    let retry = |outcome| {
        scrape.value(
            "authrelay_retries_total",
            &[("route", "cross-river"), ("outcome", outcome)],
        )
    };
    assert_eq!(retry("failed"), 1.0);
    assert_eq!(retry("recovered"), 0.0);
    assert_eq!(
        scrape.value(
            "authrelay_upstream_requests_total",
            &[("route", "cross-river"), ("status_class", "4xx")]
        ),
        vendor.stats().api_requests as f64,
        "the request and its replay"
    );
}

#[tokio::test]
async fn token_endpoint_failures_count_by_outcome_and_show_backing_off() {
    let vendor = support::sandbox().await;
    vendor.fail_next_token_requests(1, authrelay::sandbox::Failure::ServerError);
    let proxy = TestProxy::start(YAML, &vendor).await;
    assert_relay_error(
        &get(&proxy, "/cross-river/x").await,
        503,
        "token_unavailable",
    );
    let scrape = scrape(&proxy).await;
    let value = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);
    let transient = [("provider", "cross-river"), ("outcome", "transient")];
    assert_eq!(value("authrelay_token_requests_total", &transient), 1.0);
    assert_eq!(vendor.token_requests(CROSS_RIVER_CLIENT_ID), 1);
    let backing_off = [
        ("provider", "cross-river"),
        ("account", ""),
        ("state", "backing_off"),
    ];
    assert_eq!(value("authrelay_provider_state", &backing_off), 1.0);
    assert_eq!(
        value(
            "authrelay_relay_errors_total",
            &[("code", "token_unavailable")]
        ),
        1.0
    );
    let snapshot = proxy.state.load().credentials.snapshot();
    let status = snapshot
        .iter()
        .find(|s| s.provider == "cross-river")
        .unwrap();
    assert!(
        status.retry_in.is_some() && status.error.is_some(),
        "{status:?}"
    );
}

#[tokio::test]
async fn metrics_answer_in_the_prometheus_text_format() {
    let vendor = support::sandbox().await;
    let proxy = TestProxy::start(YAML, &vendor).await;
    assert_eq!(get(&proxy, "/cross-river/x").await.status(), 200);
    let response = client()
        .get(format!("http://{}/metrics", proxy.admin.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let body = response.text().await.unwrap();
    for name in [
        "authrelay_token_requests_total",
        "authrelay_token_request_duration_seconds",
        "authrelay_token_cache_total",
        "authrelay_token_expiry_seconds",
        "authrelay_retries_total",
        "authrelay_upstream_requests_total",
        "authrelay_upstream_duration_seconds",
        "authrelay_relay_errors_total",
        "authrelay_config_reloads_total",
        "authrelay_config_last_reload_success_timestamp_seconds",
        "authrelay_provider_state",
        "authrelay_credentials_rejected",
        "authrelay_accounts_reauthorization_required",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{body}"
        );
    }
}

#[tokio::test]
async fn early_renewal_counts_renewals_started_not_lookups() {
    let vendor = support::sandbox().await;
    vendor.set_token_ttl(std::time::Duration::from_secs(4));
    let proxy = TestProxy::start(YAML, &vendor).await;
    // Through the 1 s renewal window of the first 4 s token, many lookups, one renewal.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while vendor.token_requests(CROSS_RIVER_CLIENT_ID) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no renewal");
        assert_eq!(get(&proxy, "/cross-river/x").await.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(&proxy, "/cross-river/x").await.status(), 200);
    }
    let scrape = scrape(&proxy).await;
    let early = [("provider", "cross-river"), ("result", "early_renewal")];
    assert_eq!(scrape.value("authrelay_token_cache_total", &early), 1.0);
}

/// `GET /metrics` on the proxy's admin listener, parsed.
async fn scrape(proxy: &TestProxy) -> Scrape {
    let admin = proxy
        .admin
        .expect("the test config binds an admin listener");
    let body = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = body
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparsable sample: {line}")))
        .collect();
    Scrape { body, samples }
}

/// `name{k="v",...} value` or `name value`. Label values here never hold quotes or escapes.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((
                key.to_string(),
                value.strip_prefix('"')?.strip_suffix('"')?.to_string(),
            ))
        })
        .collect::<Option<_>>()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        value => value.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

// === impl Scrape ===

impl Scrape {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |sample| sample.name == name)
    }

    /// The sum of the samples of `name` that carry every label of `labels`; fails if none does.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .all(name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .collect();
        assert!(
            !matching.is_empty(),
            "no {name} with {labels:?} in\n{}",
            self.body
        );
        matching.iter().map(|sample| sample.value).sum()
    }
}
