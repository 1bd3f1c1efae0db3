//! `GET /`: the operator's page. Server-rendered HTML, a little CSS, and a few lines of script
//! for the expiry countdown. It shows states, expiries and error codes, never a token or secret.

use std::fmt::Write;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::{Admin, respond};
use crate::accounts::{self, AccountView};
use crate::config::GrantConfig;
use crate::credential::ProviderStatus;
use crate::upstream::ProxyBody;

const STYLE: &str = "body{font:15px system-ui,sans-serif;margin:2em auto;max-width:62em;color:#222}\
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}\
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd}\
.ok{color:#126b12}.bad{color:#a31515}.warn{color:#8a5a00}\
form{display:inline;margin:0}input[type=text]{width:12em}h2{margin-top:1.6em}";

/// Counts every `[data-expires]` cell down once a second.
const SCRIPT: &str = "const t0=Date.now();setInterval(()=>{for(const e of document.querySelectorAll('[data-expires]')){\
const s=Math.max(0,Math.round(+e.dataset.expires-(Date.now()-t0)/1000));\
e.textContent=s>=86400?Math.floor(s/86400)+'d '+Math.floor(s%86400/3600)+'h':\
Math.floor(s/3600)+'h '+Math.floor(s%3600/60)+'m '+s%60+'s';}},1000);";

// === impl Admin ===

impl Admin {
    pub(super) async fn page(&self) -> Response<ProxyBody> {
        let state = self.state.load_full();
        let csrf = self.csrf.issue();
        let accounts = match accounts::list(&state).await {
            Ok(accounts) => accounts,
            Err(error) => {
                return message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Cannot list accounts",
                    &error.to_string(),
                );
            }
        };
        let mut body = String::with_capacity(8 * 1024);
        body.push_str("<h1>authrelay</h1>");
        for (name, provider) in &state.config.providers {
            let GrantConfig::AuthorizationCode(_) = provider.grant else {
                continue;
            };
            let mine: Vec<&AccountView> = accounts.iter().filter(|a| &a.provider == name).collect();
            connected_accounts(&mut body, name, &mine, &csrf);
        }
        let others: Vec<ProviderStatus> = state
            .credentials
            .snapshot()
            .into_iter()
            .filter(|status| status.account.is_none())
            .collect();
        if !others.is_empty() {
            provider_credentials(&mut body, &others, &csrf);
        }
        html(StatusCode::OK, "authrelay", &body)
    }
}

/// One authorization-code provider: its accounts, and the form that connects another.
fn connected_accounts(body: &mut String, provider: &str, accounts: &[&AccountView], csrf: &str) {
    let provider = escape(provider);
    let _ = write!(body, "<h2>{provider}</h2>");
    if accounts.is_empty() {
        body.push_str("<p>No account connected.</p>");
    } else {
        body.push_str(
            "<table><tr><th>account</th><th>state</th><th>token expires in</th>\
             <th>scopes</th><th>last error</th><th></th></tr>",
        );
        for account in accounts {
            let name = escape(&account.account);
            let class = if account.state == "ok" { "ok" } else { "bad" };
            let expires = match account.expires_in_seconds {
                Some(seconds) => format!("<td data-expires=\"{seconds}\">{seconds}s</td>"),
                None => "<td>-</td>".to_owned(),
            };
            let _ = write!(
                body,
                "<tr data-provider=\"{provider}\" data-account=\"{name}\"><td>{name}</td><td class=\"{class} state\">{}</td>{expires}\
                 <td>{}</td><td>{}</td><td>\
                 <form method=\"post\" action=\"/accounts/{provider}/{name}/remove\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\">Remove</button></form></td></tr>",
                escape(&account.state),
                escape(&account.scopes.join(" ")),
                escape(account.last_error.as_deref().unwrap_or("-")),
            );
        }
        body.push_str("</table>");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/connect/{provider}\" class=\"connect\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Account name <input type=\"text\" name=\"account\" required \
         pattern=\"[A-Za-z0-9._\\-]{{1,64}}\" placeholder=\"acme\"></label> \
         <button type=\"submit\">Connect {provider}</button></form> \
         <form method=\"post\" action=\"/providers/{provider}/reset\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Reset</button></form>"
    );
}

/// Providers with one credential of their own (static, client credentials, refresh token).
fn provider_credentials(body: &mut String, statuses: &[ProviderStatus], csrf: &str) {
    body.push_str(
        "<h2>Other providers</h2><table><tr><th>provider</th><th>state</th>\
         <th>token expires in</th><th>last error</th><th></th></tr>",
    );
    for status in statuses {
        let provider = escape(&status.provider);
        let state = status.state.as_str();
        let class = match state {
            "ok" | "not_yet_used" | "renewing" => "ok",
            "backing_off" => "warn",
            _ => "bad",
        };
        let expires = match status.expires_in {
            // Static tokens never expire on our side.
            Some(left) if left.as_secs() < 50 * 365 * 86400 => {
                format!("<td data-expires=\"{0}\">{0}s</td>", left.as_secs())
            }
            _ => "<td>-</td>".to_owned(),
        };
        let error = status
            .error
            .as_ref()
            .map_or_else(|| "-".to_owned(), |error| error.code());
        let _ = write!(
            body,
            "<tr><td>{provider}</td><td class=\"{class}\">{state}</td>{expires}<td>{}</td><td>\
             <form method=\"post\" action=\"/providers/{provider}/reset\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">Reset</button></form></td></tr>",
            escape(&error)
        );
    }
    body.push_str("</table>");
}

/// A page with one heading and one paragraph (callback results, refusals).
pub(super) fn message(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the admin page</a></p>",
        escape(title),
        escape(text)
    );
    html(status, title, &body)
}

fn html(status: StatusCode, title: &str, body: &str) -> Response<ProxyBody> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>",
        escape(title)
    );
    let mut response = respond(status, "text/html; charset=utf-8", Bytes::from(page));
    let headers = response.headers_mut();
    // Inline style and script only; no frames (clickjacking), no Referer (a callback URL holds
    // the code).
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Text safe inside HTML elements and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
