//! `burst`: N new notes written at once on one live peer, timed until they
//! are on every other peer; then appends at a steady pace while the peers
//! digest it (`CUE_BENCH_AFTER` of them, `CUE_BENCH_GAP_MS` apart).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::arrivals::{Arrivals, Contents};
use crate::cluster::{append_line, save, Cluster};
use crate::perf::Perf;
use crate::probe::{heading, stats};
use crate::report::{row, usage, Snapshot};
use crate::{must, notes, Knobs};

fn secs(t: Option<f64>) -> String {
    t.map_or("-".to_string(), |s| format!("{s:.1}"))
}

/// Which burst notes each peer has, and when its first and last came (s).
struct Tally {
    have: Vec<Vec<bool>>,
    count: Vec<usize>,
    first_at: Vec<Option<f64>>,
    all_at: Vec<Option<f64>>,
}

impl Tally {
    fn new(peers: usize, n: usize) -> Tally {
        let mut count = vec![0; peers];
        count[0] = n;
        Tally {
            have: vec![vec![false; n]; peers],
            count,
            first_at: vec![None; peers],
            all_at: vec![None; peers],
        }
    }

    /// Records note `i` on peer `j` at `at`; false if it was known.
    fn mark(&mut self, j: usize, i: usize, at: f64) -> bool {
        let n = self.have[j].len();
        if j == 0 || i >= n || self.have[j][i] {
            return false;
        }
        self.have[j][i] = true;
        self.count[j] += 1;
        self.first_at[j].get_or_insert(at);
        if self.count[j] == n {
            self.all_at[j] = Some(at);
        }
        true
    }

    fn complete(&self) -> bool {
        self.all_at[1..].iter().all(Option::is_some)
    }
}

pub fn burst(c: &Cluster, k: &Knobs, perf: &Perf) {
    let peers = c.peers();
    let n = c.notes.max(1);
    heading("burst", c.notes, peers);
    let dirs: Vec<PathBuf> = (0..peers).map(|i| c.path(i, notes::BURST_DIR)).collect();
    // The folder exists everywhere before the burst, so that the watcher
    // sees the first file written into it on every peer.
    for d in &dirs {
        must(std::fs::create_dir_all(d), "making the burst folder");
    }
    std::thread::sleep(Duration::from_millis(300));
    let arrivals = Arrivals::watch(&c.roots);
    let before = Snapshot::take(c);
    let recorders = perf.start("burst", c);

    let t0 = Instant::now();
    for i in 0..n {
        save(
            &dirs[0].join(notes::burst_name(i)),
            &notes::note(k.seed + 1, i),
        );
    }
    let wrote = t0.elapsed().as_secs_f64();

    let mut got = Tally::new(peers, n);
    let mut by_poll = 0;
    let give_up = t0 + k.timeout;
    let mut next_poll = Instant::now() + Duration::from_secs(1);
    while !got.complete() && Instant::now() < give_up {
        if let Some((j, path, at)) = arrivals.next_until(give_up.min(next_poll)) {
            let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
            if path.parent() == Some(dirs[j].as_path()) {
                if let Some(i) = notes::burst_index(name) {
                    if path.exists() {
                        got.mark(j, i, at.duration_since(t0).as_secs_f64());
                    }
                }
            }
        }
        // Events the kernel dropped (a full inotify queue) are found by
        // listing (which the daemons ignore: a folder is not a note).
        if Instant::now() >= next_poll {
            let now = t0.elapsed().as_secs_f64();
            for (j, dir) in dirs.iter().enumerate().skip(1) {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if let Some(i) = notes::burst_index(&name) {
                        if got.mark(j, i, now) {
                            by_poll += 1;
                        }
                    }
                }
            }
            next_poll = Instant::now() + Duration::from_secs(1);
        }
    }
    let Tally {
        count,
        first_at,
        all_at,
        ..
    } = got;
    drop(recorders);
    let first = first_at[1..].iter().flatten().copied().reduce(f64::min);
    let last = if all_at[1..].iter().all(Option::is_some) {
        all_at[1..].iter().flatten().copied().reduce(f64::max)
    } else {
        None
    };
    println!("  wrote {n} new notes on p0 in {wrote:.2} s (temp file + rename each)");
    println!(
        "  first note on another peer: {} s; all {n} on all {} others: {} s",
        secs(first),
        peers - 1,
        secs(last)
    );
    row("", (0..peers).map(|i| format!("p{i}")));
    row("first note s", first_at.iter().map(|t| secs(*t)));
    row("all notes s", all_at.iter().map(|t| secs(*t)));
    if last.is_none() {
        row("notes arrived", count.iter().map(|c| c.to_string()));
    }
    if by_poll > 0 || arrivals.overflows() > 0 {
        println!(
            "  ({by_poll} arrivals found by listing before their event (up to 1 s late); inotify overflows: {})",
            arrivals.overflows()
        );
    }
    usage(c, &before, None);
    drop(arrivals);
    if k.after > 0 {
        appends_after(c, k, perf);
    }
    let idle = c.wait_idle(k.timeout);
    let since = t0.elapsed().as_secs_f64() - 1.0;
    match idle {
        Some(_) => println!(
            "  daemons idle again {since:.0} s after the burst began (none above 5% of a core for 1 s)"
        ),
        None => println!("  daemons still busy {since:.0} s after the burst began"),
    }
}

