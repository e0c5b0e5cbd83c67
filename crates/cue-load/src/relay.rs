//! The relay under test: started as a child process (a `cue-relay` binary, or
//! this binary's built-in `relay` subcommand serving the same library), or an
//! external one given by URL; and its `/metrics`, read as a cross-check.
//!
//! The relay always runs in a process of its own, apart from the clients, so
//! that its CPU time and memory can be read from `/proc` on their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cue_relay::RelayConfig;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;

use crate::sys;

/// How long a relay may take to print its listening line.
const STARTUP: Duration = Duration::from_secs(30);

/// Flags of the built-in relay: the limits a load test may want to move; the
/// rest keep cue-relay's defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Peers per room.
    #[arg(long)]
    max_peers_per_room: Option<usize>,
    /// Messages per second per connection.
    #[arg(long)]
    rate_per_sec: Option<u32>,
    /// Frames queued per connection before it is cut off as a slow consumer.
    #[arg(long)]
    outbound_queue: Option<usize>,
    /// Open connections per client address.
    #[arg(long)]
    max_conns_per_ip: Option<usize>,
    /// Unadmitted connections per client address.
    #[arg(long)]
    max_unadmitted_per_ip: Option<usize>,
    /// Unadmitted connections in all.
    #[arg(long)]
    max_unadmitted: Option<usize>,
}

/// Serves the cue-relay library like the `cue-relay` binary does (same
/// runtime, same defaults, same startup line), without its logging. SIGTERM
/// ends it.
pub fn serve_builtin(args: RelayArgs) -> anyhow::Result<()> {
    let defaults = RelayConfig::default();
    let config = RelayConfig {
        max_peers_per_room: args
            .max_peers_per_room
            .unwrap_or(defaults.max_peers_per_room),
        rate_per_sec: args.rate_per_sec.unwrap_or(defaults.rate_per_sec),
        outbound_queue: args.outbound_queue.unwrap_or(defaults.outbound_queue),
        max_conns_per_ip: args.max_conns_per_ip.unwrap_or(defaults.max_conns_per_ip),
        max_unadmitted_per_ip: args
            .max_unadmitted_per_ip
            .unwrap_or(defaults.max_unadmitted_per_ip),
        max_unadmitted: args.max_unadmitted.unwrap_or(defaults.max_unadmitted),
        ..defaults
    };
    sys::raise_open_files_limit().context("cannot read the open-files limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the relay runtime")?;
    runtime.block_on(async {
        let relay = cue_relay::Relay::new(config).context("invalid relay flags")?;
        let listener = cue_relay::bind(args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        println!("cue-relay listening on ws://{addr}");
        relay
            .serve(listener, std::future::pending())
            .await
            .context("relay failed")
    })
}

/// A relay this run started, and how to reach it.
#[derive(Debug)]
pub struct RelayProcess {
    /// `ws://HOST:PORT`.
    pub url: String,
    /// Its process id, for `/proc`.
    pub pid: u32,
    child: Child,
}

impl RelayProcess {
    /// Starts `program args... --listen 127.0.0.1:0` and waits for its
    /// "listening on ws://ADDR" line. Its logs go to our stderr, at `warn`
    /// unless RUST_LOG says otherwise: one info line per connection would
    /// cost the relay time and flood the terminal.
    pub async fn start(program: &Path, args: &[String]) -> anyhow::Result<RelayProcess> {
        let mut command = Command::new(program);
        command
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        sys::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the relay {}", program.display()))?;
        let pid = child.id().context("the relay exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the relay")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(STARTUP, lines.next_line())
            .await
            .context("the relay did not say where it listens within 30 s")?
            .context("cannot read the relay's stdout")?
            .context("the relay exited before listening (see its errors above)")?;
        let url = parse_listening_line(&line)
            .with_context(|| format!("unexpected first line from the relay: {line:?}"))?;
        // Keep draining stdout so that a later line can never block the relay.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RelayProcess { url, pid, child })
    }

    /// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if sys::terminate(self.pid).is_ok()
            && timeout(Duration::from_secs(15), self.child.wait())
                .await
                .is_ok()
        {
            return Ok(());
        }
        self.child.kill().await.context("cannot kill the relay")
    }
}

/// The URL in "cue-relay listening on ws://ADDR".
fn parse_listening_line(line: &str) -> Option<String> {
    let (_, url) = line.split_once("listening on ")?;
    let url = url.trim();
    url.starts_with("ws://").then(|| url.to_owned())
}

/// The relay's Prometheus counters (`name value` lines, labels kept in the
/// name), fetched with a minimal HTTP/1.1 GET so no HTTP client is needed.
pub async fn scrape_metrics(relay_url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let Some(host) = relay_url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
    else {
        bail!("relay URL {relay_url:?} must start with ws://");
    };
    let fetch = async {
        let mut stream = TcpStream::connect(host).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        std::io::Result::Ok(body)
    };
    let response = timeout(Duration::from_secs(5), fetch)
        .await
        .context("/metrics did not answer within 5 s")?
        .context("cannot read /metrics")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from /metrics")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_url() {
        assert_eq!(
            parse_listening_line("cue-relay listening on ws://127.0.0.1:4567\n").as_deref(),
            Some("ws://127.0.0.1:4567")
        );
        assert_eq!(parse_listening_line("listening on http://x"), None);
        assert_eq!(parse_listening_line("hello"), None);
    }
}
