//! Workspace benchmark: import, edit history, export, clone and import of
//! generated workspaces of realistic Markdown (about 2 KB per file), on the
//! real SQLite store and real files. Prints a table; it is not a test.
//!
//! `cargo bench -p cue --bench workspace` (sizes: CUE_BENCH_SIZES=1000,10000).
//! Each phase runs in its own child process so its peak memory (VmHWM) is its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cue::config::Config;
use cue::disk::{self, Filters, Layout};
use cue::session::Session;
use cue::store::SqliteStore;
use cue_core::disk::Scope;
use cue_core::Workspace;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const WORDS: &[&str] = &[
    "token",
    "session",
    "refresh",
    "the",
    "client",
    "server",
    "must",
    "rotate",
    "keys",
    "after",
    "login",
    "and",
    "every",
    "request",
    "carries",
    "a",
    "signed",
    "header",
    "which",
    "expires",
    "quickly",
    "so",
    "that",
    "stolen",
    "credentials",
];

fn markdown(rng: &mut StdRng, i: usize) -> String {
    let mut body = String::new();
    while body.len() < 1800 {
        if rng.random_bool(0.15) {
            body.push_str(&format!("\n## Section {}\n\n", rng.random_range(0..100)));
        }
        let n = rng.random_range(8..20);
        let line: Vec<&str> = (0..n)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
            .collect();
        body.push_str(&line.join(" "));
        body.push_str(".\n");
    }
    format!(
        "---\nid: c{i:05}\ntitle: Document {i}\nstatus: todo\npriority: {}\ntags: [alpha, t{}]\nrefs: []\n---\n# Document {i}\n\n{body}",
        ["low", "medium", "high"][i % 3],
        i % 17
    )
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn open(root: &Path) -> Workspace<SqliteStore> {
    let layout = Layout::at(root);
    let store = SqliteStore::open(&layout.state_db()).unwrap_or_else(|e| panic!("{e}"));
    Workspace::open(store, "bench").unwrap_or_else(|e| panic!("{e}"))
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Phase "import": generate N files, `init`, record an edit history, export.
fn phase_import(base: &Path, n: usize) {
    let root = base.join("a");
    let layout = Layout::at(&root);
    let mut rng = StdRng::seed_from_u64(42);
    std::fs::create_dir_all(layout.cuedeck.join("docs")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(layout.sync_dir()).unwrap_or_else(|e| panic!("{e}"));
    let mut json_files = Vec::new();
    for i in 0..n {
        let text = markdown(&mut rng, i);
        std::fs::write(
            layout.cuedeck.join("docs").join(format!("d{i:05}.md")),
            &text,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let filters = Filters::new(&layout, &[]).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let store = SqliteStore::open(&layout.state_db()).unwrap_or_else(|e| panic!("{e}"));
    let ws = Workspace::create(store, "bench", "bench", disk::now_ms(), &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut session = Session::new(layout.clone(), Config::default(), filters, ws);
    session
        .scan(Scope::All, false, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let import_s = t.elapsed().as_secs_f64();

    // Edit history: a fifth of the files get five edits each (body lines, a scalar, a tag).
    let t = Instant::now();
    let mut edits = 0;
    for round in 0..5 {
        for i in (0..n).step_by(5) {
            let path = layout.cuedeck.join("docs").join(format!("d{i:05}.md"));
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!(
                "Edit {round}: {}.\n",
                WORDS[rng.random_range(0..WORDS.len())]
            ));
            if round == 2 {
                text = text.replacen("status: todo", "status: active", 1);
            }
            if round == 3 {
                text = text.replacen("tags: [alpha,", "tags: [alpha, edited,", 1);
            }
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            edits += 1;
        }
        session
            .scan(Scope::All, false, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut ws = session.ws;
    let edit_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let bundle = ws.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let export_s = t.elapsed().as_secs_f64();
    std::fs::write(base.join("bundle.cue"), &bundle).unwrap_or_else(|e| panic!("{e}"));
    for f in ws.files("").unwrap_or_else(|e| panic!("{e}")) {
        let text = std::fs::read_to_string(layout.to_disk(&f.path)).unwrap_or_default();
        let fm: serde_json::Map<String, serde_json::Value> = f
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(format!("{v:?}"))))
            .collect();
        json_files.push(serde_json::json!({"path": f.path.as_str(), "content": text, "frontmatter": fm, "last_modified_by": "bench", "version": 1}));
    }
    let json = serde_json::to_vec(&json_files).unwrap_or_default();
    drop(ws);
    let state = dir_size(&layout.sync_dir());
    println!(
        "RESULT import n={n} import_s={import_s:.2} edits={edits} edit_s={edit_s:.2} export_s={export_s:.2} bundle_bytes={} json_bytes={} state_bytes={state} peak_mb={:.1}",
        bundle.len(),
        json.len(),
        vm_hwm_mb()
    );
}

/// Phase "clone": a new peer from the bundle, files written to disk.
fn phase_clone(base: &Path, n: usize) {
    let root = base.join("b");
    let layout = Layout::at(&root);
    std::fs::create_dir_all(layout.sync_dir()).unwrap_or_else(|e| panic!("{e}"));
    let bundle = std::fs::read(base.join("bundle.cue")).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let store = SqliteStore::open(&layout.state_db()).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = StdRng::seed_from_u64(7);
    let ws = Workspace::clone_from_bundle(store, &bundle, "clone", &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let filters = Filters::new(&layout, &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut session = Session::new(layout.clone(), Config::default(), filters, ws);
    let applied = session
        .write_files(&mut |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let clone_s = t.elapsed().as_secs_f64();
    assert_eq!(applied.written.len(), n);
    println!(
        "RESULT clone n={n} clone_s={clone_s:.2} peak_mb={:.1}",
        vm_hwm_mb()
    );
}

/// Phase "reimport": open the first peer and merge the bundle again (all known).
fn phase_reimport(base: &Path, n: usize) {
    let bundle = std::fs::read(base.join("bundle.cue")).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut ws = open(&base.join("a"));
    let open_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let r = ws.import_bundle(&bundle).unwrap_or_else(|e| panic!("{e}"));
    let import_s = t.elapsed().as_secs_f64();
    assert_eq!(r.docs_changed, 0);
    println!(
        "RESULT reimport n={n} open_s={open_s:.3} import_s={import_s:.2} peak_mb={:.1}",
        vm_hwm_mb()
    );
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or("?")
}

fn main() {
    cue::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if let (Some(phase), Some(dir), Some(n)) = (
        std::env::var("CUE_BENCH_PHASE").ok(),
        args.get(1),
        args.get(2),
    ) {
        let n: usize = n.parse().unwrap_or(1000);
        let dir = PathBuf::from(dir);
        match phase.as_str() {
            "import" => phase_import(&dir, n),
            "clone" => phase_clone(&dir, n),
            _ => phase_reimport(&dir, n),
        }
        return;
    }
    let sizes: Vec<usize> = std::env::var("CUE_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("cue workspace benchmark, {cores} cores, release build, ~2 KB Markdown files\n");
    println!("| files | import | edits (recorded) | export | clone (to disk) | reopen + re-import | bundle vs JSON | SQLite state | peak RSS import / clone / reimport |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let tmp = tempfile::Builder::new()
            .prefix("cue-bench-")
            .tempdir_in(std::env::temp_dir())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut results = Vec::new();
        for phase in ["import", "clone", "reimport"] {
            let out = std::process::Command::new(&args[0])
                .env("CUE_BENCH_PHASE", phase)
                .arg(tmp.path())
                .arg(n.to_string())
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "phase {phase} failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            results.push(
                stdout
                    .lines()
                    .find(|l| l.starts_with("RESULT"))
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let (a, b, c) = (&results[0], &results[1], &results[2]);
        let bundle: f64 = field(a, "bundle_bytes").parse().unwrap_or(0.0);
        let json: f64 = field(a, "json_bytes").parse().unwrap_or(1.0);
        let state: f64 = field(a, "state_bytes").parse().unwrap_or(0.0);
        println!(
            "| {n} | {} s | {} in {} s | {} s | {} s | {} s + {} s | {:.1} MB vs {:.1} MB ({:+.0}%) | {:.1} MB | {} / {} / {} MB |",
            field(a, "import_s"),
            field(a, "edits"),
            field(a, "edit_s"),
            field(a, "export_s"),
            field(b, "clone_s"),
            field(c, "open_s"),
            field(c, "import_s"),
            bundle / 1e6,
            json / 1e6,
            (bundle / json - 1.0) * 100.0,
            state / 1e6,
            field(a, "peak_mb"),
            field(b, "peak_mb"),
            field(c, "peak_mb"),
        );
    }
}
