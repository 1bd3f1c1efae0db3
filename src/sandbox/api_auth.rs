//! The check every vendor API makes before answering: exactly one `Authorization` header with the
//! vendor's scheme (`Bearer`, or `Token` at Xref; any case) and a token the vendor issued and
//! still honours, or for the partner API one of its personal access tokens; anything else is a
//! 401 `invalid_token` (RFC 6750). Then the vendor's own rules, each a 403: Cross River's scopes
//! and Crossbeam's organization header.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::reply::{self, ResponseBody};
use super::state::SandboxState;
use super::tokens::TokenRejection;
use super::{Vendor, cross_river, crossbeam};

/// Which kind of token an API accepts.
#[derive(Clone, Copy, Debug)]
pub(super) enum AcceptedToken {
    /// Issued by this vendor's token endpoint.
    Issued(Vendor),
    /// A static partner PAT.
    PersonalAccessToken,
}

/// The `Authorization` scheme an API takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    Bearer,
    /// Xref's `Authorization: Token <access_token>`.
    Token,
}

/// Why an API call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ApiRefusal {
    /// 401: missing, malformed, unknown, expired or revoked; the description says which.
    InvalidToken(Scheme, &'static str),
    /// 403: the token's scope lacks this one (Cross River).
    InsufficientScope(&'static str),
    /// 403: no `Xbeam-Organization` naming one of the user's organizations (Crossbeam).
    OrganizationRequired,
}

// === impl Scheme ===

impl Scheme {
    fn of(accepted: AcceptedToken) -> Self {
        match accepted {
            AcceptedToken::Issued(Vendor::Xref) => Scheme::Token,
            AcceptedToken::Issued(_) | AcceptedToken::PersonalAccessToken => Scheme::Bearer,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Bearer => "bearer",
            Scheme::Token => "token",
        }
    }

    /// The `WWW-Authenticate` value of a 401 under this scheme.
    pub(super) fn challenge(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer error=\"invalid_token\"",
            Scheme::Token => "Token error=\"invalid_token\"",
        }
    }

    fn wrong_scheme(self) -> &'static str {
        match self {
            Scheme::Bearer => "Authorization scheme must be Bearer",
            Scheme::Token => "Authorization scheme must be Token",
        }
    }
}

// === impl ApiRefusal ===

impl ApiRefusal {
    pub(super) fn into_response(self) -> Response<ResponseBody> {
        match self {
            ApiRefusal::InvalidToken(scheme, description) => {
                reply::invalid_token(scheme.challenge(), description)
            }
            ApiRefusal::InsufficientScope(scope) => {
                let mut response = reply::error(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    "token scope does not cover this call",
                );
                let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
                if let Ok(challenge) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
                }
                response
            }
            ApiRefusal::OrganizationRequired => reply::error(
                StatusCode::FORBIDDEN,
                "organization_required",
                "Xbeam-Organization must name one of the user's organizations",
            ),
        }
    }
}

/// `Ok` when the request may reach the API, else why not.
pub(super) fn authorize(
    state: &SandboxState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    accepted: AcceptedToken,
) -> Result<(), ApiRefusal> {
    let scheme = Scheme::of(accepted);
    let invalid = |description| ApiRefusal::InvalidToken(scheme, description);
    let token = presented_token(headers, scheme).map_err(invalid)?;
    let vendor = match accepted {
        AcceptedToken::Issued(vendor) => vendor,
        AcceptedToken::PersonalAccessToken if state.is_partner_token(token) => return Ok(()),
        AcceptedToken::PersonalAccessToken => {
            return Err(invalid("unknown personal access token"));
        }
    };
    let required_scope = match vendor {
        Vendor::CrossRiver => cross_river::required_scope(method, path),
        _ => None,
    };
    state
        .check_token(vendor, token, required_scope)
        .map_err(|rejection| match (rejection, required_scope) {
            (TokenRejection::InsufficientScope, Some(scope)) => {
                ApiRefusal::InsufficientScope(scope)
            }
            (rejection, _) => invalid(rejection.description()),
        })?;
    if vendor == Vendor::Crossbeam
        && crossbeam::needs_organization(method, path)
        && !crossbeam::names_user_organization(headers)
    {
        return Err(ApiRefusal::OrganizationRequired);
    }
    Ok(())
}

/// The token of the one `Authorization` header, which must use `scheme`.
pub(super) fn presented_token(headers: &HeaderMap, scheme: Scheme) -> Result<&str, &'static str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or("Authorization header missing")?;
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value
        .to_str()
        .map_err(|_| "Authorization header is not visible ASCII")?;
    let (presented_scheme, token) = value
        .split_once(' ')
        .ok_or("Authorization header has no scheme")?;
    if !presented_scheme.eq_ignore_ascii_case(scheme.name()) {
        return Err(scheme.wrong_scheme());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("token empty");
    }
    Ok(token)
}
