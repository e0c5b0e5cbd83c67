//! The editing phases: `append` (one save at a time, rotating sender) and
//! `concurrent` (two peers append to one note 50 ms apart).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::arrivals::{Arrivals, Contents};
use crate::cluster::{append_line, Cluster};
use crate::perf::Perf;
use crate::probe::{heading, percentile, stats};
use crate::report::{usage, Snapshot};
use crate::{must, notes, Knobs};

/// Median and p95 of an fsync'd 2 KB write here, now: every hop costs one on
/// the sender and three on the receiver (commit the merge, write the file,
/// record it), so this is the floor the latencies sit on.
fn fsync_probe(dir: &Path) -> (f64, f64) {
    use std::io::Write;
    let mut v: Vec<f64> = (0..40)
        .map(|_| {
            let t = Instant::now();
            let mut f = must(std::fs::File::create(dir.join("fsync-probe")), "probe");
            must(f.write_all(&[b'x'; 2048]), "probe");
            must(f.sync_all(), "probe");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 50.0), percentile(&v, 95.0))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Each edit is timed from just before the save to the moment the bench
/// reads the new line on each other peer (woken by inotify); the sender
/// rotates, and the next edit starts once every peer has the previous one.
pub fn append(c: &Cluster, k: &Knobs, perf: &Perf) {
    let peers = c.peers();
    heading("append", c.notes, peers);
    let targets: Vec<PathBuf> = (0..peers).map(|i| c.path(i, notes::APPEND)).collect();
    let arrivals = Arrivals::watch(&c.roots);
    let (fsync_p50, fsync_p95) = fsync_probe(c.tmp.path());
    let before = Snapshot::take(c);
    let recorders = perf.start("append", c);
    let mut to_each = Vec::new();
    let mut to_last = Vec::new();
    let mut lost = 0;
    let mut received = vec![0; peers];
    let mut contents = Contents::default();
    for seq in 1..=k.edits {
        let from = seq % peers;
        let line = format!("append {seq} from p{from}");
        arrivals.drain();
        let t0 = Instant::now();
        append_line(&targets[from], &line);
        let mut seen = vec![false; peers];
        seen[from] = true;
        let mut last = 0.0;
        let give_up = t0 + Duration::from_secs(10);
        while seen.contains(&false) {
            let Some((j, path, _)) = arrivals.next_until(give_up) else {
                lost += seen.iter().filter(|s| !**s).count();
                break;
            };
            if seen[j] || path != targets[j] {
                continue;
            }
            if contents.get(&path).contains(&line) {
                let ms = ms_since(t0);
                seen[j] = true;
                received[j] += 1;
                to_each.push(ms);
                last = ms;
            }
        }
        to_last.push(last);
        // Let acknowledgements settle, as between a person's saves.
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(recorders);
    println!(
        "  {} appends to one note, sender rotating, one at a time; fsync of 2 KB here: p50 {fsync_p50:.1} ms p95 {fsync_p95:.1} ms",
        k.edits
    );
    println!("  save -> each other peer:  {}", stats(to_each));
    if peers > 2 {
        println!(
            "  save -> last of {:>2} peers: {}",
            peers - 1,
            stats(to_last)
        );
    }
    println!("  not arrived within 10 s: {lost} (edit, peer) pairs");
    usage(c, &before, Some(&received));
}

/// Two peers append a line each to the same note, 50 ms apart; timed until
/// both files are identical and hold both lines (and, with more peers,
/// until every peer's file is).
pub fn concurrent(c: &Cluster, k: &Knobs, perf: &Perf) {
    let peers = c.peers();
    heading("concurrent", c.notes, peers);
    let targets: Vec<PathBuf> = (0..peers).map(|i| c.path(i, notes::CONCURRENT)).collect();
    let arrivals = Arrivals::watch(&c.roots);
    let before = Snapshot::take(c);
    let recorders = perf.start("concurrent", c);
    let mut contents = Contents::default();
    let mut read = |i: usize| contents.get(&targets[i]).to_string();
    let mut both_agree = Vec::new();
    let mut all_agree = Vec::new();
    let mut unresolved = 0;
    let mut overwritten = 0;
    for round in 0..k.rounds {
        let a = format!("concurrent {round} from p0");
        let b = format!("concurrent {round} from p1");
        arrivals.drain();
        let t0 = Instant::now();
        append_line(&targets[0], &a);
        std::thread::sleep(Duration::from_millis(50));
        append_line(&targets[1], &b);
        let give_up = t0 + Duration::from_secs(30);
        let mut both = None;
        let mut all = None;
        while all.is_none() && Instant::now() < give_up {
            if both.is_none() {
                let (x, y) = (read(0), read(1));
                if x == y && x.contains(&a) && x.contains(&b) {
                    both = Some(ms_since(t0));
                }
            }
            if both.is_some() {
                let first = read(0);
                if (1..peers).all(|i| read(i) == first) {
                    all = Some(ms_since(t0));
                    break;
                }
            }
            // Woken by a write on any peer; polled every 200 ms as well.
            let _ = arrivals.next_until(give_up.min(Instant::now() + Duration::from_millis(200)));
        }
        match (both, all) {
            (Some(b), Some(a)) => {
                both_agree.push(b);
                all_agree.push(a);
            }
            (Some(b), None) => {
                both_agree.push(b);
                unresolved += 1;
            }
            _ => {
                // Agreed without a line: p1's save (read, add, write back)
                // overwrote p0's line that its daemon had just written.
                let (x, y) = (read(0), read(1));
                if x == y && !(x.contains(&a) && x.contains(&b)) {
                    overwritten += 1;
                } else {
                    unresolved += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(recorders);
    println!(
        "  {} rounds: p0 and p1 append to one note 50 ms apart",
        k.rounds
    );
    println!("  until both agree:   {}", stats(both_agree));
    if peers > 2 {
        println!("  until all {peers} agree: {}", stats(all_agree));
    }
    println!(
        "  not agreed within 30 s: {unresolved} rounds; agreed without one line (p1's save overwrote it as it arrived): {overwritten}"
    );
    usage(c, &before, None);
}
