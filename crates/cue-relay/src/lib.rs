//! `cue-relay`: a stateless, zero-knowledge WebSocket relay for CueDeck Sync.
//!
//! Peers of one workspace connect to the same room
//! (`GET /v1/rooms/<room id hex>?peer=<peer id hex>`, upgraded to a WebSocket)
//! and exchange [`cue_wire`] frames through it. The relay reads only the routing
//! header; payloads are sealed end to end and forwarded byte for byte. It stores
//! nothing: a restart loses only the connections, and peers reconnect and resync
//! by themselves.
//!
//! The shape follows mini-redis: [`config`] (what can be tuned), `http` (admission
//! and the endpoints), `connection` (one WebSocket: reader, writer, limits),
//! `room` (membership and fan-out), `limits` (the token bucket), [`metrics`],
//! `shutdown` (one signal, then wait for every task), and [`close`] (the close
//! codes clients can match on).
//!
//! Embed it with [`serve`], or with [`Relay`] to read its metrics while it runs.

#![deny(clippy::unwrap_used)]

use std::future::{Future, IntoFuture};
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{debug, info, warn};

pub mod close;
pub mod config;
mod connection;
mod http;
mod limits;
pub mod metrics;
mod room;
mod shutdown;

pub use config::{ConfigError, RelayConfig};
pub use connection::check_client_frame;
pub use metrics::{MetricsSnapshot, RelayMetrics};

use metrics::Metrics;
use room::Rooms;
use shutdown::{Shutdown, TaskGuard};

/// Why [`serve`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration was refused before anything started.
    #[error("invalid relay configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP server failed.
    #[error("relay server failed: {0}")]
    Io(#[from] io::Error),
}

/// What every task of one relay shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) rooms: Rooms,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: Shutdown,
    pub(crate) tasks: TaskGuard,
}

/// A configured relay that has not started yet; hand out its metrics, then
/// [`Relay::serve`] it.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// Checks the configuration; nothing runs until [`Relay::serve`].
    pub fn new(config: RelayConfig) -> Result<Relay, ConfigError> {
        config.validate()?;
        Ok(Relay {
            config,
            metrics: Arc::default(),
        })
    }

    /// A handle on this relay's counters, valid before, during and after serving.
    pub fn metrics(&self) -> RelayMetrics {
        RelayMetrics(Arc::clone(&self.metrics))
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting,
    /// closes every WebSocket with 1001 "relay shutting down" and waits up to the
    /// configured grace for connections to finish. Returns `Ok` after a
    /// shutdown, however it went; the error is for a server that failed on its own.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RelayError> {
        let (trigger, shutdown_rx) = shutdown::shutdown_signal();
        let (guard, all_done) = shutdown::task_tracker();
        let grace = self.config.shutdown_grace;
        let shared = Arc::new(Shared {
            rooms: Rooms::new(self.config.max_peers_per_room, Arc::clone(&self.metrics)),
            config: self.config,
            metrics: self.metrics,
            shutdown: shutdown_rx.clone(),
            tasks: guard,
        });
        let app = http::router(shared);

        let mut stop_accepting = shutdown_rx;
        // Frames are small and must go out at once: with Nagle's algorithm a
        // frame waits for the ACK of the previous one, which the peer delays
        // by up to 40 ms (cue-load: fan-out p99 of 44 ms at a tenth of the
        // relay's throughput).
        let listener =
            axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                if let Err(err) = tcp.set_nodelay(true) {
                    debug!(%err, "cannot set TCP_NODELAY");
                }
            });
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop_accepting.recv().await })
            .into_future();
        let mut server = tokio::spawn(server);

        tokio::select! {
            () = shutdown => {}
            joined = &mut server => {
                trigger.trigger();
                return match joined {
                    Ok(result) => result.map_err(RelayError::from),
                    Err(err) => Err(RelayError::Io(io::Error::other(err))),
                };
            }
        }

        info!("shutting down: closing connections");
        trigger.trigger();
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut server).await;
            // The router held a guard too, so this also waits for the server.
            all_done.wait().await;
        })
        .await;
        if drained.is_err() {
            warn!(
                ?grace,
                "connections still open after the shutdown grace; dropping them"
            );
            server.abort();
        }
        info!("stopped");
        Ok(())
    }
}

/// Runs a relay with `config` on `listener` until `shutdown` completes; see
/// [`Relay::serve`]. Use [`Relay`] instead to read metrics while it runs.
pub async fn serve(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    Relay::new(config)?.serve(listener, shutdown).await
}
