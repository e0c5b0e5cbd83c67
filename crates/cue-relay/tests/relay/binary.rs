//! The real `cue-relay` executable: startup line, a frame through it, SIGTERM.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;

use crate::testkit::{key, room, Client, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_cue-relay");

#[tokio::test]
async fn the_binary_prints_its_address_relays_frames_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = timeout(TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("cue-relay listening on ")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
    assert!(
        base.starts_with("ws://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );

    let mut clients = Vec::new();
    for _ in 1..=2 {
        let url = format!("{base}/v2/rooms/{}", room(1));
        let (ws, _) = timeout(TIMEOUT, connect_async(url)).await.unwrap().unwrap();
        let mut client = Client {
            ws,
            room: room(1),
            peer: cue_wire::PeerId::ZERO,
        };
        client.authenticate(&key(1)).await;
        client.welcome().await;
        clients.push(client);
    }
    let second = clients[1].peer;
    clients[0]
        .expect_notice(cue_wire::FrameKind::PeerJoined, second)
        .await;
    clients[1].broadcast(b"through the binary").await;
    clients[0]
        .expect_payload(second, b"through the binary")
        .await;

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    for client in &mut clients {
        assert_eq!(
            client.expect_close().await,
            (1001, "relay shutting down".into())
        );
        client.until_end().await;
    }
    let exit = timeout(TIMEOUT, child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn help_explains_every_flag() {
    let output = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--auth-token",
        "--max-peers-per-room",
        "--max-frame-bytes",
        "--rate-per-sec",
        "--rate-burst",
        "--flood-grace-secs",
        "--outbound-queue",
        "--ping-interval-secs",
        "--idle-timeout-secs",
        "--shutdown-grace-secs",
        "--header-timeout-secs",
        "--admission-timeout-secs",
        "--max-conns-per-ip",
        "--max-unadmitted-per-ip",
        "--max-unadmitted",
        "--shed-log-interval-secs",
        "CUE_RELAY_MAX_CONNS_PER_IP",
        "CUE_RELAY_LISTEN",
        "CUE_RELAY_AUTH_TOKEN",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}
