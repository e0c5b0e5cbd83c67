//! Live sync: the daemon (`cue watch --sync`, `cue sync start`), invitations
//! and join codes, `cue clone CODE`, and the embedded relay (`cue relay`).

mod daemon;
pub mod key;
pub mod members;
mod net;
pub mod status;
mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cue_core::Workspace;
use serde_json::json;

use crate::commands::UsageError;
use crate::config::{self, Config};
use crate::disk::{self, Filters, Layout};
use crate::session::{self, Session};
use crate::store::SqliteStore;
use key::JoinCode;
use net::RelayTarget;
pub use net::DEFAULT_RELAY;

/// Relay settings given on the command line, over those in config.toml.
#[derive(Debug, Clone, Default)]
pub struct RelayFlags {
    pub url: Option<String>,
    pub auth_token: Option<String>,
}

fn target(flags: &RelayFlags, config: &Config) -> RelayTarget {
    let url = flags
        .url
        .clone()
        .or_else(|| config.sync.relay.url.clone())
        .unwrap_or_else(|| DEFAULT_RELAY.to_string());
    RelayTarget {
        // The default local relay is hosted by whichever peer finds it missing,
        // also once `cue sync invite` has written it into config.toml.
        host_if_absent: url == DEFAULT_RELAY,
        url,
        token: flags
            .auth_token
            .clone()
            .or_else(|| config.sync.relay.auth_token.clone()),
    }
}

fn check_url(url: &str) -> Result<()> {
    if url.starts_with("ws://") {
        return Ok(());
    }
    if url.starts_with("wss://") {
        return Err(UsageError(format!(
            "{url}: this build speaks ws:// only (payloads are sealed end to end either way); put the relay behind a ws:// address or a local TLS-terminating proxy"
        ))
        .into());
    }
    Err(UsageError(format!(
        "{url}: a relay URL starts with ws://, e.g. ws://relay.example:7878"
    ))
    .into())
}

/// `cue watch --sync`: the daemon in the foreground.
pub fn watch(cwd: &Path, flags: &RelayFlags, quiet: bool) -> Result<()> {
    let session = session::open_session(find(cwd)?)?;
    let target = target(flags, &session.config);
    check_url(&target.url)?;
    let _lock = status::DaemonLock::acquire(&session.layout)?;
    let key = key::read_key(&session.layout)?.ok_or_else(|| {
        UsageError(
            "this peer has no workspace key yet (it was cloned from a bundle, or made by an older cue): \
             run `cue sync join CODE` here with a code from `cue sync invite` on a peer that syncs, \
             or `cue sync invite` here if this is the workspace's first peer"
                .to_string(),
        )
    })?;
    if !quiet {
        println!(
            "Syncing {} through {}{} (Ctrl-C stops).",
            session.layout.cuedeck.display(),
            target.url,
            if target.host_if_absent {
                " (the default relay: hosted by the first peer on this machine)"
            } else {
                ""
            }
        );
    }
    daemon::run(session, &key, target, daemon::Mode::Watch, !quiet)
}

