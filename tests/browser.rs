//! The browser harness end to end: a real headless Chromium fills and submits a form served on
//! loopback, the server records the POSTed value, and the browser shows the page it answered.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::browser::Browser;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A safety net so that a broken case fails instead of hanging, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(10);

const FORM_PAGE: &str = r#"<!doctype html>
<html><head><title>Form</title></head><body>
<form method="post" action="/submit">
  <label>Name <input id="name" name="name" type="text"></label>
  <button id="send" type="submit">Send</button>
</form>
</body></html>"#;

/// Serves the form at `/` and answers a POST to `/submit` with a results page; every submitted
/// `name` goes to the returned channel.
async fn form_server() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind(support::loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (submitted, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let submitted = submitted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let submitted = submitted.clone();
                    async move { Ok::<_, Infallible>(answer(request, &submitted).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

async fn answer(
    request: Request<Incoming>,
    submitted: &mpsc::UnboundedSender<String>,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => html(StatusCode::OK, FORM_PAGE.to_string()),
        (&Method::POST, "/submit") => {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let name = form_urlencoded::parse(&body)
                .find(|(key, _)| key == "name")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            let _ = submitted.send(name.clone());
            let page = format!(
                "<!doctype html><html><head><title>Results</title></head><body>\
                 <p id=\"result\">Received: {}</p></body></html>",
                escape_html(&name)
            );
            html(StatusCode::OK, page)
        }
        _ => html(StatusCode::NOT_FOUND, "<p>not found</p>".to_string()),
    }
}

fn html(status: StatusCode, page: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page)))
        .unwrap()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test]
async fn headless_chromium_submits_a_form_and_shows_the_answer() {
    let (addr, mut received) = form_server().await;
    let browser = Browser::start().await;

    browser.goto(&format!("http://{addr}/")).await;
    browser.wait_for_text("Send").await;
    // Characters a form must encode and a page must escape, so neither step can be skipped.
    let value = "Ada & <Lovelace> 100% ü";
    browser.fill("#name", value).await;
    browser.click("#send").await;

    let posted = tokio::time::timeout(PATIENCE, received.recv())
        .await
        .expect("the form was never POSTed")
        .unwrap();
    assert_eq!(posted, value, "the server received what was typed");
    browser.wait_for_text(&format!("Received: {value}")).await;
    assert_eq!(browser.url().await, format!("http://{addr}/submit"));
    assert!(received.try_recv().is_err(), "one submission, one POST");

    browser.close().await;
}
