//! `cue-relay`: a stateless, zero-knowledge WebSocket relay for CueDeck Sync.
//!
//! Peers of one workspace connect to the same room (`GET /v2/rooms/<room id
//! hex>`, upgraded to a WebSocket), prove that they hold the workspace key
//! (room admission, see [`cue_wire::admission`]), and exchange [`cue_wire`]
//! frames through it as the peer id the relay assigned them. The relay reads
//! only the routing header; payloads are sealed end to end and forwarded
//! byte for byte. It stores nothing: a restart loses only the connections,
//! and peers reconnect and resync by themselves.
//!
//! The shape follows mini-redis: [`config`] (what can be tuned), `server` (the
//! accept loop: connection caps, header deadline), `http` (the endpoints),
//! `connection` (one WebSocket: admission, reader, writer, limits), `room`
//! (membership and fan-out), `limits` (the token bucket, the connection
//! caps), `shed` (counting and logging what is shed), [`metrics`], and the
//! close codes clients match on, which live in [`cue_wire::close`] (also
//! reachable as [`close`]). Shutdown is one `CancellationToken` every task
//! watches and a `TaskTracker` to wait for them.
//!
//! Embed it with [`serve`], or with [`Relay`] to read its metrics while it runs.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use cue_wire::close;
pub mod config;
mod connection;
mod http;
mod limits;
pub mod metrics;
mod room;
mod server;
mod shed;

pub use config::{ConfigError, RelayConfig};
pub use connection::{check_auth_frame, check_client_frame};
pub use metrics::{MetricsSnapshot, RelayMetrics};

use limits::conns::{Gate, GateLimits};
use metrics::Metrics;
use room::Rooms;
use shed::ShedLog;

/// Why [`serve`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration was refused before anything started.
    #[error("invalid relay configuration: {0}")]
    Config(#[from] ConfigError),
    /// The server failed.
    #[error("relay server failed: {0}")]
    Io(#[from] io::Error),
}

/// Backlog of the listening socket: connections the kernel has completed and
/// queues until the relay accepts them. Under a connection flood the relay
/// accepts as fast as its share of the CPU allows; when the queue is full the
/// kernel drops a real client's SYN, and the client resends it only after a
/// second (`cue-load attack` with tokio's default of 1,024: a member's join
/// took 1.05 s, and the kernel counted 11,080 listen overflows). The kernel
/// caps it at `net.core.somaxconn` (4,096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket for a relay on `addr`, with [`LISTEN_BACKLOG`]:
/// what `cue-relay` binds; programs that embed the relay should use it too.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do on Unix, so a restarted relay can bind its port
    // while the old connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What every task of one relay shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) rooms: Rooms,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) shed: ShedLog,
    /// Cancelled once, when the relay shuts down; every task watches it.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task, so the shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
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
    /// closes every WebSocket with 1001 "relay shutting down" and waits up to
    /// the configured grace for connections to finish. Returns `Ok` after a
    /// shutdown, however it went.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RelayError> {
        let grace = self.config.shutdown_grace;
        let limits = GateLimits {
            max_conns_per_ip: self.config.max_conns_per_ip,
            max_unadmitted_per_ip: self.config.max_unadmitted_per_ip,
            max_unadmitted: self.config.max_unadmitted,
        };
        let shared = Arc::new(Shared {
            rooms: Rooms::new(self.config.max_peers_per_room, Arc::clone(&self.metrics)),
            gate: Arc::new(Gate::new(limits, Arc::clone(&self.metrics))),
            shed: ShedLog::new(self.config.shed_log_interval),
            config: self.config,
            metrics: self.metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let router = http::router(Arc::clone(&shared));
        shared
            .tasks
            .spawn(server::accept_loop(listener, Arc::clone(&shared), router));
        shared.tasks.spawn(flush_shed_log(Arc::clone(&shared)));

        shutdown.await;
        info!("shutting down: closing connections");
        shared.shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout(grace, shared.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "connections still open after the shutdown grace; dropping them"
            );
        }
        shared.shed.flush();
        info!("stopped");
        Ok(())
    }
}

/// Writes the shed counts that no later event logged, every interval.
async fn flush_shed_log(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(shared.config.shed_log_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = every.tick() => shared.shed.flush(),
        }
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