/// `cue sync start`: the same daemon, in the background.
pub fn start(cwd: &Path, flags: &RelayFlags) -> Result<()> {
    let session = session::open(cwd)?;
    let layout = session.layout.clone();
    let target = target(flags, &session.config);
    check_url(&target.url)?;
    drop(session);
    if let status::Running::Yes { pid } = status::running(&layout) {
        match pid {
            Some(pid) => println!("The sync daemon is already running (pid {pid})."),
            None => println!("The sync daemon is already starting."),
        }
        return Ok(());
    }
    let log_path = layout.sync_dir().join("daemon.log");
    let log = crate::store::private_file()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the cue executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-C").arg(&layout.root).args(["watch", "--sync"]);
    if let Some(url) = &flags.url {
        cmd.args(["--relay", url]);
    }
    if let Some(token) = &flags.auth_token {
        cmd.env("CUE_RELAY_TOKEN", token);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("starting the sync daemon")?;
    let pid = child.id();
    let deadline = Instant::now() + START_TIMEOUT;
    // Started means: this child holds the lock and has written its status.
    // A lock alone may be an older daemon's, a status file alone a dead one's.
    let mut locked = false;
    while Instant::now() < deadline {
        if let Some(code) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow::bail!(
                "the sync daemon exited at once ({code}); its log ({}) ends:\n{}",
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        locked = locked || status::running_pid(&layout) == Some(pid);
        if locked && status::read_status(&layout).is_some_and(|s| s.pid == pid) {
            println!(
                "Sync daemon started (pid {pid}), syncing through {}. Log: {}",
                target.url,
                log_path.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let what = if locked {
        "took the workspace's lock but wrote no status"
    } else {
        "did not take the workspace's lock"
    };
    anyhow::bail!(
        "the sync daemon (pid {pid}) is still running but {what} within {} s; see its log {}, or `cue sync stop` and try again",
        START_TIMEOUT.as_secs(),
        log_path.display()
    )
}

/// How long `cue sync start` waits for the new daemon to report in.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The running daemon's pid, waiting out the instant between a daemon taking
/// its lock and writing its pid there.
fn daemon_pid(layout: &Layout) -> Result<Option<u32>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match status::running(layout) {
            status::Running::No => return Ok(None),
            status::Running::Yes { pid: Some(pid) } => return Ok(Some(pid)),
            status::Running::Yes { pid: None } if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            status::Running::Yes { pid: None } => anyhow::bail!(
                "a sync daemon holds {} but has not written its pid there; try again in a moment",
                layout.sync_dir().join("daemon.lock").display()
            ),
        }
    }
}

/// `cue sync stop`: SIGTERM, then wait for the daemon to finish cleanly.
pub fn stop(cwd: &Path) -> Result<()> {
    let layout = find(cwd)?;
    let Some(pid) = daemon_pid(&layout)? else {
        println!("The sync daemon is not running.");
        return Ok(());
    };
    let pid_t = libc::pid_t::try_from(pid).context("daemon pid out of range")?;
    // SAFETY: sending a signal to a pid; no memory is involved.
    if unsafe { libc::kill(pid_t, libc::SIGTERM) } != 0 {
        anyhow::bail!(
            "cannot signal the sync daemon (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if status::running(&layout) == status::Running::No {
            println!("Sync daemon (pid {pid}) stopped.");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the sync daemon (pid {pid}) did not stop within 15 s")
}

fn find(cwd: &Path) -> Result<Layout> {
    Layout::find(cwd).with_context(|| {
        format!(
            "{} is not inside a CueDeck workspace; run `cue init` to make one, or `cue clone` to join one",
            cwd.display()
        )
    })
}

fn format_ago(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(t) => {
            let s = (disk::now_ms() - t).max(0) / 1000;
            match s {
                0..=59 => format!("{s} s ago"),
                60..=3599 => format!("{} min ago", s / 60),
                _ => format!("{} h ago", s / 3600),
            }
        }
    }
}

/// `cue sync status`: what the running daemon reports.
pub fn show_status(cwd: &Path, json_out: bool) -> Result<()> {
    let layout = find(cwd)?;
    let Some(s) = status::read_status(&layout) else {
        if json_out {
            println!("{}", json!({ "running": false }));
        } else {
            println!("The sync daemon is not running; `cue sync start` starts it.");
        }
        return Ok(());
    };
    if json_out {
        let mut v = serde_json::to_value(&s)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("running".into(), json!(true));
        }
        println!("{v}");
        return Ok(());
    }
    println!("Sync daemon: running (pid {})", s.pid);
    println!(
        "Relay:       {} ({})",
        s.relay,
        if s.connected {
            "connected"
        } else {
            "not connected"
        }
    );
    let names: Vec<String> = s
        .peers
        .iter()
        .map(|p| p.member.clone().unwrap_or_else(|| p.peer[..8].to_string()))
        .collect();
    println!(
        "Peers:       {} online{}",
        s.peers.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    );
    println!("Last sync:   {}", format_ago(s.last_sync_ms));
    println!(
        "Unsent:      {} documents with edits no peer has confirmed",
        s.unsent_changes
    );
    if let Some(p) = &s.last_problem {
        println!("Problem:     {p}");
    }
    Ok(())
}

/// `cue sync invite`: prints a join code (last line) and records the relay.
pub fn invite(cwd: &Path, flags: &RelayFlags) -> Result<()> {
    let layout = find(cwd)?;
    let config = Config::load(&layout.config_path())?;
    let target = target(flags, &config);
    check_url(&target.url)?;
    let key = key::ensure_key(&layout)?;
    if config.sync.relay.url.as_deref() != Some(target.url.as_str()) {
        config::set_relay_url(&layout.config_path(), &target.url)?;
    }
    let code = JoinCode {
        relay: target.url.clone(),
        key,
    };
    println!(
        "Anyone with this code can read and change this workspace: share it only with members."
    );
    println!(
        "On the new machine, give it to `cue clone` on standard input, not as an argument (other local users can read those):"
    );
    println!("  cue clone - <folder>     (paste the code, then Ctrl-D; or: cue clone --code-file FILE <folder>)");
    if target.auth_token_needed() {
        println!("The relay needs an auth token: give it separately (sync.relay.auth_token).");
    }
    println!("{}", code.encode());
    Ok(())
}

/// `cue sync join CODE`: an existing peer (cloned from a bundle) takes the
/// key and relay of a join code. Peers of another workspace that share the
/// room are refused by the handshake, so a wrong code merges nothing.
pub fn join(cwd: &Path, code: &str) -> Result<()> {
    let layout = find(cwd)?;
    let code = JoinCode::parse(code)?;
    if let Some(existing) = key::read_key(&layout)? {
        if existing != code.key {
            return Err(UsageError(
                "this peer already has a different workspace key; it syncs in another room. \
                 Remove .cuedeck/sync/key first if you really mean to switch"
                    .to_string(),
            )
            .into());
        }
    }
    key::write_key(&layout, &code.key)?;
    config::set_relay_url(&layout.config_path(), &code.relay)?;
    println!(
        "Joined: this peer syncs through {} from now on; start it with `cue watch --sync` or `cue sync start`.",
        code.relay
    );
    Ok(())
}

impl RelayTarget {
    fn auth_token_needed(&self) -> bool {
        self.token.is_some()
    }
}

/// `cue clone CODE DIR`: a new peer, filled by live sync from the peers online.
pub fn clone_from_code(
    cwd: &Path,
    code: &str,
    dir: &Path,
    member: Option<String>,
    auth_token: Option<String>,
    timeout: Duration,
) -> Result<()> {
    let code = JoinCode::parse(code)?;
    let root: PathBuf = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        cwd.join(dir)
    };
    let layout = crate::commands::new_peer_dirs(&root)?;
    let member = session::member_name(member, &Config::default());
    key::write_key(&layout, &code.key)?;
    let store = SqliteStore::open(&layout.state_db())?;
    let ws = Workspace::join(store, &member, &mut rand::rng())?;
    disk::atomic_write(
        &layout.config_path(),
        config::template("", &member).as_bytes(),
    )?;
    config::secure(&layout.config_path())?;
    config::set_relay_url(&layout.config_path(), &code.relay)?;
    let mut config = Config::load(&layout.config_path())?;
    if auth_token.is_some() {
        config.sync.relay.auth_token = auth_token;
    }
    let filters = Filters::new(&layout, &config.sync.include)?;
    let session = Session::new(layout.clone(), config.clone(), filters, ws);
    let target = RelayTarget {
        url: code.relay.clone(),
        token: config.sync.relay.auth_token.clone(),
        host_if_absent: false,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "   cloning [{bar:30}] {pos}/{len} files ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mode = daemon::Mode::Clone {
        deadline: Instant::now() + timeout,
        bar: bar.clone(),
    };
    let synced = daemon::run(session, &code.key, target, mode, false);
    bar.finish_and_clear();
    if let Err(e) = synced {
        // Leave no half-made peer behind: a retry needs an empty folder.
        let _ = std::fs::remove_dir_all(&layout.cuedeck);
        return Err(e);
    }
    let mut s = session::open_at(layout)?;
    members::publish_own_key(&s.layout, &mut s.ws)?;
    let name = s.ws.meta()?.name;
    config::set_workspace_name(&s.layout.config_path(), &name)?;
    let applied = s.checkout("writing")?;
    println!(
        "Cloned workspace {:?} into {}: {} files. Run `cue sync start` there to keep it in sync (or `cue watch --sync` in the foreground).",
        name,
        root.display(),
        applied.written.len()
    );
    Ok(())
}

/// `cue relay`: the relay, in this process, in the foreground.
pub fn relay(listen: &str, auth_token: Option<String>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the relay runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("cue relay listening on ws://{addr}");
        let config = cue_relay::RelayConfig {
            auth_token,
            ..cue_relay::RelayConfig::default()
        };
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        };
        cue_relay::serve(listener, config, shutdown)
            .await
            .context("relay failed")
    })
}
