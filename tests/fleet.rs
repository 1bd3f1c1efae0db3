//! Fleet mode: three replicas share a real `redis-server` and the sandbox vendors. One token
//! request per credential across the fleet (cold start, 401 storm, lock-out guard), refresh-token
//! rotation without reuse, Redis dying under traffic, and records Redis cannot forge.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use authrelay::sandbox::CROSSBEAM_CLIENT_ID;
use authrelay::{Config, Server};
use support::fleet::{KEY, admin_json, admin_text, fleet_yaml, replicas, wait_for_status};
use support::redis::RedisServer;
use support::{TestProxy, VENDORS_YAML, assert_relay_error, client, echo, echoed_header, sandbox};
use tokio::task::JoinSet;

const OTHER_KEY: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
const CROSS_RIVER: &str = "cr-demo-client";

/// Sends `count` concurrent GETs of `path`, spread over `proxies`; returns each status and the
/// `Authorization` the vendor saw (empty when the proxy answered itself).
async fn spread(proxies: &[TestProxy], path: &str, count: usize) -> Vec<(u16, String)> {
    let mut requests = JoinSet::new();
    for index in 0..count {
        let url = proxies[index % proxies.len()].url(path);
        requests.spawn(async move {
            let response = client().get(url).send().await.expect("request");
            let status = response.status().as_u16();
            if status != 200 {
                return (status, String::new());
            }
            let echoed = echo(response).await;
            let authorization = echoed_header(&echoed, "authorization")
                .pop()
                .unwrap_or_default();
            (status, authorization)
        });
    }
    requests.join_all().await
}

