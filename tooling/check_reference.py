#!/usr/bin/env python3
"""Check the config and namespace reference pages against the Rust structs.

The proxy config (proxy/src/config.rs) and the namespace spec
(proxy/namespace/src/spec.rs) are serde structs; their `pub` fields are what
an operator can write. This script reads those structs (field names, serde
renames, `skip`, `flatten`, `rename_all`), walks them from the root struct to
build every field path (`limits.max_key_bytes`, `plugins.<name>.command`,
`spec.needs.ttl`), and compares the result with the field tables of the
reference pages:

- a field in the code that the page does not document is an error;
- a field the page documents that the code no longer has is an error;
- every row needs a type, a default and a meaning;
- a field whose type is an enum must name each of its values in its row.

A field table is a Markdown table whose first header cell is `field`; its
first column holds the field path as inline code.

It also checks what is not a struct field:

- reserved fields: a field that proxy/namespace/src/validate.rs knows (its
  `*_FIELDS` lists) but spec.rs does not have is refused as "not available";
  the page must name it (`spec.schema`) and must not list it as a field. A
  field that spec.rs has but validate.rs does not know is an error too (the
  validator would reject it);
- the backend selection table on the namespace page (first header cell
  `rule`) against `RULES` and `FALLBACK` in proxy/src/control/select.rs: the
  same rules in the same order, the same `when` text, the same backend kinds;
- the API pages against proto/: every rpc of a service has a row in a call
  table (first header cell `call`) of its page, every row names an rpc that
  exists, and the row names every field of the rpc's request and response
  messages in backticks.

- the metrics: every metric the proxy registers (`proxy/src/metrics.rs`, and
  the state gauges of `proxy/src/health.rs`) has a row in the metrics table
  (first header cell `metric`) of docs-cms/operations/observability.md, every
  row names a metric that exists, and every `prism_*` metric the operator's
  kit (proxy/deploy/observability: alert rules, Grafana dashboard) uses is one
  of them.

    uv run tooling/check_reference.py
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One Rust file, its root struct, and the page that documents it."""

    source: Path
    root: str
    page: Path


TARGETS = [
    Target(ROOT / "proxy/src/config.rs", "Config", ROOT / "docs-cms/reference/proxy-config.md"),
    Target(ROOT / "proxy/namespace/src/spec.rs", "NamespaceDoc", ROOT / "docs-cms/reference/namespace-spec.md"),
]
NAMESPACE = TARGETS[1]
VALIDATE_RS = ROOT / "proxy/namespace/src/validate.rs"
SELECT_RS = ROOT / "proxy/src/control/select.rs"


@dataclass(frozen=True)
class ApiTarget:
    """A gRPC service and the page whose call table documents it."""

    proto: Path
    service: str
    page: Path


API_TARGETS = [
    ApiTarget(ROOT / "proto/prism/keyvalue/v1/keyvalue.proto", "KeyValueService", ROOT / "docs-cms/reference/keyvalue-api.md"),
    ApiTarget(ROOT / "proto/prism/admin/v1/admin.proto", "AdminService", ROOT / "docs-cms/reference/admin-api.md"),
    ApiTarget(ROOT / "proto/prism/plugin/v1/plugin.proto", "Lifecycle", ROOT / "docs-cms/reference/plugin-protocol.md"),
    ApiTarget(ROOT / "proto/prism/timeseries/v1/timeseries.proto", "TimeSeriesService", ROOT / "docs-cms/reference/timeseries-api.md"),
    ApiTarget(ROOT / "proto/prism/graph/v1/graph.proto", "GraphService", ROOT / "docs-cms/reference/graph-api.md"),
]

# ---------------------------------------------------------------------------
# Rust side
# ---------------------------------------------------------------------------


@dataclass
class RustField:
    rust_name: str
    name: str  # as written in YAML
    type: str
    line: int
    flatten: bool = False


@dataclass
class RustStruct:
    name: str
    fields: list[RustField] = field(default_factory=list)


@dataclass
class RustEnum:
    name: str
    values: list[str] = field(default_factory=list)


def _strip_comments(text: str) -> str:
    """Blanks out `//` comments (keeping line numbers), leaving strings alone."""
    out = []
    for line in text.split("\n"):
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == "\\" and in_str:
                i += 2
                continue
            if c == '"':
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


def _body(text: str, open_brace: int) -> tuple[str, int]:
    """The text between the brace at `open_brace` and its match, and the end index."""
    depth = 0
    for i in range(open_brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : i], i
    raise ValueError("unbalanced braces")


