//! `cue-load`: a load generator for cue-relay.
//!
//! It opens thousands of WebSocket connections on loopback, spread over
//! several client processes and many rooms, and raises the broadcast rate
//! step by step until the relay degrades, measuring at each step the
//! connections held, deliveries per second, fan-out latency (p50/p99/max),
//! losses, and the relay's CPU and memory. Then it reports the maximum
//! sustained throughput and re-runs at half of it, where the target
//! (10,000 connections, p99 < 10 ms on a 2-core machine) applies.
//!
//! The same binary plays three roles: the parent (what a user runs), the
//! client processes it starts (`cue-load client`, hidden), and optionally the
//! relay itself (`cue-load relay`, hidden: the cue-relay library in a process
//! of its own, for when no cue-relay binary is at hand).

#![deny(clippy::unwrap_used)]

mod attack;
mod client;
mod driver;
mod hist;
mod proto;
mod relay;
mod report;
mod sys;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Environment variable holding the relay's auth token, if it needs one;
/// passed to client processes through the environment, never on a command line.
pub const AUTH_TOKEN_ENV: &str = "CUE_LOAD_AUTH_TOKEN";

/// Load generator for cue-relay: holds thousands of WebSocket peers on
/// loopback and measures fan-out throughput and latency until the relay degrades.
///
/// By default it opens 10,000 connections in rooms of 50, doubles the
/// broadcast rate from 250/s until a step degrades (p99 above
/// --degraded-p99-ms, any lost delivery, or any connection closed), refines
/// the maximum, and re-runs at half of it. A relay that needs a token gets it
/// from CUE_LOAD_AUTH_TOKEN.
///
/// Example: cargo build --release -p cue-relay -p cue-load &&
/// target/release/cue-load --relay-bin target/release/cue-relay
#[derive(Debug, Parser)]
#[command(
    name = "cue-load",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: driver::RunArgs,
}

/// The roles the parent starts this binary in, and the attack mode.
#[derive(Debug, Subcommand)]
enum Role {
    /// The relay under attack: a slowloris and a flood of unauthenticated
    /// joins (strangers who know the room id and a member's peer id, not the
    /// key) run while real members join and exchange a sealed frame, round
    /// after round. Reports each member's admission time and sealed round
    /// trip; the target is admitted and syncing within 1 s.
    Attack {
        #[command(flatten)]
        args: attack::AttackArgs,
        /// Print the report as JSON on stdout (the table goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// An attacker process, started by `attack`.
    #[command(hide = true)]
    Attacker(attack::AttackerArgs),
    /// A client process: its share of the connections, driven over stdin/stdout.
    #[command(hide = true)]
    Client(client::ClientArgs),
    /// The cue-relay library, served like the cue-relay binary does.
    #[command(hide = true)]
    Relay(relay::RelayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        Some(Role::Client(args)) => client::run(args),
        Some(Role::Relay(args)) => relay::serve_builtin(args),
        Some(Role::Attacker(args)) => attack::run_attacker(args),
        Some(Role::Attack { args, json }) => run_attack(args, json),
        None => run_parent(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cue-load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_attack(args: attack::AttackArgs, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(attack::run(args))?;
    if json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        println!("{text}");
        eprint!("{}", report.to_table());
    } else {
        print!("{}", report.to_table());
    }
    if !report.passed {
        anyhow::bail!("the members were not all admitted and syncing within the target");
    }
    Ok(())
}

fn run_parent(args: driver::RunArgs) -> anyhow::Result<()> {
    // One thread: the parent only orchestrates, and the processes it starts
    // get SIGTERM when the thread that started them ends (PR_SET_PDEATHSIG).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let json = args.json;
    let report = runtime.block_on(driver::run(args))?;
    if json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        println!("{text}");
        // The table still goes to stderr, with the progress lines.
        eprint!("{}", report.to_table());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
