//! The HTTP surface: the WebSocket endpoint with the checks that can be made
//! before the upgrade, health and metrics.
//!
//! Everything that can be refused without a WebSocket is refused here, as a
//! plain HTTP error with a body that says what to fix: a missing or wrong
//! token (401, checked first, as soon as the request head is read), a
//! malformed room id (400). Room admission happens after the upgrade (see
//! [`crate::connection`]), and so does "room full" (4003), which only the
//! room's lock can decide without a race between checking and joining.
//!
//! Version 1 clients (`/v1/rooms/…?peer=…`, no admission) are upgraded and
//! closed at once with 4426 and a reason that says to upgrade, so they log
//! why instead of retrying in silence.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cue_wire::close;
use cue_wire::RoomId;
use tracing::debug;

use crate::limits::conns::ConnSlot;
use crate::metrics::RelayMetrics;
use crate::shed::Shed;
use crate::{connection, Shared};

/// The connection a request arrived on: its slot under the caps, taken by
/// the WebSocket upgrade (which outlives the HTTP connection), and left to
/// the HTTP connection otherwise.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle(pub(crate) Arc<Mutex<Option<ConnSlot>>>);

impl ConnHandle {
    fn take(&self) -> Option<ConnSlot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The path of the WebSocket endpoint, for messages.
pub(crate) const ROOM_PATH: &str = "/v2/rooms/<room id hex>";

/// The relay's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/rooms/{room}", get(connect))
        .route("/v1/rooms/{room}", get(outdated))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

/// The token check every room request starts with; `Some` is the refusal.
fn refuse_token(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = shared.config.auth_token.as_ref()?;
    if bearer_matches(headers, token) {
        return None;
    }
    shared.shed.note(&shared.metrics, Shed::BadToken);
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized: this relay requires an `Authorization: Bearer <token>` header \
             with the token it was started with (--auth-token / CUE_RELAY_AUTH_TOKEN)\n",
        )
            .into_response(),
    )
}

async fn connect(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    conn: Option<Extension<ConnHandle>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(refusal) = refuse_token(&shared, &headers) {
        return refusal;
    }
    let room: RoomId = match room.parse() {
        Ok(room) => room,
        Err(err) => {
            return bad_request(format!(
                "bad room id in {ROOM_PATH}: {err}; a room id is 32 bytes as 64 hex characters\n"
            ))
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(slot) = conn.and_then(|Extension(conn)| conn.take()) else {
        // Only the relay's own accept loop serves this router, and it gives
        // every connection a handle; one request per upgrade takes it.
        return (StatusCode::INTERNAL_SERVER_ERROR, "no connection slot\n").into_response();
    };
    let task = shared.tasks.token();
    let max = shared.config.max_frame_bytes;
    upgrade
        // tungstenite reserves its whole read buffer per connection (128 KiB
        // by default: 1.4 GB for 10,000 peers). Peers' frames are mostly a
        // few hundred bytes; a larger one grows the buffer while it is read.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|err| debug!(%err, "upgrade failed"))
        .on_upgrade(move |socket| connection::run(socket, room, slot, shared, task))
}

/// A protocol v1 client: upgraded only to be told, in a close frame its
/// reconnect loop logs, that it must upgrade.
async fn outdated(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(refusal) = refuse_token(&shared, &headers) {
        return refusal;
    }
    shared.shed.note(&shared.metrics, Shed::Outdated);
    let Ok(upgrade) = upgrade else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            format!("{}\n", close::OUTDATED.reason),
        )
            .into_response();
    };
    let task = shared.tasks.token();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |mut socket| async move {
            let frame = CloseFrame {
                code: close::OUTDATED.code,
                reason: close::OUTDATED.reason.as_ref().into(),
            };
            let _ = tokio::time::timeout(
                OUTDATED_CLOSE_GRACE,
                socket.send(Message::Close(Some(frame))),
            )
            .await;
            drop(task);
        })
}

/// How long the close frame to a v1 client may take to go out.
const OUTDATED_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Initial read buffer of a connection (see the upgrade above).
const READ_BUFFER_BYTES: usize = 4 * 1024;

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Whether the request carries `Authorization: Bearer <token>` with this token.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, presented)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so response timing does not reveal how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let body = RelayMetrics(Arc::clone(&shared.metrics)).render_prometheus();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: this is a cue-relay; connect a WebSocket to /v2/rooms/<room id hex>, \
         or GET /healthz or /metrics\n",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!bearer_matches(&headers, "s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(bearer_matches(&headers, "s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert!(bearer_matches(&headers, "s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(!bearer_matches(&headers, "s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!bearer_matches(&headers, "s3cret"));
    }
}
