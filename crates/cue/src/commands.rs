//! The commands, each a short story: open the workspace, record what the user
//! changed on disk, do the thing, write merged files back, report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cue_core::disk::{FileSystem, Scope};
use cue_core::frontmatter::{self, FmValue};
use cue_core::workspace::{NotWritten, NotWrittenReason, PoisonReason, RepairAction};
use cue_core::{SyncPath, Workspace};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rand::RngExt;
use serde_json::json;

use crate::config::{self, Config};
use crate::disk::{self, Layout, RealFs};
use crate::session::{member_name, open, open_at};
use crate::store::SqliteStore;

/// A mistake in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn write_gitignore(layout: &Layout) -> Result<()> {
    let path = layout.cuedeck.join(".gitignore");
    if !path.exists() {
        std::fs::write(&path, "# Local to this machine: sync state, caches and the relay token.\nsync/\n.cache/\nconfig.toml\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The folders of a new peer at `root`, which must be new or empty.
pub fn new_peer_dirs(root: &Path) -> Result<Layout> {
    if root.exists()
        && std::fs::read_dir(root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(UsageError(format!(
            "{} exists and is not empty; clone into a new folder",
            root.display()
        ))
        .into());
    }
    let layout = Layout::at(root);
    make_dirs(&layout)?;
    write_gitignore(&layout)?;
    Ok(layout)
}

fn make_dirs(layout: &Layout) -> Result<()> {
    for d in [
        layout.cuedeck.join("cards"),
        layout.cuedeck.join("docs"),
        layout.sync_dir(),
        layout.cuedeck.join(".cache"),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(())
}

pub fn init(cwd: &Path, name: Option<String>, member: Option<String>) -> Result<()> {
    let layout = Layout::at(cwd);
    if layout.state_db().is_file() {
        let mut s = open_at(layout)?;
        let changes = s.record()?;
        let meta = s.ws.meta()?;
        println!(
            "Workspace {:?} is already initialised in {}",
            meta.name,
            s.layout.cuedeck.display()
        );
        if !changes.is_empty() {
            println!("Recorded {} new or changed files.", changes.count());
        }
        return Ok(());
    }
    make_dirs(&layout)?;
    let folder = cwd
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "workspace".into());
    let name = name.unwrap_or(folder);
    let existing = Config::load(&layout.config_path())?;
    let member = member_name(member, &existing);
    if !layout.config_path().exists() {
        disk::atomic_write(
            &layout.config_path(),
            config::template(&name, &member).as_bytes(),
        )?;
        config::secure(&layout.config_path())?;
    }
    write_gitignore(&layout)?;
    let store = SqliteStore::open(&layout.state_db())?;
    Workspace::create(store, &name, &member, disk::now_ms(), &mut rand::rng())?;
    crate::sync::key::ensure_key(&layout)?;
    let mut s = open_at(layout)?;
    crate::sync::members::publish_own_key(&s.layout, &mut s.ws)?;
    let changes = s.record()?;
    let meta = s.ws.meta()?;
    println!(
        "Initialised workspace {:?} ({}) in {}",
        meta.name,
        meta.workspace_id,
        s.layout.cuedeck.display()
    );
    println!(
        "Imported {} existing Markdown files.",
        changes.created.len()
    );
    Ok(())
}

const PRIORITIES: [&str; 4] = ["low", "medium", "high", "critical"];
const STATUSES: [&str; 4] = ["todo", "active", "done", "archived"];

pub fn card_new(
    cwd: &Path,
    title: &str,
    priority: &str,
    tags: &[String],
    assignee: Option<String>,
) -> Result<()> {
    if !PRIORITIES.contains(&priority) {
        return Err(UsageError(format!(
            "priority must be one of {}, not {priority:?}",
            PRIORITIES.join(", ")
        ))
        .into());
    }
    if title.trim().is_empty() {
        return Err(UsageError("a card needs a title".into()).into());
    }
    let mut s = open(cwd)?;
    s.record()?;
    let mut rng = rand::rng();
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let (id, path) = loop {
        let id: String = (0..6)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        let path = SyncPath::parse(&format!("cards/{id}.md"))?;
        if !s.layout.to_disk(&path).exists() {
            break (id, path);
        }
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let fields = vec![
        ("id".to_string(), FmValue::Str(id.clone())),
        ("uuid".into(), FmValue::Str(uuid)),
        ("title".into(), FmValue::Str(title.to_string())),
        ("status".into(), FmValue::Str("todo".into())),
        ("priority".into(), FmValue::Str(priority.into())),
        (
            "assignee".into(),
            assignee.map(FmValue::Str).unwrap_or(FmValue::Null),
        ),
        (
            "tags".into(),
            FmValue::List(tags.iter().cloned().map(FmValue::Str).collect()),
        ),
        ("refs".into(), FmValue::List(Vec::new())),
    ];
    let text = frontmatter::patch(&format!("# {title}\n"), &fields);
    disk::atomic_write(&s.layout.to_disk(&path), text.as_bytes())?;
    s.record()?;
    println!("Created card {id}: .cuedeck/{path}");
    Ok(())
}

fn field_str(fields: &[(String, FmValue)], key: &str) -> String {
    match fields.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        Some(FmValue::Str(s)) => s.clone(),
        Some(FmValue::Null) | None => String::new(),
        Some(FmValue::List(items)) => items
            .iter()
            .filter_map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => format!("{other:?}"),
    }
}

pub fn list(cwd: &Path, status: Option<&str>, json: bool) -> Result<()> {
    let mut s = open(cwd)?;
    s.record()?;
    s.checkout("updating")?;
    let mut cards: Vec<_> =
        s.ws.files("cards/")?
            .into_iter()
            .map(|f| {
                let get = |k: &str| field_str(&f.fields, k);
                let id = Some(get("id"))
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| {
                        f.path
                            .as_str()
                            .trim_start_matches("cards/")
                            .trim_end_matches(".md")
                            .to_string()
                    });
                (
                    get("status"),
                    id,
                    get("priority"),
                    get("title"),
                    get("assignee"),
                    get("tags"),
                    f.path.to_string(),
                )
            })
            .filter(|c| status.is_none_or(|want| c.0 == want))
            .collect();
    let rank = |s: &str| {
        STATUSES
            .iter()
            .position(|x| *x == s)
            .unwrap_or(STATUSES.len())
    };
    cards.sort_by(|a, b| (rank(&a.0), &a.1).cmp(&(rank(&b.0), &b.1)));
    if json {
        let out: Vec<_> = cards
            .iter()
            .map(|c| json!({"status": c.0, "id": c.1, "priority": c.2, "title": c.3, "assignee": c.4, "tags": c.5, "path": c.6}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if cards.is_empty() {
        println!("No cards yet. Create one with `cue card new \"Title\"`.");
    }
    let mut last = None;
    for c in &cards {
        if last != Some(&c.0) {
            println!("{}:", if c.0.is_empty() { "(no status)" } else { &c.0 });
            last = Some(&c.0);
        }
        println!(
            "  {}  {:<8}  {}{}",
            c.1,
            c.2,
            c.3,
            if c.4.is_empty() {
                String::new()
            } else {
                format!("  @{}", c.4)
            }
        );
    }
    Ok(())
}

pub fn export(cwd: &Path, file: &Path) -> Result<()> {
    let mut s = open(cwd)?;
    s.record()?;
    let bytes = s.ws.export_bundle()?;
    if file == Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(&bytes)?;
        return Ok(());
    }
    let target = absolute(cwd, file);
    disk::atomic_write(&target, &bytes)
        .with_context(|| format!("writing the bundle to {}", target.display()))?;
    let files = s.ws.entries()?.len();
    eprintln!(
        "Exported {files} files ({} KB) to {}",
        bytes.len().div_ceil(1024),
        target.display()
    );
    Ok(())
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Reads a bundle file, refusing one past `MAX_BUNDLE_BYTES` before reading it.
fn read_bundle(cwd: &Path, file: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let path = absolute(cwd, file);
    let limit = cue_core::limits::MAX_BUNDLE_BYTES;
    let f =
        std::fs::File::open(&path).with_context(|| format!("reading bundle {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading bundle {}", path.display()))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "{} is larger than {limit} bytes (MAX_BUNDLE_BYTES); nothing was imported",
            path.display()
        );
    }
    Ok(bytes)
}

pub fn import(cwd: &Path, file: &Path) -> Result<()> {
    let bytes = read_bundle(cwd, file)?;
    let mut s = open(cwd)?;
    s.record()?;
    let report = s.ws.import_bundle(&bytes)?;
    let applied = s.checkout("merging")?;
    println!(
        "Merged {}: {} documents changed, {} already known; {} files written, {} removed.",
        file.display(),
        report.docs_changed,
        report.docs_unchanged,
        applied.written.len(),
        applied.removed.len()
    );
    Ok(())
}

pub fn clone(cwd: &Path, source: &Path, dir: &Path, member: Option<String>) -> Result<()> {
    let bytes = read_bundle(cwd, source)?;
    let root = absolute(cwd, dir);
    let layout = new_peer_dirs(&root)?;
    let member = member_name(member, &Config::default());
    let store = SqliteStore::open(&layout.state_db())?;
    let ws = Workspace::clone_from_bundle(store, &bytes, &member, &mut rand::rng())
        .with_context(|| format!("cloning from {}", source.display()))?;
    let meta = ws.meta()?;
    drop(ws);
    disk::atomic_write(
        &layout.config_path(),
        config::template(&meta.name, &member).as_bytes(),
    )?;
    config::secure(&layout.config_path())?;
    let mut s = open_at(layout)?;
    crate::sync::members::publish_own_key(&s.layout, &mut s.ws)?;
    let applied = s.checkout("cloning")?;
    println!(
        "Cloned workspace {:?} into {}: {} files.",
        meta.name,
        root.display(),
        applied.written.len()
    );
    Ok(())
}

/// The start of `--since`, in seconds since the Unix epoch: a span back from
/// `now` (`30m`, `2h`, `1d`, `1w`, or jiff's longer forms like `1 day`), or
/// an RFC 3339 time (`2026-01-31T09:00:00Z`). A bare number is refused: `5`
/// could mean minutes, hours or days, and a wrong guess hides activity.
fn since_seconds(s: &str, now: Timestamp) -> Result<i64, UsageError> {
    let s = s.trim();
    if let Ok(at) = s.parse::<Timestamp>() {
        return Ok(at.as_second());
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return Err(UsageError(format!(
            "--since {s:?}: a number needs a unit: {s}m, {s}h, {s}d or {s}w"
        )));
    }
    let span: jiff::Span = s.parse().map_err(|_| {
        UsageError(format!(
            "--since {s:?}: expected how long ago (30m, 2h, 1d, 1w) or a time like 2026-01-31T09:00:00Z"
        ))
    })?;
    if span.is_negative() {
        return Err(UsageError(format!(
            "--since {s:?}: give how long ago without a sign, like 1d"
        )));
    }
    // In UTC, so that a day is 24 hours and a month a calendar month.
    let start = now
        .to_zoned_datetime(TimeZone::UTC)
        .checked_sub(span)
        .map_err(|e| UsageError(format!("--since {s:?}: {e}")))?;
    Ok(start.timestamp().as_second())
}

/// A time for people and scripts alike: UTC, to the second.
pub(crate) fn format_time(time_s: i64) -> String {
    match Timestamp::from_second(time_s) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        // Out of jiff's range (years beyond ±9999): only a damaged or
        // hostile record says so; show the raw number rather than fail.
        Err(_) => format!("{time_s}s after 1970-01-01"),
    }
}

pub fn activity(cwd: &Path, since: Option<&str>, json: bool) -> Result<()> {
    let since_s = match since {
        Some(s) => since_seconds(s, Timestamp::now())?,
        None => 0,
    };
    let mut s = open(cwd)?;
    s.record()?;
    let rows = s.ws.activity(since_s)?;
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| json!({"time": format_time(r.time_s), "time_s": r.time_s, "member": r.member, "action": r.action, "path": r.path}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "No activity{}.",
            since.map(|s| format!(" since {s}")).unwrap_or_default()
        );
    }
    for r in rows {
        println!(
            "{}  {:<12} {:<8} {}",
            format_time(r.time_s),
            r.member,
            r.action,
            r.path
        );
    }
    Ok(())
}

