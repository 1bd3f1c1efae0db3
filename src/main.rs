//! The `authrelay` command: parse flags, set up logging, load the config, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use authrelay::Config;

/// mimalloc: the request path allocates and frees many small buffers (headers, futures, body
/// frames); glibc's malloc spent about 6 % of the proxy's CPU on them under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "authrelay",
    version,
    about = "An authenticating reverse proxy for OAuth 2.0 partner APIs"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every listener of the config until ctrl-c or SIGTERM.
    Run {
        #[arg(long, short, default_value = "proxy.yaml", env = "AUTHRELAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config and print every problem; exit 0 when it is valid.
    Check {
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
        /// When valid, print the resolved config (defaults and presets applied, secrets redacted).
        #[arg(long)]
        print_effective: bool,
        /// Also obtain one token per provider that needs no person and call its test path.
        #[arg(long)]
        online: bool,
    },
    /// Forget a provider's rejected-credentials state so the next request tries again (after
    /// the secret was fixed at the vendor). Acts through the running proxy's admin listener when
    /// one owns the store.
    Reset {
        provider: String,
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Connect an account of an authorization-code provider: prints the vendor URL to open. With
    /// no proxy running, serves the callback on the admin listener until the person is back.
    Connect {
        provider: String,
        /// The account's name, as routes name it (`account: NAME`).
        #[arg(long)]
        account: String,
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// List, remove or inspect connected accounts (never shows a token).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
        #[arg(long, short, global = true, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Serve the simulated vendors (Cross River, Culture Amp, a generic OAuth vendor, a PAT API).
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8900")]
        bind: SocketAddr,
    },
    /// Run the sandbox vendors and the proxy with an embedded config; prints curl lines to try.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// Where the admin listener (/healthz, /readyz) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_bind: SocketAddr,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Provider, account, state, token expiry, connected-at and scopes of every account.
    List,
    /// Revoke the account's token at the vendor (deauthorize / RFC 7009), then delete it.
    Remove {
        provider: String,
        account: String,
        /// Delete the account even when the vendor's revocation fails.
        #[arg(long)]
        force: bool,
    },
    /// The organizations of a Crossbeam account (name and uuid, for `Xbeam-Organization`).
    Orgs { provider: String, account: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Check {
            config,
            print_effective,
            online,
        } => {
            let checked = check(&config, print_effective);
            if online && checked == ExitCode::SUCCESS {
                check_online(&config)
            } else {
                checked
            }
        }
        Command::Reset { provider, config } => exit(reset(&config, &provider)),
        Command::Connect {
            provider,
            account,
            config,
        } => exit(connect(&config, &provider, &account)),
        Command::Accounts { command, config } => exit(accounts(&config, command)),
        Command::Run { config } => exit(serve(&config)),
        Command::Sandbox { bind } => exit(sandbox(bind)),
        Command::Demo { bind, admin_bind } => exit(demo(bind, admin_bind)),
    }
}

fn check(path: &std::path::Path, print_effective: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let summary = format!(
                "{}: ok ({} listeners, {} providers, {} routes)",
                path.display(),
                config.listeners.len(),
                config.providers.len(),
                config.routes.len()
            );
            if print_effective {
                // The summary as a comment keeps the output readable as YAML.
                print!("# {summary}\n{}", config.effective());
            } else {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors.iter() {
                eprintln!("{}: {error}", path.display());
            }
            ExitCode::FAILURE
        }
    }
}

