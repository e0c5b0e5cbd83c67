//! Who may hold a socket: caps on connections per address and on connections
//! that have not proved a room's key yet, checked at the TCP accept, before a
//! byte of HTTP is parsed.
//!
//! Every accepted connection takes a [`ConnSlot`] and is *unadmitted* until
//! it passes room admission (plain HTTP requests such as `/healthz` never
//! are). Three caps apply, in this order:
//!
//! 1. `max_conns_per_ip` open connections per address. At the cap, the
//!    address's oldest unadmitted connection is closed to make room; if all
//!    of them are admitted, the new connection is refused.
//! 2. `max_unadmitted_per_ip`: at the cap, that address's oldest unadmitted
//!    connection is closed.
//! 3. `max_unadmitted` over all addresses: at the cap, the oldest unadmitted
//!    connection anywhere is closed.
//!
//! Closing the *oldest* instead of refusing the newest is what keeps a real
//! peer able to join during a slowloris: half-open sockets are old by
//! nature, while a real client is admitted within a round trip or two of its
//! accept. To keep a peer out, an attacker has to open connections faster
//! than the cap divided by that round trip.
//!
//! An "address" is an IPv4 address or an IPv6 /64 (what one host can
//! trivially spread over); an IPv4-mapped IPv6 address counts as IPv4.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::shed::Shed;

/// The caps, from [`crate::RelayConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct GateLimits {
    pub(crate) max_conns_per_ip: usize,
    pub(crate) max_unadmitted_per_ip: usize,
    pub(crate) max_unadmitted: usize,
}

/// The part of an address the caps count by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AddrKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl AddrKey {
    pub(crate) fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    AddrKey::V6Prefix(prefix)
                }
            },
        }
    }
}

