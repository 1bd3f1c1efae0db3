//! Every answer authrelay produces itself: status, `X-Relay-Error` code and JSON body, decided once.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::credential::{CredentialError, GrantError};
use crate::route::NoRoute;
use crate::upstream::{ProxyBody, UpstreamError};

/// Header naming the proxy's own error code, so callers can tell it from the vendor's answers.
pub const RELAY_ERROR_HEADER: &str = "x-relay-error";

/// A request that authrelay answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("CONNECT and TRACE are not served")]
    MethodNotAllowed,
    #[error("the request target is not a valid path")]
    BadPath,
    #[error("the request body is larger than this route allows")]
    BodyTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the request target is longer than this listener allows")]
    TargetTooLong,
    #[error("the request headers are more or larger than this listener allows")]
    HeadersTooLarge,
    #[error(
        "the request's length framing is ambiguous (Content-Length with Transfer-Encoding, repeated, or not chunked)"
    )]
    BadFraming,
    #[error("only the chunked transfer coding is understood")]
    TransferCodingUnsupported,
    #[error("protocol upgrades are not served")]
    UpgradeRefused,
    #[error("a header name with `_` stands for a header the proxy strips or sets")]
    BadHeader,
    #[error("caller unknown: send Proxy-Authorization: Bearer <api key>, or a client certificate")]
    CallerUnknown,
    #[error("this caller may not use this route")]
    CallerForbidden,
    #[error("this Host is not served here")]
    MisdirectedHost,
    #[error("requests from browser pages of other sites are refused")]
    CrossSite,
    #[error("reading the request body failed")]
    ClientBody(#[source] crate::upstream::BoxError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

// === impl ProxyError ===

impl ProxyError {
    /// The stable code sent in `X-Relay-Error` and the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::BadPath
            | ProxyError::ClientBody(_)
            | ProxyError::Upstream(UpstreamError::CallerBody) => "bad_request",
            ProxyError::BodyTimeout | ProxyError::Upstream(UpstreamError::BodyTimeout) => {
                "body_timeout"
            }
            ProxyError::TargetTooLong => "target_too_long",
            ProxyError::HeadersTooLarge => "headers_too_large",
            ProxyError::BadFraming => "bad_framing",
            ProxyError::UpgradeRefused => "upgrade_refused",
            ProxyError::TransferCodingUnsupported => "transfer_coding_unsupported",
            ProxyError::BadHeader => "bad_header",
            ProxyError::CallerUnknown => "caller_unknown",
            ProxyError::CallerForbidden => "caller_forbidden",
            ProxyError::MisdirectedHost => "misdirected_host",
            ProxyError::CrossSite => "cross_site",
            ProxyError::BodyTooLarge | ProxyError::Upstream(UpstreamError::BodyTooLarge) => {
                "body_too_large"
            }
            ProxyError::Credential(CredentialError::Rejected { .. }) => "credentials_rejected",
            ProxyError::Credential(CredentialError::Unavailable {
                error: GrantError::StoreUnavailable { .. },
                ..
            }) => "store_unavailable",
            ProxyError::Credential(CredentialError::Unavailable { .. }) => "token_unavailable",
            ProxyError::Credential(CredentialError::BadHeader { .. }) => "bad_token_response",
            ProxyError::Credential(CredentialError::NoAccount { .. }) => "no_account",
            ProxyError::Credential(CredentialError::ReauthorizationRequired { .. }) => {
                "reauthorization_required"
            }
            ProxyError::Credential(CredentialError::Store { .. }) => "store_unavailable",
            ProxyError::Upstream(UpstreamError::Connect(_)) => "upstream_unreachable",
            ProxyError::Upstream(UpstreamError::Timeout(_)) => "upstream_timeout",
            ProxyError::Upstream(UpstreamError::Exchange(_)) => "upstream_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadPath
            | ProxyError::ClientBody(_)
            | ProxyError::Upstream(UpstreamError::CallerBody)
            | ProxyError::BadFraming
            | ProxyError::UpgradeRefused
            | ProxyError::BadHeader => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout | ProxyError::Upstream(UpstreamError::BodyTimeout) => {
                StatusCode::REQUEST_TIMEOUT
            }
            ProxyError::TransferCodingUnsupported => StatusCode::NOT_IMPLEMENTED,
            ProxyError::TargetTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::CallerUnknown => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::CallerForbidden | ProxyError::CrossSite => StatusCode::FORBIDDEN,
            ProxyError::MisdirectedHost => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BodyTooLarge | ProxyError::Upstream(UpstreamError::BodyTooLarge) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ProxyError::Credential(
                CredentialError::NoAccount { .. } | CredentialError::ReauthorizationRequired { .. },
            ) => StatusCode::FORBIDDEN,
            ProxyError::Credential(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Connect(_) | UpstreamError::Exchange(_)) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Framing the proxy did not trust, or a body it stopped reading: the connection ends.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadFraming
                | ProxyError::UpgradeRefused
                | ProxyError::TransferCodingUnsupported
                | ProxyError::BodyTimeout
                | ProxyError::Upstream(UpstreamError::BodyTimeout)
                | ProxyError::BodyTooLarge
                | ProxyError::HeadersTooLarge
        )
    }

    /// Seconds a caller should wait before trying again, when waiting can help.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            // Nothing changes until an operator fixes the secret; ask for a long pause.
            ProxyError::Credential(CredentialError::Rejected { .. }) => {
                Some(Duration::from_secs(300))
            }
            ProxyError::Credential(CredentialError::Unavailable { retry_after, .. }) => {
                Some(*retry_after)
            }
            ProxyError::Credential(CredentialError::BadHeader { .. }) => {
                Some(Duration::from_secs(60))
            }
            ProxyError::Credential(CredentialError::Store { .. }) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    fn provider(&self) -> Option<&str> {
        match self {
            ProxyError::Credential(
                CredentialError::Rejected { provider, .. }
                | CredentialError::Unavailable { provider, .. }
                | CredentialError::BadHeader { provider, .. }
                | CredentialError::NoAccount { provider, .. }
                | CredentialError::ReauthorizationRequired { provider, .. }
                | CredentialError::Store { provider },
            ) => Some(provider),
            _ => None,
        }
    }

    /// The answer to the caller. The message is this error's `Display`, which never holds a
    /// secret: grant errors carry only statuses and OAuth error codes.
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        if let Some(provider) = self.provider() {
            body["provider"] = provider.into();
        }
        let mut response = Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(RELAY_ERROR_HEADER, HeaderValue::from_static(self.code()));
        if let Some(wait) = self.retry_after() {
            // Round up: "0" would invite an immediate retry that is sure to fail.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if matches!(self, ProxyError::CallerUnknown) {
            headers.insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authrelay\""),
            );
        }
        if self.closes_connection() {
            // What follows on the connection cannot be trusted to start where we think it does.
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ProxyError::MethodNotAllowed) {
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response
    }
}

