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
    /// Make a new peer of an existing workspace in DIR, from a join code
    /// (`cue sync invite` on a member's machine) or a bundle file (`cue export`).
    ///
    /// The join code carries the workspace key: keep it off the command line
    /// (other local users can read a process's arguments, and the shell keeps
    /// them). Give it on standard input (`cue clone - DIR`, or just `cue clone
    /// DIR` with stdin from a pipe or file), with `--code-file FILE`, or in
    /// $CUE_JOIN_CODE. With a join code, the workspace arrives by live sync
    /// from the peers online (at least one must run `cue watch --sync` or
    /// `cue sync start`).
    #[command(
        override_usage = "cue clone [SOURCE] <DIR>\n       cue clone - <DIR> < code.txt\n       cue clone --code-file FILE <DIR>"
    )]
    Clone {
        /// `-` (the join code on standard input), a bundle file, or a join code
        /// (cue1.…; visible to other local users, so not recommended). Left out:
        /// the code comes from --code-file, $CUE_JOIN_CODE or standard input.
        #[arg(value_name = "SOURCE")]
        first: String,
        /// The new project folder (created; must be empty if it exists).
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Read the join code from this file.
        #[arg(long, value_name = "FILE")]
        code_file: Option<PathBuf>,
        /// Your name in the activity log (default: $CUE_MEMBER, then $USER).
        #[arg(long)]
        member: Option<String>,
        /// The relay's auth token, if it needs one (also $CUE_RELAY_TOKEN).
        #[arg(long, env = "CUE_RELAY_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
        /// Give up after this many seconds without the workspace.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Watch the workspace and sync it live with every peer online, in the
    /// foreground (Ctrl-C stops). Edits are recorded and sent as they are
    /// saved; peers' edits are merged into your files as they arrive.
    ///
    /// The relay is `--relay`, else `[sync.relay] url` in .cuedeck/config.toml,
    /// else the default ws://127.0.0.1:7878, which the first peer on this
    /// machine hosts itself (so peers on one machine need no setup).
    Watch {
        /// Sync with peers (the only mode today; kept for clarity in scripts).
        #[arg(long)]
        sync: bool,
        #[command(flatten)]
        relay: RelayArgs,
        /// Print only warnings and errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// The background sync daemon, and invitations.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Run a relay in the foreground (for a LAN: `cue relay --listen 0.0.0.0:7878`).
    /// The standalone `cue-relay` binary has every limit as a flag.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// Require this token from peers (also $CUE_RELAY_AUTH_TOKEN).
        #[arg(long, env = "CUE_RELAY_AUTH_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
    },
    /// Who changed what, when.
    #[command(subcommand)]
    Activity(ActivityCommand),
    /// Deleted files that can still be restored.
    #[command(subcommand)]
    Trash(TrashCommand),
    /// The workspace's members, and removing one (key rotation).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Bring a deleted file back (path relative to .cuedeck/, e.g. docs/old.md).
    Restore { path: String },
    /// What the workspace holds and which on-disk edits are not recorded yet.
    /// Also lists files in the documents that are not written here: outside
    /// this peer's `sync.include`, or with names no peer may write.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop poisoned index entries: files a peer named with a path no peer
    /// may write (`../x`, `CON.md`, `.git/…`), and files whose document
    /// never arrived. Each is tombstoned as a deletion by you (a file a peer
    /// moved to such a name is moved back to its name on this disk), so the
    /// fix syncs to every peer; a document that arrives later brings its
    /// file back.
    Repair {
        /// Only list what would be dropped.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which relay to use, over the config file.
#[derive(clap::Args, Clone, Default)]
struct RelayArgs {
    /// The relay's URL, e.g. ws://relay.example:7878.
    #[arg(long, value_name = "URL")]
    relay: Option<String>,
    /// The relay's auth token (also $CUE_RELAY_TOKEN; else sync.relay.auth_token).
    #[arg(long, env = "CUE_RELAY_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

impl RelayArgs {
    fn flags(&self) -> cue::sync::RelayFlags {
        cue::sync::RelayFlags {
            url: self.relay.clone(),
            auth_token: self.auth_token.clone(),
        }
    }
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Start the sync daemon in the background (`cue watch --sync`, detached;
    /// its log is .cuedeck/sync/daemon.log).
    Start {
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Stop the background daemon cleanly.
    Stop,
    /// What the running daemon reports: relay connection, peers online, last
    /// sync, edits no peer has confirmed yet.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a join code for a new member's `cue clone - DIR` (the last line
    /// of the output; give it to `cue clone` on standard input). It carries the relay URL and the workspace key, and the
    /// relay is recorded in config.toml. Share it only with members.
    Invite {
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Give a peer cloned from a bundle the key and relay of a join code, so
    /// it can sync live (a peer of another workspace is refused, not merged).
    /// The code comes from standard input (`-`, or left out with stdin from a
    /// pipe), --code-file or $CUE_JOIN_CODE; as an argument it is visible to
    /// other local users.
    Join {
        /// `-` for standard input, or the join code (not recommended).
        code: Option<String>,
        /// Read the join code from this file.
        #[arg(long, value_name = "FILE")]
        code_file: Option<PathBuf>,
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
        /// How far back: 30m, 12h, 1d, 2w, or a time like 2026-01-31T09:00:00Z (default: everything).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Members: name, key fingerprint, when they joined, last seen.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member: the workspace moves to a new key (and relay room)
    /// sealed to every other member, so NAME reads nothing written from now
    /// on. The others follow by themselves when they next connect.
    Remove { name: String },
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
            first,
            dir,
            code_file,
            member,
            auth_token,
            timeout,
        } => {
            // One folder alone: the code comes from a file, $CUE_JOIN_CODE or stdin.
            let (source, dir) = match dir {
                Some(dir) => (Some(first), dir),
                None => (None, PathBuf::from(first)),
            };
            let is_bundle = source
                .as_deref()
                .is_some_and(|s| s != "-" && !cue::sync::key::JoinCode::looks_like(s));
            match source {
                Some(bundle) if is_bundle && code_file.is_none() => {
                    commands::clone(&cwd, std::path::Path::new(&bundle), &dir, member)
                }
                source => cue::sync::key::read_join_code(source.as_deref(), code_file.as_deref())
                    .and_then(|code| {
                        cue::sync::clone_from_code(
                            &cwd,
                            &code,
                            &dir,
                            member,
                            auth_token,
                            std::time::Duration::from_secs(timeout),
                        )
                    }),
            }
        }
        Command::Watch {
            sync: _,
            relay,
            quiet,
        } => cue::sync::watch(&cwd, &relay.flags(), quiet),
        Command::Sync(SyncCommand::Start { relay }) => cue::sync::start(&cwd, &relay.flags()),
        Command::Sync(SyncCommand::Stop) => cue::sync::stop(&cwd),
        Command::Sync(SyncCommand::Status { json }) => cue::sync::show_status(&cwd, json),
        Command::Sync(SyncCommand::Invite { relay }) => cue::sync::invite(&cwd, &relay.flags()),
        Command::Sync(SyncCommand::Join { code, code_file }) => {
            cue::sync::key::read_join_code(code.as_deref(), code_file.as_deref())
                .and_then(|code| cue::sync::join(&cwd, &code))
        }
        Command::Relay { listen, auth_token } => cue::sync::relay(&listen, auth_token),
        Command::Activity(ActivityCommand::Log { since, json }) => {
            commands::activity(&cwd, since.as_deref(), json)
        }
        Command::Trash(TrashCommand::List { json }) => commands::trash_list(&cwd, json),
        Command::Member(MemberCommand::List { json }) => cue::sync::members::list(&cwd, json),
        Command::Member(MemberCommand::Remove { name }) => cue::sync::members::remove(&cwd, &name),
        Command::Restore { path } => commands::restore(&cwd, &path),
        Command::Status { json } => commands::status(&cwd, json),
        Command::Repair { dry_run, json } => commands::repair(&cwd, dry_run, json),
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
