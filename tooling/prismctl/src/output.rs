//! How results and errors are printed.

use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and plain text, for people.
    Table,
    /// Tables with more columns where there are more to show.
    Wide,
    /// One JSON document per command, for scripts.
    Json,
    /// One YAML document per command, for scripts.
    Yaml,
}

impl Format {
    /// Whether the output is for people (a table, wide or not).
    pub fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide)
    }
}

/// `--no-headers`. A process-wide switch, set once from the command line
/// before any output, so that every table and list honours it without each
/// command passing it along.
static NO_HEADERS: AtomicBool = AtomicBool::new(false);

pub fn set_no_headers(no_headers: bool) {
    NO_HEADERS.store(no_headers, Ordering::Relaxed);
}

fn headers() -> bool {
    !NO_HEADERS.load(Ordering::Relaxed)
}

/// Prints `value` as JSON or YAML, or the `table` text for people.
pub fn emit<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    if format.is_table() {
        let text = table();
        // No line ends in spaces, whatever a cell or a document held.
        for line in text.trim_end().lines() {
            println!("{}", line.trim_end());
        }
        return Ok(());
    }
    println!("{}", render(format, value)?);
    Ok(())
}

/// `value` as a JSON or YAML document, without a final newline.
fn render<T: Serialize>(format: Format, value: &T) -> anyhow::Result<String> {
    if format == Format::Yaml {
        let text = serde_saphyr::to_string(value).map_err(|e| anyhow::anyhow!("yaml: {e}"))?;
        return Ok(text.trim_end().to_owned());
    }
    Ok(serde_json::to_string_pretty(value)?)
}

/// The columns a table shows: all with -o wide, else the first `narrow`.
/// Rows may carry every column; [`table`] drops the cells not shown.
pub fn columns<'a>(format: Format, all: &'a [&'a str], narrow: usize) -> &'a [&'a str] {
    if format == Format::Wide { all } else { &all[..narrow.min(all.len())] }
}

/// The header line of a list printed as its rows arrive (tab-separated, so
/// that a long list starts showing at once and `cut -f` works on it).
pub fn list_header(columns: &[&str]) {
    if headers() {
        println!("{}", columns.join("\t"));
    }
}

/// One row of such a list.
pub fn list_row(cells: &[String]) {
    println!("{}", cells.join("\t"));
}

/// Attributes or properties as one cell: `key=value` pairs in key order,
/// separated by commas, `-` for none.
pub fn pairs_cell<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = pairs.into_iter().map(|(k, v)| text_cell(&format!("{k}={v}"))).collect();
    if pairs.is_empty() {
        return "-".to_owned();
    }
    pairs.sort();
    pairs.join(",")
}

/// A document that could not be read, with where: printed as
/// `FILE:LINE:COLUMN: MESSAGE`, or as JSON with each as a field.
#[derive(Debug)]
pub struct DocumentError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

impl std::error::Error for DocumentError {}

/// Prints a failed command's error on standard error: `prismctl: ...` for
/// people; with -o json or yaml a document, `error` with `message` and,
/// when there are any, `code` (a gRPC status) and `file`, `line`, `column`
/// (a document that could not be read), so that scripts need not parse
/// the text.
pub fn report_error(format: Format, err: &anyhow::Error) {
    if format.is_table() {
        eprintln!("prismctl: {}", describe(err));
        return;
    }
    let mut error = serde_json::json!({ "message": describe(err) });
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        error = status_json(status);
    }
    if let Some(doc) = err.downcast_ref::<DocumentError>() {
        error["file"] = doc.file.clone().into();
        error["line"] = doc.line.into();
        error["column"] = doc.column.into();
        error["message"] = doc.message.clone().into();
    }
    match render(format, &serde_json::json!({ "error": error })) {
        Ok(text) => eprintln!("{text}"),
        Err(_) => eprintln!("prismctl: {}", describe(err)),
    }
}

/// Writes `bytes` to standard output as they are, with no newline added.
pub fn print_exact(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// A table with a header row, sized to the terminal. A cell that would
/// break its row (a newline or a tab in a name or a message) is quoted with
/// escapes, so that every row stays one line.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    if headers() {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(
            row.into_iter()
                .take(header.len())
                .map(|cell| if cell.contains(breaks_line) { text_cell(&cell) } else { cell }),
        );
    }
    // Flush left, two spaces between columns, as kubectl prints; emit()
    // drops the spaces that pad the last column.
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
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

