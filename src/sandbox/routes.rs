//! From a request to the vendor that answers it: the first path segment names the vendor, then
//! the authorize page, the token endpoint or the API prefix decides. The latency knob delays
//! every vendor answer.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::api_auth::{self, AcceptedToken};
use super::reply::{self, ResponseBody};
use super::state::SandboxState;
use super::{Vendor, admin, crossbeam, echo, generic, token_endpoint, xref};

/// A vendor that issues its own tokens: where they are obtained and where they are used.
struct OAuthVendorRoutes {
    vendor: Vendor,
    token_path: &'static str,
    api_prefix: &'static str,
}

const OAUTH_VENDORS: [OAuthVendorRoutes; 5] = [
    OAuthVendorRoutes {
        vendor: Vendor::CrossRiver,
        token_path: "/cross-river/connect/token",
        api_prefix: "/cross-river/api/",
    },
    OAuthVendorRoutes {
        vendor: Vendor::Crossbeam,
        token_path: "/crossbeam/oauth/token",
        api_prefix: "/crossbeam/api/",
    },
    OAuthVendorRoutes {
        vendor: Vendor::Xref,
        token_path: "/xref/oauth/tokens",
        api_prefix: "/xref/api/",
    },
    OAuthVendorRoutes {
        vendor: Vendor::CultureAmp,
        token_path: "/cultureamp/v1/oauth2/token",
        api_prefix: "/cultureamp/v1/",
    },
    OAuthVendorRoutes {
        vendor: Vendor::Generic,
        token_path: "/generic/oauth/token",
        api_prefix: "/generic/api/",
    },
];

/// The partner API takes static personal access tokens only.
const PARTNER_API_PREFIX: &str = "/partner/api/";
const PARTNER_NAME: &str = "partner";

/// The browser steps of the code vendors, and Xref's disconnect.
const CROSSBEAM_AUTHORIZE_PATH: &str = "/crossbeam/authorize";
const GENERIC_AUTHORIZE_PATH: &str = "/generic/authorize";
const XREF_AUTHORIZE_PREFIX: &str = "/xref/oauth/open-api/";
const XREF_DEAUTHORIZE_PATH: &str = "/xref/oauth/deauthorize";

/// Cross River's documented connectivity check.
const CROSS_RIVER_TEST_PATH: &str = "/cross-river/api/SignupCard/TestOauth";

/// Answers any request that reached the sandbox.
pub(super) async fn route(
    state: &SandboxState,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if let Some(rest) = request.uri().path().strip_prefix("/_sandbox/") {
        let rest = rest.to_owned();
        return admin::handle(state, &rest, request).await;
    }
    state.count_request();
    let response = vendor_route(state, request).await;
    let latency = state.knobs().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

async fn vendor_route(state: &SandboxState, request: Request<Incoming>) -> Response<ResponseBody> {
    if let Some(response) = account_route(state, &request) {
        return response;
    }
    let path = request.uri().path();
    for routes in &OAUTH_VENDORS {
        if path == routes.token_path {
            if request.method() != Method::POST {
                return reply::method_not_allowed("POST");
            }
            return token_endpoint::handle(state, routes.vendor, request).await;
        }
        if path.starts_with(routes.api_prefix) {
            return api(
                state,
                request,
                AcceptedToken::Issued(routes.vendor),
                routes.vendor.path_name(),
            )
            .await;
        }
    }
    if path.starts_with(PARTNER_API_PREFIX) {
        return api(
            state,
            request,
            AcceptedToken::PersonalAccessToken,
            PARTNER_NAME,
        )
        .await;
    }
    reply::not_found()
}

/// The authorize pages a person visits to connect an account, and Xref's disconnect.
fn account_route(
    state: &SandboxState,
    request: &Request<Incoming>,
) -> Option<Response<ResponseBody>> {
    let (method, path, query) = (
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    let authorize = path == CROSSBEAM_AUTHORIZE_PATH
        || path == GENERIC_AUTHORIZE_PATH
        || path.starts_with(XREF_AUTHORIZE_PREFIX);
    if authorize && method != Method::GET {
        return Some(reply::method_not_allowed("GET"));
    }
    if path == CROSSBEAM_AUTHORIZE_PATH {
        return Some(crossbeam::authorize(state, query));
    }
    if path == GENERIC_AUTHORIZE_PATH {
        return Some(generic::authorize(state, query));
    }
    if let Some(client_id) = path.strip_prefix(XREF_AUTHORIZE_PREFIX) {
        return Some(xref::authorize(state, client_id, query));
    }
    if path == XREF_DEAUTHORIZE_PATH {
        if method != Method::POST {
            return Some(reply::method_not_allowed("POST"));
        }
        return Some(xref::deauthorize(state, request.headers()));
    }
    None
}

async fn api(
    state: &SandboxState,
    request: Request<Incoming>,
    accepted: AcceptedToken,
    vendor_name: &'static str,
) -> Response<ResponseBody> {
    state.count_api_request();
    let (method, path) = (request.method(), request.uri().path());
    if let Err(refusal) = api_auth::authorize(state, method, path, request.headers(), accepted) {
        return refusal.into_response();
    }
    if method == Method::GET && path == CROSS_RIVER_TEST_PATH {
        return reply::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "message": "OAuth token is valid"}),
        );
    }
    if method == Method::GET && path == crossbeam::USERS_ME_PATH {
        return crossbeam::users_me();
    }
    echo::handle(vendor_name, request).await
}
