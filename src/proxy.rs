//! The request path, and the only place its steps meet:
//! route -> credential -> upstream -> response (or [`ProxyError::into_response`]).

mod access;
mod deadline;
mod error;
mod gate;
mod retry;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, HeaderMap, HeaderName, HeaderValue,
    UPGRADE,
};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CertSubject, Limits, RouteAccount, RouteConfig, check_account_name};
use crate::credential::CredentialError;
use crate::route::{
    RouteRequest, prefix_depth, request_host, resolve_path, upstream_path_and_query,
};
use crate::server::HeadWatch;
use crate::state::{SharedState, State};
use crate::upstream::{BoxError, ProxyBody, is_hop_by_hop, strip_hop_by_hop};

pub use error::{ProxyError, RELAY_ERROR_HEADER};
pub use gate::Caller;
pub use retry::RetryOutcome;

use retry::{Attempts, Outgoing, RequestBody, send_with_retry};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers only authrelay may set, and headers some upstream frameworks obey to change the
/// path or method after routing (IIS `X-Original-URL`, method overrides): a caller could use them
/// to reach what its route does not allow.
const CALLER_MAY_NOT_SET: [HeaderName; 14] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-method"),
    // httpoxy: CGI-style upstreams turn `Proxy` into an HTTP_PROXY setting.
    HeaderName::from_static("proxy"),
];

/// Set by the proxy from the route and upstream, never taken from the caller.
const PROXY_OWNED: [HeaderName; 2] = [AUTHORIZATION, HOST];

/// True for a (lower-case) header name the proxy strips from the caller's request before it
/// injects its own: what `rewrite_headers` removes, as one predicate.
fn proxy_strips(name: &str, route: &RouteConfig) -> bool {
    is_hop_by_hop(name)
        || PROXY_OWNED
            .iter()
            .chain(&CALLER_MAY_NOT_SET)
            .any(|own| own.as_str() == name)
        || route
            .headers
            .iter()
            .any(|(injected, _)| injected.as_str() == name)
        || matches!(&route.account, RouteAccount::FromHeader(header) if header.as_str() == name)
}

/// The connected account a request uses: the route's, or the one the caller names in the
/// route's `account_header` (read before that header is stripped). An invalid name is no
/// account, and is never echoed.
fn route_account<'a>(route: &'a RouteConfig, headers: &'a HeaderMap) -> Option<&'a str> {
    match &route.account {
        RouteAccount::None => None,
        RouteAccount::Fixed(account) => Some(account),
        RouteAccount::FromHeader(header) => {
            let mut values = headers.get_all(header).iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                return None;
            };
            value
                .to_str()
                .ok()
                .filter(|name| check_account_name(name).is_ok())
        }
    }
}

/// Handles caller requests against the live state.
#[derive(Clone)]
pub struct Proxy {
    state: SharedState,
}

/// What the listener knows about the caller's connection.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The connection arrived on a loopback address (also through a `0.0.0.0` listener): the
    /// caller is on this host, where browsers and DNS rebinding reach too.
    pub local_loopback: bool,
    /// Index of the listener in the config.
    pub listener: usize,
    /// `http` or `https`: how the caller reached authrelay.
    pub scheme: &'static str,
    /// The client certificate a `client_ca` listener verified.
    pub certificate: PeerCertificate,
    /// What the connection's head sniffer saw of the request heads.
    pub head: Arc<HeadWatch>,
    /// Where an upgraded connection's tunnel lives on.
    pub scope: ConnectionScope,
}

/// A verified client certificate, as far as naming a caller goes.
#[derive(Debug, Clone)]
pub enum PeerCertificate {
    None,
    Subject(Arc<CertSubject>),
    /// Verified, but its subject could not be read (an unusual string type): it names nobody.
    Unreadable,
}

/// What a tunnel must hold to count as its connection: the connection's slot under
/// `max_connections`, the task set shutdown waits for, and the signal that ends the grace.
#[derive(Clone)]
pub struct ConnectionScope {
    pub slot: Arc<dyn std::any::Any + Send + Sync>,
    pub tasks: TaskTracker,
    pub abort: CancellationToken,
}