_ITEM = re.compile(
    r"(?P<attrs>(?:#\[[^\]]*(?:\[[^\]]*\][^\]]*)*\]\s*)*)"
    r"pub\s+(?P<kind>struct|enum)\s+(?P<name>\w+)(?:<[^>{]*>)?\s*\{",
)
_SERDE_ATTR = re.compile(r"#\[serde\((?P<args>.*?)\)\]\s*$", re.S)


def _serde_args(attrs: str) -> str:
    """All `#[serde(...)]` arguments of an attribute block, joined."""
    return " ".join(m.group(1) for m in re.finditer(r"#\[serde\((.*?)\)\]", attrs, re.S))


def _derives_deserialize(attrs: str) -> bool:
    return any("Deserialize" in m.group(1) for m in re.finditer(r"#\[derive\((.*?)\)\]", attrs, re.S))


def _rename_all(case: str | None, name: str) -> str:
    if not case:
        return name
    words = name.split("_") if "_" in name or name.islower() else re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", name)
    lower = [w.lower() for w in words if w]
    return {
        "lowercase": "".join(lower),
        "UPPERCASE": "".join(lower).upper(),
        "snake_case": "_".join(lower),
        "SCREAMING_SNAKE_CASE": "_".join(lower).upper(),
        "kebab-case": "-".join(lower),
        "SCREAMING-KEBAB-CASE": "-".join(lower).upper(),
        "camelCase": lower[0] + "".join(w.capitalize() for w in lower[1:]),
        "PascalCase": "".join(w.capitalize() for w in lower),
    }.get(case, name)


def parse_rust(text: str) -> tuple[dict[str, RustStruct], dict[str, RustEnum]]:
    """The deserializable structs and enums of a Rust source file."""
    clean = _strip_comments(text)
    structs: dict[str, RustStruct] = {}
    enums: dict[str, RustEnum] = {}
    for m in _ITEM.finditer(clean):
        attrs = m.group("attrs")
        if not _derives_deserialize(attrs):
            continue
        serde = _serde_args(attrs)
        case = re.search(r'rename_all\s*=\s*"([^"]+)"', serde)
        case_name = case.group(1) if case else None
        body, _ = _body(clean, m.end() - 1)
        body_offset = clean.count("\n", 0, m.end())
        if m.group("kind") == "struct":
            structs[m.group("name")] = _parse_struct(m.group("name"), body, body_offset, case_name)
        else:
            enums[m.group("name")] = _parse_enum(m.group("name"), body, case_name)
    return structs, enums


_FIELD = re.compile(
    r"(?P<attrs>(?:#\[[^\]]*(?:\[[^\]]*\][^\]]*)*\]\s*)*)"
    r"pub\s+(?:\([^)]*\)\s+)?(?P<name>r#\w+|\w+)\s*:\s*(?P<type>.+?)\s*$",
    re.S,
)


def _parse_struct(name: str, body: str, line_offset: int, case: str | None) -> RustStruct:
    struct = RustStruct(name)
    # Split at top-level commas so that generic types keep their commas.
    depth = 0
    start = 0
    pieces = []
    for i, c in enumerate(body):
        if c in "<([":
            depth += 1
        elif c in ">)]":
            depth -= 1
        elif c == "," and depth == 0:
            pieces.append((start, body[start:i]))
            start = i + 1
    pieces.append((start, body[start:]))
    for offset, piece in pieces:
        m = _FIELD.search(piece.strip())
        if not m or not piece.strip():
            continue
        serde = _serde_args(m.group("attrs"))
        if re.search(r"\bskip(_deserializing)?\b(?!_serializing)", serde):
            continue
        rust_name = m.group("name").removeprefix("r#")
        rename = re.search(r'\brename\s*=\s*"([^"]+)"', serde)
        yaml_name = rename.group(1) if rename else _rename_all(case, rust_name)
        lead = len(piece) - len(piece.lstrip())
        line = line_offset + body.count("\n", 0, offset + lead + piece.strip().find("pub")) + 1
        struct.fields.append(
            RustField(
                rust_name=rust_name,
                name=yaml_name,
                type=" ".join(m.group("type").split()),
                line=line,
                flatten=bool(re.search(r"\bflatten\b", serde)),
            )
        )
    return struct


def _parse_enum(name: str, body: str, case: str | None) -> RustEnum:
    enum = RustEnum(name)
    for piece in re.split(r",", body):
        piece = re.sub(r"#\[[^\]]*\]", "", piece).strip()
        m = re.match(r"^([A-Z]\w*)\s*$", piece)
        if m:
            enum.values.append(_rename_all(case, m.group(1)))
    return enum


_IDENT = re.compile(r"[A-Za-z_]\w*")


def _inner_types(type_: str) -> list[str]:
    return _IDENT.findall(type_)


