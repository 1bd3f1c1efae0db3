//! `GET /metrics`: the time-dependent gauges are set from the live state's credentials, then
//! every metric is encoded in the Prometheus text format 0.0.4.

use bytes::Bytes;
use http::{Response, StatusCode};

use super::{Admin, respond, text};
use crate::credential::ProviderStatus;
use crate::metrics::TEXT_FORMAT;
use crate::upstream::ProxyBody;

// === impl Admin ===

impl Admin {
    pub(super) fn metrics(&self) -> Response<ProxyBody> {
        let snapshot = self.state.load().credentials.snapshot();
        let health = self.store.health();
        self.metrics
            .record_store_health(health.reachable, health.errors);
        match self
            .metrics
            .render(snapshot.iter().map(ProviderStatus::gauges))
        {
            Ok(body) => respond(StatusCode::OK, TEXT_FORMAT, Bytes::from(body)),
            Err(error) => {
                tracing::error!(%error, "cannot encode the metrics");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the metrics\n",
                )
            }
        }
    }
}
