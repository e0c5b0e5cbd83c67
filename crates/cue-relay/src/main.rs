//! The `cue-relay` binary: flags, logging, signals. Everything else is the library.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::TypedValueParser as _;
use clap::Parser;
use cue_relay::config::{self, RelayConfig};
use tracing_subscriber::EnvFilter;

/// Stateless, zero-knowledge WebSocket relay for CueDeck Sync.
///
/// Peers connect with `GET /v2/rooms/<room id hex>` and a WebSocket upgrade,
/// prove they hold the room's key (the relay sends a challenge, they answer
/// with a signature), then exchange sealed cue-wire frames with the other peers
/// of their room under the peer id the relay assigned. The relay reads only
/// routing headers and stores nothing.
/// `GET /healthz` answers "ok"; `GET /metrics` serves Prometheus metrics.
///
/// Every flag can also be set through the environment variable shown. Logs go to
/// stderr, filtered by RUST_LOG (default "info"); the only line on stdout is
/// "cue-relay listening on ws://ADDR".
#[derive(Debug, Parser)]
#[command(name = "cue-relay", version, about, long_about)]
struct Cli {
    /// Address and port to listen on. Port 0 picks a free port; the startup line
    /// on stdout shows the one chosen.
    #[arg(
        long,
        env = "CUE_RELAY_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    listen: SocketAddr,

    /// Require `Authorization: Bearer <TOKEN>` on every WebSocket upgrade;
    /// others get HTTP 401. Without it, anyone who can reach the relay can use it
    /// (payloads stay sealed either way). Prefer the environment variable, which
    /// does not show in the process list.
    #[arg(
        long,
        env = "CUE_RELAY_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    auth_token: Option<String>,

    /// Peers allowed in one room; the next one is closed with code 4003
    /// "room full (N peers)".
    #[arg(long, env = "CUE_RELAY_MAX_PEERS_PER_ROOM", value_name = "N",
          default_value_t = config::DEFAULT_MAX_PEERS_PER_ROOM,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_peers_per_room: usize,

    /// Largest WebSocket message accepted, header included; larger ones are
    /// closed with 1009 "frame too large". The default is a full 256 KiB payload
    /// plus the 66-byte header.
    #[arg(long, env = "CUE_RELAY_MAX_FRAME_BYTES", value_name = "BYTES",
          default_value_t = config::DEFAULT_MAX_FRAME_BYTES,
          value_parser = clap::value_parser!(u64).range(cue_wire::HEADER_LEN as u64..).map(|n| n as usize))]
    max_frame_bytes: usize,

    /// Sustained messages per second per connection. A faster client is slowed
    /// down (the relay pauses reading from it), not dropped.
    #[arg(long, env = "CUE_RELAY_RATE_PER_SEC", value_name = "N",
          default_value_t = config::DEFAULT_RATE_PER_SEC,
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_per_sec: u32,

    /// Messages a connection may send back to back before --rate-per-sec applies.
    #[arg(long, env = "CUE_RELAY_RATE_BURST", value_name = "N",
          default_value_t = config::DEFAULT_RATE_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: u32,

    /// Seconds a client may keep sending above its rate before it is closed with
    /// 4029 "rate limit exceeded".
    #[arg(long, env = "CUE_RELAY_FLOOD_GRACE_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_FLOOD_GRACE.as_secs())]
    flood_grace_secs: u64,

    /// Frames queued for one connection. A client that falls this far behind is
    /// closed with 4008 "slow consumer" instead of being buffered without bound.
    #[arg(long, env = "CUE_RELAY_OUTBOUND_QUEUE", value_name = "FRAMES",
          default_value_t = config::DEFAULT_OUTBOUND_QUEUE,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    outbound_queue: usize,

    /// Seconds between the pings the relay sends to every connection.
    #[arg(long, env = "CUE_RELAY_PING_INTERVAL_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_PING_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    ping_interval_secs: u64,

    /// Seconds without any message (pongs count) after which a connection is
    /// closed with 4408 "idle timeout". Must exceed --ping-interval-secs.
    #[arg(long, env = "CUE_RELAY_IDLE_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,

    /// Seconds to wait, on SIGTERM or SIGINT, for connections to finish closing
    /// (each is sent 1001 "relay shutting down") before exiting.
    #[arg(long, env = "CUE_RELAY_SHUTDOWN_GRACE_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace_secs: u64,

    /// Seconds a client has to send its whole HTTP request head (counted from
    /// the accept, or from the previous request). Slowloris sockets that
    /// trickle a request, or send nothing, are closed after it.
    #[arg(long, env = "CUE_RELAY_HEADER_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,

    /// Seconds from the TCP accept until the client must have proved the
    /// room's key (request head, upgrade, challenge and answer); later, it is
    /// closed with 4410 "admission timeout".
    #[arg(long, env = "CUE_RELAY_ADMISSION_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_ADMISSION_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    admission_timeout_secs: u64,

    /// Open connections per client address (an IPv4 address or an IPv6 /64).
    /// Past it, the address's oldest unadmitted connection is closed, or, if
    /// all of them are admitted, the new one is refused (HTTP 429). Behind a
    /// reverse proxy every client has the proxy's address: raise it there.
    #[arg(long, env = "CUE_RELAY_MAX_CONNS_PER_IP", value_name = "N",
          default_value_t = config::DEFAULT_MAX_CONNS_PER_IP,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_conns_per_ip: usize,

    /// Connections per client address that have not proved a room's key yet;
    /// past it, that address's oldest such connection is closed.
    #[arg(long, env = "CUE_RELAY_MAX_UNADMITTED_PER_IP", value_name = "N",
          default_value_t = config::DEFAULT_MAX_UNADMITTED_PER_IP,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_unadmitted_per_ip: usize,

    /// Connections from all addresses that have not proved a room's key yet;
    /// past it, the oldest such connection is closed. Keep it well below the
    /// process's open-files limit (`ulimit -n`).
    #[arg(long, env = "CUE_RELAY_MAX_UNADMITTED", value_name = "N",
          default_value_t = config::DEFAULT_MAX_UNADMITTED,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_unadmitted: usize,

    /// Seconds between two log lines about the same kind of shed load (each
    /// line gives the count since the previous one).
    #[arg(long, env = "CUE_RELAY_SHED_LOG_INTERVAL_SECS", value_name = "SECS",
          default_value_t = config::DEFAULT_SHED_LOG_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    shed_log_interval_secs: u64,
}

impl Cli {
    fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            auth_token: self.auth_token.clone(),
            max_peers_per_room: self.max_peers_per_room,
            max_frame_bytes: self.max_frame_bytes,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            flood_grace: Duration::from_secs(self.flood_grace_secs),
            outbound_queue: self.outbound_queue,
            ping_interval: Duration::from_secs(self.ping_interval_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            admission_timeout: Duration::from_secs(self.admission_timeout_secs),
            max_conns_per_ip: self.max_conns_per_ip,
            max_unadmitted_per_ip: self.max_unadmitted_per_ip,
            max_unadmitted: self.max_unadmitted,
            shed_log_interval: Duration::from_secs(self.shed_log_interval_secs),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let relay = cue_relay::Relay::new(cli.relay_config()).context("invalid flags")?;
    let listener =
        cue_relay::bind(cli.listen).with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Scripts and tests parse this line to find the port.
    println!("cue-relay listening on ws://{addr}");
    tracing::info!(%addr, auth = cli.auth_token.is_some(), "listening");

    relay
        .serve(listener, termination())
        .await
        .context("relay failed")?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what container runtimes send).
async fn termination() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
