//! The front door, before any routing: framing and size limits, who the caller is, and (for
//! anonymous requests) whether a browser or a DNS-rebound name sent them.
//!
//! Order matters and is fixed: framing -> caller -> anonymous-request checks. The route's own
//! allow-list ([`allowed`]) runs after matching; header stripping and injection after that.

use std::sync::Arc;

use http::header::{
    CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, ORIGIN, PROXY_AUTHORIZATION,
    TRANSFER_ENCODING, UPGRADE,
};
use http::request::Parts;
use http::{Uri, Version};

use super::{Peer, PeerCertificate, ProxyError, is_absolute_form};
use crate::config::{Limits, RouteConfig};
use crate::route::{is_loopback_name, request_host};
use crate::state::State;
use crate::upstream::connection_tokens;

const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Who sent a request: a configured caller's name, or nobody in particular.
pub type Caller = Option<Arc<str>>;

/// How the caller was told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdentifiedBy {
    ApiKey,
    Certificate,
    Nothing,
}

/// Framing, limits and caller checks for one request; the caller it comes from.
pub(super) fn admit(state: &State, parts: &Parts, peer: &Peer) -> Result<Caller, ProxyError> {
    check_method(parts)?;
    let listener = state.config.listeners.get(peer.listener);
    let limits = listener.map_or(&Limits::DEFAULT, |listener| &listener.limits);
    check_framing(parts, limits, peer)?;
    let (caller, by) = identify(state, parts, peer)?;
    match by {
        // Browsers cannot set `Proxy-Authorization` cross-site.
        IdentifiedBy::ApiKey => {}
        // A browser holding the certificate presents it to any page's requests.
        IdentifiedBy::Certificate => {
            let origins = listener.map_or(&[][..], |listener| &listener.allowed_origins);
            check_browser(origins, &parts.headers)?;
        }
        // Authority that comes from merely reaching the port is what browsers can abuse.
        IdentifiedBy::Nothing => {
            let Some(listener) = listener.filter(|listener| listener.anonymous) else {
                return Err(ProxyError::CallerUnknown);
            };
            if peer.local_loopback {
                check_host(state, parts)?;
            }
            check_browser(&listener.allowed_origins, &parts.headers)?;
        }
    }
    Ok(caller)
}

/// The route's `callers` list: a named caller not on it gets 403; an anonymous one is asked
/// to authenticate.
pub(super) fn allowed(route: &RouteConfig, caller: &Caller) -> Result<(), ProxyError> {
    let Some(allowed) = &route.callers else {
        return Ok(());
    };
    match caller {
        None => Err(ProxyError::CallerUnknown),
        Some(name) if allowed.iter().any(|a| a.as_str() == &**name) => Ok(()),
        Some(_) => Err(ProxyError::CallerForbidden),
    }
}

/// A header name written with `_` where the proxy's own names have `-` (`X_Forwarded_For`,
/// `Xbeam_Organization`): some upstream frameworks treat the two as one, so such a header
/// could stand in for one the proxy strips or sets.
pub(super) fn check_underscores(
    headers: &HeaderMap,
    proxy_strips: impl Fn(&str) -> bool,
) -> Result<(), ProxyError> {
    let collides = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .any(|name| proxy_strips(&name.as_str().replace('_', "-")));
    if collides {
        Err(ProxyError::BadHeader)
    } else {
        Ok(())
    }
}

/// CONNECT (a tunnel), TRACE and TRACK (reflect the request, credentials included), in any
/// letter case: methods are case-sensitive, but some upstreams are not.
fn check_method(parts: &Parts) -> Result<(), ProxyError> {
    let method = parts.method.as_str();
    if ["CONNECT", "TRACE", "TRACK"]
        .iter()
        .any(|refused| method.eq_ignore_ascii_case(refused))
    {
        return Err(ProxyError::MethodNotAllowed);
    }
    Ok(())
}

fn check_framing(parts: &Parts, limits: &Limits, peer: &Peer) -> Result<(), ProxyError> {
    if target_len(&parts.uri) > limits.max_target_bytes {
        return Err(ProxyError::TargetTooLong);
    }
    let headers = &parts.headers;
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    // Names and values, plus ": " and CRLF, as they took on the wire.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    // hyper settles Content-Length against Transfer-Encoding itself (and drops the former);
    // what it saw on the wire comes from the connection's head sniffer.
    if peer.head.take_anomaly() {
        return Err(ProxyError::BadFraming);
    }
    let transfer_encodings = headers.get_all(TRANSFER_ENCODING).iter().count();
    if transfer_encodings > 0 {
        // (hyper itself refuses Transfer-Encoding on HTTP/1.0; HTTP/2 has none.)
        if transfer_encodings > 1 || headers.contains_key(CONTENT_LENGTH) {
            return Err(ProxyError::BadFraming);
        }
        // `gzip, chunked`: hyper decodes the chunks, but the gzip coding would reach the
        // upstream unannounced. RFC 9112 section 6.1: 501 for a coding not understood.
        let only_chunked = headers.get(TRANSFER_ENCODING).is_some_and(|value| {
            value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        });
        if !only_chunked {
            return Err(ProxyError::TransferCodingUnsupported);
        }
    }
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
        return Err(ProxyError::BadFraming);
    }
    Ok(())
}

