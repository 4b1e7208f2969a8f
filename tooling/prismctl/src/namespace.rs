//! `prismctl namespace ...`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use prism_namespace::NamespaceDoc;
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::admin::v1::plan::Action;
use prism_proto::admin::v1::{
    ApplyNamespaceRequest, DeleteNamespaceRequest, GetNamespaceRequest, ListNamespacesRequest, NamespaceInfo, Plan,
};
use serde_json::json;
use tonic_types::StatusExt;

use crate::complete::namespaces;
use crate::output::{Format, columns, emit, print_exact, status_json, status_text, table};
use crate::{Client, Invalid};

/// Largest file read as a namespace document; the proxy refuses larger
/// ones anyway, so do not read a stray binary into memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create or update namespaces from YAML files.
    #[command(
        after_help = "Examples:\n  prismctl namespace apply -f orders.yaml --dry-run\n  prismctl namespace apply -f namespaces/\n  prismctl namespace get orders -o yaml | prismctl namespace apply -f -"
    )]
    Apply {
        /// A namespace document, a directory of them (*.yaml, *.yml), or
        /// `-` for standard input (repeatable).
        #[arg(short, long, required = true)]
        file: Vec<PathBuf>,
        /// Show the plan (backend, reason, diff) without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Allow moving a namespace that holds data to another backend.
        #[arg(long)]
        force: bool,
    },
    /// Check namespace documents locally, without a proxy.
    ///
    /// Checks the structure, names, types and the rules between fields;
    /// whether a backend can serve the namespace is checked by
    /// `prismctl namespace apply --dry-run`.
    #[command(
        after_help = "Examples:\n  prismctl namespace validate -f orders.yaml\n  prismctl namespace validate -f namespaces/ -o json"
    )]
    Validate {
        /// A namespace document, a directory of them, or `-` for standard
        /// input (repeatable).
        #[arg(short, long, required = true)]
        file: Vec<PathBuf>,
    },
    /// Show one namespace and its document.
    #[command(
        after_help = "Examples:\n  prismctl namespace get orders\n  prismctl namespace get orders -o yaml > orders.yaml\n  prismctl namespace get orders -o json"
    )]
    Get {
        /// The namespace.
        #[arg(add = namespaces(""))]
        name: String,
    },
    /// List namespaces.
    #[command(
        after_help = "Examples:\n  prismctl namespace list\n  prismctl ns list -o wide\n  prismctl ns list -o json"
    )]
    List,
    /// Remove namespaces.
    #[command(
        after_help = "Examples:\n  prismctl namespace delete orders\n  prismctl namespace delete orders --purge\n  prismctl namespace delete old-a old-b --force"
    )]
    Delete {
        /// The namespaces to remove; one that fails does not stop the others.
        #[arg(value_name = "NAME", required = true, add = namespaces(""))]
        names: Vec<String>,
        /// Delete the namespace's data in the backend as well.
        #[arg(long)]
        purge: bool,
        /// Remove it even though its data stays behind, orphaned in the
        /// backend.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(client: &Client, cmd: NamespaceCommand) -> anyhow::Result<()> {
    match cmd {
        NamespaceCommand::Validate { file } => validate(client.format, &file),
        NamespaceCommand::Apply { file, dry_run, force } => apply(client, &file, dry_run, force).await,
        NamespaceCommand::Get { name } => {
            let mut admin = AdminServiceClient::new(client.channel().await?);
            let ns = admin.get_namespace(client.request(GetNamespaceRequest { name })).await?.into_inner();
            let ns = ns.namespace.context("the proxy answered without a namespace")?;
            if client.format == Format::Yaml {
                // The document itself, byte for byte as stored, so that
                // `get -o yaml | apply -f -` is a no-op, as with kubectl; the
                // proxy's view of it (backend, status) is in the table and
                // in -o json.
                return print_exact(ns.spec_yaml.as_bytes());
            }
            emit(client.format, &info_json(&ns), || {
                let status = if ns.status_message.is_empty() {
                    ns.status.clone()
                } else {
                    format!("{}: {} (serving its last good version)", ns.status, ns.status_message)
                };
                format!(
                    "name:     {}\npattern:  {}\nbackend:  {} ({})\nteam:     {}\nstatus:   {}\nsource:   {}\n\n{}",
                    ns.name, ns.pattern, ns.backend, ns.backend_reason, ns.team, status, ns.source, ns.spec_yaml
                )
            })
        }
        NamespaceCommand::List => {
            let mut admin = AdminServiceClient::new(client.channel().await?);
            let list = admin.list_namespaces(client.request(ListNamespacesRequest {})).await?.into_inner();
            let docs: Vec<_> = list.namespaces.iter().map(info_json).collect();
            emit(client.format, &docs, || {
                let rows = list
                    .namespaces
                    .iter()
                    .map(|n| {
                        let (status, team, source) = (n.status.clone(), n.team.clone(), n.source.clone());
                        vec![n.name.clone(), n.pattern.clone(), n.backend.clone(), status, team, source]
                    })
                    .collect();
                let shown = columns(client.format, &["NAME", "PATTERN", "BACKEND", "STATUS", "TEAM", "SOURCE"], 5);
                let mut text = table(shown, rows);
                // Why a document is invalid, under the table.
                for n in list.namespaces.iter().filter(|n| !n.status_message.is_empty()) {
                    text.push_str(&format!("\n{} ({}): {}", n.name, n.source, n.status_message));
                }
                text
            })
        }
        NamespaceCommand::Delete { names, purge, force } => delete(client, names, purge, force).await,
    }
}

