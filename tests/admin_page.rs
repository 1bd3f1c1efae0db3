//! The operator's page in a real browser: headless Chromium, driven through WebDriver, presses
//! Connect against the sandbox vendors, follows the authorization back to the callback and sees
//! the account turn ok, then removes one. Over plain HTTP, the page's guards: the admin token as
//! a Basic challenge, the CSRF field, fetch metadata and the Host check.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::net::SocketAddr;

use authrelay::sandbox::{CROSSBEAM_CLIENT_ID, SandboxHandle, XREF_CLIENT_ID};
use reqwest::StatusCode;
use support::browser::Browser;
use support::{TestProxy, assert_relay_error, echo, echoed_header, sandbox};
use tempfile::TempDir;

const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// One authorization-code provider behind an admin token; the browser never visits it.
const GUARDED_YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
admin: { bind: "127.0.0.1:0", token: admin-token-0123456789 }
providers:
  xref:
    preset: xref
    authorize_url: "{sandbox}/xref/oauth/open-api/{client_id}"
    token_url: "{sandbox}/xref/oauth/tokens"
    revoke_url: "{sandbox}/xref/oauth/deauthorize"
    client_id: xref-demo-client
    client_secret: xref-demo-secret
    redirect_uri: http://127.0.0.1/callback/xref
routes:
  - { match: { path_prefix: /xref }, strip_prefix: true, upstream: "{sandbox}/xref/api", provider: xref, account: main }
"#;

/// The demo's proxy in front of `sandbox`. Its admin port is chosen before it binds, since the
/// vendors send the person back to `http://{admin}/callback/<provider>`. Keep the directory
/// (the token store) as long as the proxy.
async fn demo_proxy(sandbox: &SandboxHandle) -> (TestProxy, TempDir) {
    let store = tempfile::tempdir().unwrap();
    let admin = support::free_loopback();
    let config =
        authrelay::demo::config(support::loopback(), admin, store.path(), &sandbox.url()).unwrap();
    let proxy = TestProxy::start_config(config, store.path()).await;
    assert_eq!(
        proxy.admin,
        Some(admin),
        "the admin bound the port named in redirect_uri"
    );
    (proxy, store)
}

fn admin_url(admin: SocketAddr, path: &str) -> String {
    format!("http://{admin}{path}")
}

/// The page's row of one connected account.
fn row(provider: &str, account: &str) -> String {
    format!("tr[data-provider=\"{provider}\"][data-account=\"{account}\"]")
}

/// On the admin page, types `account` into `provider`'s Connect form and presses its button,
/// as a person would; the sandbox approves at once and sends the browser to the callback.
async fn connect_from_page(browser: &Browser, admin: SocketAddr, provider: &str, account: &str) {
    browser.goto(&admin_url(admin, "/")).await;
    let form = format!("form.connect[action=\"/connect/{provider}\"]");
    let button = format!("{form} button[type=submit]");
    assert_eq!(
        browser.text_of(&button).await,
        format!("Connect {provider}")
    );
    browser
        .fill(&format!("{form} input[name=account]"), account)
        .await;
    browser.click(&button).await;
    browser
        .wait_for_text(&format!(
            "Account {account} of provider {provider} is connected"
        ))
        .await;
    let url = browser.url().await;
    assert!(
        url.starts_with(&admin_url(admin, &format!("/callback/{provider}?"))),
        "the vendor sent the browser back to the callback: {url}"
    );
}

fn code_grants(sandbox: &SandboxHandle, client_id: &str) -> u64 {
    sandbox
        .stats()
        .clients
        .get(client_id)
        .map_or(0, |client| client.code_grants)
}

