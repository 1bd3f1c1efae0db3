//! A real headless Chromium for tests, driven through WebDriver: `chromedriver` on a free loopback
//! port, one fantoccini session, and every process it started ended when the test is done.
//! `scripts/test` installs `chromium` and `chromium-driver`; without them `Browser::start` panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
use tempfile::TempDir;

/// How long chromedriver may take to answer `/status` with `ready: true`.
const DRIVER_READY: Duration = Duration::from_secs(20);
/// Startup attempts (a new port each time: the free one may be taken before chromedriver binds it).
const START_ATTEMPTS: usize = 3;
/// Default bound for `wait_for_text` and the session's page-load timeout.
const WAIT: Duration = Duration::from_secs(10);
/// How long the driver's process group may take to exit after SIGTERM before it gets SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(5);
const CHROMIUM: &str = "/usr/bin/chromium";

/// One headless Chromium session. Dropping it (or `close().await`) ends the session, stops the
/// chromedriver it started and the browser processes under it, then deletes the profile.
pub struct Browser {
    client: Option<Client>,
    driver: Option<Driver>,
    /// The Chromium profile and the HOME of chromedriver and Chromium (crash reports, caches).
    /// Declared last: removed only after the processes using it are gone.
    _dir: TempDir,
}

/// A chromedriver child in its own process group, so the browser it launches can be ended with it.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

// === impl Browser ===

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session, retrying startup a few times.
    /// Panics (never skips) when chromedriver is missing or no attempt succeeds.
    pub async fn start() -> Browser {
        let dir = tempfile::tempdir().expect("browser temp dir");
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut driver = Driver::spawn(dir.path(), attempt);
            match driver.session(dir.path()).await {
                Ok(client) => {
                    return Browser {
                        client: Some(client),
                        driver: Some(driver),
                        _dir: dir,
                    };
                }
                Err(why) => {
                    let log = driver.log_tail();
                    driver.stop();
                    failures.push(format!("attempt {attempt}: {why}\n{log}"));
                }
            }
        }
        panic!("headless Chromium did not start:\n{}", failures.join("\n"));
    }

    /// The WebDriver session, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser session is open")
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Clicks the first element matching the CSS selector `css`.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the value of the input matching `css` with `text`, typed as a person would.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// The rendered text of the current page (`<body>`), as a person would read it.
    pub async fn text(&self) -> String {
        let body = self.find("body").await;
        body.text()
            .await
            .unwrap_or_else(|e| panic!("page text: {e}"))
    }

    /// The rendered text of the first element matching the CSS selector `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// How many elements of the current page match the CSS selector `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find all {css}: {e}"))
            .len()
    }

    /// The current page's markup as the browser holds it (the DOM serialized).
    pub async fn source(&self) -> String {
        self.client()
            .source()
            .await
            .unwrap_or_else(|e| panic!("page source: {e}"))
    }

    /// The URL of the current page.
    pub async fn url(&self) -> String {
        self.client()
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("current URL: {e}"))
            .to_string()
    }

    /// Waits up to `timeout` until `condition` holds, checking every 50 ms; panics naming `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl AsyncFnMut(&Browser) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition(self).await {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; page {} reads:\n{}",
                    self.url().await,
                    self.settled_text().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (10 s at most) until the page text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str) {
        let what = format!("page text containing {needle:?}");
        self.wait_until(&what, WAIT, async |browser: &Browser| {
            browser
                .settled_text()
                .await
                .is_some_and(|text| text.contains(needle))
        })
        .await;
    }

    /// The page text, or `None` while a navigation replaces the document: after a click that
    /// leads through redirects, the `<body>` found may be gone (stale) before its text is read,
    /// or the next one not parsed yet.
    async fn settled_text(&self) -> Option<String> {
        let between_pages = |e: &CmdError| e.is_stale_element_reference() || e.is_no_such_element();
        let body = match self.client().find(Locator::Css("body")).await {
            Ok(body) => body,
            Err(e) if between_pages(&e) => return None,
            Err(e) => panic!("find body: {e}"),
        };
        match body.text().await {
            Ok(text) => Some(text),
            Err(e) if between_pages(&e) => None,
            Err(e) => panic!("page text: {e}"),
        }
    }

    /// Ends the WebDriver session (Chromium quits cleanly), then stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            // An error here only means the session is already gone; stopping the driver below
            // ends whatever is left.
            let _ = client.close().await;
        }
        if let Some(driver) = self.driver.take() {
            driver.stop();
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // No await here: SIGTERM reaches chromedriver and Chromium alike (same process group),
        // and Chromium quits on it as it does when the session ends.
        if let Some(driver) = self.driver.take() {
            driver.stop();
        }
    }
}