def field_paths(
    structs: dict[str, RustStruct], enums: dict[str, RustEnum], root: str
) -> tuple[dict[str, RustField], dict[str, list[str]], set[str]]:
    """Every documented path from `root`, the enum values per path, and the structs reached."""
    paths: dict[str, RustField] = {}
    values: dict[str, list[str]] = {}
    reached: set[str] = set()

    def walk(struct_name: str, prefix: str, stack: tuple[str, ...]) -> None:
        if struct_name in stack:
            return
        reached.add(struct_name)
        for f in structs[struct_name].fields:
            idents = _inner_types(f.type)
            nested = [t for t in idents if t in structs]
            if f.flatten and nested:
                walk(nested[-1], prefix, stack + (struct_name,))
                continue
            path = prefix + f.name
            paths[path] = f
            enum_names = [t for t in idents if t in enums]
            if enum_names:
                values[path] = enums[enum_names[-1]].values
            if nested:
                child = nested[-1]
                is_map = any(t in ("BTreeMap", "HashMap", "IndexMap") for t in idents)
                is_seq = "Vec" in idents
                sub = path + (".<name>" if is_map else "[]" if is_seq else "") + "."
                walk(child, sub, stack + (struct_name,))

    walk(root, "", ())
    return paths, values, reached


# ---------------------------------------------------------------------------
# Page side
# ---------------------------------------------------------------------------