// === impl Proxy ===

impl Proxy {
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    /// Answers one caller request; never fails (errors become authrelay's own responses).
    pub async fn handle(&self, request: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        // In-flight requests finish on the state they started with, whatever a reload does.
        let state = self.state.load_full();
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        let mut attempts = Attempts::default();
        let mut caller = None;
        let (route, result) = match gate::admit(&state, &parts, peer) {
            Err(error) => (None, Err(error)),
            Ok(admitted) => {
                caller = admitted;
                match match_route(&state, &parts) {
                    Ok((route, path)) => {
                        let result = match gate::allowed(&route, &caller) {
                            Ok(()) => {
                                let request = Inbound { parts, body, path };
                                forward(&state, &route, request, peer, &mut attempts).await
                            }
                            Err(error) => Err(error),
                        };
                        (Some(route), result)
                    }
                    Err(error) => (None, Err(error)),
                }
            }
        };
        let (response, relay_error) = match result {
            Ok(response) => (response, None),
            Err(error) => {
                tracing::debug!(%error, "answered by the proxy");
                let code = error.code();
                state.metrics.relay_error(code);
                (error.into_response(), Some(code))
            }
        };
        let outcome = access::Outcome {
            route: route.as_deref(),
            caller: caller.as_deref(),
            method: &method,
            attempts: &attempts,
            relay_error,
            started,
        };
        access::record(&state, outcome, &response);
        response
    }
}

/// Step 1: the route, chosen on the normalized path, which is also the path forwarded.
fn match_route(state: &State, parts: &Parts) -> Result<(Arc<RouteConfig>, String), ProxyError> {
    let resolved = resolve_path(parts.uri.path()).ok_or(ProxyError::BadPath)?;
    // `http://169.254.169.254@api.vendor.example/`: userinfo only serves to disguise the host.
    if parts
        .uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return Err(ProxyError::BadPath);
    }
    let host_header = parts
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok());
    let route = state.routes.match_request(RouteRequest {
        method: &parts.method,
        host: request_host(&parts.uri, host_header),
        absolute_form: is_absolute_form(parts),
        path: &resolved.path,
    })?;
    // `/partner/../cross-river/x`: a `..` that climbed out of one route into another.
    if resolved.lowest_depth != usize::MAX
        && prefix_depth(&route.matcher.path_prefix) > resolved.lowest_depth
    {
        return Err(ProxyError::BadPath);
    }
    Ok((Arc::clone(route), resolved.path))
}

/// A routed request: its head, its body still unread, and the normalized path.
struct Inbound {
    parts: Parts,
    body: Incoming,
    path: String,
}

/// Steps 2 to 4: credentials, upstream, response.
async fn forward(
    state: &State,
    route: &RouteConfig,
    request: Inbound,
    peer: &Peer,
    attempts: &mut Attempts,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Inbound {
        mut parts,
        body,
        path,
    } = request;
    gate::check_underscores(&parts.headers, |name| proxy_strips(name, route))?;
    let upgrade = gate::check_upgrade(&parts, route)?
        .map(|protocol| (protocol, parts.extensions.remove::<OnUpgrade>()));
    if declared_length(&parts.headers).is_some_and(|length| length > route.max_body) {
        return Err(ProxyError::BodyTooLarge);
    }
    let body_deadline = Instant::now()
        + state
            .config
            .listeners
            .get(peer.listener)
            .map_or(Limits::DEFAULT.body_read_timeout, |l| {
                l.limits.body_read_timeout
            });
    let upstream_uri = upstream_uri(route, &path, parts.uri.query())?;
    // Before the body is read: a request for an account that is not connected goes no further.
    let account = route_account(route, &parts.headers);
    attempts.account = account.map(str::to_owned);
    let credential = match (&route.account, account) {
        (RouteAccount::FromHeader(_), None) => {
            return Err(CredentialError::NoAccount {
                provider: route.provider.clone(),
                account: None,
            }
            .into());
        }
        _ => {
            state
                .credentials
                .credential(&route.provider, account)
                .await?
        }
    };
    let host_header = parts
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok());
    let original_host = host_header
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    rewrite_headers(&mut parts.headers, route, peer, original_host.as_deref());
    if let Some((protocol, _)) = &upgrade {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol.clone());
    }

    // 2 and 3. Credentials (injected after the caller's hop-by-hop headers were stripped), then
    // the upstream, with one replay after a 401 when the body could be kept.
    let replay_wanted = credential.can_refresh();
    let body = RequestBody::prepare(
        body,
        replay_wanted,
        route.max_replay_body,
        route.max_body,
        body_deadline,
    )
    .await?;
    let outgoing = Outgoing {
        method: parts.method,
        uri: upstream_uri,
        headers: parts.headers,
    };
    let mut response = send_with_retry(state, route, &credential, outgoing, body, attempts).await?;

    // 4. Response, streamed back as it arrives; or, for an accepted upgrade, a tunnel.
    if let Some((_, Some(caller_side))) = upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream_side = hyper::upgrade::on(&mut response);
        tunnel(caller_side, upstream_side, &route.name, peer.scope.clone());
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, ProxyBody::default()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed(),
    ))
}

