//! Fleet tests' shared pieces: a config on a Redis store, several replicas, and the admin
//! listener's JSON.

use std::time::Duration;

use authrelay::sandbox::SandboxHandle;

use super::redis::RedisServer;
use super::{TestProxy, client};

/// The fleet's store key (base64 of 32 bytes of 7).
pub const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// `yaml` with the fleet store at `url`, sealed with `key`; `extra` adds store fields
/// (`, prefix: "x:"`). Tests give Redis 500 ms (the default is 50 ms) so that a loaded CI
/// machine does not turn a slow answer into an outage.
pub fn fleet_yaml_at(yaml: &str, url: &str, key: &str, extra: &str) -> String {
    format!(
        "{yaml}\nstore: {{ kind: redis, url: \"{url}\", key: \"{key}\", timeout: 500ms{extra} }}\n"
    )
}

/// [`fleet_yaml_at`] on `redis`.
pub fn fleet_yaml(yaml: &str, redis: &RedisServer, key: &str, extra: &str) -> String {
    fleet_yaml_at(yaml, &redis.url(), key, extra)
}

/// `count` proxies on the same config, one after the other.
pub async fn replicas(count: usize, yaml: &str, vendor: &SandboxHandle) -> Vec<TestProxy> {
    let mut proxies = Vec::with_capacity(count);
    for _ in 0..count {
        proxies.push(TestProxy::start(yaml, vendor).await);
    }
    proxies
}

pub fn admin_url(proxy: &TestProxy, path: &str) -> String {
    format!("http://{}{path}", proxy.admin.expect("admin listener"))
}

pub async fn admin_text(proxy: &TestProxy, path: &str) -> String {
    client()
        .get(admin_url(proxy, path))
        .send()
        .await
        .expect("admin")
        .text()
        .await
        .expect("text")
}

pub async fn admin_json(proxy: &TestProxy, path: &str) -> serde_json::Value {
    serde_json::from_str(&admin_text(proxy, path).await).expect("json")
}

pub async fn admin_post(proxy: &TestProxy, path: &str) -> reqwest::Response {
    client()
        .post(admin_url(proxy, path))
        .send()
        .await
        .expect("admin")
}

/// Polls `/readyz` until its status is `want`, for up to `within`.
pub async fn wait_for_status(proxy: &TestProxy, want: &str, within: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let readyz = admin_json(proxy, "/readyz").await;
        if readyz["status"] == want || tokio::time::Instant::now() > deadline {
            return readyz;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
