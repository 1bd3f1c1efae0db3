//! Every metric name and every fixed label value, in one place: the names are a contract with
//! dashboards and alerts (DESIGN section 5), so they change only on purpose.

pub const TOKEN_REQUESTS_TOTAL: &str = "authrelay_token_requests_total";
pub const TOKEN_REQUEST_DURATION_SECONDS: &str = "authrelay_token_request_duration_seconds";
pub const TOKEN_CACHE_TOTAL: &str = "authrelay_token_cache_total";
pub const TOKEN_EXPIRY_SECONDS: &str = "authrelay_token_expiry_seconds";
pub const RETRIES_TOTAL: &str = "authrelay_retries_total";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "authrelay_upstream_requests_total";
pub const UPSTREAM_DURATION_SECONDS: &str = "authrelay_upstream_duration_seconds";
pub const RELAY_ERRORS_TOTAL: &str = "authrelay_relay_errors_total";
pub const CALLER_REQUESTS_TOTAL: &str = "authrelay_caller_requests_total";
pub const CONFIG_RELOADS_TOTAL: &str = "authrelay_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "authrelay_config_last_reload_success_timestamp_seconds";
pub const PROVIDER_STATE: &str = "authrelay_provider_state";
pub const CREDENTIALS_REJECTED: &str = "authrelay_credentials_rejected";
pub const ACCOUNTS_REAUTHORIZATION_REQUIRED: &str = "authrelay_accounts_reauthorization_required";
pub const STORE_ERRORS_TOTAL: &str = "authrelay_store_errors_total";
pub const STORE_UP: &str = "authrelay_store_up";

/// Label names.
pub const PROVIDER: &str = "provider";
pub const ACCOUNT: &str = "account";
pub const GRANT: &str = "grant";
pub const OUTCOME: &str = "outcome";
pub const RESULT: &str = "result";
pub const ROUTE: &str = "route";
pub const STATUS_CLASS: &str = "status_class";
pub const CODE: &str = "code";
pub const CALLER: &str = "caller";

/// `caller` of a request without caller credentials, where the listener serves those.
pub const CALLER_ANONYMOUS: &str = "anonymous";
/// `caller` of a request refused with 407: its credentials named nobody, or it had none.
pub const CALLER_UNKNOWN: &str = "unknown";
/// `route` of a request answered before a route was chosen.
pub const NO_ROUTE: &str = "";
pub const STATE: &str = "state";

/// `account` of a provider's own token. Accounts (one token per end customer) come later.
pub const NO_ACCOUNT: &str = "";

/// `outcome` of a token request.
pub const TOKEN_OK: &str = "ok";
pub const TOKEN_REJECTED: &str = "rejected";
pub const TOKEN_TRANSIENT: &str = "transient";
pub const TOKEN_RATE_LIMITED: &str = "rate_limited";

/// `result` of a token cache lookup.
pub const CACHE_HIT: &str = "hit";
pub const CACHE_MISS: &str = "miss";
pub const CACHE_EARLY_RENEWAL: &str = "early_renewal";

/// `outcome` of a 401 retry.
pub const RETRY_RECOVERED: &str = "recovered";
pub const RETRY_FAILED: &str = "failed";
pub const RETRY_NOT_REPLAYABLE: &str = "not_replayable";

/// `status_class` of an upstream request; `error` when no response came.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// `code` of an answer authrelay made itself: its `X-Relay-Error` codes (`proxy/error.rs`).
pub const RELAY_ERROR_CODES: [&str; 25] = [
    "no_route",
    "method_not_allowed",
    "bad_request",
    "body_too_large",
    "body_timeout",
    "target_too_long",
    "headers_too_large",
    "bad_framing",
    "upgrade_refused",
    "transfer_coding_unsupported",
    "bad_header",
    "caller_unknown",
    "caller_forbidden",
    "misdirected_host",
    "cross_site",
    "too_many_connections",
    "credentials_rejected",
    "token_unavailable",
    "bad_token_response",
    "no_account",
    "reauthorization_required",
    "store_unavailable",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_error",
];

/// `outcome` of a config reload.
pub const RELOAD_OK: &str = "ok";
pub const RELOAD_FAILED: &str = "failed";

/// `state` of a provider (and later, of an account).
pub const STATE_OK: &str = "ok";
pub const STATE_NOT_YET_USED: &str = "not_yet_used";
pub const STATE_RENEWING: &str = "renewing";
pub const STATE_BACKING_OFF: &str = "backing_off";
pub const STATE_CREDENTIALS_REJECTED: &str = "credentials_rejected";
pub const STATE_REAUTHORIZATION_REQUIRED: &str = "reauthorization_required";
pub const PROVIDER_STATES: [&str; 6] = [
    STATE_OK,
    STATE_NOT_YET_USED,
    STATE_RENEWING,
    STATE_BACKING_OFF,
    STATE_CREDENTIALS_REJECTED,
    STATE_REAUTHORIZATION_REQUIRED,
];