fn tokens(outcomes: &[(u16, String)]) -> BTreeSet<String> {
    outcomes.iter().map(|(_, token)| token.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_cold_requests_over_three_replicas_make_one_token_request() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let yaml = fleet_yaml(VENDORS_YAML, &redis, KEY, "");
    let proxies = replicas(3, &yaml, &vendor).await;

    let outcomes = spread(&proxies, "/cross-river/payments", 90).await;

    assert!(
        outcomes.iter().all(|(status, _)| *status == 200),
        "{outcomes:?}"
    );
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    assert_eq!(
        tokens(&outcomes).len(),
        1,
        "every replica injects the same token"
    );
    // The record in Redis is sealed: the token is nowhere in its bytes.
    let token = tokens(&outcomes).pop_first().unwrap();
    let token = token.trim_start_matches("Bearer ");
    let keys = redis.command_bytes(&[b"KEYS", b"authrelay:cred/*"]);
    assert_eq!(keys.len(), 1, "one record");
    for key in keys {
        let key = String::from_utf8(key).unwrap();
        let fields = redis.command_bytes(&[b"HGETALL", key.as_bytes()]);
        for field in fields {
            assert!(
                !String::from_utf8_lossy(&field).contains(token),
                "{key} holds the token in clear"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_storm_across_the_fleet_causes_one_refresh() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let yaml = fleet_yaml(VENDORS_YAML, &redis, KEY, "");
    let proxies = replicas(3, &yaml, &vendor).await;
    let warm = spread(&proxies, "/cross-river/payments", 3).await;
    assert_eq!(tokens(&warm).len(), 1, "{warm:?}");
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);

    vendor.revoke_all_tokens();
    let outcomes = spread(&proxies, "/cross-river/payments", 90).await;

    assert!(
        outcomes.iter().all(|(status, _)| *status == 200),
        "{outcomes:?}"
    );
    assert_eq!(
        vendor.token_requests(CROSS_RIVER),
        2,
        "one refresh for the fleet"
    );
    let after = tokens(&outcomes);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after.is_disjoint(&tokens(&warm)),
        "the refused token is not used again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_tried_once_by_a_fleet_restarted_twice() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let wrong = VENDORS_YAML.replace(
        "client_secret: cr-demo-secret",
        "client_secret: not-the-secret",
    );
    let yaml = fleet_yaml(&wrong, &redis, KEY, "");
    for _start in 0..3 {
        let (a, b, c) = tokio::join!(
            TestProxy::start(&yaml, &vendor),
            TestProxy::start(&yaml, &vendor),
            TestProxy::start(&yaml, &vendor),
        );
        let proxies = [a, b, c];
        let outcomes = spread(&proxies, "/cross-river/payments", 30).await;
        assert!(
            outcomes.iter().all(|(status, _)| *status == 503),
            "{outcomes:?}"
        );
        let response = support::get(&proxies[2], "/cross-river/payments").await;
        assert_relay_error(&response, 503, "credentials_rejected");
        for proxy in proxies {
            proxy.shutdown().await;
        }
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    assert!(!vendor.stats().clients[CROSS_RIVER].locked);
}

fn crossbeam_yaml(refresh_token: &str) -> String {
    format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
providers:
  crossbeam:
    preset: crossbeam
    grant: refresh_token
    token_url: "{{sandbox}}/crossbeam/oauth/token"
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    refresh_token: "{refresh_token}"
routes:
  - match: {{ path_prefix: /crossbeam }}
    strip_prefix: true
    upstream: "{{sandbox}}/crossbeam/api"
    provider: crossbeam
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrency_never_presents_a_refresh_token_twice() {
    let vendor = sandbox().await;
    vendor.set_token_ttl(Duration::from_secs(2));
    let redis = RedisServer::start();
    let refresh_token = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);
    let yaml = fleet_yaml(&crossbeam_yaml(&refresh_token), &redis, KEY, "");
    let proxies = replicas(3, &yaml, &vendor).await;

    let mut seen = BTreeSet::new();
    // Renewals before expiry (2 s tokens), and 401s from revoked access tokens, on all three.
    for round in 0..8 {
        if round % 3 == 2 {
            vendor.revoke_access_tokens();
        }
        let outcomes = spread(&proxies, "/crossbeam/v0.1/partners", 30).await;
        assert!(
            outcomes.iter().all(|(status, _)| *status == 200),
            "round {round}: {outcomes:?}"
        );
        seen.extend(tokens(&outcomes));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    let stats = &vendor.stats().clients[CROSSBEAM_CLIENT_ID];
    assert_eq!(
        stats.families_revoked, 0,
        "a retired refresh token was presented"
    );
    assert!(stats.refresh_grants >= 3, "{stats:?}");
    assert_eq!(
        stats.token_requests, stats.refresh_grants,
        "every token request was a successful rotation"
    );
    assert!(seen.len() >= 3, "tokens were renewed: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_under_traffic_fails_no_request_that_had_a_token() {
    let vendor = sandbox().await;
    let mut redis = RedisServer::start();
    let yaml = fleet_yaml(VENDORS_YAML, &redis, KEY, "");
    let proxies = replicas(3, &yaml, &vendor).await;
    let warm = spread(&proxies, "/cross-river/payments", 6).await;
    assert!(warm.iter().all(|(status, _)| *status == 200), "{warm:?}");
    assert_eq!(
        wait_for_status(&proxies[0], "ready", Duration::from_secs(3)).await["status"],
        "ready"
    );

    redis.kill();
    let during = spread(&proxies, "/cross-river/payments", 60).await;
    assert!(
        during.iter().all(|(status, _)| *status == 200),
        "{during:?}"
    );
    assert_eq!(tokens(&during), tokens(&warm));
    for proxy in &proxies {
        let readyz = wait_for_status(proxy, "degraded", Duration::from_secs(5)).await;
        assert_eq!(readyz["status"], "degraded", "{readyz}");
        assert_eq!(readyz["store"]["reachable"], false, "{readyz}");
    }
    let metrics = admin_text(&proxies[0], "/metrics").await;
    assert!(metrics.contains("authrelay_store_up 0"), "{metrics}");
    let errors = metrics
        .lines()
        .find_map(|line| line.strip_prefix("authrelay_store_errors_total "))
        .and_then(|count| count.parse::<u64>().ok())
        .expect("authrelay_store_errors_total");
    assert!(errors > 0);

    // Cross River is lockout-sensitive: without Redis no replica requests a token on its own.
    vendor.revoke_all_tokens();
    let refused = support::get(&proxies[1], "/cross-river/payments").await;
    assert_relay_error(&refused, 503, "store_unavailable");
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    // A provider without a lock-out may request alone.
    assert_eq!(
        support::get(&proxies[1], "/cultureamp/employees")
            .await
            .status(),
        200
    );

    redis.restart();
    for proxy in &proxies {
        let readyz = wait_for_status(proxy, "ready", Duration::from_secs(10)).await;
        assert_eq!(readyz["status"], "ready", "{readyz}");
    }
    // Once the refused replica's backoff is over, the fleet renews with one request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let outcomes = spread(&proxies, "/cross-river/payments", 9).await;
        if outcomes.iter().all(|(status, _)| *status == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{outcomes:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        vendor.token_requests(CROSS_RIVER) <= 2 + 1,
        "at most one request per replica's backoff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_sealed_with_another_key_or_modified_is_a_miss() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    // Another fleet (another key, another prefix) on the same Redis stores its own token.
    let other = fleet_yaml(VENDORS_YAML, &redis, OTHER_KEY, ", prefix: \"other:\"");
    let other_proxy = TestProxy::start(&other, &vendor).await;
    let other_token = tokens(&spread(&[other_proxy], "/cross-river/payments", 1).await);
    let name = redis
        .command_bytes(&[b"SMEMBERS", b"other:index"])
        .into_iter()
        .map(|name| String::from_utf8(name).unwrap())
        .find(|name| name.starts_with("cred/cross-river/"))
        .expect("record name");

    // Its sealed record is planted under this fleet's name for the same credential.
    let mine = format!("authrelay:{name}");
    let theirs = format!("other:{name}");
    for field in ["sealed", "token_id"] {
        let value = redis.command_bytes(&[b"HGET", theirs.as_bytes(), field.as_bytes()]);
        redis.command_bytes(&[b"HSET", mine.as_bytes(), field.as_bytes(), &value[0]]);
    }
    redis.command(&["SADD", "authrelay:index", &name]);
    let yaml = fleet_yaml(VENDORS_YAML, &redis, KEY, "");
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let outcomes = spread(std::slice::from_ref(&proxy), "/cross-river/payments", 3).await;
    assert!(
        outcomes.iter().all(|(status, _)| *status == 200),
        "{outcomes:?}"
    );
    assert!(
        tokens(&outcomes).is_disjoint(&other_token),
        "the planted token was injected"
    );
    assert_eq!(
        vendor.token_requests(CROSS_RIVER),
        2,
        "the planted record was a miss"
    );
    proxy.shutdown().await;

    // One flipped byte in this fleet's own record: a miss as well.
    let mut sealed = redis
        .command_bytes(&[b"HGET", mine.as_bytes(), b"sealed"])
        .remove(0);
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    redis.command_bytes(&[b"HSET", mine.as_bytes(), b"sealed", &sealed]);
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let outcomes = spread(std::slice::from_ref(&proxy), "/cross-river/payments", 3).await;
    assert!(
        outcomes.iter().all(|(status, _)| *status == 200),
        "{outcomes:?}"
    );
    assert_eq!(
        vendor.token_requests(CROSS_RIVER),
        3,
        "the modified record was a miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_key_refuses_to_start() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let first = TestProxy::start(&fleet_yaml(VENDORS_YAML, &redis, KEY, ""), &vendor).await;
    let yaml = fleet_yaml(VENDORS_YAML, &redis, OTHER_KEY, "").replace("{sandbox}", &vendor.url());
    let config = Config::from_yaml(&yaml, std::path::Path::new(".")).expect("config");
    let error = match Server::bind(config).await {
        Ok(_) => panic!("a replica with another key started"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("different key"), "{error}");
    assert!(
        !error.contains(OTHER_KEY) && !error.contains(KEY),
        "{error}"
    );
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_refresh_token_is_never_replaced_by_an_unreadable_record() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let refresh_token = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);
    let yaml = fleet_yaml(&crossbeam_yaml(&refresh_token), &redis, KEY, "");
    let proxy = TestProxy::start(&yaml, &vendor).await;
    assert_eq!(
        support::get(&proxy, "/crossbeam/v0.1/partners")
            .await
            .status(),
        200
    );
    proxy.shutdown().await;
    let name = redis
        .command_bytes(&[b"SMEMBERS", b"authrelay:index"])
        .into_iter()
        .map(|name| String::from_utf8(name).unwrap())
        .find(|name| name.starts_with("cred/crossbeam/"))
        .expect("record name");
    let record = format!("authrelay:{name}");
    let mut sealed = redis
        .command_bytes(&[b"HGET", record.as_bytes(), b"sealed"])
        .remove(0);
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    redis.command_bytes(&[b"HSET", record.as_bytes(), b"sealed", &sealed]);

    // A restarted replica cannot read the newest refresh token: it must not fall back to the
    // configured one, which the vendor retired at the first rotation.
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let response = support::get(&proxy, "/crossbeam/v0.1/partners").await;
    assert_relay_error(&response, 503, "store_unavailable");
    let stats = &vendor.stats().clients[CROSSBEAM_CLIENT_ID];
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.families_revoked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_without_redis_serves_once_redis_answers() {
    let vendor = sandbox().await;
    let mut redis = RedisServer::start();
    let yaml = fleet_yaml(VENDORS_YAML, &redis, KEY, "");
    redis.kill();
    let proxy = TestProxy::start(&yaml, &vendor).await;
    assert_eq!(admin_json(&proxy, "/readyz").await["status"], "degraded");
    let refused = support::get(&proxy, "/cross-river/payments").await;
    assert_relay_error(&refused, 503, "store_unavailable");
    assert_eq!(vendor.token_requests(CROSS_RIVER), 0);

    redis.restart();
    let readyz = wait_for_status(&proxy, "ready", Duration::from_secs(10)).await;
    assert_eq!(readyz["status"], "ready", "{readyz}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while support::get(&proxy, "/cross-river/payments").await.status() != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no token after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    // The key was checked (and sealed) once Redis answered.
    assert_eq!(
        redis.command_bytes(&[b"EXISTS", b"authrelay:meta/key-check"]),
        [b"1".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_that_could_not_be_written_is_the_one_used_next() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let refresh_token = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);
    let yaml = fleet_yaml(&crossbeam_yaml(&refresh_token), &redis, KEY, "");
    let proxy = TestProxy::start(&yaml, &vendor).await;
    assert_eq!(
        support::get(&proxy, "/crossbeam/v0.1/partners")
            .await
            .status(),
        200
    );

    let name = redis
        .command_bytes(&[b"SMEMBERS", b"authrelay:index"])
        .into_iter()
        .map(|name| String::from_utf8(name).unwrap())
        .find(|name| name.starts_with("cred/crossbeam/"))
        .expect("record name");
    let lease = format!("authrelay:lease/{name}");

    // The vendor answers after a second; the replica's lease vanishes while the refresh is on
    // its way (as if it had expired), so the rotated refresh token cannot be written.
    vendor.set_latency(Duration::from_secs(1));
    vendor.revoke_access_tokens();
    let url = proxy.url("/crossbeam/v0.1/partners");
    let request = tokio::spawn(async move { client().get(url).send().await.expect("request") });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        redis.command_bytes(&[b"DEL", lease.as_bytes()]),
        [b"1".to_vec()]
    );
    let during = request.await.expect("request task");
    assert_ne!(during.status(), 200);
    let stats = &vendor.stats().clients[CROSSBEAM_CLIENT_ID];
    assert_eq!(
        stats.refresh_grants, 2,
        "the refresh reached the vendor: {stats:?}"
    );

    // Redis holds the retired refresh token; the replica uses the one it got.
    vendor.set_latency(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while support::get(&proxy, "/crossbeam/v0.1/partners")
        .await
        .status()
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no token after the lost lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = &vendor.stats().clients[CROSSBEAM_CLIENT_ID];
    assert_eq!(
        stats.families_revoked, 0,
        "a retired refresh token was presented"
    );
    assert_eq!(stats.refresh_grants, 3, "{stats:?}");
}
