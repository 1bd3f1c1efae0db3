//! Step 3 of the request path: send the request to the vendor and hand back its streaming response.
//!
//! One pooled hyper-util client per TLS profile (the OS roots, or the OS roots plus a provider's
//! `ca`), HTTP/1.1 or HTTP/2 by ALPN, plain `http://` allowed. Bodies are never buffered here.

use std::collections::HashMap;
use std::error::Error as StdError;

use http_body_util::LengthLimitError;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use rustls_pki_types::CertificateDer;

use crate::config::{Config, RouteConfig};
use crate::trust::{self, TrustError};

/// The body type on both sides of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn StdError + Send + Sync>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections close after this; vendors' load balancers drop them around 60 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Hop-by-hop headers of RFC 9110 section 7.6.1, plus the proxy ones that concern only this hop.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

type HttpsClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Pooled clients to the upstreams of one configuration.
pub struct Upstream {
    default: Pools,
    /// Providers with their own `ca` get their own pools, kept with the roots they trust.
    by_provider: HashMap<String, (Vec<CertificateDer<'static>>, Pools)>,
}

/// The clients of one trust profile.
#[derive(Clone)]
struct Pools {
    /// HTTP/1.1 or HTTP/2, as ALPN decides.
    any: HttpsClient,
    /// HTTP/1.1 only, for upgrade requests: HTTP/2 has no `Upgrade`, and hyper's HTTP/2 client
    /// would drop it, sending a plain credentialed GET instead.
    http1: HttpsClient,
}

/// Why the upstream gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    #[error("the upstream sent no response headers within {0:?}")]
    Timeout(Duration),
    #[error("the request body is larger than the route allows")]
    BodyTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the caller's request body was malformed or cut short")]
    CallerBody,
    #[error("the upstream exchange failed")]
    Exchange(#[source] BoxError),
}

// === impl Upstream ===

impl Upstream {
    /// Clients for `config`'s upstreams. Pools of `previous` whose trusted roots are unchanged
    /// are kept (warm connections survive a reload); a changed `ca` gets a new pool.
    pub fn build(config: &Config, previous: Option<&Upstream>) -> Result<Upstream, TrustError> {
        let default = match previous {
            Some(previous) => previous.default.clone(),
            None => Pools::new(trust::client_config(None)?),
        };
        let mut by_provider = HashMap::new();
        for (name, provider) in &config.providers {
            let Some(ca) = &provider.ca else { continue };
            let kept = previous
                .and_then(|p| p.by_provider.get(name))
                .filter(|(certs, _)| *certs == ca.certs);
            let pool = match kept {
                Some((_, pool)) => pool.clone(),
                None => Pools::new(trust::client_config(Some(ca))?),
            };
            by_provider.insert(name.clone(), (ca.certs.clone(), pool));
        }
        Ok(Upstream {
            default,
            by_provider,
        })
    }

    /// Sends `request` (already rewritten and authorized) and waits for the response headers
    /// at most the route's `timeout`. Redirects come back as they are.
    pub async fn send(
        &self,
        route: &RouteConfig,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pools = self
            .by_provider
            .get(&route.provider)
            .map_or(&self.default, |(_, pools)| pools);
        let client = if request.headers().contains_key(header::UPGRADE) {
            &pools.http1
        } else {
            &pools.any
        };
        match tokio::time::timeout(route.timeout, client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout(route.timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) if caused_by::<LengthLimitError>(&error) => {
                Err(UpstreamError::BodyTooLarge)
            }
            Ok(Err(error)) if caused_by::<BodyTimedOut>(&error) => Err(UpstreamError::BodyTimeout),
            Ok(Err(error)) if caused_by::<CallerBodyFailed>(&error) => {
                Err(UpstreamError::CallerBody)
            }
            Ok(Err(error)) if error.is_connect() => Err(UpstreamError::Connect(error.into())),
            Ok(Err(error)) => Err(UpstreamError::Exchange(error.into())),
        }
    }
}

impl Pools {
    fn new(tls: rustls::ClientConfig) -> Pools {
        Pools {
            any: client(tls.clone(), true),
            http1: client(tls, false),
        }
    }
}

fn client(tls: rustls::ClientConfig, http2: bool) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let https = if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .timer(TokioTimer::new())
        .build(https)
}

/// The caller's request body missed its deadline (see `proxy::deadline`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// Reading the caller's body failed (bad chunk framing, connection cut) while it streamed
/// upstream: the caller's fault, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("reading the caller's request body failed")]
pub struct CallerBodyFailed(#[source] pub hyper::Error);

fn caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Removes the headers that concern only one hop: every name listed in `Connection`, then the
/// fixed hop-by-hop set. Runs before credentials are injected, so `Connection: Authorization`
/// cannot remove the injected header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // `Upgrade` is hop-by-hop too; authrelay does not tunnel protocol switches.
    headers.remove(header::UPGRADE);
}

/// The tokens of every `Connection` header, trimmed, as raw bytes: one non-ASCII token must
/// not hide the valid names beside it.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// True for a name in the fixed hop-by-hop set (lower case).
pub fn is_hop_by_hop(name: &str) -> bool {
    name == "upgrade" || HOP_BY_HOP.iter().any(|hop| hop.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_listed_and_fixed_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"keep-alive, X-Secret-Hop, caf\xc3\xa9, authorization")
                .unwrap(),
        );
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer caller".parse().unwrap());
        headers.insert(header::TE, "trailers".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }
}
