//! Every benchmark, run at a tiny size so none can rot: each must finish and print its
//! table (and, for the retention windows, a ledger that still verifies). These check that
//! the benchmarks work, never how fast anything is; figures come from the full runs in
//! docs/PERFORMANCE.md.

mod support;

use std::process::Command;

use support::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn bin(name: &str) -> Command {
    build_components();
    Command::new(root().join("target/release").join(name))
}

#[test]
fn the_native_benchmarks_run() {
    let dir = temp_dir("smoke-native");
    let out = run(Command::new(cli()).args([
        "bench",
        "--pipelines",
        "4",
        "--rounds",
        "1",
        "--dir",
        dir.to_str().unwrap(),
    ]));
    assert!(
        out.contains("| ingest with tree |") && out.contains("| verify |"),
        "{out}"
    );
    let out = run(Command::new(cli()).args([
        "bench",
        "--pipelines",
        "6",
        "--retention-windows",
        "2",
        "--dir",
        dir.to_str().unwrap(),
    ]));
    assert!(out.contains("verify (stream-only): OK"), "{out}");
    assert!(out.contains("verify (with retention): OK"), "{out}");
}

#[test]
fn the_component_benchmarks_run() {
    let out = run(bin("component-bench").args([
        "--pipelines",
        "2",
        "--rounds",
        "1",
        "--stores",
        "--clients",
        "2",
        "--hosts",
        "2",
    ]));
    for line in [
        "| plain INSERT",
        "| empty component answering 200",
        "| pipetrail's core natively",
        "through 2 host process(es)",
        "| pipetrail on PostgreSQL (tables, indexes, TOAST) |",
        "peak RSS of a host process",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let out = run(bin("component-bench").args(["--findings", "--pipelines", "3", "--rounds", "1"]));
    assert!(
        out.contains("| rules off (`findings_rules = none`) |")
            && out.contains("throughput on / off")
            && out.contains("deletions on / off"),
        "{out}"
    );
    // The tree's cost: builds the ingest component without the tree into its own target
    // directory first (a few minutes the first time).
    let out = run(bin("component-bench").args(["--pipelines", "2", "--rounds", "1"]));
    assert!(out.contains("tree overhead on ingest"), "{out}");
    let dir = temp_dir("smoke-read");
    let out = run(bin("read-bench").args(["--pipelines", "20", "--repeat", "1", "--dir", dir.to_str().unwrap()]));
    assert!(out.contains("ledger page"), "{out}");
}