/// Appends on a fixed schedule right after the burst arrived (or timed out),
/// the sender rotating: per append, the time until the last other peer has
/// it. Each peer appends to a note of its own: a save that reads a note and
/// writes it back can overwrite a line a daemon wrote in between (an editor
/// can too), and that would lose an append to the bench, not to sync.
fn appends_after(c: &Cluster, k: &Knobs, perf: &Perf) {
    let peers = c.peers();
    heading("appends after the burst", c.notes, peers);
    // targets[i][j]: the note sender i appends to, as peer j has it.
    let targets: Vec<Vec<PathBuf>> = (0..peers)
        .map(|i| (0..peers).map(|j| c.path(j, &notes::after(i))).collect())
        .collect();
    let arrivals = Arrivals::watch(&c.roots);
    let before = Snapshot::take(c);
    let recorders = perf.start("after", c);
    let start = Instant::now();
    // Per append: when, from whom, the line, and when each peer had it (ms).
    let mut sent: Vec<(Instant, usize, String)> = Vec::new();
    let mut seen: Vec<Vec<Option<f64>>> = Vec::new();
    let mut last_write = start;
    let mut contents = Contents::default();
    loop {
        let now = Instant::now();
        let next_at = start + k.gap * sent.len() as u32;
        if sent.len() < k.after && now >= next_at {
            let from = (sent.len() + 1) % peers;
            let line = format!("after-burst {} from p{from}", sent.len() + 1);
            append_line(&targets[from][from], &line);
            last_write = Instant::now();
            let mut row = vec![None; peers];
            row[from] = Some(0.0);
            seen.push(row);
            sent.push((now, from, line));
            continue;
        }
        let everywhere = seen.iter().all(|r| r.iter().all(Option::is_some));
        let finish = last_write + Duration::from_secs(30);
        if sent.len() == k.after && (everywhere || now >= finish) {
            break;
        }
        let wake = if sent.len() < k.after {
            next_at
        } else {
            finish
        };
        let Some((j, path, _)) = arrivals.next_until(wake) else {
            continue;
        };
        let Some(i) = (0..peers).find(|i| path == targets[*i][j]) else {
            continue;
        };
        let text = contents.get(&path);
        for (e, (t, from, line)) in sent.iter().enumerate() {
            if *from == i && seen[e][j].is_none() && text.contains(line.as_str()) {
                seen[e][j] = Some(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    drop(recorders);
    let to_last: Vec<f64> = seen
        .iter()
        .filter(|r| r.iter().all(Option::is_some))
        .map(|r| r.iter().flatten().copied().fold(0.0, f64::max))
        .collect();
    let to_each: Vec<f64> = seen
        .iter()
        .zip(&sent)
        .flat_map(|(r, (_, from, _))| {
            r.iter()
                .enumerate()
                .filter(move |(j, _)| j != from)
                .filter_map(|(_, t)| *t)
        })
        .collect();
    let late = to_last.iter().filter(|ms| **ms > 1000.0).count();
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, r)| r.iter().any(Option::is_none))
        .map(|(e, _)| e + 1)
        .collect();
    let received: Vec<usize> = (0..peers)
        .map(|j| {
            seen.iter()
                .zip(&sent)
                .filter(|(r, (_, from, _))| *from != j && r[j].is_some())
                .count()
        })
        .collect();
    println!(
        "  {} appends, {} ms apart, sender rotating (each to a note of its own), from the moment the burst had arrived everywhere",
        k.after,
        k.gap.as_millis(),
    );
    println!("  append -> each other peer: {}", stats(to_each));
    println!("  append -> last other peer: {}", stats(to_last.clone()));
    println!(
        "  later than 1 s to the last peer: {} of {}; still missing 30 s after the last append: {} appends {:?}",
        late + missing.len(),
        k.after,
        missing.len(),
        missing
    );
    row(
        "missing on",
        (0..peers).map(|j| seen.iter().filter(|r| r[j].is_none()).count().to_string()),
    );
    usage(c, &before, Some(&received));
}
