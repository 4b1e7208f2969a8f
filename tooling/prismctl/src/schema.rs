//! `prismctl schema ...`: compile a team's `.proto` files (protox, no
//! protoc; options kept) and register them with the proxy, so namespaces
//! can store values of their messages with PII masked by field options.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::admin::v1::{GetSchemaRequest, ListSchemasRequest, PushSchemaRequest, SchemaInfo};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};
use serde_json::json;

use crate::Client;
use crate::output::{emit, table};

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Compile .proto files and register them as the next version of a
    /// schema.
    ///
    /// `prism/options/v1/pii.proto` (the `(prism.pii)` option) is built in;
    /// other imports are looked up in the -I directories.
    #[command(
        after_help = "Examples:\n  prismctl schema push acme/profile/v1/profile.proto -I protos\n  prismctl schema push acme/profile/v1/profile.proto -I protos --dry-run\n  prismctl schema push acme/profile/v1/profile.proto -I protos --name profiles --force"
    )]
    Push {
        /// The .proto files, as paths under an include directory.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Include directories (like protoc's -I) [default: .].
        #[arg(short = 'I', long = "proto-path", value_name = "DIR")]
        include: Vec<PathBuf>,
        /// The schema's name [default: the first file's import path].
        #[arg(long)]
        name: Option<String>,
        /// Register even if the change breaks compatibility with the
        /// previous version.
        #[arg(long)]
        force: bool,
        /// Check only: compile, and have the proxy check compatibility.
        #[arg(long)]
        dry_run: bool,
    },
    /// List registered schemas (latest versions).
    #[command(alias = "ls", after_help = "Examples:\n  prismctl schema list\n  prismctl schema list -o json")]
    List,
    /// Show one schema: its messages, their PII fields and the namespaces
    /// that use them.
    #[command(
        after_help = "Examples:\n  prismctl schema get acme/profile/v1/profile.proto\n  prismctl schema get profiles --version 2 --save profiles-v2.binpb"
    )]
    Get {
        /// The schema's name.
        name: String,
        /// A version [default: the latest].
        #[arg(long)]
        version: Option<u32>,
        /// Also write the version's compiled descriptors (a protobuf
        /// FileDescriptorSet) to this file.
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
    },
}

/// Serves the built-in options file, so teams need not copy it.
struct PrismOptions;

impl FileResolver for PrismOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == prism_proto::PII_OPTIONS_PATH {
            return File::from_source(name, prism_proto::PII_OPTIONS_PROTO);
        }
        Err(protox::Error::file_not_found(name))
    }
}

