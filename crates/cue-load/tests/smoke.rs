//! Runs the real `cue-load` binary against a real relay on 127.0.0.1 (a free
//! port): 200 connections in 2 client processes, rooms of 10, one low-rate
//! step. It checks only what is deterministic at a low rate (every connection
//! held, every broadcast delivered to every other peer of its room, in order,
//! none lost), never latency, so a loaded machine cannot make it flaky.
//!
//! The relay is the cue-relay library served by `cue-load relay` in a process
//! of its own; set CUE_LOAD_RELAY_BIN to a cue-relay executable to use that instead.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cue-load");

/// Far above the ~5 s the run takes, so only a hang fails on time.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs cue-load with `args`, returning its stdout; fails on a non-zero exit
/// or a hang, with its stderr in the message.
fn run_cue_load(args: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command.args(args);
    if let Ok(relay) = std::env::var("CUE_LOAD_RELAY_BIN") {
        command.args(["--relay-bin", &relay]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start cue-load");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cue-load") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cue-load still running after {DEADLINE:?}; stderr:\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "cue-load failed ({status}); stderr:\n{stderr}"
    );
    stdout
}

fn number(value: &Value, path: &str) -> u64 {
    value
        .pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {path} in {value:#}"))
}

#[test]
fn holds_every_connection_and_delivers_every_broadcast_at_a_low_rate() {
    let stdout = run_cue_load(&[
        "--connections",
        "200",
        "--procs",
        "2",
        "--room-size",
        "10",
        "--rates",
        "100",
        "--duration-secs",
        "2",
        // Wait as long as it takes for every delivery: loss, not speed, is checked.
        "--drain-secs",
        "30",
        "--no-half",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("stdout is not a JSON report ({err}):\n{stdout}"));

    assert_eq!(number(&report, "/connect/held"), 200, "{report:#}");
    assert_eq!(number(&report, "/connect/failed"), 0, "{report:#}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{report:#}");
    let step = &steps[0];
    assert_eq!(number(step, "/held_before"), 200, "{step:#}");
    assert_eq!(number(step, "/held_after"), 200, "{step:#}");
    assert_eq!(step["closes"], serde_json::json!({}), "{step:#}");

    // 100 broadcasts/s for 2 s, each to the 9 other peers of its room.
    let sent = number(step, "/sent");
    assert!(sent >= 150, "only {sent} broadcasts sent: {step:#}");
    assert_eq!(number(step, "/skipped"), 0, "{step:#}");
    assert_eq!(number(step, "/expected"), sent * 9, "{step:#}");
    assert_eq!(number(step, "/received"), sent * 9, "{step:#}");
    assert_eq!(number(step, "/lost"), 0, "{step:#}");
    assert_eq!(number(step, "/out_of_order"), 0, "{step:#}");
    assert_eq!(number(step, "/latency_ms/count"), sent * 9, "{step:#}");
}

#[test]
fn help_documents_the_measurement_flags() {
    let help = run_cue_load(&["--help"]);
    for flag in [
        "--relay-bin",
        "--relay",
        "--connections",
        "--room-size",
        "--procs",
        "--rates",
        "--duration-secs",
        "--json",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
    assert!(
        !help.contains("client"),
        "hidden roles leak into --help:\n{help}"
    );
}

#[test]
fn attack_mode_admits_the_members_and_the_relay_sheds_the_strangers() {
    let stdout = run_cue_load(&[
        "attack",
        "--slowloris",
        "60",
        "--flood",
        "20",
        "--attack-addrs",
        "3",
        "--warmup-secs",
        "1",
        "--rounds",
        "3",
        "--round-gap-ms",
        "100",
        // Not a timing test: the 1 s target is for the benchmark.
        "--target-ms",
        "60000",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report on stdout");
    assert_eq!(report["passed"], Value::Bool(true), "{report:#}");
    assert_eq!(report["rounds"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["resident_kept"], Value::Bool(true));
    assert!(
        number(&report, "/slowloris_report/opened") >= 60,
        "{report:#}"
    );
    // The flood's forged answers are refused as they come.
    assert!(number(&report, "/flood_report/closed") > 0, "{report:#}");
    let refused = report
        .pointer("/relay_metrics/cue_relay_admission_refused_total")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    assert!(refused > 0.0, "{report:#}");
}
