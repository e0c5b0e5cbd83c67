//! Live sync with real processes: a real `cue-relay` on a free loopback port
//! and real `cue watch --sync` daemons on real folders.

use std::time::Duration;

use crate::livekit::{clone_live, invite, relay_metric, wait_converged, wait_until, Daemon, Relay};
use crate::testkit::Peer;

fn has(peer: &Peer, rel: &str, needle: &str) -> bool {
    std::fs::read_to_string(peer.path(rel)).is_ok_and(|t| t.contains(needle))
}

#[test]
fn two_peers_sync_edits_renames_and_deletes_live() {
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    a.write(
        "docs/auth.md",
        "---\ntitle: Auth\ntags: [security]\n---\n# Auth\n",
    );
    let _da = Daemon::start(&a, &relay.url(), &[]);
    let code = invite(&a, &relay.url());
    let b = clone_live(&code, "bo", &[]);
    assert_eq!(b.read("docs/auth.md"), a.read("docs/auth.md"));
    let _db = Daemon::start(&b, &relay.url(), &[]);
    _db.wait_log("1 other peer(s) online");

    a.write(
        "docs/auth.md",
        "---\ntitle: Auth\ntags: [security]\n---\n# Auth\nfrom ana\n",
    );
    wait_until("ana's edit on bo", || has(&b, "docs/auth.md", "from ana"));
    b.write("cards/c1.md", "---\nstatus: todo\n---\nbo's card\n");
    wait_until("bo's card on ana", || has(&a, "cards/c1.md", "bo's card"));

    std::fs::rename(a.path("docs/auth.md"), a.path("docs/login.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the rename on bo", || {
        has(&b, "docs/login.md", "from ana") && !b.path("docs/auth.md").exists()
    });
    std::fs::remove_file(b.path("cards/c1.md")).unwrap_or_else(|e| panic!("{e}"));
    wait_until("the delete on ana", || !a.path("cards/c1.md").exists());
    wait_converged(&[&a, &b]);
    // The delete is a restorable tombstone on the other peer too.
    let trash = a.ok(&["trash", "list", "--json"]);
    assert!(trash.contains("cards/c1.md"), "{trash}");
}

#[test]
fn ten_peers_merge_concurrent_edits_of_one_file() {
    let relay = Relay::start(&[]);
    let first = Peer::init("p0");
    first.write(
        "docs/shared.md",
        "---\ntitle: Shared\ntags: [base]\n---\n# Shared\n\nend\n",
    );
    let mut daemons = vec![Daemon::start(&first, &relay.url(), &[])];
    let code = invite(&first, &relay.url());
    let mut peers = vec![first];
    for i in 1..10 {
        let p = clone_live(&code, &format!("p{i}"), &[]);
        daemons.push(Daemon::start(&p, &relay.url(), &[]));
        peers.push(p);
    }
    for d in &daemons {
        d.wait_log("9 other peer(s) online");
    }
    // Everyone inserts a line and a tag at the same moment.
    for (i, p) in peers.iter().enumerate() {
        let text = p.read("docs/shared.md");
        let text = text
            .replace("tags: [base", &format!("tags: [base, t{i}"))
            .replace("\nend\n", &format!("\nline from p{i}\nend\n"));
        p.write("docs/shared.md", &text);
    }
    let files = wait_converged(&peers.iter().collect::<Vec<_>>());
    let shared = files
        .iter()
        .find(|(k, _)| k == "docs/shared.md")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    for i in 0..10 {
        assert!(
            shared.contains(&format!("line from p{i}\n")),
            "p{i}'s line lost:\n{shared}"
        );
        assert!(
            shared.contains(&format!("t{i}")),
            "p{i}'s tag lost:\n{shared}"
        );
    }
}

#[test]
fn a_peer_stopped_edited_offline_and_restarted_converges() {
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    a.write("docs/plan.md", "# Plan\n\nstep one\n");
    let _da = Daemon::start(&a, &relay.url(), &[]);
    let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
    let mut db = Daemon::start(&b, &relay.url(), &[]);
    db.wait_log("1 other peer(s) online");
    let status = db.stop();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");

    b.write(
        "docs/plan.md",
        "# Plan\n\nstep one\nstep two (offline, bo)\n",
    );
    b.write("docs/notes.md", "written offline\n");
    a.write("docs/plan.md", "# Plan (ana)\n\nstep one\n");
    std::thread::sleep(Duration::from_millis(300));

    let _db = Daemon::start(&b, &relay.url(), &[]);
    let files = wait_converged(&[&a, &b]);
    let plan = a.read("docs/plan.md");
    assert!(
        plan.contains("# Plan (ana)") && plan.contains("step two (offline, bo)"),
        "{plan}"
    );
    assert!(files.iter().any(|(k, _)| k == "docs/notes.md"));
}

#[test]
fn everyone_converges_after_the_relay_is_killed_and_restarted() {
    let mut relay = Relay::start(&[]);
    let a = Peer::init("ana");
    a.write("docs/a.md", "start\n");
    let da = Daemon::start(&a, &relay.url(), &[]);
    let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
    let db = Daemon::start(&b, &relay.url(), &[]);
    db.wait_log("1 other peer(s) online");

    relay.kill();
    a.write("docs/a.md", "start\nana while the relay was down\n");
    b.write("docs/b.md", "bo while the relay was down\n");
    std::thread::sleep(Duration::from_millis(300));
    relay.restart();

    wait_until("bo's file on ana", || a.path("docs/b.md").exists());
    wait_until("ana's edit on bo", || {
        has(&b, "docs/a.md", "relay was down")
    });
    wait_converged(&[&a, &b]);
    assert!(da.log_text().contains("Lost the relay connection"));
}

#[test]
fn a_wrong_auth_token_and_a_damaged_join_code_are_refused_clearly() {
    let relay = Relay::start(&["--auth-token", "s3cret"]);
    let a = Peer::init("ana");
    let mut d = Daemon::start(&a, &relay.url(), &["--auth-token", "wrong"]);
    let status = d.wait_exit();
    assert!(!status.success());
    let log = d.log_text();
    assert!(log.contains("refused the auth token"), "{log}");

    let _ok = Daemon::start(&a, &relay.url(), &["--auth-token", "s3cret"]);
    _ok.wait_log("Connected to the relay");
    let code = invite(&a, &relay.url());
    // One character of the key changed: the code no longer matches its room.
    let mut chars: Vec<char> = code.chars().collect();
    chars[12] = if chars[12] == 'x' { 'y' } else { 'x' };
    let damaged: String = chars.into_iter().collect();
    let p = Peer::new("eve");
    let out = crate::testkit::run_in(&p.root, "eve", &["clone", &damaged, "w"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("join code is damaged"), "{err}");
    assert!(!p.root.join("w").exists());

    // The right code but no token: refused by the relay, nothing left behind.
    let out = crate::testkit::run_in(&p.root, "eve", &["clone", &code, "w"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth token"));
    let cloned = clone_live(&code, "bo", &["--auth-token", "s3cret"]);
    assert!(cloned.path("sync/key").exists());
}

#[test]
fn a_peer_over_the_rate_limit_is_throttled_without_losing_edits() {
    // 5 frames a second with a burst of 5: far below what a burst of saves sends.
    let relay = Relay::start(&["--rate-per-sec", "5", "--rate-burst", "5"]);
    let a = Peer::init("ana");
    let _da = Daemon::start(&a, &relay.url(), &[]);
    let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
    let db = Daemon::start(&b, &relay.url(), &[]);
    db.wait_log("1 other peer(s) online");
    for i in 0..40 {
        a.write(&format!("docs/n{i:02}.md"), &format!("note {i}\n"));
        std::thread::sleep(Duration::from_millis(15));
    }
    let files = wait_converged(&[&a, &b]);
    assert_eq!(
        files
            .iter()
            .filter(|(k, _)| k.starts_with("docs/n"))
            .count(),
        40
    );
    assert!(
        relay_metric(&relay, "cue_relay_rate_limited_total") > 0,
        "the relay never had to throttle: the test proves nothing"
    );
}

#[test]
fn the_relay_never_sees_a_file_name_or_content_in_plaintext() {
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    let _da = Daemon::start(&a, &relay.url(), &[]);
    let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
    let _db = Daemon::start(&b, &relay.url(), &[]);
    _db.wait_log("1 other peer(s) online");

    // An eavesdropper in the room: it receives every broadcast, as the relay does.
    let key_hex = a.read("sync/key");
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key).unwrap_or_else(|e| panic!("{e}"));
    let key = cue_core::sync::WorkspaceKey::from_bytes(key);
    let relay_url = relay.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let captured = rt.block_on(async {
        use futures_util::StreamExt;
        let (mut ws, _, _) = crate::livekit::join_room(&relay_url, &key).await;
        let secret_file = "docs/zanzibar-merger.md";
        a.write(
            secret_file,
            "---\ntitle: Project Zanzibar\n---\nconfidential body text\n",
        );
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while !b.path(secret_file).exists() || frames.len() < 2 {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(m))) => frames.push(m.into_data().to_vec()),
                Ok(_) => panic!("observer connection ended"),
                Err(_) => panic!("timed out; frames seen: {}", frames.len()),
            }
        }
        frames
    });
    assert!(captured.len() >= 2, "the observer saw the traffic");
    let status: serde_json::Value = serde_json::from_str(&a.ok(&["status", "--json"]))
        .unwrap_or_else(|e| panic!("status --json: {e}"));
    let wsid = status["workspace_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(wsid.len(), 32);
    for needle in [
        "zanzibar",
        "Zanzibar",
        "confidential body",
        "docs/",
        "ana",
        wsid.as_str(),
    ] {
        for f in &captured {
            assert!(
                !f.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} crossed the relay in plaintext"
            );
        }
    }
    // Nor the workspace id as raw bytes.
    let mut raw = [0u8; 16];
    hex::decode_to_slice(&wsid, &mut raw).unwrap_or_else(|e| panic!("{e}"));
    assert!(captured.iter().all(|f| !f.windows(16).any(|w| w == raw)));
}

