//! Each vendor preset against its sandbox vendor, end to end: the token request the vendor
//! expects, the scheme, and the headers it requires.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use authrelay::sandbox::{CROSSBEAM_CLIENT_ID, XREF_CLIENT_ID, XREF_CLIENT_SECRET};
use support::{TestProxy, echo, echoed_header, get, sandbox};

#[tokio::test]
async fn every_preset_works_against_its_vendor() {
    let vendor = sandbox().await;
    // Xref's token comes from a connection a person made; here the test makes it directly.
    let exchange = support::client()
        .post(format!("{}/xref/oauth/tokens", vendor.url()))
        .json(&serde_json::json!({
            "client_id": XREF_CLIENT_ID,
            "client_secret": XREF_CLIENT_SECRET,
            "code": vendor.xref_code(XREF_CLIENT_ID),
        }))
        .send()
        .await
        .unwrap();
    let xref: serde_json::Value = exchange.json().await.unwrap();
    let xref_token = xref["access_token"].as_str().unwrap();
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
providers:
  crossbeam:
    preset: crossbeam
    grant: refresh_token
    token_url: "{{sandbox}}/crossbeam/oauth/token"
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    refresh_token: "{refresh}"
  cross-river:
    preset: cross-river
    token_url: "{{sandbox}}/cross-river/connect/token"
    client_id: cr-demo-client
    client_secret: cr-demo-secret
    scopes: [payments.read]
  cultureamp:
    preset: cultureamp
    token_url: "{{sandbox}}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  xref:
    preset: xref
    grant: static
    token: "{xref_token}"
  partner:
    preset: pat
    token: pat-demo-token
routes:
  - match: {{ path_prefix: /crossbeam }}
    strip_prefix: true
    upstream: "{{sandbox}}/crossbeam/api"
    provider: crossbeam
    headers: {{ Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6 }}
  - {{ match: {{ path_prefix: /cr }}, strip_prefix: true, upstream: "{{sandbox}}/cross-river", provider: cross-river }}
  - {{ match: {{ path_prefix: /ca }}, strip_prefix: true, upstream: "{{sandbox}}/cultureamp/v1", provider: cultureamp }}
  - match: {{ path_prefix: /xref }}
    strip_prefix: true
    upstream: "{{sandbox}}/xref/api"
    provider: xref
  - {{ match: {{ path_prefix: /partner }}, strip_prefix: true, upstream: "{{sandbox}}/partner/api", provider: partner }}
"#,
        refresh = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID),
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;

    let crossbeam = echo(get(&proxy, "/crossbeam/v1/partners").await).await;
    assert!(echoed_header(&crossbeam, "authorization")[0].starts_with("Bearer "));
    let me = get(&proxy, "/crossbeam/v0.1/users/me").await;
    assert_eq!(me.status(), 200);

    let cross_river = get(&proxy, "/cr/api/SignupCard/TestOauth").await;
    assert_eq!(cross_river.status(), 200);
    let stats = vendor.stats().clients["cr-demo-client"].clone();
    assert_eq!(
        stats.last_client_auth,
        Some(authrelay::sandbox::ClientAuth::Post)
    );

    let cultureamp = echo(get(&proxy, "/ca/employees").await).await;
    assert!(echoed_header(&cultureamp, "authorization")[0].starts_with("Bearer "));
    let stats = vendor.stats().clients["ca-demo-client"].clone();
    assert_eq!(
        stats.last_client_auth,
        Some(authrelay::sandbox::ClientAuth::Basic)
    );

    let xref = echo(get(&proxy, "/xref/contacts").await).await;
    assert_eq!(
        echoed_header(&xref, "authorization"),
        [format!("Token {xref_token}")]
    );

    let partner = echo(get(&proxy, "/partner/projects").await).await;
    assert_eq!(
        echoed_header(&partner, "authorization"),
        ["Bearer pat-demo-token"]
    );
}
