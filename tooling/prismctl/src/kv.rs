//! `prismctl kv ...`

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{DeleteRequest, GetRequest, PutRequest, ScanRequest};
use serde_json::json;

use crate::Client;
use crate::complete::namespaces;
use crate::output::{emit, list_header, list_row, print_exact, text_cell, value_json, value_text};

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Read a key.
    #[command(
        after_help = "Examples:\n  prismctl kv get demo user/1\n  prismctl kv get demo avatar/1 --raw > avatar.png\n  prismctl -o json kv get demo user/1"
    )]
    Get {
        /// The KeyValue namespace.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// The key to read.
        key: String,
        /// Write exactly the value's bytes to standard output (no newline,
        /// no escapes; binary-safe), as redis-cli --raw does.
        #[arg(long)]
        raw: bool,
    },
    /// Write a key. The value comes from the argument, or --file.
    #[command(
        after_help = "Examples:\n  prismctl kv put demo user/1 alice\n  prismctl kv put demo session/9 token --ttl 30s\n  prismctl kv put demo avatar/1 --file avatar.png"
    )]
    Put {
        /// The KeyValue namespace.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// The key to write.
        key: String,
        /// The value (UTF-8). Use --file for binary data.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file ('-' for standard input).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Time to live, e.g. 30s or 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Only write if the key is at this version (0: must not exist).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Delete a key.
    #[command(
        after_help = "Examples:\n  prismctl kv delete demo user/1\n  prismctl kv delete demo user/1 --if-version 4"
    )]
    Delete {
        /// The KeyValue namespace.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// The key to delete.
        key: String,
        /// Only delete if the key is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List keys in key order.
    #[command(
        after_help = "Examples:\n  prismctl kv scan demo\n  prismctl kv scan demo --prefix user/ --limit 10\n  prismctl -o json kv scan demo --prefix user/"
    )]
    Scan {
        /// The KeyValue namespace.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// Only keys with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Stop after this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Keys fetched per call (the proxy may lower it to its own limit).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
}

fn read_value(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<bytes::Bytes> {
    use anyhow::Context;
    match (value, file) {
        (Some(v), _) => Ok(v.into()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading standard input")?;
            Ok(buf.into())
        }
        (None, Some(path)) => Ok(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?.into()),
        (None, None) => anyhow::bail!("a value or --file is required"),
    }
}

pub async fn run(client: &Client, cmd: KvCommand) -> anyhow::Result<()> {
    if matches!(cmd, KvCommand::Get { raw: true, .. }) && !client.format.is_table() {
        // A usage error (exit code 2): a value's bytes are not a document.
        clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "--raw writes the value's bytes as they are; it cannot be combined with -o json or -o yaml\n",
        )
        .exit();
    }
    let mut kv = KeyValueServiceClient::new(client.channel().await?);
    match cmd {
        KvCommand::Get { namespace, key, raw } => {
            let r = kv.get(client.request(GetRequest { namespace, key: key.clone() })).await?.into_inner();
            anyhow::ensure!(r.found, "key {key:?} not found");
            if raw {
                return print_exact(&r.value);
            }
            let (field, value) = value_json(&r.value);
            let mut doc = json!({ "found": true, "key": key, "version": r.version });
            doc[field] = value;
            emit(client.format, &doc, || value_text(&r.value))?;
        }
        KvCommand::Put { namespace, key, value, file, ttl, if_version } => {
            let value = read_value(value, file)?;
            let ttl_seconds = ttl.map_or(0, |d| d.as_secs().max(1));
            let r = kv
                .put(client.request(PutRequest { namespace, key: key.clone(), value, ttl_seconds, if_version }))
                .await?
                .into_inner();
            emit(client.format, &json!({ "key": key, "version": r.version }), || format!("version {}", r.version))?;
        }
        KvCommand::Delete { namespace, key, if_version } => {
            let r = kv
                .delete(client.request(DeleteRequest { namespace, key: key.clone(), if_version }))
                .await?
                .into_inner();
            let text = if r.deleted { "deleted" } else { "not found" };
            emit(client.format, &json!({ "key": key, "deleted": r.deleted }), || text.to_owned())?;
        }
        KvCommand::Scan { namespace, prefix, limit, page_size } => {
            let mut token = String::new();
            let mut items = Vec::new();
            if client.format.is_table() {
                list_header(&["KEY", "VERSION", "VALUE"]);
            }
            'pages: loop {
                let r = kv
                    .scan(client.request(ScanRequest {
                        namespace: namespace.clone(),
                        prefix: prefix.clone(),
                        page_size,
                        page_token: token,
                    }))
                    .await?
                    .into_inner();
                for e in r.items {
                    if limit > 0 && items.len() >= limit {
                        break 'pages;
                    }
                    if client.format.is_table() {
                        // Printed as they arrive: a long scan starts showing at once.
                        list_row(&[text_cell(&e.key), e.version.to_string(), value_text(&e.value)]);
                    }
                    let (field, value) = value_json(&e.value);
                    let mut doc = json!({ "key": e.key, "version": e.version });
                    doc[field] = value;
                    items.push(doc);
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            if !client.format.is_table() {
                emit(client.format, &items, String::new)?;
            }
        }
    }
    Ok(())
}
