//! `authrelay connect` and `authrelay accounts ...`: the store has one owner, so while a proxy
//! runs these act through its admin listener; with none running they open the store directly
//! (and `connect` serves the callback itself).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use prometheus::Registry;
use serde::de::DeserializeOwned;

use super::{OperateError, open_store};
use crate::accounts::{self, AccountError, AccountView, Organization, Removed};
use crate::config::{AdminConfig, Config, check_account_name};
use crate::metrics::Metrics;
use crate::server::Server;
use crate::state::State;
use crate::store::StoreError;

/// How long `connect` waits for the person to come back from the vendor (the `state` lifetime).
const CONNECT_WAIT: Duration = Duration::from_secs(600);

/// Who answers: the running proxy, or this process on the store it opened.
enum Owner<'a> {
    Running(&'a AdminConfig),
    Direct(Box<State>),
}

/// The names go into admin URLs: they must be what the config and the store can hold.
fn check_names(config: &Config, provider: &str, account: &str) -> Result<(), OperateError> {
    if !config.providers.contains_key(provider) {
        return Err(OperateError::UnknownProvider(provider.to_owned()));
    }
    check_account_name(account)
        .map_err(|message| OperateError::Account(AccountError::BadAccountName(message)))
}

/// The running proxy when one holds the store, else a state of our own on it.
async fn owner(config: &Config) -> Result<Owner<'_>, OperateError> {
    match open_store(config).await {
        Ok(store) => {
            // A one-off run: its metrics are counted but never scraped.
            let metrics = Metrics::new(Registry::new())?;
            let state = State::build(config.clone(), &store, &metrics)?;
            Ok(Owner::Direct(Box::new(state)))
        }
        Err(OperateError::Store(StoreError::InUse { .. })) => {
            let admin = config.admin.as_ref().ok_or(OperateError::NoAdmin)?;
            Ok(Owner::Running(admin))
        }
        Err(error) => Err(error),
    }
}

/// Every connected account.
pub async fn list(config: &Config) -> Result<Vec<AccountView>, OperateError> {
    match owner(config).await? {
        Owner::Direct(state) => Ok(accounts::list(&state).await?),
        Owner::Running(admin) => {
            #[derive(serde::Deserialize)]
            struct Listing {
                accounts: Vec<AccountView>,
            }
            let listing: Listing = admin_call(admin, reqwest::Method::GET, "/accounts").await?;
            Ok(listing.accounts)
        }
    }
}

/// Revokes (unless the vendor has no endpoint for it) and deletes one account.
pub async fn remove(
    config: &Config,
    provider: &str,
    account: &str,
    force: bool,
) -> Result<Removed, OperateError> {
    check_names(config, provider, account)?;
    match owner(config).await? {
        Owner::Direct(state) => Ok(accounts::remove(&state, provider, account, force).await?),
        Owner::Running(admin) => {
            let path = format!("/accounts/{provider}/{account}/remove?force={force}");
            admin_call(admin, reqwest::Method::POST, &path).await
        }
    }
}

/// Crossbeam's organizations of one account.
pub async fn organizations(
    config: &Config,
    provider: &str,
    account: &str,
) -> Result<Vec<Organization>, OperateError> {
    check_names(config, provider, account)?;
    match owner(config).await? {
        Owner::Direct(state) => Ok(accounts::organizations(&state, provider, account).await?),
        Owner::Running(admin) => {
            #[derive(serde::Deserialize)]
            struct Orgs {
                organizations: Vec<Organization>,
            }
            let path = format!("/accounts/{provider}/{account}/orgs");
            let orgs: Orgs = admin_call(admin, reqwest::Method::GET, &path).await?;
            Ok(orgs.organizations)
        }
    }
}

/// Starts connecting `account` of `provider`. `show` receives the URL the person must open;
/// with a running proxy that is all (its admin listener takes the callback). Without one, this
/// process serves the admin listener until the account is connected, then returns.
pub async fn connect(
    config: &Config,
    provider: &str,
    account: &str,
    show: impl Fn(&str),
) -> Result<bool, OperateError> {
    check_names(config, provider, account)?;
    let admin = config.admin.as_ref().ok_or(OperateError::NoAdmin)?;
    let path = format!("/connect/{provider}?account={account}");
    if let Owner::Running(admin) = owner(config).await? {
        show(&authorize_url(admin, &path).await?);
        return Ok(false);
    }
    // Only the admin listener: the callback arrives there.
    let mut callback_only = config.clone();
    callback_only.listeners.clear();
    let server = Server::bind(callback_only)
        .await
        .map_err(|error| OperateError::Admin(error.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let result = async {
        show(&authorize_url(admin, &path).await?);
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            #[derive(serde::Deserialize)]
            struct Listing {
                accounts: Vec<AccountView>,
            }
            let listing: Listing = admin_call(admin, reqwest::Method::GET, "/accounts").await?;
            let connected = listing.accounts.iter().any(|view| {
                view.provider == provider && view.account == account && view.connected_at >= started
            });
            if connected {
                return Ok(true);
            }
        }
        Err(OperateError::Admin(
            "no callback arrived within 10 minutes; start again".into(),
        ))
    }
    .await;
    let _ = stop.send(());
    let _ = serving.await;
    result
}

/// The vendor URL that `GET /connect/...` redirects to.
async fn authorize_url(admin: &AdminConfig, path: &str) -> Result<String, OperateError> {
    let response = admin_request(admin, reqwest::Method::GET, path).await?;
    if response.status() != StatusCode::FOUND {
        return Err(admin_refusal(response).await);
    }
    response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| OperateError::Admin("the redirect had no Location".into()))
}

/// One admin call answered with JSON.
async fn admin_call<T: DeserializeOwned>(
    admin: &AdminConfig,
    method: reqwest::Method,
    path: &str,
) -> Result<T, OperateError> {
    let response = admin_request(admin, method, path).await?;
    if !response.status().is_success() {
        return Err(admin_refusal(response).await);
    }
    response
        .json()
        .await
        .map_err(|error| OperateError::Admin(error.without_url().to_string()))
}

async fn admin_request(
    admin: &AdminConfig,
    method: reqwest::Method,
    path: &str,
) -> Result<reqwest::Response, OperateError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| OperateError::Admin(error.to_string()))?;
    let mut request = client.request(method, format!("http://{}{path}", admin.bind));
    if let Some(token) = &admin.token {
        request = request.bearer_auth(token.expose());
    }
    request
        .send()
        .await
        .map_err(|error| OperateError::Admin(error.without_url().to_string()))
}

/// The admin's `message` (or its status) as an error.
async fn admin_refusal(response: reqwest::Response) -> OperateError {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["message"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or("no detail");
    OperateError::Admin(format!("answered {status}: {message}"))
}
