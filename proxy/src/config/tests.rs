use super::*;

const MINIMAL: &str = "namespaces_dir: ns\nplugins:\n  memstore:\n    command: [prism-plugin-memstore]\n";

fn invalid(text: &str) -> Vec<String> {
    Config::parse(text).expect("parses").validate().expect_err("must be invalid")
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    c.validate().unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8980");
    assert_eq!(c.plugins["memstore"].pool_size, 4);
    assert_eq!(c.limits.max_value_bytes, 1024 * 1024);
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn unknown_field_names_line_and_column() {
    let err = Config::parse(&format!("{MINIMAL}    pool_sise: 3\n")).unwrap_err();
    assert!(err.contains("line 5, column 5"), "{err}");
    assert!(err.contains("unknown field `pool_sise`"), "{err}");
}

#[test]
fn wrong_types_and_syntax_are_located() {
    let err = Config::parse("listen: not-an-address\nnamespaces_dir: x\nplugins: {}\n").unwrap_err();
    assert!(err.contains("line 1"), "{err}");
    let err = Config::parse("namespaces_dir: [\n").unwrap_err();
    assert!(err.contains("line 1"), "{err}");
    let err = Config::parse(&format!("{MINIMAL}shutdown_grace: soon\n")).unwrap_err();
    assert!(err.contains("write it like"), "{err}");
    assert!(Config::parse("").unwrap_err().contains("empty"));
    let errors = Config::parse("plugins: {m: {command: [x]}}\n").unwrap().validate().unwrap_err();
    assert!(errors.iter().any(|e| e.contains("namespaces_dir") && e.contains("registry")), "{errors:?}");
}

#[test]
fn every_semantic_error_is_reported_together() {
    let errors = invalid(
        "namespaces_dir: ns\ndefault_backend: nope\nplugins:\n  Bad_Name:\n    command: [x]\n    address: 'h:1'\n    pool_size: 0\n  empty: {}\nlimits:\n  max_key_bytes: 0\n  default_page_size: 5000\n  quota_burst: 2m\nlog:\n  level: loud\n",
    );
    let joined = errors.join("\n");
    for needle in [
        "plugins.Bad_Name: plugin names",
        "plugins.Bad_Name: set either command or address",
        "plugins.Bad_Name.pool_size",
        "plugins.empty: set command",
        "default_backend: \"nope\"",
        "limits.max_key_bytes",
        "limits.default_page_size",
        "limits.quota_burst: must be above zero and at most 60s",
        "log.level",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn quota_settings() {
    let c = Config::parse("namespaces_dir: ns\nplugins:\n  m: {command: [x]}\n").unwrap();
    assert!(!c.limits.enforce_quotas && c.limits.namespace_fairness);
    assert_eq!(c.limits.quota_burst, Duration::from_secs(1));
    let c = Config::parse(
        "namespaces_dir: ns\nplugins:\n  m: {command: [x]}\nlimits: {enforce_quotas: true, quota_burst: 250ms, namespace_fairness: false}\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert!(c.limits.enforce_quotas && !c.limits.namespace_fairness);
    assert_eq!(c.limits.quota_burst, Duration::from_millis(250));
    for (bad, needle) in [
        ("limits: {quota_burst: 0s}", "limits.quota_burst: must be above zero"),
        ("limits: {enforce_quotas: sometimes}", "limits.enforce_quotas"),
        ("limits: {quota_burst: 5}", "limits.quota_burst"),
    ] {
        let text = format!("namespaces_dir: ns\nplugins:\n  m: {{command: [x]}}\n{bad}\n");
        let errors = match Config::parse(&text) {
            Ok(c) => c.validate().unwrap_err(),
            Err(e) => vec![e.to_string()],
        };
        assert!(errors.iter().any(|e| e.contains(needle)), "{needle:?} not in {errors:?}");
    }
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prism.yaml");
    std::fs::write(&path, "namespaces_dir: ns\nplugins:\n  a:\n    command: [./bin/plugin, --flag]\n  b:\n    command: [plugin-on-path]\n").unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.namespaces_dir, Some(dir.path().join("ns")));
    assert_eq!(c.plugins["a"].command.as_ref().unwrap()[0], dir.path().join("./bin/plugin").to_string_lossy());
    assert_eq!(c.plugins["b"].command.as_ref().unwrap()[0], "plugin-on-path");
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::load(Path::new("/nonexistent/prism.yaml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/prism.yaml"), "{err}");
}

#[test]
fn postgres_registry() {
    let c =
        Config::parse("registry:\n  postgres: {url: 'postgres://x@h/db'}\nplugins:\n  m: {command: [x]}\n").unwrap();
    c.validate().unwrap();
    let pg = &c.registry.as_ref().unwrap().postgres;
    assert_eq!(pg.schema, "prism_registry");
    assert_eq!(pg.resync_interval, Duration::from_secs(30));
    let errors = invalid(
        "namespaces_dir: x\nregistry:\n  postgres: {url: u, schema: Bad-Name}\nplugins:\n  m: {command: [x]}\n",
    );
    assert!(errors.iter().any(|e| e.contains("not both")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("registry.postgres.schema")), "{errors:?}");
}

#[test]
fn security_settings_are_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("x.pem");
    std::fs::write(&pem, "x").unwrap();
    let p = pem.display();
    let text = format!(
        "{MINIMAL}tls: {{cert: {p}, key: /nonexistent/key.pem, client_auth: required, reload_interval: 10ms}}\nauth:\n  require: both\n  admins: [bob]\n  jwt:\n    issuer: ftp://issuer\n    audiences: []\n    algorithms: [HS256, none, RS256, XY1]\n    leeway: 1h\n"
    );
    let errors = invalid(&text);
    for expected in [
        "tls.key: /nonexistent/key.pem is not a readable file",
        "tls.client_auth: needs tls.client_ca",
        "tls.reload_interval: must be at least 1s",
        "auth.require: client certificates are required but tls.client_ca is not set",
        "auth.admins[0]: \"bob\" is not a principal",
        "auth.jwt.audiences: list at least one",
        "auth.jwt: \"ftp://issuer\" is not an http(s) URL",
        "auth.jwt.algorithms: \"HS256\": symmetric and unsigned tokens are never accepted",
        "auth.jwt.algorithms: \"none\": symmetric and unsigned tokens are never accepted",
        "auth.jwt.algorithms: \"XY1\": unknown algorithm",
        "auth.jwt.leeway: at most 5m",
    ] {
        assert!(errors.iter().any(|e| e.contains(expected)), "missing {expected:?} in {errors:#?}");
    }
    assert!(!errors.iter().any(|e| e.contains("\"RS256\"")), "{errors:#?}");
}

#[test]
fn auth_needs_a_way_to_authenticate() {
    let errors = invalid(&format!("{MINIMAL}auth: {{require: any}}\n"));
    assert!(errors.iter().any(|e| e.contains("set auth.jwt or tls.client_ca")), "{errors:?}");
    let errors = invalid(&format!(
        "{MINIMAL}auth:\n  require: jwt\n  jwt: {{issuer: 'https://i', audiences: [a], jwks_url: 'https://i/k', jwks_file: k.json}}\n"
    ));
    assert!(errors.iter().any(|e| e.contains("set jwks_url or jwks_file, not both")), "{errors:?}");
    let err = Config::parse(&format!("{MINIMAL}auth: {{require: sometimes}}\n")).unwrap_err();
    assert!(err.contains("line"), "{err}");
    let err = Config::parse(&format!("{MINIMAL}audit: {{sink: ''}}\n")).unwrap_err();
    assert!(err.contains("off, stdout or a file path"), "{err}");
}

#[test]
fn security_defaults() {
    let c = Config::parse(&format!("{MINIMAL}audit: {{sink: audit.log}}\n")).unwrap();
    assert!(!c.authenticates());
    assert_eq!(c.audit.sink, AuditSink::File(PathBuf::from("audit.log")));
    let text = format!("{MINIMAL}auth:\n  jwt: {{issuer: 'https://issuer.example', audiences: [prism]}}\n");
    let c = Config::parse(&text).unwrap();
    c.validate().unwrap();
    assert!(c.authenticates());
    let jwt = c.auth.as_ref().unwrap().jwt.as_ref().unwrap();
    assert_eq!(jwt.algorithms, ["RS256", "ES256"]);
    assert_eq!(jwt.leeway, Duration::from_secs(30));
    assert_eq!(jwt.claims.groups, "groups");
}

#[test]
fn every_parse_error_is_reported_with_its_field_and_position() {
    let text = "listen: 127.0.0.1:1\nfoo: 1\nnamespaces_dir: ns\nplugins:\n  a:\n    command: [x]\n    pool_sise: 2\n  b:\n    command: x\n  c: {command: [x], pool_size: many}\nlimits:\n  request_timeout: banana\n  max_key_bytes: -1\ntls:\n  cert: x.pem\n";
    let errors = Config::parse_all(text).unwrap_err();
    let got: Vec<String> = errors.iter().map(|e| format!("{}:{} {}", e.line, e.column, e.path)).collect();
    assert_eq!(
        got,
        [
            "2:1 foo",
            "7:5 plugins.a.pool_sise",
            "9:14 plugins.b.command",
            "10:32 plugins.c.pool_size",
            "12:20 limits.request_timeout",
            "13:18 limits.max_key_bytes",
            "15:3 tls",
        ],
        "{errors:#?}"
    );
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(text[2].contains("expected a list"), "{text:?}");
    assert!(text[6].contains("missing field `key`"), "{text:?}");
}

#[test]
fn yaml_errors_are_in_prism_s_words() {
    let err = Config::parse("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n").unwrap_err();
    assert!(err.contains("line 2") && err.contains("duplicate"), "{err}");
    assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    let err = Config::parse("namespaces_dir: ns\n---\nplugins: {}\n").unwrap_err();
    assert!(err.contains("more than one YAML document"), "{err}");
    assert!(!err.contains("from_str_multiple"), "{err}");
}

#[test]
fn load_names_the_file_and_locates_semantic_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prism.yaml");
    std::fs::write(&path, "plugins:\n  m: {command: [x], pool_size: 99}\nlimits: {request_timeout: 0s}\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    let file = path.display().to_string();
    assert!(err.contains(&format!("{file}: namespaces_dir")), "{err}");
    assert!(err.contains(&format!("{file}:2:21: plugins.m.pool_size: must be between 1 and 64")), "{err}");
    assert!(err.contains(&format!("{file}:3:10: limits.request_timeout: must be above zero")), "{err}");
    assert!(!err.contains("<input>"), "{err}");
    std::fs::write(&path, "limits: {request_timeout: soon}\nfoo: 1\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains(&format!("{file}:1:27: limits.request_timeout: invalid duration")), "{err}");
    assert!(err.contains(&format!("{file}:2:1: foo: unknown field")), "{err}");
}
