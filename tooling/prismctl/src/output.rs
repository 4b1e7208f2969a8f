//! How results and errors are printed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and plain text, for people.
    Table,
    /// One JSON document per command, for scripts.
    Json,
    /// One YAML document per command, for scripts.
    Yaml,
}

/// Prints `value` as JSON or YAML, or the `table` text for people.
pub fn emit<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let text = table();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => {
            let text = serde_saphyr::to_string(value).map_err(|e| anyhow::anyhow!("yaml: {e}"))?;
            println!("{}", text.trim_end());
        }
    }
    Ok(())
}

/// Writes `bytes` to standard output as they are, with no newline added.
pub fn print_exact(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// A table with a header row, sized to the terminal.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

/// A value as JSON: a string when it is UTF-8, else base64 under
/// `value_base64`.
pub fn value_json(value: &[u8]) -> (&'static str, serde_json::Value) {
    match std::str::from_utf8(value) {
        Ok(text) => ("value", text.into()),
        Err(_) => ("value_base64", STANDARD.encode(value).into()),
    }
}

/// A value for a terminal: UTF-8 as is, anything else as base64 with a tag.
pub fn value_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(value)),
    }
}

/// An error for stderr: a gRPC status shows its code and message.
pub fn describe(err: &anyhow::Error) -> String {
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        return format!("{:?}: {}", status.code(), status.message());
    }
    format!("{err:#}")
}