/// `GET /accounts` on an admin without a token: `(provider, account, state)` of each.
async fn listed_accounts(admin: SocketAddr) -> Vec<(String, String, String)> {
    let listing: serde_json::Value = support::client()
        .get(admin_url(admin, "/accounts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|account| {
            let field = |name: &str| account[name].as_str().unwrap().to_owned();
            (field("provider"), field("account"), field("state"))
        })
        .collect()
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The CSRF token of the page's first form.
fn scrape_csrf(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in the page:\n{page}"))
        + "name=\"csrf\" value=\"".len();
    let length = page[start..].find('"').unwrap();
    page[start..start + length].to_owned()
}

#[tokio::test]
async fn connecting_xref_from_the_page_turns_the_account_ok_and_shows_no_token() {
    let sandbox = sandbox().await;
    let (proxy, _store) = demo_proxy(&sandbox).await;
    let admin = proxy.admin.unwrap();
    let browser = Browser::start().await;

    browser.goto(&admin_url(admin, "/")).await;
    browser.wait_for_text("No account connected.").await;
    assert_eq!(browser.count(&row("xref", "main")).await, 0);

    connect_from_page(&browser, admin, "xref", "main").await;
    assert_eq!(
        code_grants(&sandbox, XREF_CLIENT_ID),
        1,
        "one code exchanged"
    );
    let callback_text = browser.text().await;
    let callback_source = browser.source().await;

    browser.goto(&admin_url(admin, "/")).await;
    let state = format!("{} .state", row("xref", "main"));
    assert_eq!(browser.text_of(&state).await, "ok");
    let page_text = browser.text().await;
    let page_source = browser.source().await;

    // The account works: the route naming it carries its token to the vendor.
    let echoed = echo(support::get(&proxy, "/xref/accounts").await).await;
    let authorization = echoed_header(&echoed, "authorization");
    assert_eq!(authorization.len(), 1, "{echoed}");
    let token = authorization[0].strip_prefix("Token ").unwrap();
    assert!(token.len() >= 16, "a real token: {token:?}");
    for (what, page) in [
        ("callback text", &callback_text),
        ("callback source", &callback_source),
        ("page text", &page_text),
        ("page source", &page_source),
    ] {
        assert!(!page.contains(token), "the {what} shows the token");
    }
    assert_eq!(
        listed_accounts(admin).await,
        [("xref".into(), "main".into(), "ok".into())]
    );

    browser.close().await;
}

#[tokio::test]
async fn connecting_crossbeam_from_the_page_then_removing_it_leaves_the_xref_account() {
    let sandbox = sandbox().await;
    let (proxy, _store) = demo_proxy(&sandbox).await;
    let admin = proxy.admin.unwrap();
    // Another provider's account of the same name, connected as the demo's curl line does: the
    // Remove button must take only its own row.
    let connected = support::client()
        .get(admin_url(admin, "/connect/xref?account=main"))
        .send()
        .await
        .unwrap();
    assert_eq!(connected.status(), StatusCode::OK);
    let browser = Browser::start().await;

    connect_from_page(&browser, admin, "crossbeam", "main").await;
    assert_eq!(
        code_grants(&sandbox, CROSSBEAM_CLIENT_ID),
        1,
        "one code exchanged"
    );
    browser.goto(&admin_url(admin, "/")).await;
    let crossbeam = row("crossbeam", "main");
    let xref = row("xref", "main");
    assert_eq!(browser.text_of(&format!("{crossbeam} .state")).await, "ok");
    assert_eq!(browser.text_of(&format!("{xref} .state")).await, "ok");
    let partners = || {
        support::client()
            .get(proxy.url("/crossbeam/v1/partners"))
            .header("X-Relay-Account", "main")
            .send()
    };
    assert_eq!(partners().await.unwrap().status(), StatusCode::OK);

    browser
        .click(&format!("{crossbeam} form[action$=\"/remove\"] button"))
        .await;
    // Only the removed account's provider can read so: both had an account before.
    browser.wait_for_text("No account connected.").await;
    assert_eq!(
        browser.url().await,
        admin_url(admin, "/"),
        "303 back to the page"
    );
    assert_eq!(browser.count(&crossbeam).await, 0, "the row is gone");
    assert_eq!(browser.text_of(&format!("{xref} .state")).await, "ok");
    assert_eq!(
        listed_accounts(admin).await,
        [("xref".into(), "main".into(), "ok".into())]
    );
    assert_relay_error(&partners().await.unwrap(), 403, "no_account");

    browser.close().await;
}

#[tokio::test]
async fn the_guarded_page_asks_for_the_token_and_its_forms_need_the_csrf_field() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(GUARDED_YAML, &sandbox).await;
    let admin = proxy.admin.unwrap();
    let http = no_redirects();
    let page = admin_url(admin, "/");
    let connect = admin_url(admin, "/connect/xref");

    let refused = http.get(&page).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<&str> = refused
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic ")),
        "{challenges:?}"
    );
    let wrong = http
        .get(&page)
        .basic_auth("operator", Some("admin-token-012345678"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let shown = http
        .get(&page)
        .basic_auth("anyone", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    let csrf = scrape_csrf(&shown.text().await.unwrap());

    let post = |csrf: Option<&str>| {
        let mut form = vec![("account", "main")];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        http.post(&connect)
            .basic_auth("anyone", Some(ADMIN_TOKEN))
            .form(&form)
    };
    let forged = format!("{}.AAAA", csrf.split_once('.').unwrap().0);
    for csrf in [None, Some(""), Some(forged.as_str())] {
        let response = post(csrf).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
        assert!(response.headers().get("location").is_none());
    }
    let cross_site = post(Some(&csrf))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let accepted = post(Some(&csrf)).send().await.unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    let location = accepted.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!(
            "{}/xref/oauth/open-api/{XREF_CLIENT_ID}?",
            sandbox.url()
        )),
        "{location}"
    );
    let unauthenticated = http
        .post(&connect)
        .form(&[("account", "main"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    // A page elsewhere whose name was rebound to 127.0.0.1 (DNS rebinding).
    let misdirected = http
        .get(&page)
        .header("host", "evil.example")
        .basic_auth("anyone", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(misdirected.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(sandbox.stats().requests, 0, "nothing reached the vendor");
}
