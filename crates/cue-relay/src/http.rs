//! The HTTP surface: the WebSocket endpoint with its admission checks, health
//! and metrics.
//!
//! Everything that can be refused without a WebSocket is refused here, as a
//! plain HTTP error with a body that says what to fix: a missing or wrong token
//! (401), a malformed room or peer id (400). A full room is refused after the
//! upgrade instead (close 4003), because only the room lock can decide it
//! without a race between checking and joining.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cue_wire::{PeerId, RoomId};
use tracing::debug;

use crate::metrics::{bump, RelayMetrics};
use crate::{connection, Shared};

/// The relay's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/rooms/{room}", get(connect))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

async fn connect(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(token) = &shared.config.auth_token {
        if !bearer_matches(&headers, token) {
            bump(&shared.metrics.auth_rejected);
            debug!("refused: missing or wrong token");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "unauthorized: this relay requires an `Authorization: Bearer <token>` header \
                 with the token it was started with (--auth-token / CUE_RELAY_AUTH_TOKEN)\n",
            )
                .into_response();
        }
    }
    let room: RoomId = match room.parse() {
        Ok(room) => room,
        Err(err) => {
            return bad_request(format!(
                "bad room id in /v1/rooms/<room id>: {err}; a room id is 32 bytes as 64 hex characters\n"
            ))
        }
    };
    let peer = match peer_param(query.as_deref()) {
        Ok(peer) => peer,
        Err(message) => return bad_request(message),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
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
        .on_upgrade(move |socket| connection::run(socket, room, peer, shared))
}

/// Initial read buffer of a connection (see the upgrade above).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The `peer` query parameter as a peer id, or the text of a 400 reply.
fn peer_param(query: Option<&str>) -> Result<PeerId, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("peer="));
    let Some(value) = value else {
        return Err(
            "missing peer id: connect to /v1/rooms/<room id hex>?peer=<peer id hex>\n".into(),
        );
    };
    let peer: PeerId = value.parse().map_err(|err| {
        format!("bad peer id in ?peer=: {err}; a peer id is 16 bytes as 32 hex characters\n")
    })?;
    if peer.is_zero() {
        return Err("bad peer id in ?peer=: the all-zero id is reserved for the relay\n".into());
    }
    Ok(peer)
}

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
        "not found: this is a cue-relay; connect a WebSocket to /v1/rooms/<room id hex>?peer=<peer id hex>, \
         or GET /healthz or /metrics\n",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn peer_param_is_parsed_and_checked() {
        let hex = "ab".repeat(16);
        assert_eq!(
            peer_param(Some(&format!("x=1&peer={hex}"))).unwrap(),
            hex.parse().unwrap()
        );
        assert!(peer_param(None).unwrap_err().contains("missing peer id"));
        assert!(peer_param(Some("peer=xyz"))
            .unwrap_err()
            .contains("invalid hex character"));
        assert!(peer_param(Some(&format!("peer={}", "0".repeat(32))))
            .unwrap_err()
            .contains("reserved"));
    }

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
