//! What an operator can tune, with the defaults and the reasons for them.
//!
//! The binary maps its flags onto [`RelayConfig`]; an embedding program builds
//! one directly. Every limit exists so that one misbehaving peer costs the relay
//! a bounded amount of memory and CPU and cannot degrade its room.

use std::fmt;
use std::time::Duration;

/// Peers per room. Rooms are one team's devices; 50 covers a team while keeping
/// the cost of a broadcast (one copy per member) small.
pub const DEFAULT_MAX_PEERS_PER_ROOM: usize = 50;

/// Largest WebSocket message accepted: a full payload plus the header. Peers
/// chunk anything larger, so a bigger message is a bug or an attack.
pub const DEFAULT_MAX_FRAME_BYTES: usize = cue_wire::MAX_ENCODED_FRAME_BYTES;

/// Sustained messages per second per peer. Sync traffic is bursty but small;
/// 100/s is far above what an editing session produces.
pub const DEFAULT_RATE_PER_SEC: u32 = 100;

/// Messages a peer may send back to back before the rate applies, so that the
/// catch-up burst after a reconnect is not slowed down.
pub const DEFAULT_RATE_BURST: u32 = 200;

/// How long a peer may stay over its rate, continuously, before it is
/// disconnected. Until then it is only slowed down (its reads are paused).
pub const DEFAULT_FLOOD_GRACE: Duration = Duration::from_secs(10);

/// Frames waiting to be written to one connection. A consumer that falls this
/// far behind is cut off rather than buffered without bound.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 256;

/// How often the relay pings each connection, to keep NATs and proxies from
/// dropping idle connections and to detect dead peers.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);

/// A connection that sends nothing (not even a pong) for this long is closed:
/// three missed pings.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// How long a shutdown waits for connections to finish their closing handshake.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Time a client has to send a whole HTTP request head, from the moment the
/// relay starts waiting for it (the TCP accept, or the end of the previous
/// request). A real client sends its head in one packet; a slowloris that
/// trickles it, or a socket that sends nothing, is closed after this.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Time from the TCP accept until the client's Auth frame has been verified:
/// the request head, the WebSocket upgrade and one challenge round trip. Ten
/// seconds is dozens of round trips on a slow link; a connection that has not
/// proved the room's key by then is closed (4410), so strangers cannot sit in
/// the relay's descriptor table.
pub const DEFAULT_ADMISSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections from one address (one IPv4 address, or one IPv6 /64),
/// admitted or not. A team behind one NAT is a few dozen peers; past this, a
/// new connection from that address is refused at accept (HTTP 429), unless
/// some of the address's connections are still unadmitted, in which case the
/// oldest of those is closed instead.
pub const DEFAULT_MAX_CONNS_PER_IP: usize = 256;

/// Connections from one address that have not been admitted yet. Peers behind
/// one NAT that reconnect together after a relay restart are admitted within
/// a round trip or two each, so 64 at once is plenty; when an address is at
/// the cap, its *oldest* unadmitted connection is closed to make room, so a
/// slowloris from the same address cannot keep a real peer out.
pub const DEFAULT_MAX_UNADMITTED_PER_IP: usize = 64;

/// Connections not yet admitted, from all addresses together. Kept well
/// below the usual 1,024-descriptor default so that half-open sockets can
/// never take every descriptor; when it is reached, the oldest unadmitted
/// connection anywhere is closed to make room (a slowloris is the oldest;
/// a real client is admitted within milliseconds of connecting).
pub const DEFAULT_MAX_UNADMITTED: usize = 512;

/// At most one log line per shed reason per this interval, with the count:
/// an attack must not turn the relay's log into the next problem.
pub const DEFAULT_SHED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Everything the relay needs to know besides its listening socket.
#[derive(Clone)]
pub struct RelayConfig {
    /// When set, clients must send `Authorization: Bearer <token>` to connect.
    pub auth_token: Option<String>,
    /// Connections per room; the next one is closed with code 4003.
    pub max_peers_per_room: usize,
    /// Largest WebSocket message, header included; larger ones are closed with 1009.
    pub max_frame_bytes: usize,
    /// Sustained messages per second each connection may send.
    pub rate_per_sec: u32,
    /// Messages a connection may send back to back before `rate_per_sec` applies.
    pub rate_burst: u32,
    /// How long a connection may stay over its rate before it is closed with 4029.
    pub flood_grace: Duration,
    /// Frames queued for one connection before it counts as a slow consumer (4008).
    pub outbound_queue: usize,
    /// Interval between pings the relay sends.
    pub ping_interval: Duration,
    /// Silence after which a connection is closed with 4408.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for connections to close before giving up on them.
    pub shutdown_grace: Duration,
    /// Time a client has to send a complete HTTP request head.
    pub header_timeout: Duration,
    /// Time from the TCP accept until the client's Auth frame is verified (4410).
    pub admission_timeout: Duration,
    /// Open connections per address (IPv4 address or IPv6 /64).
    pub max_conns_per_ip: usize,
    /// Connections not yet admitted per address; the oldest is closed past it.
    pub max_unadmitted_per_ip: usize,
    /// Connections not yet admitted in all; the oldest is closed past it.
    pub max_unadmitted: usize,
    /// At most one log line per shed reason per this interval.
    pub shed_log_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            auth_token: None,
            max_peers_per_room: DEFAULT_MAX_PEERS_PER_ROOM,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst: DEFAULT_RATE_BURST,
            flood_grace: DEFAULT_FLOOD_GRACE,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            admission_timeout: DEFAULT_ADMISSION_TIMEOUT,
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            max_unadmitted_per_ip: DEFAULT_MAX_UNADMITTED_PER_IP,
            max_unadmitted: DEFAULT_MAX_UNADMITTED,
            shed_log_interval: DEFAULT_SHED_LOG_INTERVAL,
        }
    }
}

