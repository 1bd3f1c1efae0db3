//! Entry points for the fuzz targets in `fuzz/` only; not a stable API, and nothing in the
//! crate uses it. Everything else the targets need (`Config::from_yaml`, `HeaderTemplate`,
//! `route::normalize_path`, `RouteTable`, `AccessToken::from_response`) is public already.

use std::time::Duration;

use http::StatusCode;

use crate::config::ProviderConfig;
use crate::credential::{GrantError, Issued};
use crate::server::sniff_stream;

/// How a token endpoint's answer is classified: the token, or why there is none and what the
/// cache may do next. `retry_after` is what [`crate::credential::retry_after`] read from the
/// answer's headers.
pub fn classify_token_response(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    provider: &ProviderConfig,
) -> Result<Issued, GrantError> {
    crate::credential::classify(status, retry_after, body, provider)
}

/// The head sniffer's verdicts on `stream` fed in pieces of `piece` bytes (at least 1), and
/// whether it stopped looking: see `server/sniff.rs`.
pub fn sniff(stream: &[u8], piece: usize, max_fields: usize) -> (Vec<bool>, bool) {
    sniff_stream(stream, piece, max_fields)
}
