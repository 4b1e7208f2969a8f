//! Every parse error of a config file at once.
//!
//! serde stops at the first error. To report the others too, a file that
//! fails is split along its block-style mapping entries (each top-level
//! section, then each entry inside a section) and every piece is parsed on
//! its own, padded with blank lines so the positions stay those of the file.
//! Sections are independent (every field of [`Config`] has a default), so a
//! piece fails only for its own mistakes; an error that only shows in the
//! whole (a missing required field) is reported as the whole gave it.

use prism_namespace::SpecError;
use prism_namespace::yaml::{self, Node};
use serde_saphyr::Spanned;

use super::Config;

/// The errors of `text`, given `first` (what parsing it whole said).
pub(super) fn problems(text: &str, first: &serde_saphyr::Error) -> Vec<SpecError> {
    let whole = yaml::describe(first);
    let Ok(tree) = serde_saphyr::from_str::<Spanned<Node>>(text) else { return vec![whole] };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut found = Vec::new();
    if let Node::Map(entries) = &tree.value {
        for (span, (_, value)) in spans(entries, lines.len() + 1).into_iter().zip(entries) {
            let children = match &value.value {
                Node::Map(children) => children.as_slice(),
                _ => &[],
            };
            found.extend(section_problems(&lines, span, children));
        }
    }
    if found.is_empty() {
        found.push(whole);
    }
    for e in &mut found {
        e.path = path_at(&tree, (e.line, e.column), String::new());
        // Reported at the mapping's first key; the field belongs to the mapping.
        if e.message.starts_with("missing field") {
            e.path = e.path.rsplit_once('.').map(|(parent, _)| parent.to_owned()).unwrap_or_default();
        }
    }
    found.sort_by_key(|e| (e.line, e.column));
    found.dedup();
    found
}

/// Line ranges `[start, end)` of a mapping's entries: each starts at its
/// key's line and ends where the next one starts (the last at `end`).
fn spans(entries: &[(Spanned<String>, Spanned<Node>)], end: usize) -> Vec<(usize, usize)> {
    let starts: Vec<usize> = entries.iter().map(|(k, _)| line_of(k)).collect();
    starts.iter().enumerate().map(|(i, &from)| (from, starts.get(i + 1).copied().unwrap_or(end))).collect()
}

/// The dotted path of the field at `at` (line, column): the key there, or
/// the key whose value holds it.
fn path_at(node: &Spanned<Node>, at: (u64, u64), path: String) -> String {
    let position = |n: &Spanned<String>| (n.referenced.line(), n.referenced.column());
    match &node.value {
        Node::Map(entries) => {
            let Some((key, value)) = entries.iter().rev().find(|(k, _)| position(k) <= at) else { return path };
            let path = if path.is_empty() { key.value.clone() } else { format!("{path}.{}", key.value) };
            if position(key) == at { path } else { path_at(value, at, path) }
        }
        Node::Seq(items) => {
            let Some((i, item)) = items
                .iter()
                .enumerate()
                .rev()
                .find(|(_, item)| (item.referenced.line(), item.referenced.column()) <= at)
            else {
                return path;
            };
            path_at(item, at, format!("{path}[{i}]"))
        }
        _ => path,
    }
}

fn line_of(key: &Spanned<String>) -> usize {
    usize::try_from(key.referenced.line()).unwrap_or(usize::MAX)
}

/// The errors of one top-level section: the section parsed alone, then,
/// when it fails and is written as a block mapping, each of its entries
/// alone (under the section's own key line).
fn section_problems(
    lines: &[&str],
    (from, to): (usize, usize),
    children: &[(Spanned<String>, Spanned<Node>)],
) -> Vec<SpecError> {
    let Some(error) = parse_piece(lines, None, (from, to)) else { return Vec::new() };
    let whole = yaml::describe(&error);
    // A flow mapping (`limits: {a: 1}`) sits on the key's line: not split.
    if children.is_empty() || children.iter().any(|(k, _)| line_of(k) <= from) {
        return vec![whole];
    }
    let mut found = Vec::new();
    for span in spans(children, to) {
        let Some(e) = parse_piece(lines, Some(from), span) else { continue };
        let e = yaml::describe(&e);
        // Alone, an entry lacks its siblings: that is not its mistake.
        if !e.message.starts_with("missing field") {
            found.push(e);
        }
    }
    if found.is_empty() || whole.message.starts_with("missing field") {
        found.push(whole);
    }
    found
}

/// Parses lines `[from, to)` (1-based) under the `header` line (the
/// section's key, for one of its entries), blank lines elsewhere; `None` when that parses as a config. A piece that is
/// not even YAML on its own (a multi-line flow value cut in two) counts as
/// parsing, so it reports nothing in place of its section.
fn parse_piece(lines: &[&str], header: Option<usize>, (from, to): (usize, usize)) -> Option<serde_saphyr::Error> {
    let mut text = String::new();
    for n in 1..to.min(lines.len() + 1) {
        let line = lines.get(n - 1).copied().unwrap_or_default();
        if n >= from || header == Some(n) {
            text.push_str(line);
            if !line.ends_with('\n') {
                text.push('\n');
            }
        } else {
            text.push('\n');
        }
    }
    if serde_saphyr::from_str::<Spanned<Node>>(&text).is_err() {
        return None;
    }
    serde_saphyr::from_str::<Config>(&text).err()
}
