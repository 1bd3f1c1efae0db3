//! `authrelay demo`: the sandbox vendors and the proxy, wired by an embedded config, so the whole
//! request path can be tried with curl on a machine with no secrets and no network.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::sandbox::Sandbox;
use crate::server::{Server, ServerError};

const DEMO_YAML: &str = include_str!("demo/proxy.yaml");

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the sandbox vendors: {0}")]
    Sandbox(#[source] std::io::Error),
    #[error("the embedded demo config is invalid: {0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The embedded demo config for a proxy on `bind`/`admin` in front of a sandbox at `sandbox_url`.
pub fn config(
    bind: SocketAddr,
    admin: SocketAddr,
    store: &Path,
    sandbox_url: &str,
) -> Result<Config, DemoError> {
    let yaml = DEMO_YAML
        .replace("{bind}", &bind.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{store}", &store.display().to_string())
        .replace("{sandbox}", sandbox_url);
    Ok(Config::from_yaml(&yaml, Path::new("."))?)
}

/// Starts the sandbox and the proxy, prints curl lines to `out`, serves until `shutdown`.
pub async fn run(
    bind: SocketAddr,
    admin: SocketAddr,
    mut out: impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let sandbox = Sandbox::new()
        .start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(DemoError::Sandbox)?;
    // The vendors send the person back to the admin listener: its port must be known up front.
    let admin = if admin.port() == 0 {
        free_port(admin).map_err(DemoError::Sandbox)?
    } else {
        admin
    };
    // The demo's tokens are throwaway: keep them out of the working directory.
    let store = std::env::temp_dir().join(format!("authrelay-demo-{}", std::process::id()));
    let server = Server::bind(config(bind, admin, &store, &sandbox.url())?).await;
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&store);
            return Err(error.into());
        }
    };
    let proxy = server.local_addrs().first().copied().unwrap_or(bind);
    let admin = server.admin_addr().unwrap_or(admin);
    // A closed stdout must not stop the demo; the lines are a courtesy.
    let _ = writeln!(out, "{}", instructions(proxy, admin, &sandbox.url()));
    let _ = out.flush();
    server.serve(shutdown).await;
    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(&store);
    Ok(())
}

/// A port on `addr`'s address that is free now (the listener binds it right after).
fn free_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind(addr)?.local_addr()
}

fn instructions(proxy: SocketAddr, admin: SocketAddr, sandbox: &str) -> String {
    format!(
        "authrelay demo: proxy on http://{proxy}, admin on http://{admin}, sandbox vendors on {sandbox}
Try (each answer is the sandbox echoing what the vendor received, token included):

  # Cross River: client credentials, secret in the form body (lock-out after 3 bad secrets)
  curl -s http://{proxy}/cross-river/SignupCard/TestOauth
  # Culture Amp: client credentials with HTTP Basic, target-entity scope
  curl -s http://{proxy}/cultureamp/employees
  # A generic OAuth vendor: JSON token request with an audience, plus an injected header
  curl -s -X POST --data 'hello' 'http://{proxy}/generic/orders?page=2'
  # A partner API with a personal access token
  curl -s http://{proxy}/partner/projects
  # The same, with authrelay as the app's HTTP proxy
  curl -s -x http://{proxy} http://api.partner.example/projects
  # Connected accounts: open http://{admin}/ in a browser, type the account name main and press
  # Connect xref, then Connect crossbeam. The sandbox approves at once, so curl can do it too:
  curl -sL 'http://{admin}/connect/xref?account=main'
  curl -sL 'http://{admin}/connect/crossbeam?account=main'
  curl -s http://{proxy}/xref/accounts
  curl -s -H X-Relay-Account:main http://{proxy}/crossbeam/v1/partners
  curl -s http://{admin}/accounts
  # Health
  curl -s http://{admin}/readyz

Stop with ctrl-c."
    )
}
