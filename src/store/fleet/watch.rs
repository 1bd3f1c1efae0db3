//! The background task of a fleet store: it keeps a subscription to the updates channel (so
//! replicas waiting on a lease holder wake as soon as the token is written), probes Redis every
//! second so that `/readyz` shows an outage and its end even without traffic, and checks the
//! key again after every reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{EVERY_RECORD, Shared};

/// How often an idle replica checks that Redis answers.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Reconnection delays: the first, and the largest.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

pub(super) async fn run(shared: Arc<Shared>) {
    let mut delay = RECONNECT_FIRST;
    loop {
        if shared.wrong_key.load(std::sync::atomic::Ordering::SeqCst) {
            // Nothing will be read or written; the error is logged once.
            return;
        }
        match subscribe(&shared).await {
            Ok(messages) => {
                delay = RECONNECT_FIRST;
                // Anything written while unsubscribed went unheard: every waiter reads again.
                let _ = shared.updates.send(Arc::from(EVERY_RECORD));
                forward(&shared, messages).await;
            }
            Err(error) => {
                shared.note_error("subscribe", &error);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

async fn subscribe(shared: &Shared) -> Result<redis::aio::PubSubStream, String> {
    let connect = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(shared.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(shared.timeout * 4, connect).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return Err(super::describe(&error)),
        Err(_) => return Err("no answer while subscribing".into()),
    };
    // A replica started while Redis was down has not checked its key yet.
    if let Err(error) = shared.check_key().await {
        return Err(error.to_string());
    }
    Ok(pubsub.into_on_message())
}

/// Forwards notifications until the subscription ends; probes Redis in between.
async fn forward(shared: &Shared, mut messages: redis::aio::PubSubStream) {
    let mut probe = tokio::time::interval(PROBE_EVERY);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    shared.note_error("subscribe", "the subscription connection closed");
                    return;
                };
                if let Ok(name) = message.get_payload::<String>() {
                    let _ = shared.updates.send(Arc::from(name));
                }
            }
            _ = probe.tick() => {
                let pinged: Result<String, _> = shared
                    .run("ping", |mut connection| async move {
                        redis::cmd("PING").query_async(&mut connection).await
                    })
                    .await;
                // A Redis that stopped answering may leave this connection open for minutes.
                if pinged.is_err() {
                    return;
                }
            }
        }
    }
}
