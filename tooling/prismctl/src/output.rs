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

/// A table with a header row, sized to the terminal. A cell that would
/// break its row (a newline or a tab in a name or a message) is quoted with
/// escapes, so that every row stays one line.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_header(header.to_vec());
    for row in rows {
        t.add_row(row.into_iter().map(|cell| if cell.contains(breaks_line) { text_cell(&cell) } else { cell }));
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
        return format!("{:?}: {}", status.code(), status.message());
    }
    format!("{err:#}")
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