impl From<NoRoute> for ProxyError {
    fn from(no_route: NoRoute) -> Self {
        match no_route {
            NoRoute::NotFound => ProxyError::NoRoute,
            NoRoute::MethodRefused => ProxyError::MethodNotAllowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names::RELAY_ERROR_CODES;

    #[test]
    fn every_code_is_in_the_metrics_label_set() {
        let grant = || GrantError::Transient { reason: "x".into() };
        let boxed = || -> crate::upstream::BoxError { "x".into() };
        let errors = [
            ProxyError::NoRoute,
            ProxyError::MethodNotAllowed,
            ProxyError::BadPath,
            ProxyError::BodyTooLarge,
            ProxyError::BodyTimeout,
            ProxyError::TargetTooLong,
            ProxyError::HeadersTooLarge,
            ProxyError::BadFraming,
            ProxyError::UpgradeRefused,
            ProxyError::TransferCodingUnsupported,
            ProxyError::BadHeader,
            ProxyError::CallerUnknown,
            ProxyError::CallerForbidden,
            ProxyError::MisdirectedHost,
            ProxyError::CrossSite,
            ProxyError::ClientBody(boxed()),
            ProxyError::Credential(CredentialError::Rejected {
                provider: "p".into(),
                error: grant(),
            }),
            ProxyError::Credential(CredentialError::Unavailable {
                provider: "p".into(),
                error: grant(),
                retry_after: Duration::from_secs(1),
            }),
            ProxyError::Credential(CredentialError::Unavailable {
                provider: "p".into(),
                error: GrantError::StoreUnavailable { reason: "x".into() },
                retry_after: Duration::from_secs(1),
            }),
            ProxyError::Credential(CredentialError::BadHeader {
                provider: "p".into(),
                header: "h".into(),
            }),
            ProxyError::Credential(CredentialError::NoAccount {
                provider: "p".into(),
                account: None,
            }),
            ProxyError::Credential(CredentialError::ReauthorizationRequired {
                provider: "p".into(),
                account: "a".into(),
            }),
            ProxyError::Credential(CredentialError::Store {
                provider: "p".into(),
            }),
            ProxyError::Upstream(UpstreamError::Connect(boxed())),
            ProxyError::Upstream(UpstreamError::Timeout(Duration::from_secs(1))),
            ProxyError::Upstream(UpstreamError::BodyTooLarge),
            ProxyError::Upstream(UpstreamError::BodyTimeout),
            ProxyError::Upstream(UpstreamError::CallerBody),
            ProxyError::Upstream(UpstreamError::Exchange(boxed())),
        ];
        let mut seen: Vec<&str> = errors.iter().map(ProxyError::code).collect();
        seen.sort_unstable();
        seen.dedup();
        // The one code answered before a request exists: a connection over max_connections.
        seen.push("too_many_connections");
        seen.sort_unstable();
        let mut expected = RELAY_ERROR_CODES.to_vec();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }
}
