//! The browser step of the code vendors (Crossbeam, generic, Xref): their authorize pages approve
//! as the demo user unless `sandbox_decision=deny` stands in for a click on "Deny", so all that is
//! left is reading the query, checking where to send the user back, and the 302 carrying the code
//! or `error=access_denied`. Refusals are a 400 JSON answer, never a redirect.

use std::collections::BTreeMap;

use http::header::LOCATION;
use http::{HeaderValue, Response, StatusCode, Uri};

use super::Vendor;
use super::codes::is_pkce_text;
use super::reply::{self, ResponseBody};
use super::state::{ClientCheck, SandboxState};

/// The query parameter that plays the person's click on the consent page.
const DECISION_PARAM: &str = "sandbox_decision";

/// The checked parameters of a standard authorize request (RFC 6749 §4.1.1).
#[derive(Clone, Copy, Debug)]
pub(super) struct CodeRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// Echoed back untouched, approved or denied.
    pub state: Option<&'a str>,
}

/// What the person on the authorize page chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Approve,
    Deny,
}

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

/// A known `client_id` of `vendor`, `response_type=code` and an absolute `redirect_uri` (plain
/// http allowed: these vendors let developers register one).
pub(super) fn code_request<'a>(
    state: &SandboxState,
    vendor: Vendor,
    params: &'a BTreeMap<String, String>,
) -> Result<CodeRequest<'a>, &'static str> {
    let param = |name: &str| params.get(name).map(String::as_str);
    let client_id = param("client_id").ok_or("client_id missing")?;
    if state.check_client(vendor, client_id, None) == ClientCheck::UnknownClient {
        return Err("unknown client_id");
    }
    match param("response_type") {
        Some("code") => {}
        Some(_) => return Err("response_type must be code"),
        None => return Err("response_type missing"),
    }
    let redirect_uri = param("redirect_uri").ok_or("redirect_uri missing")?;
    check_redirect(redirect_uri, false)?;
    Ok(CodeRequest {
        client_id,
        redirect_uri,
        state: param("state"),
    })
}

/// `sandbox_decision`: `approve` (also when absent) or `deny`; anything else is refused, so that a
/// typo in a test cannot silently approve.
pub(super) fn decision(params: &BTreeMap<String, String>) -> Result<Decision, &'static str> {
    match params.get(DECISION_PARAM).map(String::as_str) {
        None | Some("approve") => Ok(Decision::Approve),
        Some("deny") => Ok(Decision::Deny),
        Some(_) => Err("sandbox_decision must be approve or deny"),
    }
}

/// The S256 challenge if the client sent one (RFC 7636 §4.3). Without a method the RFC means
/// `plain`, which no vendor here takes.
pub(super) fn pkce_challenge(
    params: &BTreeMap<String, String>,
) -> Result<Option<&str>, &'static str> {
    let param = |name: &str| params.get(name).map(String::as_str);
    match (param("code_challenge"), param("code_challenge_method")) {
        (None, None) => Ok(None),
        (Some(challenge), Some("S256")) if is_pkce_text(challenge) => Ok(Some(challenge)),
        (Some(_), Some("S256")) => Err("code_challenge malformed"),
        (Some(_), _) => Err("code_challenge_method must be S256"),
        (None, Some(_)) => Err("code_challenge missing"),
    }
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

/// `302` back to the request's `redirect_uri` with `code`, then `state` if given.
pub(super) fn redirect_with_code(request: &CodeRequest<'_>, code: &str) -> Response<ResponseBody> {
    let mut back = vec![("code", code)];
    if let Some(state) = request.state {
        back.push(("state", state));
    }
    redirect_back(request.redirect_uri, &back)
}

/// `302` to `target` with `error=access_denied` and `state` if given (RFC 6749 §4.1.2.1): what a
/// vendor answers when the person clicks "Deny".
pub(super) fn redirect_denied(target: &str, state: Option<&str>) -> Response<ResponseBody> {
    let mut params = vec![
        ("error", "access_denied"),
        ("error_description", "the user denied the authorization"),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    redirect_back(target, &params)
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

    #[test]
    fn decision_defaults_to_approve_and_refuses_typos() {
        let params = |value: &str| BTreeMap::from([(DECISION_PARAM.to_owned(), value.to_owned())]);
        assert_eq!(decision(&BTreeMap::new()), Ok(Decision::Approve));
        assert_eq!(decision(&params("approve")), Ok(Decision::Approve));
        assert_eq!(decision(&params("deny")), Ok(Decision::Deny));
        assert!(decision(&params("Deny")).is_err());
    }
}