// === impl Driver ===

impl Driver {
    /// Starts `chromedriver --port=<free port>` with its log in `dir`.
    fn spawn(dir: &Path, attempt: usize) -> Driver {
        let port = free_port();
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("browser home dir");
        let log = dir.join(format!("chromedriver-{attempt}.log"));
        let log_file = std::fs::File::create(&log).expect("chromedriver log file");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join(".config"))
                .env("XDG_CACHE_HOME", home.join(".cache"))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("chromedriver log file"))
                .stderr(log_file)
                .process_group(0)
                .spawn()
        };
        let child = child.unwrap_or_else(|e| {
            panic!(
                "cannot run chromedriver ({e}): install the Debian packages chromium and \
                 chromium-driver (scripts/test does so when run as root)"
            )
        });
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits for `/status` to report ready, then opens a headless Chromium session.
    async fn session(&mut self, dir: &Path) -> Result<Client, String> {
        self.wait_ready().await?;
        let profile = dir.join(format!("profile-{}", self.child.id()));
        let args = [
            "--headless=new".to_string(),
            // CI runs as root, where Chromium's sandbox refuses to start.
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            // Pages come from loopback only; never route them through an environment proxy.
            "--no-proxy-server".to_string(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut chrome_options = serde_json::json!({ "args": args });
        if Path::new(CHROMIUM).exists() {
            chrome_options["binary"] = CHROMIUM.into();
        }
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": chrome_options,
            "timeouts": { "pageLoad": WAIT.as_millis() as u64, "script": WAIT.as_millis() as u64 },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .map_err(|e| format!("new session: {e}"))
    }

    /// Polls `/status` until chromedriver says it is ready, it exits, or `DRIVER_READY` passes.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("status client");
        let status = format!("{}/status", self.url);
        let deadline = Instant::now() + DRIVER_READY;
        loop {
            let last = match http.get(&status).send().await {
                Ok(response) => match response.json::<serde_json::Value>().await {
                    Ok(body) if body["value"]["ready"] == true => return Ok(()),
                    Ok(body) => format!("not ready: {body}"),
                    Err(e) => format!("unreadable /status: {e}"),
                },
                Err(e) => format!("/status: {e}"),
            };
            // A port taken between `free_port` and chromedriver's bind ends it at once.
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("chromedriver exited with {exit} ({last})"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver not ready after {DRIVER_READY:?} ({last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of chromedriver's log, for a startup failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM to the driver's process group (chromedriver, Chromium and its helpers), wait for
    /// chromedriver, then until the group is empty; SIGKILL what is left after `EXIT_GRACE`.
    fn stop(mut self) {
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let _ = self.child.wait();
        let mut deadline = Instant::now() + EXIT_GRACE;
        let mut killed = false;
        // Orphaned browser processes are reaped by init; the group exists until they are.
        while test_kill_process_group(group).is_ok() {
            if Instant::now() >= deadline {
                if killed {
                    eprintln!("browser: processes of group {group:?} still present");
                    return;
                }
                let _ = kill_process_group(group, Signal::KILL);
                killed = true;
                deadline = Instant::now() + EXIT_GRACE;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
