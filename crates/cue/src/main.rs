//! `cue`: the CueDeck Sync client.
//!
//! A thin shell over `cue-core`: it finds the workspace, opens its SQLite state,
//! records what the user changed on disk, runs the command, and writes merged
//! files back. Exit codes: 0 ok, 1 error, 2 usage, 101 config error, 130 interrupted.

use cue::{commands, config};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Local-first team sync for folders of Markdown.
///
/// A CueDeck workspace is the Markdown under `.cuedeck/cards/` and
/// `.cuedeck/docs/`. Every peer keeps the whole workspace as CRDT documents in
/// `.cuedeck/sync/`, so edits made anywhere, at the same time or days apart,
/// merge without loss: body text character by character, frontmatter scalars
/// last-writer-wins, lists as a union. Deleted files stay restorable for
/// `sync.max_offline_days` (7) days.
#[derive(Parser)]
#[command(name = "cue", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Run as if started in this folder.
    #[arg(short = 'C', long = "chdir", global = true, value_name = "DIR")]
    chdir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this folder a workspace (idempotent): `.cuedeck/` with config.toml,
    /// cards/, docs/, and the sync state; imports the Markdown already there.
    Init {
        /// The workspace's display name (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Your name in the activity log (default: $CUE_MEMBER, then $USER).
        #[arg(long)]
        member: Option<String>,
    },
    /// Task cards.
    #[command(subcommand)]
    Card(CardCommand),
    /// List the cards, grouped by status.
    List {
        /// Only cards with this status (todo, active, done, archived).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the workspace's documents to a bundle file, for offline exchange
    /// (a USB stick, an email). On-disk edits are recorded first.
    Export {
        /// Where to write the bundle (`-` for standard output).
        file: PathBuf,
    },
    /// Merge a bundle made by `cue export` on another peer and write the merged
    /// files. Importing twice, or bundles in any order, is harmless.
    Import {
        /// The bundle to merge.
        file: PathBuf,
    },
    /// Make a new peer of an existing workspace in DIR, from a bundle file.
    Clone {
        /// A bundle made by `cue export`.
        source: PathBuf,
        /// The new project folder (created; must be empty if it exists).
        dir: PathBuf,
        /// Your name in the activity log (default: $CUE_MEMBER, then $USER).
        #[arg(long)]
        member: Option<String>,
    },
    /// Who changed what, when.
    #[command(subcommand)]
    Activity(ActivityCommand),
    /// Deleted files that can still be restored.
    #[command(subcommand)]
    Trash(TrashCommand),
    /// Bring a deleted file back (path relative to .cuedeck/, e.g. docs/old.md).
    Restore { path: String },
    /// What the workspace holds and which on-disk edits are not recorded yet.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CardCommand {
    /// Create a card in .cuedeck/cards/ with a fresh 6-character id.
    New {
        title: String,
        /// low, medium, high or critical.
        #[arg(long, default_value = "medium")]
        priority: String,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Who the card is for.
        #[arg(long)]
        assignee: Option<String>,
    },
}

#[derive(Subcommand)]
enum ActivityCommand {
    /// The activity log, oldest first.
    Log {
        /// How far back: 30m, 12h, 1d, 2w (default: everything).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TrashCommand {
    /// Deleted files, newest first, with when they expire.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    cue::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cwd = match cli
        .chdir
        .clone()
        .map(Ok)
        .unwrap_or_else(std::env::current_dir)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot determine the current folder: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Init { name, member } => commands::init(&cwd, name, member),
        Command::Card(CardCommand::New {
            title,
            priority,
            tags,
            assignee,
        }) => commands::card_new(&cwd, &title, &priority, &tags, assignee),
        Command::List { status, json } => commands::list(&cwd, status.as_deref(), json),
        Command::Export { file } => commands::export(&cwd, &file),
        Command::Import { file } => commands::import(&cwd, &file),
        Command::Clone {
            source,
            dir,
            member,
        } => commands::clone(&cwd, &source, &dir, member),
        Command::Activity(ActivityCommand::Log { since, json }) => {
            commands::activity(&cwd, since.as_deref(), json)
        }
        Command::Trash(TrashCommand::List { json }) => commands::trash_list(&cwd, json),
        Command::Restore { path } => commands::restore(&cwd, &path),
        Command::Status { json } => commands::status(&cwd, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(101)
            } else if e.downcast_ref::<commands::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