/// A value for a table cell or a tab-separated line, in one line and
/// unambiguous: UTF-8 text is shown as is when it is plain, else quoted
/// with escapes (see [`text_cell`]); anything else is binary, shown as
/// `b"..."` with `\xHH` escapes, which no text is shown as.
pub fn value_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text_cell(text),
        Err(_) => {
            let mut shown = String::from("b\"");
            for &byte in value {
                if byte.is_ascii() {
                    push_escaped(&mut shown, char::from(byte));
                } else {
                    shown.push_str(&format!("\\x{byte:02x}"));
                }
            }
            shown.push('"');
            shown
        }
    }
}

/// Text for a table cell or a tab-separated line. Plain text is shown as
/// is; text that would break the line or the columns (control characters
/// such as tab and newline), hide in them (empty, leading or trailing
/// spaces) or look like a quoted or binary value (starting with `"` or
/// `b"`) is quoted as redis-cli quotes it: `"a\tb"`, with `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\xHH` and `\u{H...}` escapes.
pub fn text_cell(text: &str) -> String {
    let plain = !text.is_empty()
        && !text.contains(breaks_line)
        && !text.starts_with(char::is_whitespace)
        && !text.ends_with(char::is_whitespace)
        && !text.starts_with('"')
        && !text.starts_with("b\"");
    if plain {
        return text.to_owned();
    }
    let mut shown = String::from("\"");
    for c in text.chars() {
        push_escaped(&mut shown, c);
    }
    shown.push('"');
    shown
}

/// Characters a terminal or a tab-separated reader would not keep within
/// one cell.
fn breaks_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn push_escaped(shown: &mut String, c: char) {
    match c {
        '"' => shown.push_str("\\\""),
        '\\' => shown.push_str("\\\\"),
        '\n' => shown.push_str("\\n"),
        '\r' => shown.push_str("\\r"),
        '\t' => shown.push_str("\\t"),
        c if c.is_ascii() && breaks_line(c) => shown.push_str(&format!("\\x{:02x}", u32::from(c))),
        c if breaks_line(c) => shown.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        c => shown.push(c),
    }
}

/// An error for stderr: a gRPC status shows its code and message.
pub fn describe(err: &anyhow::Error) -> String {
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        return status_text(status);
    }
    format!("{err:#}")
}

/// A failed call as people read it: `CODE: MESSAGE`, and which flag to
/// use when the proxy refused for want of one.
pub fn status_text(status: &tonic::Status) -> String {
    let hint = flag_hint(status).map_or(String::new(), |h| format!(" ({h})"));
    format!("{:?}: {}{hint}", status.code(), status.message())
}

/// A failed call in -o json or yaml: `code`, `message`, and `hint` when
/// there is one.
pub fn status_json(status: &tonic::Status) -> serde_json::Value {
    let mut error = serde_json::json!({ "code": format!("{:?}", status.code()), "message": status.message() });
    if let Some(hint) = flag_hint(status) {
        error["hint"] = hint.into();
    }
    error
}

/// The flag that answers a refusal. The proxy serves every client, so its
/// messages name what a request asks for ("delete with purge", "apply with
/// force"); prismctl's users ask for it with a flag, which this names.
fn flag_hint(status: &tonic::Status) -> Option<&'static str> {
    let message = status.message();
    if message.contains("delete with purge") {
        Some("use --purge to delete the data as well, or --force to leave it in the backend")
    } else if message.contains("delete with force") {
        Some("--force deletes it anyway")
    } else if message.contains("with force to") {
        Some("add --force to do it anyway")
    } else if status.code() == tonic::Code::Aborted && message.contains("version mismatch") {
        Some("the key is not at the version given with --if-version")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_on_one_line_and_unambiguously() {
        assert_eq!(value_text(b"hello world"), "hello world");
        assert_eq!(value_text(b"a\tb"), r#""a\tb""#);
        assert_eq!(value_text(b"a\\tb"), r"a\tb", "a backslash alone needs no quotes");
        assert_eq!(value_text(b"one\r\ntwo\x07\x7f"), r#""one\r\ntwo\x07\x7f""#);
        assert_eq!(value_text("x\u{85}\u{2028}é".as_bytes()), r#""x\u{85}\u{2028}é""#);
        assert_eq!(value_text(b""), r#""""#);
        assert_eq!(value_text(b" padded "), r#"" padded ""#);
        // Text that looks like what an escaped or binary value is shown as.
        assert_eq!(value_text(br#""a\tb""#), r#""\"a\\tb\"""#);
        assert_eq!(value_text(br#"b"\x00""#), r#""b\"\\x00\"""#);
        assert_eq!(value_text(b"base64:AJ+Slg=="), "base64:AJ+Slg==");
        // Not UTF-8: binary, whatever it looks like.
        assert_eq!(value_text(&[0, 159, 146, 150]), r#"b"\x00\x9f\x92\x96""#);
        assert_eq!(value_text(b"ok\xff\"\\\n"), r#"b"ok\xff\"\\\n""#);
    }
}