fn check_online(path: &std::path::Path) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        let config =
            Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
        Ok(runtime.block_on(authrelay::operate::check_online(config))?)
    });
    match result {
        Ok(checks) => {
            for check in &checks {
                let mark = if check.ok { "ok    " } else { "FAILED" };
                println!("{mark} {}: {}", check.provider, check.summary);
            }
            if checks.iter().all(|check| check.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => exit(Err(error)),
    }
}

fn reset(path: &std::path::Path, provider: &str) -> anyhow::Result<()> {
    let config =
        Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
    let done = runtime()?.block_on(authrelay::operate::reset(&config, provider))?;
    println!("{done}");
    Ok(())
}

fn connect(path: &std::path::Path, provider: &str, account: &str) -> anyhow::Result<()> {
    let config =
        Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
    let show = |url: &str| {
        println!("Open this URL in a browser and authorize the connection:\n\n  {url}\n");
    };
    let served = runtime()?.block_on(authrelay::operate::accounts::connect(
        &config, provider, account, show,
    ))?;
    if served {
        println!("Account {account} of provider {provider} is connected.");
    } else {
        println!(
            "The running authrelay receives the callback; `authrelay accounts list` shows the result."
        );
    }
    Ok(())
}

fn accounts(path: &std::path::Path, command: AccountsCommand) -> anyhow::Result<()> {
    use authrelay::operate::accounts;
    let config =
        Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
    let runtime = runtime()?;
    match command {
        AccountsCommand::List => {
            let views = runtime.block_on(accounts::list(&config))?;
            if views.is_empty() {
                println!("no connected accounts");
                return Ok(());
            }
            println!(
                "{:<14} {:<16} {:<26} {:>12}  {:<20} SCOPES",
                "PROVIDER", "ACCOUNT", "STATE", "EXPIRES IN", "CONNECTED (UTC)"
            );
            for view in views {
                let expires = view
                    .expires_in_seconds
                    .map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
                let connected =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(view.connected_at);
                let connected = httpdate::fmt_http_date(connected);
                let state = match &view.last_error {
                    Some(error) if view.state != "ok" => format!("{} ({error})", view.state),
                    _ => view.state.clone(),
                };
                println!(
                    "{:<14} {:<16} {:<26} {:>12}  {:<20} {}",
                    view.provider,
                    view.account,
                    state,
                    expires,
                    connected,
                    view.scopes.join(" ")
                );
            }
        }
        AccountsCommand::Remove {
            provider,
            account,
            force,
        } => {
            let removed =
                runtime.block_on(accounts::remove(&config, &provider, &account, force))?;
            let revocation = match removed.revocation.as_str() {
                "revoked" => "its token was revoked at the vendor",
                "no_endpoint" => "the provider has no revocation endpoint",
                "no_token" => "it held no token to revoke",
                _ => "the vendor's revocation failed and was skipped (--force)",
            };
            println!("Removed account {account} of provider {provider}; {revocation}.");
        }
        AccountsCommand::Orgs { provider, account } => {
            let orgs = runtime.block_on(accounts::organizations(&config, &provider, &account))?;
            println!("{:<36}  NAME", "UUID (for Xbeam-Organization)");
            for org in orgs {
                println!("{:<36}  {}", org.uuid, org.name);
            }
        }
    }
    Ok(())
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config =
        Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
    let shutdown = async {
        authrelay::shutdown::signal().await;
        // A second ctrl-c or SIGTERM during the drain means "now".
        tokio::spawn(async {
            authrelay::shutdown::signal().await;
            eprintln!("authrelay: second signal, exiting without waiting for the drain");
            std::process::exit(1);
        });
    };
    runtime()?.block_on(authrelay::run(config, path, shutdown))?;
    Ok(())
}

fn sandbox(bind: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let sandbox = authrelay::sandbox::Sandbox::new()
            .start(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        println!(
            "sandbox vendors on {} (stats: {}/_sandbox/stats)",
            sandbox.url(),
            sandbox.url()
        );
        authrelay::shutdown::signal().await;
        sandbox.shutdown().await;
        Ok(())
    })
}

fn demo(bind: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let shutdown = authrelay::shutdown::signal();
    runtime()?.block_on(authrelay::demo::run(
        bind,
        admin,
        std::io::stdout(),
        shutdown,
    ))?;
    Ok(())
}

/// Sized to the cores this process may use (its CPU affinity and cgroup quota, rounded down), or
/// to `AUTHRELAY_WORKER_THREADS` (else `TOKIO_WORKER_THREADS`). On one core the single-threaded scheduler runs everything: a
/// one-worker multi-threaded runtime spent about 35 % more CPU per proxied request on its
/// cross-thread machinery (BENCHMARKS.md, issue 7).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // TOKIO_WORKER_THREADS, which tokio's own default honours, is honoured too.
    let setting = ["AUTHRELAY_WORKER_THREADS", "TOKIO_WORKER_THREADS"]
        .into_iter()
        .find_map(|name| Some((name, std::env::var(name).ok()?)));
    let workers = match setting {
        Some((name, text)) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .with_context(|| format!("{name} must be a number from 1 to 1024, not `{text}`"))?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("authrelay: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // Dependencies stay at warn even when authrelay logs debug: hyper and rustls TRACE output
    // can include header bytes.
    let filter = EnvFilter::try_from_env("AUTHRELAY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,authrelay=info"));
    // Colours only on a terminal: a log file or pipe must stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
