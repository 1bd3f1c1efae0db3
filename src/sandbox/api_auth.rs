//! The check every vendor API makes before answering: exactly one `Authorization` header, scheme
//! `Bearer` (any case), and a token the vendor issued and still honours, or for the partner API
//! one of its personal access tokens. Anything else is a 401 `invalid_token` (RFC 6750).

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::Vendor;
use super::state::SandboxState;

/// Which kind of token an API accepts.
#[derive(Clone, Copy, Debug)]
pub(super) enum AcceptedToken {
    /// Issued by this vendor's token endpoint.
    Issued(Vendor),
    /// A static partner PAT.
    PersonalAccessToken,
}

/// `Ok` when the request may reach the API, else why not (the 401's `error_description`).
pub(super) fn authorize(
    state: &SandboxState,
    headers: &HeaderMap,
    accepted: AcceptedToken,
) -> Result<(), &'static str> {
    let token = bearer_token(headers)?;
    match accepted {
        AcceptedToken::Issued(vendor) => state
            .check_token(vendor, token)
            .map_err(|rejection| rejection.description()),
        AcceptedToken::PersonalAccessToken if state.is_partner_token(token) => Ok(()),
        AcceptedToken::PersonalAccessToken => Err("unknown personal access token"),
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or("Authorization header missing")?;
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value
        .to_str()
        .map_err(|_| "Authorization header is not visible ASCII")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("Authorization header has no scheme")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("Authorization scheme must be Bearer");
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("bearer token empty");
    }
    Ok(token)
}
