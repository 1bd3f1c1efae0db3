//! One replay after an upstream 401, with a fresh token, only when the body could be kept.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::time::Duration;

use support::{TestProxy, VENDORS_YAML, client, echo, get, sandbox};

const CROSS_RIVER: &str = "cr-demo-client";

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn retries_once_after_refresh_on_401_with_the_body_intact() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    assert_eq!(get(&proxy, "/cross-river/warm").await.status(), 200);
    // The vendor forgets every token it issued: the cached one now gets 401.
    vendor.revoke_all_tokens();
    let body: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let response = client()
        .post(proxy.url("/cross-river/uploads"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let echoed = echo(response).await;
    assert_eq!(echoed["body_len"], body.len());
    assert_eq!(echoed["body_sha256"], sha256_hex(&body));
    assert_eq!(
        vendor.token_requests(CROSS_RIVER),
        2,
        "one token for the warm-up, one refresh"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_401s_cause_one_refresh() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    assert_eq!(get(&proxy, "/cross-river/warm").await.status(), 200);
    vendor.revoke_all_tokens();
    vendor.set_latency(Duration::from_millis(50));
    let client = client();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let request = client.get(proxy.url(&format!("/cross-river/x?i={i}")));
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);
}

#[tokio::test]
async fn a_second_401_goes_back_to_the_caller() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    // This vendor path always answers 401, whatever the token.
    let response = get(&proxy, "/cross-river/_status/401").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("x-relay-error").is_none());
    assert_eq!(
        vendor.token_requests(CROSS_RIVER),
        2,
        "first token, then exactly one refresh"
    );
    assert_eq!(
        vendor.stats().api_requests,
        2,
        "the request and its one replay"
    );
}

#[tokio::test]
async fn a_body_too_large_to_keep_is_not_replayed() {
    let vendor = sandbox().await;
    let yaml = VENDORS_YAML.replacen(
        "    provider: cross-river\n",
        "    provider: cross-river\n    max_replay_body: 1KiB\n",
        1,
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    assert_eq!(get(&proxy, "/cross-river/warm").await.status(), 200);
    vendor.revoke_all_tokens();
    let response = client()
        .post(proxy.url("/cross-river/x"))
        .body(vec![1u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        vendor.stats().api_requests,
        2,
        "warm-up and the one unreplayed request"
    );
    // The failed token was dropped: the next request gets a fresh one and succeeds.
    let response = client()
        .post(proxy.url("/cross-river/x"))
        .body(vec![1u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(echo(response).await["body_len"], 4096);
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);
}

#[tokio::test]
async fn forbidden_and_static_token_401s_pass_through_without_refresh() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let response = get(&proxy, "/cross-river/_status/403").await;
    assert_eq!(response.status(), 403);
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    // A static token cannot be refreshed: its 401 goes straight back, sent once.
    let before = vendor.stats().api_requests;
    let response = get(&proxy, "/partner/_status/401").await;
    assert_eq!(response.status(), 401);
    assert_eq!(vendor.stats().api_requests, before + 1);
}

#[tokio::test]
async fn a_vendor_refusing_every_token_does_not_cause_a_token_request_per_call() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    // This path answers 401 whatever the token: a permission problem, not an expired token.
    for _ in 0..10 {
        assert_eq!(get(&proxy, "/cross-river/_status/401").await.status(), 401);
    }
    // The first call refreshed once and its replay was refused: after that, a cool-down.
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);
    assert_eq!(
        vendor.stats().api_requests,
        11,
        "the first call's replay, then one attempt each"
    );
}
