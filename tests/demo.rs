//! `authrelay demo`: the binary starts the sandbox and the proxy, prints curl lines that work,
//! and stops cleanly on ctrl-c (SIGINT).
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn demo_prints_curl_lines_that_work_and_stops_on_ctrl_c() {
    let mut demo = StopOnDrop(
        Command::new(env!("CARGO_BIN_EXE_authrelay"))
            .args([
                "demo",
                "--bind",
                "127.0.0.1:0",
                "--admin-bind",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.starts_with("Stop with ctrl-c"))
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .unwrap()
        .unwrap();
    let curls: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("curl -s"))
        .map(str::trim)
        .collect();
    assert!(curls.len() >= 5, "{lines:#?}");

    let direct = reqwest::Client::builder().no_proxy().build().unwrap();
    for curl in &curls {
        let words: Vec<&str> = curl
            .split_whitespace()
            .map(|w| w.trim_matches('\''))
            .collect();
        let response = match words.as_slice() {
            ["-X", "POST", "--data", body, url] => {
                direct.post(*url).body(body.to_string()).send().await
            }
            ["-x", proxy, url] => {
                let via = reqwest::Proxy::http(*proxy).unwrap();
                reqwest::Client::builder()
                    .proxy(via)
                    .build()
                    .unwrap()
                    .get(*url)
                    .send()
                    .await
            }
            [url] => direct.get(*url).send().await,
            // The connect flow: the admin's 302 to the sandbox, its 302 back to the callback.
            ["L", url] => {
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap()
                    .get(*url)
                    .send()
                    .await
            }
            ["-H", header, url] => {
                let (name, value) = header.split_once(':').unwrap();
                direct.get(*url).header(name, value).send().await
            }
            other => panic!("unexpected curl line {other:?}"),
        };
        let response = response.unwrap();
        assert_eq!(response.status(), 200, "curl -s {curl}");
        assert!(
            response.headers().get("x-relay-error").is_none(),
            "curl -s {curl}"
        );
    }

    let interrupted = Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop on SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

/// The demo process, killed if the test ends (a failed assertion) before it stopped by itself.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
