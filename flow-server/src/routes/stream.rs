//! `GET /v1/flows/{flowId}/stream`: Server-Sent Events.
//!
//! Opens with `retry: <ms>`, then either the events after the client's `Last-Event-ID` (header,
//! or `?lastEventId=` for proxies that drop the header) when the ring still holds them, or a
//! `snapshot` frame whose id is the seq it reflects. Then every later event, `heartbeat` events
//! at the configured interval, a fresh `snapshot` when the client fell behind, and the end of the
//! stream on DELETE, on repeated overflow, and at shutdown. An unknown flow is not a 404 (as
//! upstream): the client gets an empty snapshot and sees the flow's first events live.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::AppState;
use crate::error::ApiError;
use crate::hub::{Subscription, Take};
use crate::routes::{query_param, readable_flow};
use crate::sse;

/// The handler.
pub async fn stream(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let flow = readable_flow(&state, path, query.as_deref(), &headers)?;
    if state.draining() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    // An id that is not one of ours (not a number) is treated like no id: fresh snapshot.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(query.as_deref(), "lastEventId"))
        .and_then(|s| s.trim().parse::<u64>().ok());
    let sub = state.hub().subscribe(&flow, last_event_id)?;
    tracing::debug!(
        flow,
        ?last_event_id,
        replay = sub.replayed(),
        "stream opened"
    );
    let cfg = state.stream_config();
    let retry = u64::try_from(cfg.retry.as_millis()).unwrap_or(u64::MAX);
    let body = Body::from_stream(futures_util::stream::unfold(
        SseState {
            first: Some(sse::retry(retry)),
            sub,
            heartbeat: heartbeat(cfg.heartbeat),
            shutdown: state.shutdown_signal(),
            done: false,
            _state: state.clone(),
        },
        |mut st| async move {
            let chunk = st.next().await?;
            Some((Ok::<Bytes, std::convert::Infallible>(chunk), st))
        },
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn heartbeat(every: Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + every, every);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// One open stream.
struct SseState {
    first: Option<Bytes>,
    sub: Subscription,
    heartbeat: Interval,
    shutdown: watch::Receiver<bool>,
    done: bool,
    /// Keeps the shutdown sender alive as long as the stream (the router may be dropped first).
    _state: AppState,
}

impl SseState {
    async fn next(&mut self) -> Option<Bytes> {
        let stopping = *self.shutdown.borrow();
        if self.done || stopping {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            match self.sub.take() {
                Take::Frames(b, _) => return Some(b),
                Take::Closed | Take::TooSlow => {
                    self.done = true;
                    return None;
                }
                Take::Idle => {}
            }
            tokio::select! {
                biased;
                _ = async { let _ = self.shutdown.wait_for(|s| *s).await; } => return None,
                _ = self.sub.changed() => {}
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(sse::HEARTBEAT)),
            }
        }
    }
}