/// Written by hand so that the auth token never reaches a log line.
impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_peers_per_room", &self.max_peers_per_room)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("rate_burst", &self.rate_burst)
            .field("flood_grace", &self.flood_grace)
            .field("outbound_queue", &self.outbound_queue)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("header_timeout", &self.header_timeout)
            .field("admission_timeout", &self.admission_timeout)
            .field("max_conns_per_ip", &self.max_conns_per_ip)
            .field("max_unadmitted_per_ip", &self.max_unadmitted_per_ip)
            .field("max_unadmitted", &self.max_unadmitted)
            .field("shed_log_interval", &self.shed_log_interval)
            .finish()
    }
}

/// A configuration the relay refuses to start with, rather than misbehave later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit of zero would refuse every peer or every message.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A cap below the header size would refuse every frame.
    #[error("max frame bytes must be at least the header size ({header} bytes), got {0}", header = cue_wire::HEADER_LEN)]
    FrameCapBelowHeader(usize),
    /// Idle connections would be closed before they had a chance to answer a ping.
    #[error("idle timeout ({idle:?}) must be longer than the ping interval ({ping:?})")]
    IdleNotAfterPing {
        /// Configured idle timeout.
        idle: Duration,
        /// Configured ping interval.
        ping: Duration,
    },
    /// An empty token would let anyone in while looking protected.
    #[error("auth token must not be empty")]
    EmptyAuthToken,
}

impl RelayConfig {
    /// Rejects settings that would make the relay useless or unsafe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("max peers per room", self.max_peers_per_room as u128),
            ("rate per second", u128::from(self.rate_per_sec)),
            ("rate burst", u128::from(self.rate_burst)),
            ("outbound queue", self.outbound_queue as u128),
            ("ping interval", self.ping_interval.as_millis()),
            ("idle timeout", self.idle_timeout.as_millis()),
            ("header timeout", self.header_timeout.as_millis()),
            ("admission timeout", self.admission_timeout.as_millis()),
            ("max connections per IP", self.max_conns_per_ip as u128),
            (
                "max unadmitted connections per IP",
                self.max_unadmitted_per_ip as u128,
            ),
            ("max unadmitted connections", self.max_unadmitted as u128),
            ("shed log interval", self.shed_log_interval.as_millis()),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_frame_bytes < cue_wire::HEADER_LEN {
            return Err(ConfigError::FrameCapBelowHeader(self.max_frame_bytes));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleNotAfterPing {
                idle: self.idle_timeout,
                ping: self.ping_interval,
            });
        }
        if self.auth_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyAuthToken);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let config = RelayConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.max_peers_per_room, 50);
        assert_eq!(config.max_frame_bytes, 256 * 1024 + 66);
    }

    #[test]
    fn nonsense_is_refused() {
        let zero_queue = RelayConfig {
            outbound_queue: 0,
            ..RelayConfig::default()
        };
        assert_eq!(
            zero_queue.validate(),
            Err(ConfigError::Zero("outbound queue"))
        );
        let tiny_frames = RelayConfig {
            max_frame_bytes: 10,
            ..RelayConfig::default()
        };
        assert_eq!(
            tiny_frames.validate(),
            Err(ConfigError::FrameCapBelowHeader(10))
        );
        let hasty_idle = RelayConfig {
            idle_timeout: Duration::from_secs(1),
            ..RelayConfig::default()
        };
        assert!(matches!(
            hasty_idle.validate(),
            Err(ConfigError::IdleNotAfterPing { .. })
        ));
        let empty_token = RelayConfig {
            auth_token: Some(String::new()),
            ..RelayConfig::default()
        };
        assert_eq!(empty_token.validate(), Err(ConfigError::EmptyAuthToken));
    }

    #[test]
    fn debug_hides_the_token() {
        let config = RelayConfig {
            auth_token: Some("hunter2".into()),
            ..RelayConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