/// Copies bytes both ways between the caller's and the upstream's upgraded connections until
/// either side closes. Credentials went into the upgrade request only; the tunnel adds none.
///
/// The tunnel keeps its connection's `max_connections` slot, and shutdown waits for it until the
/// grace period ends, then closes it.
fn tunnel(caller: OnUpgrade, upstream: OnUpgrade, route: &str, scope: ConnectionScope) {
    let route = route.to_owned();
    let ConnectionScope { slot, tasks, abort } = scope;
    tasks.spawn(async move {
        let _slot = slot;
        let copy = async {
            let (caller, upstream) = tokio::try_join!(caller, upstream)?;
            let (mut caller, mut upstream) = (TokioIo::new(caller), TokioIo::new(upstream));
            tokio::io::copy_bidirectional(&mut caller, &mut upstream)
                .await
                .map_err(BoxError::from)?;
            Ok::<_, BoxError>(())
        };
        tokio::select! {
            result = copy => if let Err(error) = result {
                tracing::debug!(%route, %error, "upgraded connection ended with an error");
            },
            () = abort.cancelled() => tracing::debug!(%route, "closing an upgraded connection at shutdown"),
        }
    });
}

/// An HTTP/1 request whose target names a scheme and host: the caller uses authrelay as its
/// `HTTP_PROXY`. (HTTP/2 requests always carry an authority; it plays the `Host` header's part.)
pub(super) fn is_absolute_form(parts: &Parts) -> bool {
    parts.version < Version::HTTP_2 && parts.uri.scheme().is_some()
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn upstream_uri(route: &RouteConfig, path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
    Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(upstream_path_and_query(route, path, query))
        .build()
        .map_err(|_| ProxyError::BadPath)
}

/// Drops what belongs to the caller's hop or is the proxy's to say, then states where the
/// request came from. `Host` is left to the client, which sets it from the upstream URI.
fn rewrite_headers(
    headers: &mut HeaderMap,
    route: &RouteConfig,
    peer: &Peer,
    original_host: Option<&str>,
) {
    // `Proxy-Authorization` (the caller's key) is hop-by-hop and goes with the rest.
    strip_hop_by_hop(headers);
    for name in PROXY_OWNED.iter().chain(&CALLER_MAY_NOT_SET) {
        headers.remove(name);
    }
    // The route's own headers are set after the credential; a caller's copy never survives.
    for (name, _) in &route.headers {
        headers.remove(name);
    }
    // The caller's choice of account is for the proxy, not the vendor.
    if let RouteAccount::FromHeader(name) = &route.account {
        headers.remove(name);
    }
    join_cookies(headers);
    let client_ip = HeaderValue::from_str(&peer.addr.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    headers.insert(X_FORWARDED_FOR, client_ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(peer.scheme));
    if let Some(value) = original_host.and_then(|host| HeaderValue::from_str(host).ok()) {
        headers.insert(X_FORWARDED_HOST, value);
    }
}

/// HTTP/2 lets a caller split `cookie` into several fields; an HTTP/1.1 upstream must see one
/// (RFC 9113 section 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}