/// Deletes each namespace in turn. One name behaves as before (its error
/// is the command's); with several, a failure is reported and the rest are
/// still deleted, as `kubectl delete a b` does.
async fn delete(client: &Client, names: Vec<String>, purge: bool, force: bool) -> anyhow::Result<()> {
    let mut admin = AdminServiceClient::new(client.channel().await?);
    let single = names.len() == 1;
    let mut docs = Vec::new();
    let mut failed = 0;
    for name in names {
        let mut call = client.request(DeleteNamespaceRequest { name: name.clone(), purge_data: purge, force });
        if purge {
            // A purge waits for every proxy sharing the registry to stop
            // routing the namespace (up to a request timeout plus a
            // proxy's lease, 20 s by default) before it deletes.
            call.set_timeout(client.timeout.max(std::time::Duration::from_secs(40)));
        }
        match admin.delete_namespace(call).await {
            Ok(r) => {
                let purged = r.into_inner().data_purged;
                if client.format.is_table() {
                    if purged {
                        println!("namespace {name} deleted with its data");
                    } else {
                        println!("namespace {name} deleted; its data (if any) is left in the backend");
                    }
                }
                docs.push(json!({ "namespace": name, "deleted": true, "data_purged": purged }));
            }
            Err(status) if single => return Err(status.into()),
            // The proxy is gone: no point in trying the rest.
            Err(status) if status.code() == tonic::Code::Unavailable => return Err(status.into()),
            Err(status) => {
                failed += 1;
                eprintln!("prismctl: {name}: {}", status_text(&status));
                let error = status_json(&status);
                docs.push(json!({ "namespace": name, "deleted": false, "error": error }));
            }
        }
    }
    if !client.format.is_table() {
        // One name gives one object, several an array, as kubectl does.
        match docs.as_slice() {
            [one] if single => emit(client.format, one, String::new)?,
            _ => emit(client.format, &docs, String::new)?,
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} namespaces were not deleted", docs.len());
    Ok(())
}

fn info_json(ns: &NamespaceInfo) -> serde_json::Value {
    json!({
        "name": ns.name,
        "pattern": ns.pattern,
        "backend": ns.backend,
        "backend_reason": ns.backend_reason,
        "team": ns.team,
        "status": ns.status,
        "status_message": ns.status_message,
        "source": ns.source,
        "spec_yaml": ns.spec_yaml,
    })
}

/// How standard input is named in results and error lines (`-f -`).
const STDIN_NAME: &str = "<stdin>";

/// A namespace document and where it came from.
struct Document {
    name: String,
    /// Its text, or why it is not a document (too large, not text).
    text: Result<String, String>,
    /// The file line it starts on (documents after a `---` start later).
    line: u64,
    /// Its place among the file's documents (1-based), when there are several.
    index: Option<usize>,
}

/// The documents named by the `-f` arguments, in order: files as given,
/// directories expanded to their `*.yaml`/`*.yml` files in name order, `-`
/// standard input; a file holding several documents (`---`) gives each.
fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<Document>> {
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        // A usage error (exit code 2): standard input can be read once.
        clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, "-f - (standard input) can be given only once\n")
            .exit();
    }
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let bytes = read_limited(std::io::stdin()).context("reading standard input")?;
            docs.extend(documents(STDIN_NAME, bytes));
            continue;
        }
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        let mut files = vec![path.clone()];
        if meta.is_dir() {
            files = std::fs::read_dir(path)
                .with_context(|| format!("{}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            files.sort();
            anyhow::ensure!(!files.is_empty(), "{}: no *.yaml or *.yml files", path.display());
        }
        for file in files {
            let bytes = std::fs::File::open(&file)
                .and_then(read_limited)
                .with_context(|| format!("reading {}", file.display()))?;
            docs.extend(documents(&file.display().to_string(), bytes));
        }
    }
    Ok(docs)
}