/// Compiles `files` with their imports; returns the encoded descriptor set
/// (custom options kept) and the import path of the first file.
pub fn compile(files: &[PathBuf], include: &[PathBuf]) -> anyhow::Result<(Vec<u8>, String)> {
    let mut resolver = ChainFileResolver::new();
    let dirs: Vec<PathBuf> = if include.is_empty() { vec![PathBuf::from(".")] } else { include.to_vec() };
    for dir in &dirs {
        anyhow::ensure!(dir.is_dir(), "include directory {} does not exist", dir.display());
        resolver.add(IncludeFileResolver::new(dir.clone()));
    }
    resolver.add(PrismOptions);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(false);
    for file in files {
        compiler.open_file(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    }
    let first = compiler.files().find(|f| !f.is_import()).map(|f| f.name().to_owned()).context("no file to compile")?;
    Ok((compiler.encode_file_descriptor_set(), first))
}

pub async fn run(client: &Client, cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Push { files, include, name, force, dry_run } => {
            let (descriptor, first) = compile(&files, &include)?;
            let name = name.unwrap_or(first);
            let mut admin = AdminServiceClient::new(client.channel().await?);
            let response = admin
                .push_schema(client.request(PushSchemaRequest {
                    name,
                    file_descriptor_set: descriptor.into(),
                    force,
                    dry_run,
                }))
                .await?
                .into_inner();
            let schema = response.schema.unwrap_or_default();
            let doc = json!({
                "schema": schema_json(&schema),
                "applied": response.applied,
                "breaking": response.breaking,
            });
            emit(client.format, &doc, || {
                let verb = if response.applied { "registered" } else { "checked (dry run): would register" };
                let mut text = format!("schema {} version {} {verb}\n", schema.name, schema.version);
                for change in &response.breaking {
                    text.push_str(&format!("warning: breaking change registered with --force: {change}\n"));
                }
                text.push_str(&fields_table(&schema));
                text
            })
        }
        SchemaCommand::List => {
            let mut admin = AdminServiceClient::new(client.channel().await?);
            let schemas = admin.list_schemas(client.request(ListSchemasRequest {})).await?.into_inner().schemas;
            let docs: Vec<_> = schemas.iter().map(schema_json).collect();
            emit(client.format, &docs, || {
                if schemas.is_empty() {
                    return "no schemas registered (prismctl schema push FILE.proto)".to_owned();
                }
                let rows = schemas
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.version.to_string(),
                            s.messages.len().to_string(),
                            s.messages.iter().map(|m| m.pii_fields.len()).sum::<usize>().to_string(),
                            s.pushed_at.clone(),
                            s.pushed_by.clone(),
                        ]
                    })
                    .collect();
                table(&["NAME", "VERSION", "MESSAGES", "PII FIELDS", "PUSHED", "BY"], rows)
            })
        }
        SchemaCommand::Get { name, version, save } => {
            let mut admin = AdminServiceClient::new(client.channel().await?);
            let response = admin
                .get_schema(client.request(GetSchemaRequest { name, version: version.unwrap_or_default() }))
                .await?
                .into_inner();
            if let Some(path) = &save {
                write(path, &response.file_descriptor_set)?;
            }
            let schema = response.schema.unwrap_or_default();
            emit(client.format, &schema_json(&schema), || {
                let versions: Vec<String> = schema.versions.iter().map(ToString::to_string).collect();
                format!(
                    "schema {} version {} (versions: {}), pushed {} by {}\n{}",
                    schema.name,
                    schema.version,
                    versions.join(", "),
                    schema.pushed_at,
                    schema.pushed_by,
                    fields_table(&schema)
                )
            })
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// One row per tagged field (and per message without any).
fn fields_table(schema: &SchemaInfo) -> String {
    let mut rows = Vec::new();
    for m in &schema.messages {
        let namespaces = m.namespaces.join(",");
        if m.pii_fields.is_empty() {
            rows.push(vec![m.name.clone(), "-".to_owned(), "-".to_owned(), namespaces.clone()]);
        }
        for f in &m.pii_fields {
            rows.push(vec![m.name.clone(), f.path.clone(), f.class.clone(), namespaces.clone()]);
        }
    }
    table(&["MESSAGE", "PII FIELD", "CLASS", "NAMESPACES"], rows)
}

fn schema_json(s: &SchemaInfo) -> serde_json::Value {
    json!({
        "name": s.name,
        "version": s.version,
        "pushed_at": s.pushed_at,
        "pushed_by": s.pushed_by,
        "versions": s.versions,
        "messages": s.messages.iter().map(|m| json!({
            "name": m.name,
            "namespaces": m.namespaces,
            "pii_fields": m.pii_fields.iter().map(|f| json!({"path": f.path, "class": f.class})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_with_the_built_in_options_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("acme")).unwrap();
        std::fs::write(
            dir.path().join("acme/p.proto"),
            "syntax = \"proto3\"; package acme; import \"prism/options/v1/pii.proto\";\nmessage P { string email = 1 [(prism.pii) = \"email\"]; }\n",
        )
        .unwrap();
        let (set, first) = compile(&[PathBuf::from("acme/p.proto")], &[dir.path().to_owned()]).unwrap();
        assert_eq!(first, "acme/p.proto");
        // The option's value is in the encoded set.
        assert!(set.windows(5).any(|w| w == b"email"));
        let err = compile(&[PathBuf::from("acme/missing.proto")], &[dir.path().to_owned()]).unwrap_err();
        assert!(err.to_string().contains("missing.proto"), "{err}");
        std::fs::write(dir.path().join("acme/bad.proto"), "syntax = \"proto3\"; message {").unwrap();
        let err = compile(&[PathBuf::from("acme/bad.proto")], &[dir.path().to_owned()]).unwrap_err();
        assert!(err.to_string().contains("bad.proto"), "{err}");
        let err = compile(&[PathBuf::from("x.proto")], &[dir.path().join("nope")]).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