pub fn trash_list(cwd: &Path, json: bool) -> Result<()> {
    let mut s = open(cwd)?;
    s.record()?;
    let trash = s.ws.trash(disk::now_ms())?;
    if json {
        let out: Vec<_> = trash
            .iter()
            .map(|t| json!({"path": t.path, "file_id": t.file.to_hex(), "deleted_by": t.deleted_by,
                "deleted_at": format_time(t.deleted_at_ms / 1000), "expires_at": format_time(t.expires_at_ms / 1000)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if trash.is_empty() {
        println!("The trash is empty.");
    }
    for t in trash {
        println!(
            "{}  deleted by {} at {}, restorable until {}",
            t.path,
            t.deleted_by,
            format_time(t.deleted_at_ms / 1000),
            format_time(t.expires_at_ms / 1000)
        );
    }
    Ok(())
}

pub fn restore(cwd: &Path, path: &str) -> Result<()> {
    let mut s = open(cwd)?;
    s.record()?;
    let path = path.trim_start_matches(".cuedeck/");
    let target = s.ws.restore(path, disk::now_ms())?;
    s.checkout("restoring")?;
    if target.as_str() == path {
        println!("Restored {target}");
    } else {
        println!("Restored {path} as {target} (its old name is taken)");
    }
    Ok(())
}

pub fn status(cwd: &Path, json: bool) -> Result<()> {
    let mut s = open(cwd)?;
    let pending = s.scan(Scope::All, true, &mut |_, _| {})?;
    let meta = s.ws.meta()?;
    let entries = s.ws.entries()?;
    let deleted = entries.iter().filter(|e| e.deleted.is_some()).count();
    let trash = s.ws.trash(disk::now_ms())?.len();
    let missing = s.ws.missing_docs();
    let (behind, not_written) = {
        let fs = RealFs::new(&s.layout, &s.filters);
        let keeps = |p: &SyncPath| fs.keeps(p);
        let behind = s.ws.plan(&keeps)?.ops.len();
        (behind, s.ws.not_written(&keeps))
    };
    if json {
        let out = json!({
            "workspace_id": meta.workspace_id.to_hex(),
            "name": meta.name,
            "root": s.layout.root.display().to_string(),
            "members": meta.members,
            "files": entries.len() - deleted,
            "trash": trash,
            "documents_not_received": missing,
            "files_to_write": behind,
            "unrecorded": {"created": pending.created, "edited": pending.edited, "removed": pending.removed,
                "renamed": pending.renamed.iter().map(|(a, b)| json!({"from": a, "to": b})).collect::<Vec<_>>()},
            "skipped": pending.skipped.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "not_written": not_written.iter().map(not_written_json).collect::<Vec<_>>(),
            "relay": s.config.sync.relay.url,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("Workspace {:?} ({})", meta.name, meta.workspace_id);
    println!("  root:     {}", s.layout.root.display());
    println!("  members:  {}", meta.members.join(", "));
    println!(
        "  files:    {} ({} in the trash)",
        entries.len() - deleted,
        trash
    );
    if missing > 0 {
        println!("  waiting for {missing} documents from other peers");
    }
    if behind > 0 {
        println!("  {behind} merged files not written to disk yet (any command writes them)");
    }
    if pending.is_empty() {
        println!("  no unrecorded edits on disk");
    } else {
        println!("  unrecorded edits on disk (recorded by the next command):");
        for p in &pending.created {
            println!("    new:      {p}");
        }
        for p in &pending.edited {
            println!("    edited:   {p}");
        }
        for p in &pending.removed {
            println!("    deleted:  {p}");
        }
        for (a, b) in &pending.renamed {
            println!("    renamed:  {a} -> {b}");
        }
    }
    for sk in &pending.skipped {
        println!("  not synced: {sk}");
    }
    print_not_written(&not_written);
    Ok(())
}

/// How many files a summary names before it says "and N more".
const SHOWN_MAX: usize = 5;

fn not_written_json(n: &NotWritten) -> serde_json::Value {
    let reason = match &n.reason {
        NotWrittenReason::Unsafe(_) => "unsafe_path",
        NotWrittenReason::NotIncluded => "not_included",
    };
    json!({"path": n.path, "file_id": n.file.to_hex(), "reason": reason, "why": n.reason.to_string()})
}

/// Files in the documents that are not on this disk, by reason: a count and
/// the first few of each, so 3,000 junk entries from a peer are five lines.
fn print_not_written(all: &[NotWritten]) {
    let outside: Vec<&NotWritten> = all
        .iter()
        .filter(|n| n.reason == NotWrittenReason::NotIncluded)
        .collect();
    let unsafe_: Vec<&NotWritten> = all
        .iter()
        .filter(|n| n.reason != NotWrittenReason::NotIncluded)
        .collect();
    if !outside.is_empty() {
        println!(
            "  not written here: {} file(s) outside this peer's sync.include (other members sync them):",
            outside.len()
        );
        print_some(&outside, |n| format!("    {}", n.path));
    }
    if !unsafe_.is_empty() {
        println!(
            "  not written on any peer: {} file(s) from peers with unsafe names (`cue repair` drops them):",
            unsafe_.len()
        );
        // The path error names the path.
        print_some(&unsafe_, |n| match &n.reason {
            NotWrittenReason::Unsafe(e) => format!("    {e}"),
            NotWrittenReason::NotIncluded => format!("    {}", n.path),
        });
    }
}

fn print_some<T>(items: &[T], line: impl Fn(&T) -> String) {
    for item in items.iter().take(SHOWN_MAX) {
        println!("{}", line(item));
    }
    if items.len() > SHOWN_MAX {
        println!(
            "    ... and {} more (`cue status --json` lists all)",
            items.len() - SHOWN_MAX
        );
    }
}

/// Drops poisoned index entries (see [`Workspace::repair`]): paths no peer
/// can write, and entries whose document never arrived. The fix is an edit
/// of the index, so it syncs to every peer.
pub fn repair(cwd: &Path, dry_run: bool, json: bool) -> Result<()> {
    let mut s = open(cwd)?;
    s.record()?;
    let found = if dry_run {
        s.ws.poisoned()?
    } else {
        let done = s.ws.repair(disk::now_ms())?;
        s.checkout("repairing")?;
        done
    };
    if json {
        let out: Vec<_> = found
            .iter()
            .map(|p| {
                let (action, to) = match &p.action {
                    RepairAction::Drop => ("drop", None),
                    RepairAction::MoveBack(to) => ("move_back", Some(to.to_string())),
                };
                let reason = match p.reason {
                    PoisonReason::UnsafePath(_) => "unsafe_path",
                    PoisonReason::NoDocument => "no_document",
                };
                json!({"path": p.path, "file_id": p.file.to_hex(), "reason": reason,
                    "why": p.reason.to_string(), "action": action, "to": to, "done": !dry_run})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if found.is_empty() {
        println!("Nothing to repair: every file in the index can be written.");
        return Ok(());
    }
    let verb = if dry_run { "Would drop" } else { "Dropped" };
    println!(
        "{verb} {} poisoned index entr{}:",
        found.len(),
        if found.len() == 1 { "y" } else { "ies" }
    );
    for p in &found {
        match &p.action {
            RepairAction::Drop => println!("  drop       {:?}: {}", p.path, p.reason),
            RepairAction::MoveBack(to) => {
                println!("  move back  {:?} -> {to}: {}", p.path, p.reason)
            }
        }
    }
    if dry_run {
        println!(
            "Run `cue repair` without --dry-run to drop them; the change syncs to every peer."
        );
    } else {
        println!("Dropped entries are in the trash; the change syncs to every peer.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
    }

    #[test]
    fn since_takes_a_span_back_from_now() {
        let now = at("2026-03-10T12:00:00Z");
        let back = |s: &str| {
            now.as_second() - since_seconds(s, now).unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        assert_eq!(back("30m"), 30 * 60);
        assert_eq!(back("2h"), 2 * 3600);
        assert_eq!(back("1d"), 86_400);
        assert_eq!(back("1w"), 7 * 86_400);
        assert_eq!(back(" 1d "), 86_400);
        assert_eq!(back("1 day"), 86_400);
    }

    #[test]
    fn since_takes_an_rfc3339_time() {
        let now = at("2026-03-10T12:00:00Z");
        let start = |s: &str| since_seconds(s, now).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            start("2026-01-31T09:00:00Z"),
            at("2026-01-31T09:00:00Z").as_second()
        );
        assert_eq!(
            start("2026-01-31T10:00:00+01:00"),
            at("2026-01-31T09:00:00Z").as_second()
        );
    }

    #[test]
    fn since_refuses_what_it_would_have_to_guess() {
        let now = at("2026-03-10T12:00:00Z");
        let refused = |s: &str| match since_seconds(s, now) {
            Ok(v) => panic!("{s:?} was taken as {v}"),
            Err(e) => e.to_string(),
        };
        let bare = refused("5");
        assert!(
            bare.contains("needs a unit") && bare.contains("5h"),
            "{bare}"
        );
        for s in ["", "d", "1x", "yesterday", "2026-01-31", "-1d"] {
            let msg = refused(s);
            assert!(msg.starts_with("--since"), "{s:?}: {msg}");
        }
    }

    #[test]
    fn times_are_shown_in_utc_to_the_second() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(
            format_time(at("2026-02-28T23:59:59Z").as_second()),
            "2026-02-28 23:59:59Z"
        );
        assert_eq!(format_time(-86_400), "1969-12-31 00:00:00Z");
        assert!(format_time(i64::MAX).contains(&i64::MAX.to_string()));
    }
    use crate::session::Session;
    use cue_core::workspace::DiskOp;

    fn session(dir: &Path) -> Session {
        open(dir).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A peer renamed a file; this peer crashed after moving it on disk and
    /// before recording that. The next run must not record the old path's
    /// absence as a deletion (carried out on every peer) nor the new path as
    /// a new file.
    #[test]
    fn a_checkout_cut_short_by_a_crash_is_not_taken_for_the_users_edits() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (ana, bo) = (tmp.path().join("ana"), tmp.path().join("bo"));
        std::fs::create_dir(&ana).unwrap_or_else(|e| panic!("{e}"));
        init(&ana, Some("team".into()), Some("ana".into())).unwrap_or_else(|e| panic!("{e:#}"));
        let docs = ana.join(".cuedeck/docs");
        std::fs::write(docs.join("a.md"), "# A\n\nana's text\n").unwrap_or_else(|e| panic!("{e}"));
        session(&ana).record().unwrap_or_else(|e| panic!("{e:#}"));
        let bundle = tmp.path().join("ana.cue");
        export(&ana, &bundle).unwrap_or_else(|e| panic!("{e:#}"));
        clone(tmp.path(), &bundle, &bo, Some("bo".into())).unwrap_or_else(|e| panic!("{e:#}"));

        // bo renames the file.
        let bo_docs = bo.join(".cuedeck/docs");
        std::fs::rename(bo_docs.join("a.md"), bo_docs.join("b.md"))
            .unwrap_or_else(|e| panic!("{e}"));
        session(&bo).record().unwrap_or_else(|e| panic!("{e:#}"));
        let from_bo = tmp.path().join("bo.cue");
        export(&bo, &from_bo).unwrap_or_else(|e| panic!("{e:#}"));

        // ana merges it and carries out the plan on disk, then "crashes"
        // before recording any of it.
        {
            let mut s = session(&ana);
            let bytes = std::fs::read(&from_bo).unwrap_or_else(|e| panic!("{e}"));
            s.ws.import_bundle(&bytes).unwrap_or_else(|e| panic!("{e}"));
            let plan = s.ws.plan(&|_| true).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(plan.ops.len(), 2, "{:?}", plan.ops);
            for op in &plan.ops {
                match op {
                    DiskOp::Write { path, bytes, .. } => {
                        std::fs::write(s.layout.to_disk(path), bytes)
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    DiskOp::Remove { path, .. } => {
                        std::fs::remove_file(s.layout.to_disk(path))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            }
        }

        let mut s = session(&ana);
        let changes = s.record().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(changes.is_empty(), "{changes:?}");
        assert!(s.ws.trash(disk::now_ms()).unwrap_or_default().is_empty());
        let files: Vec<String> =
            s.ws.local_files()
                .values()
                .map(|f| f.path.clone())
                .collect();
        assert_eq!(files, ["docs/b.md"]);
        assert!(s
            .ws
            .plan(&|_| true)
            .unwrap_or_else(|e| panic!("{e}"))
            .ops
            .is_empty());
    }
}