/// An `Upgrade` request: refused unless the route opts in (`upgrade: true`) and it asks for
/// WebSocket over HTTP/1.1. `h2c` never passes: an upstream speaking HTTP/2 on the tunnel would
/// take requests authrelay never routed. The value to forward, when it may pass.
pub(super) fn check_upgrade(
    parts: &Parts,
    route: &RouteConfig,
) -> Result<Option<HeaderValue>, ProxyError> {
    let headers = &parts.headers;
    let connection_upgrade =
        connection_tokens(headers).any(|token| token.eq_ignore_ascii_case(b"upgrade"));
    let upgrade = headers.get(UPGRADE);
    if upgrade.is_none() && !connection_upgrade && !headers.contains_key(HTTP2_SETTINGS) {
        return Ok(None);
    }
    let websocket =
        upgrade.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let passes = route.upgrade
        && websocket
        && connection_upgrade
        && headers.get_all(UPGRADE).iter().count() == 1
        && !headers.contains_key(HTTP2_SETTINGS)
        && parts.version == Version::HTTP_11
        && parts.method == http::Method::GET;
    if passes {
        Ok(upgrade.cloned())
    } else {
        Err(ProxyError::UpgradeRefused)
    }
}

fn target_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3);
    let authority = uri
        .authority()
        .map_or(0, |authority| authority.as_str().len());
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    scheme + authority + path
}

/// The caller named by `Proxy-Authorization: Bearer <key>`, else by the client certificate.
/// A key that names nobody is an error even where anonymous requests are served: the caller
/// meant to be someone.
fn identify(
    state: &State,
    parts: &Parts,
    peer: &Peer,
) -> Result<(Caller, IdentifiedBy), ProxyError> {
    let callers = &state.callers;
    let mut presented = parts.headers.get_all(PROXY_AUTHORIZATION).iter();
    // Without callers nobody is identified; the header is stripped like any hop-by-hop one.
    if let Some(value) = presented.next().filter(|_| !callers.is_empty()) {
        if presented.next().is_some() {
            return Err(ProxyError::CallerUnknown);
        }
        let key = bearer_key(value.as_bytes()).ok_or(ProxyError::CallerUnknown)?;
        let caller = callers
            .by_api_key(key)
            .map_err(|_| ProxyError::CallerUnknown)?;
        return Ok((Some(caller), IdentifiedBy::ApiKey));
    }
    match &peer.certificate {
        PeerCertificate::None => Ok((None, IdentifiedBy::Nothing)),
        PeerCertificate::Subject(subject) => {
            let caller = callers
                .by_subject(subject)
                .map_err(|_| ProxyError::CallerUnknown)?;
            Ok((Some(caller), IdentifiedBy::Certificate))
        }
        PeerCertificate::Unreadable => Err(ProxyError::CallerUnknown),
    }
}

fn bearer_key(value: &[u8]) -> Option<&[u8]> {
    let (scheme, key) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !key.is_empty()).then_some(key.trim_ascii())
}

/// DNS rebinding: a page on `evil.example`, re-pointed at 127.0.0.1, reaches a loopback
/// listener with `Host: evil.example`. Loopback names and configured route hosts are ours.
fn check_host(state: &State, parts: &Parts) -> Result<(), ProxyError> {
    // An absolute-form target names its host itself: routing answers it (404 unless a route
    // names that host). Browsers never send one.
    if is_absolute_form(parts) {
        return Ok(());
    }
    let host_header = parts
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok());
    // HTTP/1.0 without Host: no browser sends that.
    let Some(host) = request_host(&parts.uri, host_header) else {
        return Ok(());
    };
    if is_loopback_name(host) || state.routes.names_host(host) {
        Ok(())
    } else {
        Err(ProxyError::MisdirectedHost)
    }
}

/// A browser page elsewhere must not borrow our credentials: cross-site and same-site fetches
/// and any `Origin` not configured are refused. Apps send neither header.
fn check_browser(allowed_origins: &[String], headers: &HeaderMap) -> Result<(), ProxyError> {
    if let Some(origin) = headers.get(ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|origin| {
            allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
        });
        return if allowed {
            Ok(())
        } else {
            Err(ProxyError::CrossSite)
        };
    }
    let site = headers.get(SEC_FETCH_SITE).map(|value| value.as_bytes());
    match site {
        Some(b"cross-site" | b"same-site") => Err(ProxyError::CrossSite),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "LOCALHOST",
            "api.localhost",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "localhost.",
        ] {
            assert!(is_loopback_name(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "169.254.169.254",
            "[::2]",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_name(host), "{host}");
        }
    }

    #[test]
    fn bearer_keys() {
        assert_eq!(bearer_key(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_key(b"bearer abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_key(b"Basic abc"), None);
        assert_eq!(bearer_key(b"Bearer "), None);
        assert_eq!(bearer_key(b"Bear"), None);
    }
}