/// Up to one byte over [`MAX_FILE_BYTES`]: enough to know it is too large
/// without reading a huge file whole.
fn read_limited(from: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    from.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The documents of one file's bytes. Too large or not text, the file is
/// one invalid document (refused like any other, exit code 3).
fn documents(name: &str, bytes: Vec<u8>) -> Vec<Document> {
    let whole = |text| vec![Document { name: name.to_owned(), text, line: 1, index: None }];
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return whole(Err(format!("the file is over the limit of {MAX_FILE_BYTES} bytes")));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return whole(Err(format!(
                "the file is not UTF-8 text (byte {} is not; a binary file?)",
                e.utf8_error().valid_up_to()
            )));
        }
    };
    let parts = split_documents(&text);
    if parts.len() <= 1 {
        return whole(Ok(text));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (line, text))| Document { name: name.to_owned(), text: Ok(text), line, index: Some(i + 1) })
        .collect()
}

/// Splits YAML text at its `---` document markers into (first line, text)
/// pairs, leaving out documents with nothing but blanks and comments.
fn split_documents(text: &str) -> Vec<(u64, String)> {
    let mut parts: Vec<(u64, String)> = vec![(1, String::new())];
    for (n, line) in (1u64..).zip(text.split_inclusive('\n')) {
        let marker = line.strip_prefix("---").is_some_and(|rest| {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        });
        match parts.last_mut() {
            Some(_) if marker => parts.push((n + 1, String::new())),
            Some((_, part)) => part.push_str(line),
            None => {}
        }
    }
    parts
        .into_iter()
        .filter(|(_, part)| part.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .collect()
}

/// A position in a document as a position in its file.
fn in_file(doc: &Document, line: u64) -> u64 {
    if line == 0 { 0 } else { line + doc.line - 1 }
}

fn validate(format: Format, paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let mut invalid = false;
    for doc in load(paths)? {
        let error = |field: &str, line: u64, column: u64, message: &str| json!({ "field": field, "line": in_file(&doc, line), "column": column, "message": message });
        let errors: Vec<serde_json::Value> = match &doc.text {
            Err(why) => vec![error("", 0, 0, why)],
            Ok(text) => match NamespaceDoc::parse(text) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.iter().map(|e| error(&e.path, e.line, e.column, &e.message)).collect(),
            },
        };
        invalid |= !errors.is_empty();
        let mut result = json!({ "file": doc.name, "valid": errors.is_empty(), "errors": errors });
        if let Some(index) = doc.index {
            result["document"] = index.into();
        }
        results.push(result);
    }
    emit(format, &results, || {
        let mut text = String::new();
        for r in &results {
            let file = r["file"].as_str().unwrap_or_default();
            let errors = r["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
            if errors.is_empty() {
                match r["document"].as_u64() {
                    Some(n) => text.push_str(&format!("{file}: document {n}: valid\n")),
                    None => text.push_str(&format!("{file}: valid\n")),
                }
            }
            for e in errors {
                let field = e["field"].as_str().unwrap_or_default();
                let message = e["message"].as_str().unwrap_or_default();
                let description = match (e["line"].as_u64(), e["column"].as_u64()) {
                    (Some(line), Some(column)) if line > 0 => format!("line {line} column {column}: {message}"),
                    _ => message.to_owned(),
                };
                text.push_str(&violation_line(file, field, &description));
            }
        }
        text
    })?;
    if invalid { Err(Invalid.into()) } else { Ok(()) }
}

/// What happened to one file of an apply.
enum Outcome {
    Planned {
        plan: Plan,
        applied: bool,
    },
    /// Field violations returned by the proxy.
    Invalid(Vec<(String, String)>),
    Failed(tonic::Status),
}

async fn apply(client: &Client, paths: &[PathBuf], dry_run: bool, force: bool) -> anyhow::Result<()> {
    let docs = load(paths)?;
    let mut admin = AdminServiceClient::new(client.channel().await?);
    // A bar only helps a person watching many files go by.
    let progress = (docs.len() > 1 && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(docs.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let mut outcomes = Vec::new();
    for doc in docs {
        if let Some(bar) = &progress {
            bar.set_message(doc.name.clone());
        }
        let text = match &doc.text {
            Ok(text) => text.clone(),
            Err(why) => {
                outcomes.push((doc.name.clone(), Outcome::Invalid(vec![(String::new(), why.clone())])));
                continue;
            }
        };
        let request = ApplyNamespaceRequest { spec_yaml: text, dry_run, force };
        let outcome = match admin.apply_namespace(client.request(request)).await {
            Ok(r) => {
                let r = r.into_inner();
                Outcome::Planned { plan: r.plan.unwrap_or_default(), applied: r.applied }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let violations = status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| (v.field, v.description)).collect())
                    .unwrap_or_else(|| vec![(String::new(), status.message().to_owned())]);
                // The proxy saw the document alone: its lines, as the file's.
                let relocated = violations
                    .into_iter()
                    .map(|(field, description)| match locate(&description) {
                        Some((line, column, message)) => {
                            (field, format!("line {} column {column}: {message}", in_file(&doc, line)))
                        }
                        None => (field, description),
                    })
                    .collect();
                Outcome::Invalid(relocated)
            }
            // The proxy is gone: no point in trying the rest.
            Err(status) if status.code() == tonic::Code::Unavailable => return Err(status.into()),
            Err(status) => Outcome::Failed(status),
        };
        outcomes.push((doc.name, outcome));
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    report(client.format, dry_run, &outcomes)?;
    if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Invalid(_))) {
        return Err(Invalid.into());
    }
    let failed = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Failed(_))).count();
    anyhow::ensure!(failed == 0, "{failed} of {} namespaces failed", outcomes.len());
    Ok(())
}

