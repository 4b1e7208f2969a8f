//! The command lines: prism-proxy config errors, and prismctl against a
//! real proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::process::{Command, Output};

use prism_tests::{ProxyConfig, bin_path};

fn prismctl(endpoint: &str, args: &[&str]) -> Output {
    prismctl_with_input(endpoint, args, b"")
}

/// prismctl with `input` on its standard input.
fn prismctl_with_input(endpoint: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(bin_path("prismctl"))
        .arg("--endpoint")
        .arg(endpoint)
        // Never pick up the developer's own prismctl config.
        .env("PRISMCTL_CONFIG", "/dev/null")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {:?}", text(&out.stdout), text(&out.stderr)))
}

/// Names of the namespaces the proxy serves.
fn listed(endpoint: &str) -> Vec<String> {
    let out = prismctl(endpoint, &["-o", "json", "namespace", "list"]);
    json(&out).as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect()
}

fn kv_doc(name: &str) -> String {
    format!(
        "apiVersion: prism/v1\nkind: Namespace\nmetadata:\n  name: {name}\n  team: shop\nspec:\n  pattern: keyvalue\n"
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn prismctl_kv_round_trip() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();

    let out = prismctl(&ep, &["health"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "SERVING");

    let out = prismctl(&ep, &["kv", "put", "demo", "greeting", "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("version "));

    let out = prismctl(&ep, &["kv", "get", "demo", "greeting"]);
    assert_eq!(text(&out.stdout).trim(), "hello");

    let out = prismctl(&ep, &["-o", "json", "kv", "get", "demo", "greeting"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["found"], true);
    assert_eq!(doc["value"], "hello");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    std::fs::write(&file, [0u8, 159, 146, 150]).unwrap();
    let out = prismctl(&ep, &["kv", "put", "demo", "blob", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = prismctl(&ep, &["-o", "json", "kv", "get", "demo", "blob"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["value_base64"], "AJ+Slg==");

    let out = prismctl(&ep, &["--no-headers", "kv", "scan", "demo"]);
    let keys: Vec<_> = text(&out.stdout).lines().map(|l| l.split('\t').next().unwrap().to_owned()).collect();
    assert_eq!(keys, ["blob", "greeting"]);

    let out = prismctl(&ep, &["kv", "delete", "demo", "greeting"]);
    assert_eq!(text(&out.stdout).trim(), "deleted");
    let out = prismctl(&ep, &["kv", "get", "demo", "greeting"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"));
}

#[test]
fn prismctl_reports_errors_and_usage() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();
    let out = prismctl(&ep, &["kv", "get", "nope", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("NotFound: namespace \"nope\" not found"), "{}", text(&out.stderr));

    let out = prismctl(&ep, &["kv", "put", "demo", "k", "v", "--ttl", "soon"]);
    assert_eq!(out.status.code(), Some(2), "usage error");

    let out = prismctl(&ep, &["kv", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let out = prismctl("http://127.0.0.1:1", &["health"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot connect") && stderr.contains("listening on 127.0.0.1:1?"), "{stderr}");
    assert!(!stderr.contains("tcp connect error: tcp connect error"), "the chain repeats itself: {stderr}");

    // host:port, as grpcurl and redis-cli take it.
    let bare = ep.trim_start_matches("http://");
    let out = prismctl(bare, &["health"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // https:// against the plaintext port says what to check.
    let out = prismctl(&format!("https://{bare}"), &["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("plaintext port needs http://{bare}")), "{}", text(&out.stderr));

    let out = prismctl("not a url", &["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid endpoint"), "{}", text(&out.stderr));
}

/// Values as redis-cli users expect them: `--raw` is the bytes exactly,
/// tables and tab-separated lines escape what would break them, and binary
/// is marked so that no text can pass for it.
#[test]
fn prismctl_kv_values_are_shown_unambiguously() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();
    let values: [(&str, &[u8], &str); 6] = [
        ("bin", &[0, 159, 146, 150], r#"b"\x00\x9f\x92\x96""#),
        ("lines", b"one\ntwo\n", r#""one\ntwo\n""#),
        ("looks", b"base64:AJ+Slg==", "base64:AJ+Slg=="),
        ("plain", "héllo wörld".as_bytes(), "héllo wörld"),
        // Text that looks like an escaped value is quoted itself.
        ("quoted", br#""a\tb""#, r#""\"a\\tb\"""#),
        ("tab", b"a\tb", r#""a\tb""#),
    ];
    for (key, value, _) in values {
        let out = prismctl_with_input(&ep, &["kv", "put", "demo", key, "--file", "-"], value);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    for (key, value, shown) in values {
        let out = prismctl(&ep, &["kv", "get", "demo", key, "--raw"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(out.stdout, value, "--raw writes {key} exactly");
        let out = prismctl(&ep, &["kv", "get", "demo", key]);
        assert_eq!(text(&out.stdout), format!("{shown}\n"), "{key} in a table");
    }
    // One line per key, columns split by tabs only.
    let out = prismctl(&ep, &["kv", "scan", "demo"]);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 3), "{lines:?}");
    let shown: Vec<&str> = rows.iter().rev().take(values.len()).rev().map(|r| r[2]).collect();
    assert_eq!(shown, values.map(|(_, _, shown)| shown));
    // --raw is for one value, not a document.
    let out = prismctl(&ep, &["-o", "json", "kv", "get", "demo", "tab", "--raw"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// kubectl's habits: `-f -` reads standard input, `get -o yaml` prints a
/// document `apply` takes back unchanged, `delete` takes several names.
#[test]
fn prismctl_namespace_documents_round_trip_through_stdin() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();

    let out = prismctl_with_input(&ep, &["-o", "json", "namespace", "apply", "-f", "-"], kv_doc("orders").as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)[0]["action"], "create");
    assert_eq!(json(&out)[0]["file"], "<stdin>");

    let got = prismctl(&ep, &["-o", "yaml", "namespace", "get", "orders"]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), kv_doc("orders"), "get -o yaml prints the document as applied");
    let out = prismctl_with_input(&ep, &["-o", "json", "namespace", "apply", "-f", "-"], &got.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)[0]["action"], "unchanged", "get -o yaml | apply -f - is a no-op");

    // Files and standard input together, in the order given.
    let dir = tempfile::tempdir().unwrap();
    let carts = dir.path().join("carts.yaml");
    std::fs::write(&carts, kv_doc("carts")).unwrap();
    let out = prismctl_with_input(
        &ep,
        &["-o", "json", "namespace", "apply", "-f", carts.to_str().unwrap(), "-f", "-"],
        kv_doc("payments").as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<_> = json(&out).as_array().unwrap().iter().map(|r| r["namespace"].clone()).collect();
    assert_eq!(names, ["carts", "payments"]);
    // Standard input can be read once only: a usage error.
    let out = prismctl(&ep, &["namespace", "apply", "-f", "-", "-f", "-"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // An invalid document on standard input is named as such.
    let out = prismctl_with_input(&ep, &["namespace", "validate", "-f", "-"], b"apiVersion: prism/v1\nkind: Nope\n");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).starts_with("<stdin>:"), "{}", text(&out.stdout));

    // Several names; one that fails does not stop the others.
    let out = prismctl(&ep, &["namespace", "delete", "orders", "nope", "carts"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    assert_eq!(listed(&ep), ["demo", "payments"]);
    let out = prismctl(&ep, &["-o", "json", "namespace", "delete", "payments", "demo", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
    assert!(listed(&ep).is_empty());
}

fn proxy_with_config(yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("namespaces")).unwrap();
    let path = dir.path().join("prism.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(bin_path("prism-proxy")).arg("--config").arg(&path).output().unwrap()
}

#[test]
fn proxy_refuses_bad_config_with_file_and_line() {
    let out =
        proxy_with_config("namespaces_dir: namespaces\nplugins:\n  memstore:\n    command: [x]\n    pool_sise: 2\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("prism.yaml:5:5: plugins.memstore.pool_sise"), "{err}");
    assert!(err.contains("unknown field `pool_sise`"), "{err}");

    let out = proxy_with_config(
        "namespaces_dir: namespaces\nplugins:\n  m: {command: [x], pool_size: 0}\nlimits: {max_key_bytes: 0}\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("plugins.m.pool_size") && err.contains("limits.max_key_bytes"), "{err}");

    let out = Command::new(bin_path("prism-proxy")).args(["--config", "/nonexistent.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent.yaml"));
}

#[test]
fn proxy_refuses_non_loopback_without_auth() {
    let out = proxy_with_config(
        "listen: 0.0.0.0:0\nnamespaces_dir: namespaces\nplugins:\n  memstore: {command: [prism-plugin-memstore]}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refusing to listen on 0.0.0.0:0"), "{}", text(&out.stderr));
}

#[test]
fn insecure_remote_needs_the_flag_and_says_so() {
    let config = ProxyConfig::memstore();
    let path = config.write();
    let yaml = std::fs::read_to_string(&path).unwrap().replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:0");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(bin_path("prism-proxy"))
        .arg("--config")
        .arg(&path)
        .arg("--allow-insecure-remote")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("\"listening\"") {
            break;
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("INSECURE: no client authentication on a non-loopback address"), "{seen}");
}

#[test]
fn proxy_refuses_unreadable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let out = proxy_with_config(&format!(
        "namespaces_dir: namespaces\ntls: {{cert: {0}/cert.pem, key: {0}/key.pem}}\nplugins:\n  memstore: {{command: [prism-plugin-memstore]}}\n",
        dir.path().display()
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no PEM certificates") || err.contains("no private key"), "{err}");
}

#[test]
fn proxy_check_reports_namespace_files() {
    let config = ProxyConfig::memstore().namespace_file(
        "broken.yaml",
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: b}\nspec: {pattern: nope}\n",
    );
    let path = config.write();
    let out = Command::new(bin_path("prism-proxy")).arg("--config").arg(&path).arg("--check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok    demo"), "{stdout}");
    assert!(stdout.contains("broken.yaml") && stdout.contains("line 4"), "{stdout}");
}

#[test]
fn an_invalid_namespace_file_does_not_stop_the_others() {
    let proxy = ProxyConfig::memstore()
        .namespace_file("bad.yaml", "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: bad}\nspec: {pattern: keyvalue, colour: red}\n")
        .namespace_file("nobackend.yaml", "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: orphan}\nspec: {pattern: keyvalue, backend: cassandra}\n")
        .start();
    assert!(proxy.logs.contains("namespace document skipped"));
    assert!(proxy.logs.contains("unknown field `colour`"), "{}", proxy.logs.text());
    assert!(proxy.logs.contains("\\\"cassandra\\\" is not a plugin of this proxy"), "{}", proxy.logs.text());
    let out = prismctl(&proxy.endpoint(), &["kv", "put", "demo", "k", "v"]);
    assert!(out.status.success());
}

/// The config the README starts, with only the port changed so tests can
/// run side by side.
#[test]
fn the_shipped_default_config_serves_the_demo_namespace() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shipped = std::fs::read_to_string(repo.join("proxy/config/prism.yaml")).unwrap();
    assert!(shipped.contains("listen: 127.0.0.1:8980"), "the README documents port 8980");
    let dir = tempfile::tempdir().unwrap();
    let config = shipped
        .replace("listen: 127.0.0.1:8980", "listen: 127.0.0.1:0\nadmin_http: {listen: \"127.0.0.1:0\"}")
        .replace(
            "namespaces_dir: namespaces",
            &format!("namespaces_dir: {}", repo.join("proxy/config/namespaces").display()),
        )
        .replace("format: text", "format: json");
    let path = dir.path().join("prism.yaml");
    std::fs::write(&path, config).unwrap();

    let proxy = prism_tests::Proxy::start_file(&path);
    let ep = proxy.endpoint();
    let out = prismctl(&ep, &["kv", "put", "demo", "hello", "world"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&prismctl(&ep, &["kv", "get", "demo", "hello"]).stdout).trim(), "world");
}

/// A proxy with the KeyValue namespace `demo`, a TimeSeries namespace
/// `metrics` and a Graph namespace `social`, all in memory.
fn patterns_proxy() -> prism_tests::Proxy {
    ProxyConfig::memstore()
        .pattern_namespace("metrics", "timeseries", "memstore", "")
        .pattern_namespace("social", "graph", "memstore", "")
        .start()
}

/// prismctl's standard output, after checking that it succeeded.
fn succeeds(endpoint: &str, args: &[&str]) -> String {
    let out = prismctl(endpoint, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The events of `prismctl -o json ts tail` (one JSON document a line).
fn tailed(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let doc: serde_json::Value = serde_json::from_str(l).unwrap();
            (doc["event_id"].as_str().unwrap().to_owned(), doc["position"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn prismctl_ts_tail_follows_and_resumes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let proxy = patterns_proxy();
    let ep = proxy.endpoint();
    let ok = |args: &[&str]| succeeds(&ep, args);
    for (id, at) in [("a", "1700000000000"), ("b", "1700000001000"), ("c", "1700000002000")] {
        ok(&["ts", "append", "metrics", "cpu", "--id", id, "--at", at]);
    }
    let events = tailed(&ok(&["-o", "json", "ts", "tail", "metrics", "cpu", "--from", "start", "--limit", "3"]));
    let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let events_from =
        tailed(&ok(&["-o", "json", "ts", "tail", "metrics", "cpu", "--from", "1700000001000", "--limit", "1"]));
    assert_eq!(events_from[0].0, "b");

    // Following from now: events appended after it started show up as they
    // come; Ctrl-C stops it and prints where to resume.
    let mut follower = Command::new(bin_path("prismctl"))
        .args(["--endpoint", &ep, "--no-headers", "ts", "tail", "metrics", "cpu"])
        .env("PRISMCTL_CONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // Appended until one shows: the tail may not be subscribed yet.
    let mut first = None;
    for n in 0..50 {
        ok(&["ts", "append", "metrics", "cpu", "--id", &format!("live-{n:02}"), "--at", "1700000003000"]);
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            first = Some(line);
            break;
        }
    }
    let first = first.expect("the tail showed no appended event");
    assert!(first.split('\t').nth(1).unwrap().starts_with("live-"), "{first}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(follower.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("resume with --position "), "{}", text(&out.stderr));

    // Resuming after b reads c and then what was appended after it.
    let resumed =
        tailed(&ok(&["-o", "json", "ts", "tail", "metrics", "cpu", "--position", &events[1].1, "--limit", "2"]));
    assert_eq!(resumed[0].0, "c");
    assert!(resumed[1].0.starts_with("live-"), "{resumed:?}");

    // Refusals: a position that is not one, another series' position, an
    // unknown namespace, both starts at once.
    for (args, code, needle) in [
        (vec!["ts", "tail", "metrics", "cpu", "--position", "garbage!"], 1, "from_position"),
        (vec!["ts", "tail", "metrics", "mem", "--position", events[0].1.as_str()], 1, "another namespace or series"),
        (vec!["ts", "tail", "nope", "cpu"], 1, "not found"),
        (vec!["ts", "tail", "metrics", "cpu", "--from", "start", "--position", "x"], 2, "cannot be used with"),
        (vec!["ts", "tail", "metrics", "cpu", "--from", "yesterday"], 2, "is not a time"),
    ] {
        let out = prismctl(&ep, &args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn prismctl_timeseries_and_graph() {
    let proxy = patterns_proxy();
    let ep = proxy.endpoint();
    let ok = |args: &[&str]| succeeds(&ep, args);

    let at = "1700000000000";
    assert_eq!(
        ok(&["ts", "append", "metrics", "cpu", "--id", "a", "--value", "0.5", "--at", at]).trim(),
        "appended at 2023-11-14T22:13:20.000Z"
    );
    let replay = ok(&["ts", "append", "metrics", "cpu", "--id", "a", "--value", "0.5", "--at", at]);
    assert_eq!(replay.trim(), "already stored (duplicate)");
    ok(&[
        "ts",
        "append",
        "metrics",
        "cpu",
        "--id",
        "b",
        "--value",
        "1.5",
        "--at",
        "1700000030000",
        "--attr",
        "host=web-1",
    ]);
    let rows = ok(&[
        "--no-headers",
        "ts",
        "query",
        "metrics",
        "cpu",
        "--start",
        "1700000000000",
        "--end",
        "1700000060000",
        "--desc",
    ]);
    let ids: Vec<_> = rows.lines().map(|l| l.split('\t').nth(1).unwrap().to_owned()).collect();
    assert_eq!(ids, ["b", "a"]);
    let json = ok(&[
        "-o",
        "json",
        "ts",
        "aggregate",
        "metrics",
        "cpu",
        "--bucket",
        "1m",
        "--fn",
        "avg",
        "--start",
        at,
        "--end",
        "1700000060000",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc[0]["count"], 2);
    assert_eq!(doc[0]["value"], 1.0);
    let out = prismctl(&ep, &["ts", "query", "metrics", "cpu", "--start", "10", "--end", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("inverted"), "{}", text(&out.stderr));

    for v in ["alice", "bob", "carol"] {
        assert_eq!(ok(&["graph", "put-vertex", "social", v, "--label", "person"]).trim(), "created");
    }
    ok(&["graph", "put-edge", "social", "alice", "follows", "bob"]);
    ok(&["graph", "put-edge", "social", "bob", "follows", "carol", "--prop", "since=2024"]);
    let json = ok(&["-o", "json", "graph", "neighbors", "social", "bob", "--direction", "both"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 2);
    let json = ok(&["-o", "json", "graph", "traverse", "social", "alice", "--depth", "2"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["vertices"][1]["id"], "carol");
    assert_eq!(doc["vertices"][1]["depth"], 2);
    let out = prismctl(&ep, &["graph", "traverse", "social", "alice", "--depth", "-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("max_depth"), "{}", text(&out.stderr));
    assert_eq!(ok(&["graph", "delete-vertex", "social", "bob"]).trim(), "deleted with 2 edge(s)");
}

/// TimeSeries times as people write and read them: RFC 3339, milliseconds,
/// `now`, a duration ago (`--since 1h`, `-1h`); shown in RFC 3339.
#[test]
fn prismctl_timeseries_takes_and_shows_readable_times() {
    let proxy = patterns_proxy();
    let ep = proxy.endpoint();
    let ok = |args: &[&str]| succeeds(&ep, args);
    let append = |id: &str, at: &str| ok(&["ts", "append", "metrics", "cpu", "--id", id, "--value", "1", "--at", at]);
    assert_eq!(append("a", "2026-12-01T10:00:00Z").trim(), "appended at 2026-12-01T10:00:00.000Z");
    // An offset is honoured: the same instant as 10:00:30Z.
    assert_eq!(append("b", "2026-12-01T12:00:30.250+02:00").trim(), "appended at 2026-12-01T10:00:30.250Z");
    append("c", "1796119260000");
    append("recent", "30m");
    append("now", "now");

    let json_rows = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = prismctl(&ep, &[&["-o", "json"], args].concat());
        json(&out).as_array().unwrap().clone()
    };
    let rows = json_rows(&[
        "ts",
        "query",
        "metrics",
        "cpu",
        "--start",
        "2026-12-01T10:00:00Z",
        "--end",
        "2026-12-01T11:00:00Z",
    ]);
    let ids: Vec<_> = rows.iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(rows[0]["timestamp"], 1_796_119_200_000_i64, "json keeps milliseconds");
    assert_eq!(rows[1]["time"], "2026-12-01T10:00:30.250Z", "and adds the readable time");
    // --since 1h: the last hour; the -1h form still works.
    for since in [["--since", "1h"], ["--start", "-1h"]] {
        let rows = json_rows(&[&["ts", "query", "metrics", "cpu"], &since[..]].concat());
        let ids: Vec<_> = rows.iter().map(|r| r["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["recent", "now"], "{since:?}");
    }
    let table =
        ok(&["ts", "query", "metrics", "cpu", "--since", "2026-12-01T10:00:00Z", "--until", "2026-12-01T10:00:01Z"]);
    assert!(table.contains("2026-12-01T10:00:00.000Z"), "{table}");
    assert!(!table.contains("1796119200000"), "{table}");

    let args = [
        "ts",
        "aggregate",
        "metrics",
        "cpu",
        "--bucket",
        "1m",
        "--since",
        "2026-12-01T10:00:00Z",
        "--until",
        "2026-12-01T10:02:00Z",
    ];
    let table = ok(&args);
    assert!(table.contains("2026-12-01T10:00:00.000Z") && table.contains("2026-12-01T10:01:00.000Z"), "{table}");
    let buckets = json_rows(&args);
    assert_eq!(buckets[0]["start"], 1_796_119_200_000_i64);
    assert_eq!(buckets[0]["start_time"], "2026-12-01T10:00:00.000Z");
    assert_eq!(buckets[0]["count"], 2);

    // A time that is none of these is a usage error naming the forms.
    let out = prismctl(&ep, &["ts", "query", "metrics", "cpu", "--since", "2026-12-01 10:00"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("RFC 3339"), "{}", text(&out.stderr));
}

/// One output style: a header row on every table and list (dropped by
/// --no-headers), the same column name for the same field, more columns
/// with -o wide, no trailing spaces; with -o json a document that does not
/// parse is reported as JSON with its line and column.
#[test]
fn prismctl_output_has_one_style() {
    let proxy = patterns_proxy();
    let ep = proxy.endpoint();
    succeeds(&ep, &["kv", "put", "demo", "k1", "v"]);
    succeeds(&ep, &["kv", "put", "demo", "k2", "trailing "]);
    succeeds(
        &ep,
        &[
            "ts",
            "append",
            "metrics",
            "cpu",
            "--id",
            "a",
            "--value",
            "1",
            "--at",
            "2026-12-01T10:00:00Z",
            "--attr",
            "host=web-1",
        ],
    );
    succeeds(&ep, &["ts", "append", "metrics", "cpu", "--id", "b", "--at", "2026-12-01T10:01:00Z"]);
    let range = ["--since", "2026-12-01T10:00:00Z", "--until", "2026-12-01T11:00:00Z"];
    for v in ["alice", "bob"] {
        succeeds(&ep, &["graph", "put-vertex", "social", v, "--label", "person"]);
    }
    succeeds(&ep, &["graph", "put-edge", "social", "alice", "follows", "bob", "--prop", "since=2024"]);

    let query = [&["ts", "query", "metrics", "cpu"][..], &range].concat();
    let aggregate = [&["ts", "aggregate", "metrics", "cpu", "--bucket", "1h"][..], &range].concat();
    let lists: [(&[&str], &[&str], &[&str]); 8] = [
        (&["kv", "scan", "demo"], &["KEY", "VERSION", "VALUE"], &[]),
        (&query, &["TIME", "EVENT ID", "VALUE", "PAYLOAD"], &["ATTRIBUTES"]),
        (&aggregate, &["TIME", "EVENTS", "VALUE"], &[]),
        (&["graph", "get-vertex", "social", "alice"], &["ID", "LABEL", "PROPERTIES"], &[]),
        (&["graph", "neighbors", "social", "alice"], &["DIRECTION", "FROM", "LABEL", "TO"], &["PROPERTIES"]),
        (&["graph", "traverse", "social", "alice"], &["DEPTH", "ID"], &[]),
        (&["namespace", "list"], &["NAME", "PATTERN", "BACKEND", "STATUS", "TEAM"], &["SOURCE"]),
        (
            &["plugins", "list"],
            &["NAME", "BACKEND", "STATUS", "RESTARTS", "CAPABILITIES", "NAMESPACES"],
            &["VERSION", "PID"],
        ),
    ];
    let header_of =
        |line: &str| -> Vec<String> { line.split(['\t', ' ']).filter(|w| !w.is_empty()).map(str::to_owned).collect() };
    let words =
        |columns: &[&str]| -> Vec<String> { columns.iter().flat_map(|c| c.split(' ')).map(str::to_owned).collect() };
    for (args, columns, wide) in lists {
        let out = succeeds(&ep, args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(header_of(lines[0]), words(columns), "{args:?}:\n{out}");
        assert!(lines.len() > 1, "{args:?} lists nothing:\n{out}");
        for line in &lines {
            assert_eq!(line.trim_end(), *line, "{args:?}: trailing spaces in {line:?}");
            assert!(!line.starts_with(' '), "{args:?}: leading space in {line:?}");
        }
        // Without the header the columns may be narrower; the rows are the same.
        let bare = succeeds(&ep, &[&["--no-headers"], args].concat());
        let rows: Vec<Vec<String>> = bare.lines().map(header_of).collect();
        assert_eq!(rows, lines[1..].iter().map(|l| header_of(l)).collect::<Vec<_>>(), "{args:?} --no-headers");
        let all = succeeds(&ep, &[&["-o", "wide"], args].concat());
        let header = header_of(all.lines().next().unwrap());
        assert_eq!(header[..words(columns).len()], words(columns), "{args:?} -o wide:\n{all}");
        assert_eq!(header[words(columns).len()..], words(wide), "{args:?} -o wide:\n{all}");
        assert!(all.lines().all(|l| l.trim_end() == l), "{args:?} -o wide: trailing spaces:\n{all}");
    }

    // A broken config file, with -o json: the error is JSON, with its place.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prismctl.yaml");
    std::fs::write(&config, "timeout: 5s\nendpoint: [oops\n").unwrap();
    let out = Command::new(bin_path("prismctl"))
        .args(["-o", "json", "--config", config.to_str().unwrap(), "health"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value =
        serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(error["error"]["file"], config.to_str().unwrap(), "{error}");
    assert!(error["error"]["line"].as_u64().unwrap() >= 2, "{error}");
    assert!(error["error"]["column"].as_u64().unwrap() > 0, "{error}");
    // A namespace document the proxy refuses: each error has its place.
    let bad =
        "apiVersion: prism/v1\nkind: Namespace\nmetadata:\n  name: bad\nspec:\n  pattern: keyvalue\n  colour: red\n";
    let out = prismctl_with_input(&ep, &["-o", "json", "namespace", "apply", "-f", "-"], bad.as_bytes());
    assert_eq!(out.status.code(), Some(3));
    let error = &json(&out)[0]["errors"][0];
    assert_eq!(error["field"], "spec.colour", "{error}");
    assert_eq!((error["line"].as_u64(), error["column"].as_u64()), (Some(7), Some(3)), "{error}");
    assert!(error["message"].as_str().unwrap().contains("unknown field"), "{error}");
}

/// prismctl is an operator's tool: it must not link the proxy and its
/// server-side dependencies (PostgreSQL driver, file watcher, JWT
/// verification), only the small crate with the namespace document.
#[test]
fn prismctl_does_not_link_the_proxy() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["tree", "--offline", "--locked", "-p", "prismctl", "-e", "normal,build", "--prefix", "none"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree failed: {}", text(&out.stderr));
    let tree = text(&out.stdout);
    assert!(tree.contains("prism-namespace"), "prismctl should use prism-namespace:\n{tree}");
    for banned in ["prism-proxy ", "tokio-postgres ", "notify ", "jsonwebtoken "] {
        assert!(!tree.lines().any(|l| l.starts_with(banned)), "prismctl depends on {banned}:\n{tree}");
    }
}

/// Runs `prism-proxy --config FILE [extra args]`, stopping it if it is
/// still running after `wait` (it started: it did not refuse the config).
fn run_proxy(path: &std::path::Path, extra: &[&str], wait: std::time::Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin_path("prism-proxy"))
        .arg("--config")
        .arg(path)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (None, format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

/// `--check` runs the loaders start runs: every config start refuses,
/// `--check` refuses too, naming the problem; a good config passes both.
#[test]
fn check_refuses_what_start_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("namespaces")).unwrap();
    let ca = prism_tests::pki::Ca::new("Check CA");
    let server = ca.server();
    let other = prism_tests::pki::Ca::new("Other CA").server();
    let w = |name: &str, body: &str| prism_tests::pki::write(d, name, body).display().to_string();
    let (cert, key, ca_pem) = (w("cert.pem", &server.cert), w("key.pem", &server.key), w("ca.pem", &ca.pem));
    let other_key = w("other.key", &other.key);
    let garbage = w("garbage.pem", "not a PEM file\n");
    let not_jwks = w("jwks.json", "{\"keys\": 7}");
    let plugins = "plugins:\n  memstore: {command: [prism-plugin-memstore]}\n";
    let base = "listen: 127.0.0.1:0\nadmin_http: {listen: \"127.0.0.1:0\"}\nnamespaces_dir: namespaces\n";
    let mtls = |cert: &str, key: &str, ca: &str| format!("tls: {{cert: {cert}, key: {key}, client_ca: {ca}}}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "non-loopback in dev mode",
            format!("listen: 0.0.0.0:0\nnamespaces_dir: namespaces\n{plugins}"),
            "refusing to listen",
        ),
        ("certificate file is not PEM", format!("{base}{}{plugins}", mtls(&garbage, &key, &ca_pem)), "tls.cert"),
        ("key file is not PEM", format!("{base}{}{plugins}", mtls(&cert, &garbage, &ca_pem)), "tls.key"),
        (
            "key of another certificate",
            format!("{base}{}{plugins}", mtls(&cert, &other_key, &ca_pem)),
            "do not fit together",
        ),
        ("client CA without certificates", format!("{base}{}{plugins}", mtls(&cert, &key, &garbage)), "tls.client_ca"),
        (
            "audit file in a missing directory",
            format!("{base}audit: {{sink: {}/no/such/dir/audit.jsonl}}\n{plugins}", d.display()),
            "audit.sink",
        ),
        (
            "JWKS file that is not a JWKS",
            format!(
                "{base}auth: {{jwt: {{issuer: \"https://issuer.test\", audiences: [prism], jwks_file: {not_jwks}}}}}\n{plugins}"
            ),
            "not a JWKS",
        ),
        (
            "issuer that is not a URL",
            format!("{base}auth: {{jwt: {{issuer: \"http://\", audiences: [prism]}}}}\n{plugins}"),
            "not a valid URL",
        ),
        (
            "registry URL that is not a connection string",
            format!("listen: 127.0.0.1:0\nregistry: {{postgres: {{url: \"postgres://x@h:notaport/db\"}}}}\n{plugins}"),
            "registry.postgres.url",
        ),
        ("missing namespaces directory", format!("listen: 127.0.0.1:0\nnamespaces_dir: nowhere\n{plugins}"), "nowhere"),
    ];
    let path = d.join("prism.yaml");
    for (name, yaml, expected) in &cases {
        std::fs::write(&path, yaml).unwrap();
        let (code, output) = run_proxy(&path, &["--check"], std::time::Duration::from_secs(30));
        assert_eq!(code, Some(2), "{name}: --check accepted it:\n{output}");
        assert!(output.contains(expected), "{name}: --check does not say {expected:?}:\n{output}");
        let (code, output) = run_proxy(&path, &[], std::time::Duration::from_secs(10));
        assert!(code.is_some_and(|c| c != 0), "{name}: start did not refuse it ({code:?}):\n{output}");
        assert!(output.contains(expected), "{name}: start does not say {expected:?}:\n{output}");
    }

    // The same TLS files, right this time, pass both.
    std::fs::write(&path, format!("{base}{}{plugins}", mtls(&cert, &key, &ca_pem))).unwrap();
    let (code, output) = run_proxy(&path, &["--check"], std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0), "--check refused a good config:\n{output}");
    let (code, output) = run_proxy(&path, &[], std::time::Duration::from_secs(3));
    assert_eq!(code, None, "start refused a config --check accepted:\n{output}");
    assert!(output.contains("listening"), "{output}");
}

/// `--check` says which file it checked, and refuses what cannot run: a
/// plugin program that is not there, a namespace naming a plugin the config
/// does not have.
#[test]
fn check_refuses_what_cannot_run_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("namespaces")).unwrap();
    let path = d.join("prism.yaml");
    let base = "listen: 127.0.0.1:0\nadmin_http: {listen: \"127.0.0.1:0\"}\nnamespaces_dir: namespaces\n";
    std::fs::write(
        &path,
        format!(
            "{base}plugins:\n  memstore: {{command: [prism-plugin-memstore]}}\n  gone: {{command: [prism-plugin-nosuch]}}\n  lost: {{command: [{}/bin/none]}}\n",
            d.display()
        ),
    )
    .unwrap();
    let (code, output) = run_proxy(&path, &["--check"], std::time::Duration::from_secs(30));
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains(&format!("ok    config {}", path.display())), "{output}");
    assert!(output.contains("plugins.gone.command: program \"prism-plugin-nosuch\" not found"), "{output}");
    assert!(output.contains("plugins.lost.command:") && output.contains("/bin/none\" not found"), "{output}");

    std::fs::write(&path, format!("{base}plugins:\n  memstore: {{command: [prism-plugin-memstore]}}\n")).unwrap();
    std::fs::write(
        d.join("namespaces/x.yaml"),
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: x, team: t}\nspec: {pattern: keyvalue, backend: nothere}\n",
    )
    .unwrap();
    let (code, output) = run_proxy(&path, &["--check"], std::time::Duration::from_secs(30));
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("\"nothere\" is not a plugin of this proxy"), "{output}");
}

/// Without `--config`, the proxy takes the first config of its default
/// places and says which; with none there, it lists where it looked.
#[test]
fn proxy_finds_its_config_in_the_default_places() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |cwd: &std::path::Path| {
        Command::new(bin_path("prism-proxy"))
            .arg("--check")
            .current_dir(cwd)
            .env_remove("PRISM_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", home.path())
            .output()
            .unwrap()
    };
    let out = run(dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let user = home.path().join(".config/prism/prism.yaml");
    assert!(err.contains("prism.yaml") && err.contains(&user.display().to_string()), "{err}");
    assert!(err.contains("/etc/prism/prism.yaml"), "{err}");

    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::create_dir(home.path().join("ns")).unwrap();
    std::fs::write(
        &user,
        format!(
            "namespaces_dir: {}/ns\nplugins:\n  memstore: {{command: [prism-plugin-memstore]}}\n",
            home.path().display()
        ),
    )
    .unwrap();
    let out = run(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("using config file {}", user.display())), "{}", text(&out.stderr));

    // The working directory's file comes first.
    std::fs::write(dir.path().join("prism.yaml"), "plugins: 3\n").unwrap();
    let out = run(dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("using config file prism.yaml"), "{}", text(&out.stderr));
}

/// prismctl with no endpoint given (help and `options` need none).
fn prismctl_alone(args: &[&str]) -> Output {
    Command::new(bin_path("prismctl")).env("PRISMCTL_CONFIG", "/dev/null").args(args).output().unwrap()
}

#[test]
fn prismctl_help_shows_examples_and_lists_global_options_once() {
    // `prismctl options` lists the options every command takes.
    let out = prismctl_alone(&["options"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let options = text(&out.stdout);
    for flag in
        ["--endpoint", "--output", "--no-headers", "--timeout", "--config", "--ca", "--cert", "--key", "--token"]
    {
        assert!(options.contains(flag), "prismctl options does not list {flag}:\n{options}");
    }
    // The top level help still shows them.
    assert!(text(&prismctl_alone(&["--help"]).stdout).contains("--endpoint"));

    // A subcommand's help does not repeat them: it has examples and points
    // to `prismctl options`, in both -h and --help and through `help`.
    let helps = [
        vec!["kv", "get", "--help"],
        vec!["kv", "get", "-h"],
        vec!["help", "kv", "put"],
        vec!["namespace", "apply", "--help"],
        vec!["ts", "query", "--help"],
        vec!["migrate", "--help"],
        vec!["kv", "--help"],
    ];
    for args in helps {
        let out = prismctl_alone(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        assert!(!help.contains("--endpoint"), "{args:?} lists the global options:\n{help}");
        assert!(help.contains("\nExamples:\n  prismctl "), "{args:?} has no examples:\n{help}");
        assert!(help.contains("Use `prismctl options` for the global options"), "{args:?}:\n{help}");
    }
    // Hidden from help, the global options still work after the subcommand.
    let out = prismctl_alone(&["kv", "get", "demo", "k", "--endpoint", "127.0.0.1:1", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("127.0.0.1:1"), "{}", text(&out.stderr));
}

#[test]
fn prismctl_refusals_name_the_flag() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();
    succeeds(&ep, &["kv", "put", "demo", "k", "v"]);

    // The proxy says "delete with purge"; prismctl names the flags.
    let out = prismctl(&ep, &["namespace", "delete", "demo"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("FailedPrecondition") && stderr.contains("--purge") && stderr.contains("--force"),
        "{stderr}"
    );
    let out = prismctl(&ep, &["-o", "json", "namespace", "delete", "demo"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(error["error"]["hint"].as_str().unwrap().contains("--purge"), "{error}");

    let out = prismctl(&ep, &["kv", "put", "demo", "k", "w", "--if-version", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--if-version"), "{}", text(&out.stderr));
}

/// `--endpoint` takes several proxies, tried in order until one answers:
/// a proxy that is down does not stop the command while another serves.
#[test]
fn prismctl_fails_over_to_the_next_endpoint() {
    let proxy = prism_tests::ProxyConfig::memstore().start();
    let live = proxy.endpoint();
    let dead = format!("127.0.0.1:{}", prism_tests::services::free_port());
    for endpoints in [format!("{dead},{live}"), format!("{live},{dead}")] {
        let out = prismctl(&endpoints, &["kv", "put", "demo", "k", "v"]);
        assert!(out.status.success(), "{endpoints}: {}", text(&out.stderr));
    }
    let other = format!("127.0.0.1:{}", prism_tests::services::free_port());
    let out = prismctl(&format!("{dead}, {other}"), &["health"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no proxy answered"), "{err}");
    assert!(err.contains(&format!("listening on {dead}?")) && err.contains(&format!("listening on {other}?")), "{err}");
    let out = prismctl(&format!("https://{dead},{live}"), &["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("mixes https:// and plaintext"), "{}", text(&out.stderr));
}

/// `--worker-threads` (`PRISM_WORKER_THREADS`): 1 runs the proxy on one
/// thread, and it serves; a value that is not a count is a usage error.
#[test]
fn prism_proxy_worker_threads() {
    let proxy = ProxyConfig::memstore().env("PRISM_WORKER_THREADS", "1").start();
    let ep = proxy.endpoint();
    assert!(succeeds(&ep, &["kv", "put", "demo", "k", "v"]).starts_with("version "));
    assert_eq!(succeeds(&ep, &["kv", "get", "demo", "k"]).trim(), "v");
    for bad in ["many", "-1", "", "1.5"] {
        let out = Command::new(bin_path("prism-proxy"))
            .args(["--config", "/nonexistent.yaml", &format!("--worker-threads={bad}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(text(&out.stderr).contains("--worker-threads"), "{bad:?}: {}", text(&out.stderr));
    }
}