#[test]
fn a_bundle_clone_joins_by_code_and_another_workspace_is_never_merged() {
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    a.write("docs/team.md", "team doc\n");
    let da = Daemon::start(&a, &relay.url(), &[]);
    let code = invite(&a, &relay.url());

    // A peer cloned from a bundle has no key: watch says what to do.
    let b = Peer::clone_of(&a, "bo");
    let out = b.run(&["watch", "--sync", "--relay", &relay.url()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cue sync join"));
    b.ok(&["sync", "join", &code]);
    let _db = Daemon::start(&b, "", &[]);
    b.write("docs/from-bo.md", "bo\n");
    wait_until("bo's file on ana", || a.path("docs/from-bo.md").exists());

    // Another workspace given this workspace's code is refused, both ways.
    let e = Peer::init("eve");
    e.write("docs/eve-secret.md", "other workspace\n");
    let out = e.run(&["sync", "join", &code]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has a different workspace key"));
    std::fs::remove_file(e.path("sync/key")).unwrap_or_else(|err| panic!("{err}"));
    e.ok(&["sync", "join", &code]);
    let de = Daemon::start(&e, "", &[]);
    de.wait_log("belongs to another workspace");
    da.wait_log("belongs to another workspace");
    a.write("docs/team.md", "team doc\nlater\n");
    wait_until("ana's edit on bo", || has(&b, "docs/team.md", "later"));
    assert!(!a.path("docs/eve-secret.md").exists());
    assert!(!e.path("docs/team.md").exists());
}

#[test]
fn the_background_daemon_starts_reports_and_stops() {
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    let out = a.ok(&["sync", "status", "--json"]);
    assert!(out.contains("\"running\":false"), "{out}");
    /// Stops the background daemon even if the test fails.
    struct StopOnDrop<'a>(&'a Peer);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(&["sync", "stop"]);
        }
    }
    let _stop = StopOnDrop(&a);
    let _db_guard;
    {
        a.ok(&["sync", "start", "--relay", &relay.url()]);
        let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
        _db_guard = Daemon::start(&b, &relay.url(), &[]);
        wait_until("ana's daemon to see bo", || {
            let s: serde_json::Value =
                serde_json::from_str(&a.ok(&["sync", "status", "--json"])).unwrap_or_default();
            s["running"] == true
                && s["connected"] == true
                && s["peers"].as_array().is_some_and(|p| p.len() == 1)
                && s["peers"][0]["member"] == "bo"
        });
        let human = a.ok(&["sync", "status"]);
        assert!(human.contains("1 online (bo)"), "{human}");
        b.write("docs/x.md", "x\n");
        wait_until("bo's file on ana", || a.path("docs/x.md").exists());
        // A second daemon on the same workspace is refused.
        let out = a.run(&["watch", "--sync", "--relay", &relay.url()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("already syncing"));
    }
    let stopped = a.ok(&["sync", "stop"]);
    assert!(stopped.contains("stopped"), "{stopped}");
    let out = a.ok(&["sync", "status", "--json"]);
    assert!(out.contains("\"running\":false"), "{out}");
}

#[test]
fn strangers_who_know_the_room_id_can_neither_join_nor_fill_the_room() {
    // The relay's default room limit (50) is below the strangers' number: if
    // unadmitted connections took seats, the members would be refused.
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    let _da = Daemon::start(&a, &relay.url(), &[]);
    let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
    let db = Daemon::start(&b, &relay.url(), &[]);
    db.wait_log("1 other peer(s) online");

    // What a relay log or a ws:// URL would show a stranger: the room id.
    let key_hex = a.read("sync/key");
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key).unwrap_or_else(|e| panic!("{e}"));
    let room = cue_core::sync::WorkspaceKey::from_bytes(key).room_id();
    let url = format!("{}/v2/rooms/{room}", relay.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // 60 strangers answer the challenge with a data frame posing as a peer;
    // 60 more hold their connection and never answer.
    let silent = rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut silent = Vec::new();
        for i in 0..120u8 {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap_or_else(|e| panic!("stranger connect: {e}"));
            let Some(Ok(Message::Binary(challenge))) = ws.next().await else {
                panic!("no challenge");
            };
            let challenge = cue_wire::admission::Challenge::decode(&challenge)
                .unwrap_or_else(|e| panic!("{e}"));
            if i % 2 == 0 {
                let posing = cue_wire::Frame::broadcast(room, challenge.peer, b"hi".to_vec());
                let _ = ws.send(Message::binary(posing.encode())).await;
            } else {
                silent.push(ws);
            }
        }
        silent
    });
    wait_until("the relay refused the posing strangers", || {
        relay_metric(&relay, "cue_relay_admission_not_auth_total") >= 60
    });

    // The members still sync, both ways, while 60 strangers sit on the room.
    a.write("docs/while-strangers-knock.md", "from ana\n");
    b.write("docs/and-back.md", "from bo\n");
    let files = wait_converged(&[&a, &b]);
    assert!(files
        .iter()
        .any(|(k, _)| k == "docs/while-strangers-knock.md"));
    assert!(files.iter().any(|(k, _)| k == "docs/and-back.md"));
    // Only members were admitted: both daemons and bo's clone (a few more
    // if a daemon reconnected), never a stranger.
    assert!(relay_metric(&relay, "cue_relay_admitted_total") < 10);
    assert!(!db.log_text().contains("room full"), "{}", db.log_text());
    drop(silent);
}
