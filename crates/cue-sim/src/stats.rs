//! Fault and activity counters, summed over scenarios: what a run of the
//! simulator actually exercised (the figures quoted in the README).

use std::fmt;

/// Counters of one scenario, or of many added up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub scenarios: u64,
    pub peers: u64,
    pub steps: u64,
    /// Simulated time, in ms.
    pub sim_ms: i64,
    /// Frames peers handed to the relay.
    pub frames_sent: u64,
    /// Frames (peer and relay frames) a peer's engine took in.
    pub delivered: u64,
    /// Peer frames the network dropped on purpose.
    pub dropped: u64,
    /// Extra copies the network delivered.
    pub duplicated: u64,
    /// Frames lost because a connection went away while they were in flight.
    pub lost_in_disconnect: u64,
    pub partitions: u64,
    /// Partitions or power-offs longer than `max_offline_days`.
    pub long_outages: u64,
    pub relay_restarts: u64,
    /// Crashes between steps.
    pub crashes: u64,
    /// Crashes after a merge was committed, before the disk was written or anything sent.
    pub crashes_after_merge: u64,
    /// Crashes in the middle of writing a plan to disk.
    pub crashes_mid_checkout: u64,
    /// Relay seats left half-open by a crash until a timeout or a takeover.
    pub half_open: u64,
    /// Engines that started with a full resync (back after more than `max_offline_days`).
    pub full_resyncs: u64,
    /// User edits, by kind.
    pub edits: u64,
    pub creates: u64,
    pub renames: u64,
    pub deletes: u64,
    pub restores: u64,
    /// Edits a user made while their peer was down or before the daemon looked.
    pub deferred_edits: u64,
    /// Disk writes the never-clobber rule refused (the user had changed the file).
    pub refused_writes: u64,
    /// Unrecorded edits recorded as a new file because a checkout had moved
    /// their file meanwhile (see `Peer::scan`).
    pub detached_edits: u64,
}

impl Stats {
    /// Adds another scenario's counters.
    pub fn add(&mut self, o: &Stats) {
        self.scenarios += o.scenarios;
        self.peers += o.peers;
        self.steps += o.steps;
        self.sim_ms += o.sim_ms;
        self.frames_sent += o.frames_sent;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.lost_in_disconnect += o.lost_in_disconnect;
        self.partitions += o.partitions;
        self.long_outages += o.long_outages;
        self.relay_restarts += o.relay_restarts;
        self.crashes += o.crashes;
        self.crashes_after_merge += o.crashes_after_merge;
        self.crashes_mid_checkout += o.crashes_mid_checkout;
        self.half_open += o.half_open;
        self.full_resyncs += o.full_resyncs;
        self.edits += o.edits;
        self.creates += o.creates;
        self.renames += o.renames;
        self.deletes += o.deletes;
        self.restores += o.restores;
        self.deferred_edits += o.deferred_edits;
        self.refused_writes += o.refused_writes;
        self.detached_edits += o.detached_edits;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.sim_ms as f64 / 86_400_000.0;
        writeln!(
            f,
            "scenarios {}, peers {}, steps {}, simulated time {days:.1} days",
            self.scenarios, self.peers, self.steps
        )?;
        writeln!(
            f,
            "messages: {} sent, {} delivered, {} dropped, {} duplicated, {} lost in disconnects",
            self.frames_sent,
            self.delivered,
            self.dropped,
            self.duplicated,
            self.lost_in_disconnect
        )?;
        writeln!(
            f,
            "faults: {} partitions, {} outages > max_offline_days, {} relay restarts, {} half-open seats",
            self.partitions, self.long_outages, self.relay_restarts, self.half_open
        )?;
        writeln!(
            f,
            "crashes: {} between steps, {} after a merge, {} mid-checkout; {} full resyncs",
            self.crashes, self.crashes_after_merge, self.crashes_mid_checkout, self.full_resyncs
        )?;
        write!(
            f,
            "edits: {} ({} creates, {} renames, {} deletes, {} restores; {} recorded late, {} detached into a copy), {} disk writes refused to keep a user's change",
            self.edits,
            self.creates,
            self.renames,
            self.deletes,
            self.restores,
            self.deferred_edits,
            self.detached_edits,
            self.refused_writes
        )
    }
}
