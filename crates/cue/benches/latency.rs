//! Live-sync latency benchmark: from a file saved on one peer to that file
//! updated on the others, through a real relay on loopback, with real
//! `cue watch --sync` processes. Prints P50/P95/P99 for 2 and for 10 peers,
//! and the relay's memory and CPU during each run. It is not a test.
//!
//! `cargo bench -p cue --bench latency` (uses `target/release/cue-relay` if
//! built, else the same relay embedded in `cue relay`). Knobs:
//! `CUE_BENCH_EDITS` (default 300), `CUE_BENCH_PEERS` (default "2,10").
//!
//! Each edit is timed from just before the write to the moment the bench sees
//! (by inotify) the new content on each other peer; the sender rotates, and
//! the next edit starts once every peer has the previous one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

fn cue() -> &'static str {
    env!("CARGO_BIN_EXE_cue")
}

fn run(dir: &Path, member: &str, args: &[&str]) -> String {
    let out = Command::new(cue())
        .args(args)
        .current_dir(dir)
        .env("CUE_MEMBER", member)
        .output()
        .unwrap_or_else(|e| panic!("cue {args:?}: {e}"));
    assert!(
        out.status.success(),
        "cue {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: the daemons stop cleanly.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_relay() -> (Proc, String, String) {
    let standalone = Path::new(cue()).with_file_name("cue-relay");
    let (mut cmd, what) = if standalone.exists() {
        let mut c = Command::new(&standalone);
        c.args(["--listen", "127.0.0.1:0"]);
        (c, "cue-relay")
    } else {
        let mut c = Command::new(cue());
        c.args(["relay", "--listen", "127.0.0.1:0"]);
        (c, "cue relay (embedded)")
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the relay: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = line.trim().rsplit("ws://").next().unwrap_or_default();
    (Proc(child), format!("ws://{addr}"), what.to_string())
}

/// (resident MB, peak resident MB, CPU seconds) of a process.
fn proc_usage(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (
        kb("VmRSS:"),
        kb("VmHWM:"),
        (ticks(11) + ticks(12)) / hz.max(1.0),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "p50 {:6.1} ms  p95 {:6.1} ms  p99 {:6.1} ms  max {:6.1} ms  (n={})",
        percentile(&v, 50.0),
        percentile(&v, 95.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    )
}

fn doc(seq: usize, from: usize) -> String {
    let mut body = String::from("---\ntitle: Latency\ntags: [bench]\n---\n# Latency\n\n");
    for i in 0..30 {
        body.push_str(&format!(
            "Paragraph {i}: the client rotates its keys after every login.\n"
        ));
    }
    body.push_str(&format!("edit {seq} from peer {from}\n"));
    body
}

/// Median and p95 of an fsync'd 2 KB write here, now: every hop costs one on
/// the sender and three on the receiver (commit the merge, write the file,
/// record it), so this is the floor the latencies sit on.
fn fsync_probe(dir: &Path) -> (f64, f64) {
    use std::io::Write;
    let mut v: Vec<f64> = (0..40)
        .map(|_| {
            let t = Instant::now();
            let mut f =
                std::fs::File::create(dir.join("fsync-probe")).unwrap_or_else(|e| panic!("{e}"));
            f.write_all(&[b'x'; 2048]).unwrap_or_else(|e| panic!("{e}"));
            f.sync_all().unwrap_or_else(|e| panic!("{e}"));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 50.0), percentile(&v, 95.0))
}

fn bench(peers: usize, edits: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("cue-latency-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let (relay, url, relay_kind) = start_relay();
    let roots: Vec<PathBuf> = (0..peers)
        .map(|i| tmp.path().join(format!("p{i}")))
        .collect();
    std::fs::create_dir_all(&roots[0]).unwrap_or_else(|e| panic!("{e}"));
    run(&roots[0], "p0", &["init", "--name", "bench"]);
    let target = |i: usize| roots[i].join(".cuedeck/docs/latency.md");
    std::fs::write(target(0), doc(0, 0)).unwrap_or_else(|e| panic!("{e}"));
    let start_daemon = |i: usize| {
        let log = std::fs::File::create(tmp.path().join(format!("p{i}.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        Proc(
            Command::new(cue())
                .args(["watch", "--sync", "--quiet", "--relay", &url])
                .current_dir(&roots[i])
                .env("CUE_MEMBER", format!("p{i}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{e}")),
        )
    };
    let mut daemons = vec![start_daemon(0)];
    let code = run(&roots[0], "p0", &["sync", "invite", "--relay", &url]);
    let code = code.lines().last().unwrap_or_default().trim().to_string();
    for (i, root) in roots.iter().enumerate().skip(1) {
        run(
            tmp.path(),
            &format!("p{i}"),
            &["clone", &code, root.to_str().unwrap_or_default()],
        );
        daemons.push(start_daemon(i));
    }
    // Everyone online before timing starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let online = roots.iter().all(|r| {
            let s = run(r, "x", &["sync", "status", "--json"]);
            s.contains("\"connected\":true") && s.matches("\"peer\":").count() == peers - 1
        });
        if online {
            break;
        }
        assert!(Instant::now() < deadline, "peers did not all come online");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (tx, rx) = mpsc::channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for r in &roots {
        watcher
            .watch(&r.join(".cuedeck/docs"), RecursiveMode::NonRecursive)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let (fsync_p50, fsync_p95) = fsync_probe(tmp.path());
    let relay_pid = relay.0.id();
    let (_, _, cpu_before) = proc_usage(relay_pid);
    let wall = Instant::now();
    let mut to_each = Vec::new();
    let mut to_last = Vec::new();
    let mut lost = 0;
    for seq in 1..=edits {
        let from = seq % peers;
        let text = doc(seq, from);
        let needle = format!("edit {seq} from peer {from}\n");
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        std::fs::write(target(from), &text).unwrap_or_else(|e| panic!("{e}"));
        let mut seen = vec![false; peers];
        seen[from] = true;
        let mut last = 0.0;
        let give_up = t0 + Duration::from_secs(10);
        while seen.iter().any(|s| !s) {
            let Ok(path) = rx.recv_timeout(give_up.saturating_duration_since(Instant::now()))
            else {
                lost += seen.iter().filter(|s| !**s).count();
                break;
            };
            let Some(j) = (0..peers).find(|j| !seen[*j] && path == target(*j)) else {
                continue;
            };
            if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&needle)) {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                seen[j] = true;
                to_each.push(ms);
                last = ms;
            }
        }
        to_last.push(last);
        // Let acknowledgements settle, as between a person's saves.
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let (rss, hwm, cpu_after) = proc_usage(relay_pid);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{peers} peers, {edits} edits, {cores} cores, relay: {relay_kind}; fsync of 2 KB p50 {fsync_p50:.1} ms p95 {fsync_p95:.1} ms; load {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("  save -> each other peer:  {}", stats(to_each));
    if peers > 2 {
        println!(
            "  save -> last of {:>2} peers: {}",
            peers - 1,
            stats(to_last)
        );
    }
    println!(
        "  relay: RSS {rss:.1} MB (peak {hwm:.1} MB), CPU {:.1}% of one core over {wall_s:.1} s; updates lost: {lost}",
        100.0 * (cpu_after - cpu_before) / wall_s
    );
    drop(watcher);
    drop(daemons);
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters nothing here.
    let edits: usize = std::env::var("CUE_BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let sizes: Vec<usize> = std::env::var("CUE_BENCH_PEERS")
        .unwrap_or_else(|_| "2,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n >= 2)
        .collect();
    for peers in sizes {
        bench(peers, edits);
    }
}
