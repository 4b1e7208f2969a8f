//! The prism-bench binary end to end: flag errors, and short runs against
//! the built-in floors. Counts and shapes only, never timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prism-bench")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_flags_fail_with_a_reason() {
    for (args, expected) in [
        (vec!["run", "-t", "grpc-floor", "-c", "0"], "at least 1"),
        (vec!["run", "-t", "grpc-floor", "-w", "teleport"], "teleport"),
        (vec!["run", "-t", "grpc-floor", "--rate", "100"], "--rate needs --duration"),
        (vec!["run", "-t", "twemproxy"], "needs --twemproxy"),
        (vec!["run", "-t", "redis", "-w", "scan"], "does not support the scan workload"),
        (vec!["run"], "--target"),
        (vec!["run", "-t", "grpc-floor", "--value", "json"], "possible values: raw, profile"),
        (vec!["run", "-t", "grpc-floor", "--value", "profile", "--value-size", "64"], "applies to raw values"),
    ] {
        let out = bench(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn closed_loop_run_against_the_grpc_floor() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = bench(&[
        "run",
        "-t",
        "grpc-floor",
        "-w",
        "get,put,mixed,scan",
        "-c",
        "1,4",
        "--connections",
        "2",
        "--requests",
        "200",
        "--warmup",
        "0s",
        "--key-space",
        "100",
        "--repeat",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("grpc-floor") && table.contains("p99.9"), "{table}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["targets"], serde_json::json!(["grpc-floor"]));
    assert_eq!(report["plan"]["stop"], serde_json::json!({"requests": 200}));
    let runs = report["runs"].as_array().unwrap();
    let summary = report["summary"].as_array().unwrap();
    // 4 workloads × 2 concurrency levels, each measured twice.
    assert_eq!(runs.len(), 16);
    assert_eq!(summary.len(), 8);
    for m in runs {
        // Every measured request is accounted for, and none failed: the
        // preload made every key readable.
        assert_eq!(m["ok"], 200, "{m}");
        assert_eq!(m["errors"], serde_json::json!({}), "{m}");
        assert_eq!(m["connections"], 2);
        let l = &m["latency_us"];
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(l[p].as_u64().unwrap() >= 1, "{p} in {m}");
        }
        assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64(), "{m}");
        assert!(m["throughput"].as_f64().unwrap() > 0.0);
        // The bench started the floor, so it can read its /proc entry.
        assert!(m["server_peak_rss_mib"].as_f64().unwrap() > 0.0, "{m}");
        assert_eq!(m["server_processes"], 1);
    }
}

#[test]
fn open_loop_run_keeps_to_its_schedule_length() {
    let out = bench(&[
        "run",
        "-t",
        "grpc-floor",
        "-w",
        "mixed",
        "-c",
        "4",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--key-space",
        "50",
        "--no-progress",
        "--json",
        "/dev/stdout",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let start = text.find("{\n").unwrap();
    let report: serde_json::Value = serde_json::from_str(&text[start..]).unwrap();
    let m = &report["runs"][0];
    // The schedule of 1 s at 200/s holds exactly 200 requests: none are
    // dropped, none added, whatever the latency.
    assert_eq!(
        m["ok"].as_u64().unwrap() + m["errors"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        200,
        "{m}"
    );
    assert_eq!(m["rate"], 200.0);
}

#[test]
fn profile_values_and_a_token_against_the_grpc_floor() {
    let out = Command::new(env!("CARGO_BIN_EXE_prism-bench"))
        .args([
            "run",
            "-t",
            "grpc-floor",
            "-w",
            "get,put",
            "-c",
            "2",
            "--requests",
            "100",
            "--warmup",
            "0s",
            "--key-space",
            "100",
            "--value",
            "profile",
            "--no-progress",
            "--json",
            "/dev/stdout",
        ])
        .env("PRISM_TOKEN", "not-a-real-token")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("not-a-real-token"), "the token is never printed");
    let start = text.find("{\n").unwrap();
    let report: serde_json::Value = serde_json::from_str(&text[start..]).unwrap();
    assert_eq!(report["plan"]["value"], "profile");
    assert_eq!(report["plan"]["value_size"], 1024);
    assert_eq!(report["plan"]["authenticated"], true);
    for m in report["runs"].as_array().unwrap() {
        assert_eq!(m["ok"], 100, "{m}");
        assert_eq!(m["errors"], serde_json::json!({}), "{m}");
    }
}