@dataclass
class Row:
    path: str
    cells: list[str]
    line: int


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    cells, cur, in_code = [], [], False
    i = 0
    while i < len(s):
        c = s[i]
        if c == "`":
            in_code = not in_code
        if c == "\\" and i + 1 < len(s) and s[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if c == "|" and not in_code:
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


def page_rows(text: str) -> tuple[list[Row], list[str]]:
    """Rows of every field table on a page (outside code fences), and problems with them."""
    rows: list[Row] = []
    problems: list[str] = []
    lines = text.split("\n")
    fence = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            i += 1
            continue
        if fence is None and line.lstrip().startswith("|") and i + 1 < len(lines):
            header = _cells(line)
            sep = lines[i + 1].strip()
            if re.match(r"^\|?\s*:?-{2,}", sep) and header and header[0].lower() == "field":
                width = len(header)
                j = i + 2
                while j < len(lines) and lines[j].lstrip().startswith("|"):
                    cells = _cells(lines[j])
                    code = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
                    if not code:
                        problems.append(f"line {j + 1}: the first cell of a field table must be a field path in backticks")
                    else:
                        if len(cells) != width:
                            problems.append(f"line {j + 1}: {len(cells)} cells, the header has {width}")
                        rows.append(Row(code.group(1), cells, j + 1))
                    j += 1
                i = j
                continue
        i += 1
    return rows, problems


def tables(text: str, first_header: str) -> list[tuple[list[str], list[Row]]]:
    """Every table (outside code fences) whose first header cell is `first_header`: its header and rows."""
    found = []
    lines = text.split("\n")
    fence = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
        elif fence is None and line.lstrip().startswith("|") and i + 1 < len(lines):
            header = _cells(line)
            if re.match(r"^\|?\s*:?-{2,}", lines[i + 1].strip()) and header and header[0].lower() == first_header:
                rows = []
                j = i + 2
                while j < len(lines) and lines[j].lstrip().startswith("|"):
                    cells = _cells(lines[j])
                    rows.append(Row(cells[0].strip("`") if cells else "", cells, j + 1))
                    j += 1
                found.append((header, rows))
                i = j
                continue
        i += 1
    return found


def _code_words(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


def check_target(source_text: str, page_text: str, root: str, source: str, page: str) -> list[str]:
    """Every disagreement between a Rust file and its reference page."""
    errors: list[str] = []
    structs, enums = parse_rust(source_text)
    if root not in structs:
        return [f"{source}: no deserializable struct {root!r} found; update tooling/check_reference.py"]
    paths, values, reached = field_paths(structs, enums, root)
    for name in sorted(set(structs) - reached):
        errors.append(
            f"{source}: struct {name} derives Deserialize but is not reachable from {root}; "
            "document it or teach tooling/check_reference.py where it belongs"
        )
    rows, problems = page_rows(page_text)
    errors += [f"{page}:{p}" for p in problems]
    if not rows:
        errors.append(f"{page}: no field table found (a table whose first header cell is 'field')")
    seen: dict[str, Row] = {}
    for row in rows:
        if row.path in seen:
            errors.append(f"{page}:{row.line}: `{row.path}` is documented twice (also line {seen[row.path].line})")
            continue
        seen[row.path] = row
        if row.path not in paths:
            errors.append(
                f"{page}:{row.line}: `{row.path}` is documented but {source} has no such field"
            )
            continue
        if len(row.cells) < 4 or any(not c.strip() for c in row.cells[1:4]):
            errors.append(f"{page}:{row.line}: `{row.path}` needs a type, a default and a meaning")
        text = " ".join(row.cells[1:])
        for value in values.get(row.path, []):
            if f"`{value}`" not in text:
                errors.append(f"{page}:{row.line}: `{row.path}` does not name the value `{value}`")
    for path, f in paths.items():
        if path not in seen:
            errors.append(
                f"{page}: field `{path}` ({source}:{f.line}, `{f.rust_name}: {f.type}`) is not documented"
            )
    return errors


_FIELD_LIST = re.compile(r"pub\s+const\s+(?P<name>[A-Z_]+)_FIELDS\s*:\s*&\[&str\]\s*=\s*&\[(?P<items>[^\]]*)\]", re.S)


def validator_fields(validate_text: str, paths: dict[str, RustField]) -> tuple[dict[str, int], list[str]]:
    """The field paths validate.rs knows (with their line), from its `<SECTION>_FIELDS` lists.

    `DOCUMENT_FIELDS` are the top-level fields; `SPEC_FIELDS` are the fields of
    the mapping at the path whose last segment is `spec`, and so on.
    """
    known: dict[str, int] = {}
    errors: list[str] = []
    clean = _strip_comments(validate_text)
    for m in _FIELD_LIST.finditer(clean):
        section = m.group("name").lower()
        line = clean.count("\n", 0, m.start()) + 1
        if section == "document":
            prefix = ""
        else:
            parents = [p for p in paths if p.split(".")[-1] == section]
            if len(parents) > 1:
                # A list and a mapping may share a name (`spec.access.pii`, `spec.pii`); fields are listed for
                # the mapping.
                parents = [p for p in parents if any(q.startswith(p + ".") for q in paths)] or parents
            if len(parents) != 1:
                errors.append(
                    f"{VALIDATE_RS.relative_to(ROOT).as_posix()}:{line}: cannot tell which mapping "
                    f"{m.group('name')}_FIELDS lists (fields named {section!r}: {parents or 'none'})"
                )
                continue
            prefix = parents[0] + "."
        for name in re.findall(r'"([^"]+)"', m.group("items")):
            known[prefix + name] = line
    return known, errors


def check_reserved(spec_text: str, validate_text: str, page_text: str, root: str, page: str) -> list[str]:
    """Fields validate.rs accepts by name but spec.rs lacks must be named on the page as reserved."""
    structs, enums = parse_rust(spec_text)
    if root not in structs:
        return []  # reported by check_target
    paths, _, _ = field_paths(structs, enums, root)
    known, errors = validator_fields(validate_text, paths)
    if not known:
        return [f"{VALIDATE_RS.relative_to(ROOT).as_posix()}: no *_FIELDS lists found; update tooling/check_reference.py"]
    source = VALIDATE_RS.relative_to(ROOT).as_posix()
    prose = _outside_fences(page_text)
    for path, line in sorted(known.items()):
        if path in paths:
            continue
        if f"`{path}`" not in prose:
            errors.append(
                f"{page}: `{path}` is known to {source}:{line} but not a field of the spec (it is refused as "
                "not available); name it on the page as reserved"
            )
    # Paths inside free-form maps (labels) are not checked by name.
    checked_parents = {p.rpartition(".")[0] for p in known}
    for path, f in paths.items():
        if path.rpartition(".")[0] in checked_parents and path not in known:
            errors.append(
                f"{source}: `{path}` (spec.rs:{f.line}) is a field of the spec but the validator does not know it, "
                "so every document that sets it is refused"
            )
    return errors


def _prose_lines(text: str) -> list[tuple[int, str | None]]:
    """Each line of a page with its number (1-based); `None` in place of a code fence's lines (markers included)."""
    out: list[tuple[int, str | None]] = []
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            out.append((n, None))
        else:
            out.append((n, line if fence is None else None))
    return out


def _outside_fences(text: str) -> str:
    return "\n".join(line for _, line in _prose_lines(text) if line is not None)


_RULE = re.compile(r'when:\s*"(?P<when>(?:[^"\\]|\\.)*)".*?prefer:\s*&\[(?P<prefer>[^\]]*)\]', re.S)


def selection_rules(select_text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """`RULES` (condition text and preferred kinds, in order) and `FALLBACK` from select.rs."""
    clean = _strip_comments(select_text)
    rules_m = re.search(r"pub\s+const\s+RULES\s*:[^=]*=\s*&\[", clean)
    fallback_m = re.search(r"pub\s+const\s+FALLBACK\s*:[^=]*=\s*&\[(?P<items>[^\]]*)\]", clean)
    if not rules_m or not fallback_m:
        raise ValueError("RULES or FALLBACK not found")
    depth, end = 1, rules_m.end()
    while depth and end < len(clean):
        depth += {"[": 1, "]": -1}.get(clean[end], 0)
        end += 1
    body = clean[rules_m.end() : end - 1]
    rules = [(m.group("when"), re.findall(r'"([^"]+)"', m.group("prefer"))) for m in _RULE.finditer(body)]
    return rules, re.findall(r'"([^"]+)"', fallback_m.group("items"))


def check_selection(select_text: str, page_text: str, page: str) -> list[str]:
    source = SELECT_RS.relative_to(ROOT).as_posix()
    try:
        rules, fallback = selection_rules(select_text)
    except ValueError as e:
        return [f"{source}: {e}; update tooling/check_reference.py"]
    found = tables(page_text, "rule")
    if len(found) != 1:
        return [f"{page}: expected one selection table (first header cell 'rule'), found {len(found)}"]
    _, rows = found[0]
    errors: list[str] = []
    expected = [(str(i + 1), when, prefer) for i, (when, prefer) in enumerate(rules)]
    expected.append(("fallback", None, fallback))
    for i, (label, when, prefer) in enumerate(expected):
        if i >= len(rows):
            what = f"rule {label} ({when!r})" if when else "the fallback"
            errors.append(f"{page}: the selection table lacks {what} from {source}")
            continue
        row = rows[i]
        if row.path != label:
            errors.append(f"{page}:{row.line}: expected the row {label!r} here, found {row.path!r}")
            continue
        if len(row.cells) < 3:
            errors.append(f"{page}:{row.line}: a selection row needs a rule, a condition and backend kinds")
            continue
        if when is not None and row.cells[1].strip() != when:
            errors.append(f"{page}:{row.line}: rule {label} reads {row.cells[1].strip()!r}; {source} says {when!r}")
        kinds = _code_words(row.cells[2])
        if kinds != prefer:
            errors.append(f"{page}:{row.line}: rule {label} prefers {kinds}; {source} says {prefer}")
    for row in rows[len(expected) :]:
        errors.append(f"{page}:{row.line}: row {row.path!r} is not a rule of {source}")
    return errors


# ---------------------------------------------------------------------------
# Protos
# ---------------------------------------------------------------------------


def _proto_strip(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_proto(text: str) -> tuple[dict[str, list[tuple[str, str, str, int]]], dict[str, list[str]]]:
    """Services (rpc name, request type, response type, line) and messages (field names) of a .proto file."""
    clean = _proto_strip(text)
    services: dict[str, list[tuple[str, str, str, int]]] = {}
    for m in re.finditer(r"\bservice\s+(\w+)\s*\{", clean):
        body, _ = _body(clean, m.end() - 1)
        offset = clean.count("\n", 0, m.end())
        services[m.group(1)] = [
            (r.group(1), r.group(2).split(".")[-1], r.group(3).split(".")[-1], offset + body.count("\n", 0, r.start()) + 1)
            for r in re.finditer(r"\brpc\s+(\w+)\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)", body)
        ]
    messages: dict[str, list[str]] = {}

    def walk(text: str) -> None:
        for m in re.finditer(r"\bmessage\s+(\w+)\s*\{", text):
            body, _ = _body(text, m.end() - 1)
            # Only this message's own fields: drop nested messages, enums and oneof wrappers' braces.
            own = body
            for nested in re.finditer(r"\b(?:message|enum)\s+\w+\s*\{", body):
                inner, _ = _body(body, nested.end() - 1)
                own = own.replace(inner, "")
            messages.setdefault(m.group(1), re.findall(
                r"(?:^|;)\s*(?:(?:optional|repeated)\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+", own, re.M
            ))
    walk(clean)
    return services, messages


def check_api(proto_text: str, service: str, page_text: str, source: str, page: str) -> list[str]:
    services, messages = parse_proto(proto_text)
    if service not in services:
        return [f"{source}: no service {service}; update tooling/check_reference.py"]
    rpcs = {name: (req, resp, line) for name, req, resp, line in services[service]}
    rows = [row for _, table_rows in tables(page_text, "call") for row in table_rows]
    if not rows:
        return [f"{page}: no call table (a table whose first header cell is 'call') for {service}"]
    errors: list[str] = []
    seen: set[str] = set()
    for row in rows:
        if row.path not in rpcs:
            errors.append(f"{page}:{row.line}: `{row.path}` is documented but {service} in {source} has no such rpc")
            continue
        seen.add(row.path)
        req, resp, _ = rpcs[row.path]
        named = set(_code_words(" | ".join(row.cells[1:])))
        for kind, message in (("request", req), ("response", resp)):
            if message not in messages:
                continue  # defined in another file
            for f in messages[message]:
                if f not in named:
                    errors.append(
                        f"{page}:{row.line}: `{row.path}` does not name the {kind} field `{f}` ({message} in {source})"
                    )
    for name, (_, _, line) in rpcs.items():
        if name not in seen:
            errors.append(f"{page}: rpc `{name}` ({source}:{line}) of {service} is not in a call table")
    return errors


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """Every fenced code block of a page: (line of the opening fence, its info string, content)."""
    blocks: list[tuple[int, str, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        start, fence, info = i + 1, m.group(1), m.group(2).strip()
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((start, info, "\n".join(body)))
        i += 1
    return blocks


def protobuf_blocks(text: str) -> list[tuple[int, str]]:
    """The ```protobuf fenced blocks of a page: (line of the opening fence, content)."""
    return [(line, body) for line, info, body in fenced_blocks(text) if re.match(r"(proto|protobuf)\b", info)]


def check_excerpts(proto_text: str, page_text: str, source: str, page: str) -> list[str]:
    """Every service and message shown in a page's protobuf blocks is the one in the proto: same rpcs (names,
    request and response types) and same fields, in order. A block may abbreviate (one line per message, no
    comments) but never shows a field or rpc the proto does not have, nor leaves one out."""
    services, messages = parse_proto(proto_text)
    errors: list[str] = []
    for line, block in protobuf_blocks(page_text):
        shown_services, shown_messages = parse_proto(block)
        for name, rpcs in shown_services.items():
            if name not in services:
                errors.append(f"{page}:{line}: the protobuf block shows service {name}, which {source} does not define")
                continue
            shown = [(r, req, resp) for r, req, resp, _ in rpcs]
            actual = [(r, req, resp) for r, req, resp, _ in services[name]]
            if shown != actual:
                errors.append(
                    f"{page}:{line}: service {name} differs from {source}: shows "
                    f"{[r for r, _, _ in shown]}, the proto has {[r for r, _, _ in actual]} (or other types)"
                )
        for name, fields in shown_messages.items():
            if name not in messages:
                errors.append(f"{page}:{line}: the protobuf block shows message {name}, which {source} does not define")
            elif fields != messages[name]:
                errors.append(
                    f"{page}:{line}: message {name} differs from {source}: shows fields {fields}, "
                    f"the proto has {messages[name]}"
                )
    return errors


def check_included_files(pages: dict[str, str], root: Path = ROOT) -> list[str]:
    """A fenced block titled with a file of the repository (```rust title="proto/examples/x.rs") shows that whole
    file, as it is: example code on a page is the code CI builds and runs."""
    errors: list[str] = []
    for page, text in sorted(pages.items()):
        for start, info, body in fenced_blocks(text):
            m = re.fullmatch(r'\w+\s+title="([^"]+)"', info)
            if not m:
                continue
            name = m.group(1)
            source = root / name
            if source.suffix == ".proto" or not source.is_file():
                continue  # proto excerpts are checked by check_excerpts; other titles are labels
            if body.rstrip("\n") != source.read_text(encoding="utf-8").rstrip("\n"):
                errors.append(f"docs-cms/{page}:{start}: the block titled {name} is not that file's content; copy it again")
    return errors


METRICS_RS = ROOT / "proxy/src/metrics.rs"
HEALTH_RS = ROOT / "proxy/src/health.rs"
OBSERVABILITY_PAGE = ROOT / "docs-cms/operations/observability.md"
KIT = ROOT / "proxy/deploy/observability"


def registered_metrics(metrics_rs: str, health_rs: str) -> dict[str, str]:
    """Exposed metric names (with `prism_` and, for counters, `_total`) and their type."""
    found: dict[str, str] = {}
    # registry.register("name", "help", family_or_metric)
    for m in re.finditer(r'registry\.register\(\s*"([a-z_]+)",\s*"[^"]*",\s*([a-z_]+)', metrics_rs):
        name, var = m.group(1), m.group(2)
        decl = re.search(rf"\b{var}:\s*([A-Za-z<>_, ]+),", metrics_rs) or re.search(rf"let {var} = ([A-Za-z:<>_, ]+)", metrics_rs)
        kind = decl.group(1) if decl else ""
        if "Histogram" in kind or name.endswith("_seconds"):
            found[f"prism_{name}"] = "histogram"
        elif "Counter" in kind:
            found[f"prism_{name}_total"] = "counter"
        else:
            found[f"prism_{name}"] = "gauge"
    # The state collector: gauge(&mut encoder, "name", ...) and
    # encode_descriptor("name", ..., MetricType::X)
    for m in re.finditer(r'gauge\(\s*&mut encoder,\s*"([a-z_]+)"', health_rs):
        found[f"prism_{m.group(1)}"] = "gauge"
    for m in re.finditer(r'encode_descriptor\(\s*"([a-z_]+)",[^;]*?MetricType::(Gauge|Counter)', health_rs, re.S):
        name, kind = m.group(1), m.group(2).lower()
        found[f"prism_{name}_total" if kind == "counter" else f"prism_{name}"] = kind
    return found


def documented_metrics(page_text: str) -> dict[str, str]:
    """Metric name -> type from the table whose first header cell is `metric`."""
    rows: dict[str, str] = {}
    in_table = False
    for line in page_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.strip().startswith("|") else []
        if not cells:
            in_table = False
            continue
        if cells[0] == "metric":
            in_table = True
            continue
        if in_table and not set(cells[0]) <= set("-: "):
            name = re.search(r"`([a-z_]+)", cells[0])
            if name:
                rows[name.group(1)] = cells[1] if len(cells) > 1 else ""
    return rows


def kit_metrics(texts: list[str]) -> set[str]:
    """`prism_*` metric names the kit's expressions use, without `_bucket`, `_count`, `_sum`."""
    names = set()
    for text in texts:
        for m in re.finditer(r"\bprism_[a-z_]+", text):
            name = re.sub(r"_(bucket|count|sum)$", "", m.group(0))
            names.add(name)
    return names


def check_metrics(metrics_rs: str, health_rs: str, page_text: str, kit: list[str], page: str) -> list[str]:
    errors = []
    code = registered_metrics(metrics_rs, health_rs)
    docs = documented_metrics(page_text)
    if not code:
        errors.append("no metric found in proxy/src/metrics.rs: the parser needs updating")
    for name, kind in code.items():
        if name not in docs:
            errors.append(f"{page}: metric {name} ({kind}) is not documented")
        elif kind not in docs[name]:
            errors.append(f"{page}: metric {name} is a {kind}, the page says {docs[name]!r}")
    for name in docs:
        if name not in code:
            errors.append(f"{page}: documents metric {name}, which the proxy does not expose")
    for name in sorted(kit_metrics(kit)):
        if name not in code:
            errors.append(f"proxy/deploy/observability: uses metric {name}, which the proxy does not expose")
    return errors


# Features Prism ships: a page that calls one of them planned, unbuilt or not
# enforced is out of date (issue 17: pages said TLS, authentication, access
# control, TimeSeries and Graph were planned long after they shipped).
SHIPPED: list[tuple[str, str]] = [
    ("TLS", r"\b(m?TLS|mutual TLS)\b"),
    ("client authentication", r"\b(client authentication|JWT|OAuth2?|bearer tokens?)\b"),
    ("access control", r"\b(access control|authori[sz]ation|spec\.access)\b"),
    ("the audit log", r"\baudit\b"),
    ("TimeSeries", r"\b(TimeSeries|timeseries)\b"),
    ("Graph", r"\b(Graph|graph namespaces?)\b"),
    ("PII handling", r"\b(PII|masking|encrypt(ion|ed)?)\b"),
    ("shadow traffic", r"\bshadow\b"),
    ("migrations", r"\bmigrat(e|ion|ions)\b"),
    ("metrics and traces", r"\b(Prometheus|OpenTelemetry|metrics|traces|tracing)\b"),
    ("the PostgreSQL registry", r"\bPostgreSQL registry\b"),
]

# What a page says of a feature that is not there yet.
UNBUILT = re.compile(
    r"\b(planned|not yet (built|implemented|supported|available|enforced|wired)|coming soon|future (release|version)s?"
    r"|on the roadmap|will be (added|built|supported|implemented)|is not (built|implemented) yet|not enforced)\b",
    re.IGNORECASE,
)

# Pages that may speak of the past or of plans: history and decisions.
HISTORY = ("changelog.md", "adr/")


def check_shipped(pages: dict[str, str]) -> list[str]:
    """Sentences that call a shipped feature planned or unbuilt.

    "not enforced" is true in dev mode (no client authentication), so a
    sentence that says so is fine.
    """
    errors = []
    for page, text in sorted(pages.items()):
        if any(h in page for h in HISTORY):
            continue
        # A sentence such as "The following are planned:" speaks of the list after it.
        listed: str | None = None
        for n, paragraph in _paragraphs(text):
            is_item = re.match(r"^\s*([-*+]|\d+\.)\s", paragraph) is not None
            if listed is not None and not is_item:
                listed = None
            # A table row is one statement; prose is judged sentence by sentence.
            row = paragraph.lstrip().startswith("|")
            for sentence in [paragraph] if row else re.split(r"(?<=[.;!?])\s+", paragraph):
                said = UNBUILT.search(sentence)
                word = said.group(0) if said else listed
                if word is None:
                    continue
                if word.lower() == "not enforced" and "dev mode" in paragraph.lower():
                    continue
                if said and paragraph.rstrip().endswith(":"):
                    listed = said.group(0)
                for feature, pattern in SHIPPED:
                    if re.search(pattern, sentence):
                        errors.append(
                            f"{page}:{n}: calls {feature} {word!r}, but it ships; make the page true: "
                            f"{sentence.strip()[:160]}"
                        )
                        break
    return errors


def _paragraphs(text: str) -> list[tuple[int, str]]:
    """The prose of a page outside code fences as (first line, text): lines
    joined until a blank line, each table row alone."""
    out: list[tuple[int, str]] = []
    start, lines = 0, []

    def flush() -> None:
        if lines:
            out.append((start, " ".join(lines)))
            lines.clear()

    for n, line in _prose_lines(text):
        if line is None:
            flush()
            continue
        if re.match(r"^\s*([-*+]|\d+\.)\s", line):
            flush()  # each list item on its own
        if not line.strip() or line.lstrip().startswith("|"):
            flush()
            if line.strip():
                out.append((n, line))
            continue
        if not lines:
            start = n
        lines.append(line.strip())
    flush()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the field paths found in the code and exit")
    args = parser.parse_args(argv)
    errors: list[str] = []
    for target in TARGETS:
        source = target.source.relative_to(ROOT).as_posix()
        page = target.page.relative_to(ROOT).as_posix()
        source_text = target.source.read_text(encoding="utf-8")
        if args.list:
            structs, enums = parse_rust(source_text)
            paths, values, _ = field_paths(structs, enums, target.root)
            print(f"{source} ({target.root}):")
            for path, f in paths.items():
                extra = f"  [{', '.join(values[path])}]" if path in values else ""
                print(f"  {path}: {f.type}{extra}")
            continue
        if not target.page.exists():
            errors.append(f"{page}: missing (it documents {source})")
            continue
        errors += check_target(source_text, target.page.read_text(encoding="utf-8"), target.root, source, page)
    if args.list:
        return 0
    if NAMESPACE.page.exists():
        page_text = NAMESPACE.page.read_text(encoding="utf-8")
        page = NAMESPACE.page.relative_to(ROOT).as_posix()
        errors += check_reserved(
            NAMESPACE.source.read_text(encoding="utf-8"), VALIDATE_RS.read_text(encoding="utf-8"), page_text,
            NAMESPACE.root, page,
        )
        errors += check_selection(SELECT_RS.read_text(encoding="utf-8"), page_text, page)
    for api in API_TARGETS:
        source = api.proto.relative_to(ROOT).as_posix()
        page = api.page.relative_to(ROOT).as_posix()
        if not api.page.exists():
            errors.append(f"{page}: missing (it documents {api.service} of {source})")
            continue
        proto_text, page_text = api.proto.read_text(encoding="utf-8"), api.page.read_text(encoding="utf-8")
        errors += check_api(proto_text, api.service, page_text, source, page)
        errors += check_excerpts(proto_text, page_text, source, page)
    if OBSERVABILITY_PAGE.exists():
        kit = [p.read_text(encoding="utf-8") for p in sorted(KIT.glob("*")) if p.is_file() and ".test." not in p.name]
        errors += check_metrics(
            METRICS_RS.read_text(encoding="utf-8"), HEALTH_RS.read_text(encoding="utf-8"),
            OBSERVABILITY_PAGE.read_text(encoding="utf-8"), kit, OBSERVABILITY_PAGE.relative_to(ROOT).as_posix(),
        )
    else:
        errors.append("docs-cms/operations/observability.md: missing (it documents the metrics)")
    docs = ROOT / "docs-cms"
    pages = {p.relative_to(docs).as_posix(): p.read_text(encoding="utf-8") for p in docs.rglob("*.md")}
    errors += check_shipped(pages)
    errors += check_included_files(pages)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"check_reference: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(
        f"check_reference: {len(TARGETS)} field references, the reserved fields, the selection table and "
        f"{len(API_TARGETS)} API pages (call tables and proto excerpts) and the metrics match the code; example files on pages are current; no page calls a shipped feature planned"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
