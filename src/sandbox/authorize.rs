//! The browser step of the code vendors (Crossbeam, Xref): their authorize pages auto-approve as
//! the demo user, so all that is left is reading the query, checking where to send the user back,
//! and the 302 carrying the code. Refusals are a 400 JSON answer, never a redirect.

use std::collections::BTreeMap;

use http::header::LOCATION;
use http::{HeaderValue, Response, StatusCode, Uri};

use super::reply::{self, ResponseBody};

/// Query parameters by name; a repeated one is refused, as RFC 6749 §3.1 says.
pub(super) fn query_params(query: Option<&str>) -> Result<BTreeMap<String, String>, &'static str> {
    let mut params = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if params
            .insert(name.into_owned(), value.into_owned())
            .is_some()
        {
            return Err("repeated query parameter");
        }
    }
    Ok(params)
}

/// `Ok` for an absolute `http(s)` URL without fragment; `https_only` also refuses plain `http`
/// except to a loopback host, where no certificate can be had.
pub(super) fn check_redirect(target: &str, https_only: bool) -> Result<(), &'static str> {
    let refused = "redirect target must be an absolute http(s) URL without fragment";
    if target.contains('#') {
        return Err(refused);
    }
    let uri: Uri = target.parse().map_err(|_| refused)?;
    let host = uri.host().ok_or(refused)?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if !https_only || matches!(host, "localhost" | "127.0.0.1" | "[::1]") => {
            Ok(())
        }
        Some("http") => Err("redirect target must be https"),
        _ => Err(refused),
    }
}

/// `302` to `target` with `params` appended to its query.
pub(super) fn redirect_back(target: &str, params: &[(&str, &str)]) -> Response<ResponseBody> {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let separator = if target.contains('?') { '&' } else { '?' };
    let location = format!("{target}{separator}{query}");
    let Ok(value) = HeaderValue::from_str(&location) else {
        return invalid_request("redirect target is not a valid header value");
    };
    let mut response = reply::json(
        StatusCode::FOUND,
        &serde_json::json!({"location": location}),
    );
    response.headers_mut().insert(LOCATION, value);
    response
}

/// The authorize page's refusal.
pub(super) fn invalid_request(description: &str) -> Response<ResponseBody> {
    reply::error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets() {
        assert!(check_redirect("https://app.example/cb?x=1", true).is_ok());
        assert!(check_redirect("http://127.0.0.1:8080/cb", true).is_ok());
        assert!(check_redirect("http://app.example/cb", true).is_err());
        assert!(check_redirect("http://app.example/cb", false).is_ok());
        assert!(check_redirect("https://app.example/cb#frag", false).is_err());
        assert!(check_redirect("/relative", false).is_err());
        assert!(check_redirect("ftp://app.example/", false).is_err());
    }
}