/// `FILE:LINE:COLUMN: FIELD: MESSAGE`, the shape `validate` prints and
/// editors jump to. The proxy puts the position in the description as
/// `line L column C: ...`.
fn violation_line(file: &str, field: &str, description: &str) -> String {
    let located = locate(description);
    let field = if field.is_empty() { String::new() } else { format!("{field}: ") };
    match located {
        Some((line, column, message)) => format!("{file}:{line}:{column}: {field}{message}\n"),
        None => format!("{file}: {field}{description}\n"),
    }
}

/// The line, column and message of a description `line L column C: ...`.
fn locate(description: &str) -> Option<(u64, u64, &str)> {
    let rest = description.strip_prefix("line ")?;
    let (line, rest) = rest.split_once(" column ")?;
    let (column, message) = rest.split_once(": ")?;
    Some((line.parse().ok()?, column.parse().ok()?, message))
}

/// A field violation as JSON: its place as fields, so that scripts need
/// not parse the description (kept as it was for older scripts).
fn violation_json(field: &str, description: &str) -> serde_json::Value {
    let mut doc = json!({ "field": field, "description": description, "message": description });
    if let Some((line, column, message)) = locate(description) {
        doc["line"] = line.into();
        doc["column"] = column.into();
        doc["message"] = message.into();
    }
    doc
}

fn action_name(plan: &Plan) -> &'static str {
    match plan.action() {
        Action::Create => "create",
        Action::Update => "update",
        Action::Unchanged => "unchanged",
        Action::Unspecified => "unknown",
    }
}

fn report(format: Format, dry_run: bool, outcomes: &[(String, Outcome)]) -> anyhow::Result<()> {
    let docs: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|(file, outcome)| match outcome {
            Outcome::Planned { plan, applied } => json!({
                "file": file,
                "namespace": plan.namespace,
                "action": action_name(plan),
                "backend": plan.backend,
                "backend_reason": plan.backend_reason,
                "diff": plan.diff,
                "warnings": plan.warnings,
                "applied": applied,
            }),
            Outcome::Invalid(violations) => json!({
                "file": file,
                "errors": violations.iter().map(|(f, d)| violation_json(f, d)).collect::<Vec<_>>(),
            }),
            Outcome::Failed(status) => json!({
                "file": file,
                "error": status_json(status),
            }),
        })
        .collect();
    emit(format, &docs, || {
        let mut text = String::new();
        for (file, outcome) in outcomes {
            match outcome {
                Outcome::Planned { plan, applied } => {
                    let verb = match (dry_run, applied, plan.action()) {
                        (_, _, Action::Unchanged) => "unchanged",
                        (true, _, Action::Create) => "would create",
                        (true, _, _) => "would update",
                        (false, true, Action::Create) => "created",
                        (false, _, _) => "updated",
                    };
                    text.push_str(&format!(
                        "namespace {} {verb} on backend {}: {}\n",
                        plan.namespace, plan.backend, plan.backend_reason
                    ));
                    for warning in &plan.warnings {
                        text.push_str(&format!("  warning: {warning}\n"));
                    }
                    if !plan.diff.is_empty() {
                        for line in plan.diff.lines() {
                            text.push_str(&format!("  {line}\n"));
                        }
                    }
                }
                Outcome::Invalid(violations) => {
                    for (field, description) in violations {
                        text.push_str(&violation_line(file, field, description));
                    }
                }
                Outcome::Failed(status) => {
                    text.push_str(&format!("{file}: {}\n", status_text(status)));
                }
            }
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::violation_line;

    #[test]
    fn violations_are_printed_with_their_position() {
        assert_eq!(
            violation_line("a.yaml", "spec.pattern", "line 7 column 12: bad"),
            "a.yaml:7:12: spec.pattern: bad\n"
        );
        assert_eq!(violation_line("a.yaml", "", "the document is empty"), "a.yaml: the document is empty\n");
        assert_eq!(violation_line("a.yaml", "x", "line seven: odd"), "a.yaml: x: line seven: odd\n");
    }
}