#[derive(Debug)]
struct Live {
    addr: AddrKey,
    admitted: bool,
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct PerAddr {
    open: usize,
    /// Unadmitted connections of this address, by slot number (oldest first).
    unadmitted: BTreeMap<u64, ()>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    live: HashMap<u64, Live>,
    /// Unadmitted connections of every address, oldest first.
    unadmitted: BTreeMap<u64, ()>,
    by_addr: HashMap<AddrKey, PerAddr>,
}

/// The caps and the connections they count.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: GateLimits,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddrFull;

/// A connection's place under the caps; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    gate: Arc<Gate>,
    id: u64,
    /// Cancelled when the gate closes this connection to make room.
    pub(crate) evicted: CancellationToken,
    /// When the TCP connection was accepted: the admission deadline counts from it.
    pub(crate) accepted_at: Instant,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gate {
    pub(crate) fn new(limits: GateLimits, metrics: Arc<Metrics>) -> Gate {
        Gate {
            limits,
            state: Mutex::new(State::default()),
            metrics,
        }
    }

    /// Takes a slot for a connection from `ip`, closing older unadmitted
    /// connections as the caps require; each one closed is reported to
    /// `evicted` with its reason. Refused when the address is at its cap with
    /// only admitted connections.
    pub(crate) fn enter(
        self: &Arc<Self>,
        ip: IpAddr,
        mut evicted: impl FnMut(Shed),
    ) -> Result<ConnSlot, AddrFull> {
        let addr = AddrKey::of(ip);
        let mut state = lock(&self.state);
        let (open, waiting) = state
            .by_addr
            .get(&addr)
            .map_or((0, 0), |a| (a.open, a.unadmitted.len()));
        if open >= self.limits.max_conns_per_ip {
            if waiting == 0 {
                return Err(AddrFull);
            }
            self.evict_oldest_of(&mut state, addr);
            evicted(Shed::EvictedPerIp);
        }
        let waiting = state.by_addr.get(&addr).map_or(0, |a| a.unadmitted.len());
        if waiting >= self.limits.max_unadmitted_per_ip {
            self.evict_oldest_of(&mut state, addr);
            evicted(Shed::EvictedPerIp);
        }
        if state.unadmitted.len() >= self.limits.max_unadmitted {
            if let Some((&oldest, ())) = state.unadmitted.first_key_value() {
                self.release(&mut state, oldest, true);
                evicted(Shed::EvictedGlobal);
            }
        }

        let id = state.next;
        state.next += 1;
        let evict = CancellationToken::new();
        state.live.insert(
            id,
            Live {
                addr,
                admitted: false,
                evict: evict.clone(),
            },
        );
        state.unadmitted.insert(id, ());
        let per_addr = state.by_addr.entry(addr).or_default();
        per_addr.open += 1;
        per_addr.unadmitted.insert(id, ());
        self.metrics.unadmitted.fetch_add(1, Ordering::Relaxed);
        drop(state);
        Ok(ConnSlot {
            gate: Arc::clone(self),
            id,
            evicted: evict,
            accepted_at: Instant::now(),
        })
    }

    fn evict_oldest_of(&self, state: &mut State, addr: AddrKey) {
        let oldest = state
            .by_addr
            .get(&addr)
            .and_then(|a| a.unadmitted.first_key_value())
            .map(|(&id, ())| id);
        if let Some(id) = oldest {
            self.release(state, id, true);
        }
    }

    /// Forgets slot `id` (if still live), and cancels it if it is evicted.
    fn release(&self, state: &mut State, id: u64, evict: bool) {
        let Some(live) = state.live.remove(&id) else {
            return;
        };
        if !live.admitted {
            state.unadmitted.remove(&id);
            self.metrics.unadmitted.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(per_addr) = state.by_addr.get_mut(&live.addr) {
            per_addr.open = per_addr.open.saturating_sub(1);
            per_addr.unadmitted.remove(&id);
            if per_addr.open == 0 {
                state.by_addr.remove(&live.addr);
            }
        }
        if evict {
            live.evict.cancel();
        }
    }

    #[cfg(test)]
    fn counts(&self, ip: IpAddr) -> (usize, usize, usize) {
        let state = lock(&self.state);
        let (open, waiting) = state
            .by_addr
            .get(&AddrKey::of(ip))
            .map_or((0, 0), |a| (a.open, a.unadmitted.len()));
        (open, waiting, state.unadmitted.len())
    }
}

impl ConnSlot {
    /// Marks the connection admitted: it no longer counts as unadmitted and
    /// can no longer be evicted. `false` if it was evicted already.
    pub(crate) fn admit(&self) -> bool {
        let mut state = lock(&self.gate.state);
        let Some(live) = state.live.get_mut(&self.id) else {
            return false;
        };
        if live.admitted {
            return true;
        }
        live.admitted = true;
        let addr = live.addr;
        state.unadmitted.remove(&self.id);
        if let Some(per_addr) = state.by_addr.get_mut(&addr) {
            per_addr.unadmitted.remove(&self.id);
        }
        self.gate.metrics.unadmitted.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut state = lock(&self.gate.state);
        self.gate.release(&mut state, self.id, false);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn gate(per_ip: usize, unadmitted_per_ip: usize, unadmitted: usize) -> Arc<Gate> {
        Arc::new(Gate::new(
            GateLimits {
                max_conns_per_ip: per_ip,
                max_unadmitted_per_ip: unadmitted_per_ip,
                max_unadmitted: unadmitted,
            },
            Arc::default(),
        ))
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn enter(gate: &Arc<Gate>, ip: IpAddr) -> (Result<ConnSlot, AddrFull>, Vec<Shed>) {
        let mut shed = Vec::new();
        let slot = gate.enter(ip, |s| shed.push(s));
        (slot, shed)
    }

    #[test]
    fn an_address_full_of_admitted_peers_is_refused() {
        let gate = gate(2, 10, 10);
        let a = enter(&gate, ip(1)).0.unwrap();
        let b = enter(&gate, ip(1)).0.unwrap();
        assert!(a.admit() && b.admit());
        assert_eq!(enter(&gate, ip(1)).0.unwrap_err(), AddrFull);
        // Other addresses are not affected, and a departure makes room.
        assert!(enter(&gate, ip(2)).0.is_ok());
        drop(a);
        assert!(enter(&gate, ip(1)).0.is_ok());
    }

    #[test]
    fn at_the_per_address_cap_the_oldest_unadmitted_goes_first() {
        let gate = gate(3, 10, 10);
        let admitted = enter(&gate, ip(1)).0.unwrap();
        assert!(admitted.admit());
        let old = enter(&gate, ip(1)).0.unwrap();
        let young = enter(&gate, ip(1)).0.unwrap();
        let (newest, shed) = enter(&gate, ip(1));
        assert!(newest.is_ok());
        assert_eq!(shed, [Shed::EvictedPerIp]);
        assert!(old.evicted.is_cancelled());
        assert!(!young.evicted.is_cancelled());
        assert!(!admitted.evicted.is_cancelled());
        // An evicted slot can no longer be admitted, and its drop is harmless.
        assert!(!old.admit());
        drop(old);
        assert_eq!(gate.counts(ip(1)), (3, 2, 2));
    }

    #[test]
    fn unadmitted_caps_close_the_oldest_per_address_then_anywhere() {
        let gate = gate(100, 2, 3);
        let a1 = enter(&gate, ip(1)).0.unwrap();
        let a2 = enter(&gate, ip(1)).0.unwrap();
        let (a3, shed) = enter(&gate, ip(1));
        assert_eq!(shed, [Shed::EvictedPerIp]);
        assert!(a1.evicted.is_cancelled());
        let b1 = enter(&gate, ip(2)).0.unwrap();
        // Three unadmitted in all now (a2, a3, b1): the next evicts a2, the oldest.
        let (b2, shed) = enter(&gate, ip(2));
        assert_eq!(shed, [Shed::EvictedGlobal]);
        assert!(a2.evicted.is_cancelled());
        assert!(!b1.evicted.is_cancelled());
        // Admitted connections no longer count against the unadmitted caps.
        assert!(b1.admit() && b2.unwrap().admit());
        let (_, shed) = enter(&gate, ip(2));
        assert!(shed.is_empty());
        drop(a3);
    }

    #[test]
    fn slots_give_everything_back() {
        let metrics: Arc<Metrics> = Arc::default();
        let gate = Arc::new(Gate::new(
            GateLimits {
                max_conns_per_ip: 5,
                max_unadmitted_per_ip: 5,
                max_unadmitted: 5,
            },
            Arc::clone(&metrics),
        ));
        let slots: Vec<_> = (0..4)
            .map(|n| gate.enter(ip(n % 2), |_| {}).unwrap())
            .collect();
        assert!(slots[0].admit());
        assert_eq!(metrics.unadmitted.load(Ordering::Relaxed), 3);
        drop(slots);
        assert_eq!(metrics.unadmitted.load(Ordering::Relaxed), 0);
        let state = lock(&gate.state);
        assert!(state.live.is_empty() && state.unadmitted.is_empty() && state.by_addr.is_empty());
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().unwrap().into();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse::<Ipv6Addr>().unwrap().into();
        let c: IpAddr = "2001:db8:1:3::1".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(AddrKey::of(a), AddrKey::of(c));
        let mapped: IpAddr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().into();
        assert_eq!(AddrKey::of(mapped), AddrKey::of(ip(1)));
    }
}
