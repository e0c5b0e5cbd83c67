//! An open workspace: its folders, settings, filters and sync state, and the
//! two things every command and the daemon do with them: record what the
//! user changed on disk, and write back what the documents say.
//!
//! Both go through the core's one disk layer (`cue_core::disk`) over the real
//! disk ([`RealFs`]).

use std::path::Path;

use anyhow::{Context, Result};
use cue_core::disk::{self, Applied, Changes, ScanOptions, Scope};
use cue_core::Workspace;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::disk::{now_ms, Filters, Layout, RealFs};
use crate::store::{SqliteStore, WriteLock};

/// An open workspace with everything a command needs.
pub struct Session {
    pub layout: Layout,
    pub config: Config,
    pub filters: Filters,
    pub ws: Workspace<SqliteStore>,
    /// Held for a command's whole run; `None` in the daemon, which locks per event.
    pub write_lock: Option<WriteLock>,
    /// Whether an interrupted checkout was looked for since the state was opened.
    settled: bool,
}

/// The member name: the flag, `CUE_MEMBER`, config.toml, then the OS user.
pub fn member_name(flag: Option<String>, config: &Config) -> String {
    flag.or_else(|| std::env::var("CUE_MEMBER").ok().filter(|s| !s.is_empty()))
        .or_else(|| config.workspace.member.clone())
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Opens the workspace around `cwd` for a command (holding the write lock).
pub fn open(cwd: &Path) -> Result<Session> {
    let layout = Layout::find(cwd).with_context(|| {
        format!("{} is not inside a CueDeck workspace; run `cue init` to make one, or `cue clone` to join one", cwd.display())
    })?;
    open_at(layout)
}

/// Opens a workspace for a command, holding the write lock until it ends.
pub fn open_at(layout: Layout) -> Result<Session> {
    let lock = WriteLock::acquire(&layout.sync_dir())?;
    let mut s = open_session(layout)?;
    s.write_lock = Some(lock);
    Ok(s)
}

/// Opens a workspace without taking the write lock: for the daemon, which
/// takes it around each event instead.
pub fn open_session(layout: Layout) -> Result<Session> {
    let config = Config::load(&layout.config_path())?;
    let filters = Filters::new(&layout, &config.sync.include)?;
    let store = SqliteStore::open(&layout.state_db())?;
    let member = member_name(None, &config);
    let mut ws =
        Workspace::open(store, &member).context("opening the sync state in .cuedeck/sync/")?;
    ws.set_tombstone_days(config.sync.max_offline_days);
    Ok(Session::new(layout, config, filters, ws))
}

impl Session {
    /// A session over a state opened by the caller, without the write lock.
    pub fn new(
        layout: Layout,
        config: Config,
        filters: Filters,
        ws: Workspace<SqliteStore>,
    ) -> Self {
        Session {
            layout,
            config,
            filters,
            ws,
            write_lock: None,
            settled: false,
        }
    }

    /// Records every on-disk edit, with a progress bar when there are many
    /// files, and prints what could not be synced.
    pub fn record(&mut self) -> Result<Changes> {
        let bar = progress_bar("scanning");
        let changes = self.scan(Scope::All, false, &mut |i, n| tick(&bar, i, n))?;
        bar.finish_and_clear();
        for s in &changes.skipped {
            eprintln!("warning: {s}");
        }
        Ok(changes)
    }

    /// Finds the edits in `scope` and, unless `dry_run`, records them in one
    /// transaction (after settling what a crash interrupted).
    pub fn scan(
        &mut self,
        scope: Scope<'_>,
        dry_run: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Changes> {
        self.settle()?;
        let mut fs = RealFs::new(&self.layout, &self.filters);
        let opts = ScanOptions {
            dry_run,
            now_ms: now_ms(),
        };
        let changes = disk::scan(
            &mut self.ws,
            &mut fs,
            scope,
            opts,
            &mut rand::rng(),
            progress,
        )?;
        self.ws.commit()?;
        Ok(changes)
    }

    /// Writes whatever the documents say that the disk does not show yet,
    /// with a progress bar, and prints what could not be written.
    pub fn checkout(&mut self, label: &str) -> Result<Applied> {
        let bar = progress_bar(label);
        let applied = self.write_files(&mut |i, n| tick(&bar, i, n))?;
        bar.finish_and_clear();
        for s in &applied.refused {
            eprintln!("warning: {s}");
        }
        report_unplaced(&applied);
        Ok(applied)
    }

    /// Writes what the documents say, records it, commits.
    pub fn write_files(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<Applied> {
        self.settle()?;
        let mut fs = RealFs::new(&self.layout, &self.filters);
        let applied = disk::checkout(&mut self.ws, &mut fs, progress)?;
        self.ws.commit()?;
        Ok(applied)
    }

    /// Once per opened state, before the disk is scanned or written: records
    /// what a checkout cut short by a crash had already done.
    fn settle(&mut self) -> Result<()> {
        if !self.settled {
            let mut fs = RealFs::new(&self.layout, &self.filters);
            let n = disk::settle(&mut self.ws, &mut fs)
                .context("finishing an interrupted write of synced files")?;
            self.ws.commit()?;
            if n > 0 {
                tracing::info!("recorded {n} file writes an interrupted run had made");
            }
            self.settled = true;
        }
        Ok(())
    }
}

/// One line for files a peer named that cannot be placed on any disk,
/// however many there are.
fn report_unplaced(applied: &Applied) {
    if let Some(first) = applied.unplaced.first() {
        eprintln!(
            "warning: {} file(s) from peers have names that are not safe to write and stay only in the documents (first: {first}); `cue status` lists them",
            applied.unplaced.len()
        );
    }
    if let Some(first) = applied.not_kept.first() {
        eprintln!(
            "note: {} file(s) from peers are outside this peer's sync.include and are not written here (first: {first}); `cue status` lists them",
            applied.not_kept.len()
        );
    }
}

fn progress_bar(label: &str) -> ProgressBar {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} files ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

fn tick(bar: &ProgressBar, i: u64, n: u64) {
    if n >= 50 && bar.is_hidden() && i == 0 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar.set_length(n);
    bar.set_position(i);
}
