//! Rate limiting, slow consumers and idle connections.

use std::time::Duration;

use cue_relay::RelayConfig;
use cue_wire::{Frame, FrameKind};
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::testkit::{key, room, Event, SilentClient, TestRelay, TIMEOUT};

#[tokio::test]
async fn a_flooding_client_is_slowed_down_but_loses_nothing() {
    let relay = TestRelay::start(RelayConfig {
        rate_per_sec: 20,
        rate_burst: 5,
        flood_grace: Duration::from_secs(3600),
        ..RelayConfig::default()
    })
    .await;
    let mut peers = relay.room_of(1, 2).await;
    let mut receiver = peers.pop().unwrap();
    let mut sender = peers.pop().unwrap();
    let from = sender.peer;

    let total: u32 = 40;
    // All in one write, so the relay has them all waiting at once.
    let flood = tokio::spawn(async move {
        for i in 0..total {
            let frame = Frame::broadcast(room(1), from, i.to_be_bytes().to_vec());
            sender
                .ws
                .feed(Message::Binary(frame.encode().into()))
                .await
                .unwrap();
        }
        sender.ws.flush().await.unwrap();
        sender
    });
    for i in 0..total {
        receiver.expect_payload(from, &i.to_be_bytes()).await;
    }
    let _sender = flood.await.unwrap();

    let metrics = relay.metrics.snapshot();
    assert!(metrics.rate_limited > 0, "{metrics:?}");
    assert_eq!(metrics.rate_limit_disconnects, 0);
    assert_eq!(metrics.frames_in, u64::from(total));
}

#[tokio::test]
async fn a_client_that_keeps_flooding_is_closed_with_4029() {
    let relay = TestRelay::start(RelayConfig {
        rate_per_sec: 2,
        rate_burst: 1,
        flood_grace: Duration::from_millis(500),
        ..RelayConfig::default()
    })
    .await;
    let mut peers = relay.room_of(1, 2).await;

    // Far more than the rate allows within the grace, all sent at once.
    for i in 0u32..50 {
        peers[0].broadcast(&i.to_be_bytes()).await;
    }
    assert_eq!(
        peers[0].expect_close().await,
        (4029, "rate limit exceeded".into())
    );
    assert_eq!(relay.metrics.snapshot().rate_limit_disconnects, 1);

    // What was read before the close was delivered, in order, then the departure.
    let mut next = 0u32;
    loop {
        let frame = peers[1].recv().await;
        if frame.header.kind == FrameKind::PeerLeft {
            break;
        }
        assert_eq!(frame.payload, next.to_be_bytes());
        next += 1;
    }
    assert!(next >= 1);
}

/// Waits until the reader has counted `n` frames: keeps a producer within a
/// few frames of it, so the reader's own small queue never overflows.
async fn wait_until_read(count_rx: &mut watch::Receiver<usize>, n: usize) {
    timeout(TIMEOUT, count_rx.wait_for(|count| *count >= n))
        .await
        .expect("the reader fell behind")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_while_others_keep_receiving() {
    let queue = 4;
    let relay = TestRelay::start(RelayConfig {
        outbound_queue: queue,
        rate_per_sec: 1_000_000,
        rate_burst: 1_000_000,
        ..RelayConfig::default()
    })
    .await;
    // The stalled peer joins first and never reads after its Welcome.
    let (mut stalled, _) = relay.join(1).await;
    let stalled_id = stalled.peer;
    let mut peers = relay.room_of(1, 2).await;
    let mut reader = peers.pop().unwrap();
    let mut producer = peers.pop().unwrap();

    // The reader counts the producer's frames and notes the stalled peer leaving.
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let reading = tokio::spawn(async move {
        let mut saw_leave = false;
        let mut count = 0usize;
        loop {
            let frame = reader.recv().await;
            match frame.header.kind {
                FrameKind::PeerLeft => {
                    assert_eq!(frame.header.sender, stalled_id);
                    saw_leave = true;
                }
                FrameKind::Broadcast => {
                    assert_eq!(frame.payload[..8], (count as u64).to_be_bytes());
                    if frame.payload.len() == 8 {
                        return (count, saw_leave);
                    }
                    count += 1;
                    count_tx.send_replace(count);
                }
                other => panic!("unexpected {other}"),
            }
        }
    });

    // Big frames fill the stalled peer's socket buffers, then its queue. The
    // producer stays within `queue / 2` frames of the reader, so the reader's
    // own queue can never overflow.
    let mut payload = vec![0u8; 128 * 1024];
    let mut sent = 0usize;
    while relay.metrics.snapshot().slow_consumer_disconnects == 0 {
        assert!(sent < 5_000, "the stalled peer was never cut off");
        payload[..8].copy_from_slice(&(sent as u64).to_be_bytes());
        producer.broadcast(&payload).await;
        sent += 1;
        wait_until_read(&mut count_rx, sent.saturating_sub(queue / 2)).await;
    }
    eprintln!(
        "stalled peer cut off after {sent} frames of {} KiB",
        payload.len() / 1024
    );
    // A few more after the cut, paced the same way (a burst of them would make
    // the reader itself a slow consumer of its 4-frame queue on a loaded
    // machine): the reader still gets everything, in order.
    for _ in 0..3 {
        payload[..8].copy_from_slice(&(sent as u64).to_be_bytes());
        producer.broadcast(&payload).await;
        sent += 1;
        wait_until_read(&mut count_rx, sent.saturating_sub(queue / 2)).await;
    }
    producer.broadcast(&(sent as u64).to_be_bytes()).await;
    let (received, saw_leave) = reading.await.unwrap();
    assert_eq!(received, sent);
    assert!(saw_leave, "the others were told the stalled peer left");
    assert_eq!(relay.metrics.snapshot().slow_consumer_disconnects, 1);

    // The stalled peer's connection is gone: reading it now reaches the end
    // (after whatever the kernel had buffered).
    loop {
        match stalled.next_event().await {
            Event::Frame(_) => {}
            Event::Close(code, _) => assert_eq!(code, 4008),
            Event::End(_) => break,
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_with_4408() {
    let relay = TestRelay::start(RelayConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        ..RelayConfig::default()
    })
    .await;
    // This client never writes after the handshake, so it never answers the
    // relay's pings: the relay hears nothing from it.
    let mut silent = SilentClient::connect(relay.addr, 1, Some(&key(1))).await;
    assert_eq!(silent.expect_close().await, (4408, "idle timeout".into()));
    relay.wait_metrics(|m| m.connections_current == 0).await;
}
