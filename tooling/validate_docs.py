#!/usr/bin/env python3
"""Validate the documentation sources in docs-cms/ before the site is built.

Checks every Markdown file (`*.md`, `*.mdx`) for:

- frontmatter: present, valid YAML, and the schema of its document type
  (ADR: id, title, status, date, tags, and sidebar_label "ADR-NNN — title";
  RFC and every other page: id, title,
  author or team, created, updated, tags), with no unknown keys;
- internal links (Markdown links, reference definitions, `href`/`src`
  attributes) that resolve: to an existing page or file inside docs-cms, to a
  heading anchor that exists, or to a site route such as `/docs/<id>`;
- fenced code blocks that name their language;
- characters that break MDX outside code: `{` (an expression), `<` that is not
  a known HTML tag (a JSX tag), HTML comments.

Every problem is printed as `FILE:LINE: message`; the exit status is 1 when
there is any.

    uv run tooling/validate_docs.py             # all of docs-cms/
    uv run tooling/validate_docs.py FILE...     # some files (links still resolve against all of docs-cms/)
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs-cms"
SITE = ROOT / "docusaurus"
# Where the docs plugin serves docs-cms/ (routeBasePath in docusaurus.config.js).
ROUTE_BASE = "/docs"

# ---------------------------------------------------------------------------
# Frontmatter schema
# ---------------------------------------------------------------------------

ADR_STATUSES = ("proposed", "accepted", "rejected", "deprecated", "superseded")
RFC_STATUSES = ("draft", "proposed", "accepted", "rejected", "implemented", "withdrawn")

# Frontmatter keys Docusaurus itself understands for a doc.
DOCUSAURUS_KEYS = {
    "id", "title", "description", "keywords", "image", "slug", "sidebar_label", "sidebar_position",
    "sidebar_class_name", "sidebar_key", "sidebar_custom_props", "displayed_sidebar", "hide_title",
    "hide_table_of_contents", "toc_min_heading_level", "toc_max_heading_level", "pagination_label",
    "pagination_next", "pagination_prev", "parse_number_prefixes", "custom_edit_url", "last_update",
    "draft", "unlisted", "tags", "format",
}


@dataclass(frozen=True)
class Schema:
    kind: str
    required: tuple[str, ...]
    optional: frozenset[str]
    # At least one of these keys must be present.
    one_of: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()


ADR = Schema(
    "ADR",
    required=("id", "title", "status", "date", "tags"),
    optional=frozenset({"deciders", "supersedes", "superseded_by", "author", "team"}),
    statuses=ADR_STATUSES,
)
RFC = Schema(
    "RFC",
    required=("id", "title", "created", "updated", "tags"),
    optional=frozenset({"author", "team", "status"}),
    one_of=("author", "team"),
    statuses=RFC_STATUSES,
)
PAGE = Schema(
    "guide",
    required=("id", "title", "created", "updated", "tags"),
    optional=frozenset({"author", "team"}),
    one_of=("author", "team"),
)

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
ADR_ID = re.compile(r"^adr-(\d{3})$")
RFC_ID = re.compile(r"^rfc-(\d{3})$")


def schema_for(rel: Path) -> Schema:
    """The document type of a file, from the directory it is in."""
    top = rel.parts[0] if len(rel.parts) > 1 else ""
    return {"adr": ADR, "rfcs": RFC}.get(top, PAGE)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(order=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Doc:
    """One parsed Markdown file."""

    path: Path  # absolute
    rel: Path  # relative to the docs root
    lines: list[str]
    body_start: int  # index of the first line after the frontmatter
    meta: dict = field(default_factory=dict)
    meta_lines: dict[str, int] = field(default_factory=dict)
    anchors: set[str] = field(default_factory=set)
    code: list[tuple[int, str]] = field(default_factory=list)  # lines inside code fences, filled by body_blocks

    @property
    def doc_id(self) -> str:
        """The Docusaurus doc id: directory plus frontmatter id (or file name)."""
        own = self.meta.get("id") if isinstance(self.meta.get("id"), str) else strip_number_prefix(self.rel.stem)
        parent = "/".join(strip_number_prefix(p) for p in self.rel.parent.parts)
        return f"{parent}/{own}" if parent else own

    @property
    def route(self) -> str:
        slug = self.meta.get("slug")
        if isinstance(slug, str):
            if slug.startswith("/"):
                return ROUTE_BASE + (slug.rstrip("/") if slug != "/" else "")
            parent = "/".join(strip_number_prefix(p) for p in self.rel.parent.parts)
            return f"{ROUTE_BASE}/{parent}/{slug}" if parent else f"{ROUTE_BASE}/{slug}"
        return f"{ROUTE_BASE}/{self.doc_id}"


def strip_number_prefix(name: str) -> str:
    # What the docs plugin does with `01-name` (but not with `001` alone).
    m = re.match(r"^\d+[-_.](.+)$", name)
    return m.group(1) if m else name


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def parse_doc(path: Path, root: Path, problems: list[Problem]) -> Doc:
    rel = path.relative_to(root)
    shown = display(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    doc = Doc(path=path, rel=rel, lines=lines, body_start=0)
    if not lines or lines[0].strip() != "---":
        problems.append(Problem(shown, 1, "no frontmatter: the file must start with a '---' line"))
        return doc
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        problems.append(Problem(shown, 1, "frontmatter is not closed by a '---' line"))
        return doc
    doc.body_start = end + 1
    source = "\n".join(lines[1:end])
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        meta = yaml.safe_load(source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 2 if mark else 1
        problems.append(Problem(shown, line, f"frontmatter is not valid YAML: {getattr(e, 'problem', e)}"))
        return doc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not isinstance(node, yaml.MappingNode):
        problems.append(Problem(shown, 2, "frontmatter must be a mapping of keys to values"))
        return doc
    doc.meta = meta
    for key_node, _ in node.value:
        doc.meta_lines[str(key_node.value)] = key_node.start_mark.line + 2
    return doc


def display(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------------
# Frontmatter checks
# ---------------------------------------------------------------------------


def _as_date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def check_frontmatter(doc: Doc, problems: list[Problem]) -> None:
    if not doc.body_start:
        return  # already reported
    shown = display(doc.path)
    schema = schema_for(doc.rel)
    meta = doc.meta

    def at(key: str) -> int:
        return doc.meta_lines.get(key, 1)

    def report(key: str, message: str) -> None:
        problems.append(Problem(shown, at(key), message))

    for key in schema.required:
        if key not in meta or meta[key] is None or meta[key] == "":
            problems.append(
                Problem(shown, 1, f"frontmatter: `{key}` is required for {schema.kind} documents "
                        f"(required: {', '.join(schema.required)})")
            )
    if schema.one_of and not any(meta.get(k) for k in schema.one_of):
        problems.append(
            Problem(shown, 1, f"frontmatter: {' or '.join(f'`{k}`' for k in schema.one_of)} is required "
                    f"for {schema.kind} documents")
        )
    allowed = set(schema.required) | schema.optional | DOCUSAURUS_KEYS
    for key in meta:
        if key not in allowed:
            report(key, f"frontmatter: unknown key `{key}` for {schema.kind} documents "
                        f"(known: {', '.join(sorted(set(schema.required) | schema.optional))}, "
                        "or a Docusaurus doc key)")

    value = meta.get("id")
    if value is not None:
        if not isinstance(value, str) or not SLUG.match(value):
            report("id", f"frontmatter: `id` {value!r} must be lowercase letters, digits and '-'")
        elif schema is ADR or schema is RFC:
            pattern, word = (ADR_ID, "adr") if schema is ADR else (RFC_ID, "rfc")
            m = pattern.match(value)
            number = re.match(r"^(\d+)", doc.rel.name)
            if not m:
                report("id", f"frontmatter: `id` {value!r} must be {word}-NNN (three digits)")
            elif not number or int(number.group(1)) != int(m.group(1)):
                report("id", f"frontmatter: `id` {value!r} does not match the file name {doc.rel.name!r} "
                             f"(expected {word}-NNN with NNN the file's number)")
    value = meta.get("title")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        report("title", "frontmatter: `title` must be a non-empty string")
    for key in ("author", "team"):
        value = meta.get(key)
        if value is not None and not (
            (isinstance(value, str) and value.strip())
            or (isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value))
        ):
            report(key, f"frontmatter: `{key}` must be a name or a list of names")
    value = meta.get("tags")
    if value is not None:
        if not isinstance(value, list) or not value:
            report("tags", "frontmatter: `tags` must be a non-empty list, e.g. [plugins, config]")
        else:
            for tag in value:
                if not isinstance(tag, str) or not SLUG.match(tag):
                    report("tags", f"frontmatter: tag {tag!r} must be lowercase letters, digits and '-'")
    dates = {}
    for key in ("date", "created", "updated"):
        if key in meta and meta[key] is not None:
            d = _as_date(meta[key])
            if d is None:
                report(key, f"frontmatter: `{key}` {meta[key]!r} is not a date (YYYY-MM-DD)")
            else:
                dates[key] = d
    if "created" in dates and "updated" in dates and dates["updated"] < dates["created"]:
        report("updated", "frontmatter: `updated` is before `created`")
    value = meta.get("status")
    if value is not None and schema.statuses and value not in schema.statuses:
        report("status", f"frontmatter: `status` {value!r} is not one of {', '.join(schema.statuses)}")
    if schema is ADR and isinstance(meta.get("id"), str) and isinstance(meta.get("title"), str):
        # The ADR index (and the sidebar) lists each record as "ADR-NNN — title".
        m = ADR_ID.match(meta["id"])
        expected = f"ADR-{m.group(1)} — {meta['title'].strip()}" if m else None
        if expected and meta.get("sidebar_label") != expected:
            report("sidebar_label" if "sidebar_label" in meta else "title",
                   f"frontmatter: `sidebar_label` must be {expected!r} (number and title, for the ADR index)")
    value = meta.get("sidebar_position")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        report("sidebar_position", "frontmatter: `sidebar_position` must be a number")


# ---------------------------------------------------------------------------
# Body: code fences, MDX hazards, links, anchors
# ---------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>\s*)(?P<marker>`{3,}|~{3,})(?P<info>.*)$")

# HTML elements that may appear as tags in a page; anything else after `<`
# is a JSX component (or a typo such as `Vec<String>`), which breaks the build.
HTML_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "figcaption",
    "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre",
    "s", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}
VOID_TAGS = {"br", "hr", "img"}
TAG = re.compile(r"<(?P<close>/)?(?P<name>[A-Za-z][\w.-]*)(?P<attrs>(?:\s+[^<>{}]*?)?)\s*(?P<self>/)?>")
MDX_COMMENT = re.compile(r"\{/\*.*?\*/\}")
HEADING_ID = re.compile(r"\s*\{#(?P<id>[A-Za-z0-9_-]+)\}\s*$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")


@dataclass
class Segment:
    """A run of prose (not code) with its starting line number (1-based)."""

    text: str
    line: int


def body_blocks(doc: Doc, problems: list[Problem]) -> tuple[list[Segment], list[tuple[int, int, str]]]:
    """Splits the body into prose paragraphs (code spans removed) and headings.

    Fenced code blocks are skipped (a missing language is reported); inline
    code spans are replaced with spaces of the same length so that columns
    and line numbers stay right.
    """
    shown = display(doc.path)
    paragraphs: list[Segment] = []
    headings: list[tuple[int, int, str]] = []
    fence: tuple[str, int] | None = None
    current: list[str] = []
    start = 0

    def flush() -> None:
        nonlocal current
        if current:
            paragraphs.append(Segment("\n".join(current), start))
            current = []

    for idx in range(doc.body_start, len(doc.lines)):
        line = doc.lines[idx]
        number = idx + 1
        m = FENCE.match(line)
        if fence is not None:
            if m and m.group("marker")[0] == fence[0][0] and len(m.group("marker")) >= len(fence[0]) \
                    and not m.group("info").strip():
                fence = None
            else:
                doc.code.append((number, line))
            continue
        if m and not (m.group("marker")[0] == "`" and "`" in m.group("info")):
            flush()
            fence = (m.group("marker"), number)
            if not m.group("info").strip():
                problems.append(Problem(shown, number, "code block without a language: write ```text, ```yaml, "
                                                       "```sh, ... after the opening fence"))
            continue
        if not line.strip():
            flush()
            continue
        h = HEADING.match(line)
        if h:
            flush()
            headings.append((number, len(h.group("hashes")), h.group("text")))
            text = HEADING_ID.sub("", line)  # `{#id}` is Docusaurus syntax, not an MDX expression
            paragraphs.append(Segment(text, number))
            continue
        if not current:
            start = number
        current.append(line)
    flush()
    if fence is not None:
        problems.append(Problem(shown, fence[1], f"code block opened with {fence[0]} is never closed"))
    return [Segment(strip_code_spans(p.text), p.line) for p in paragraphs], headings


def strip_code_spans(text: str) -> str:
    """Blanks inline code spans (CommonMark: a backtick run closed by a run of the same length)."""
    out = list(text)
    i = 0
    n = len(text)
    while i < n:
        if text[i] == "\\" and i + 1 < n:
            i += 2
            continue
        if text[i] != "`":
            i += 1
            continue
        j = i
        while j < n and text[j] == "`":
            j += 1
        run = j - i
        k = j
        close = -1
        while k < n:
            if text[k] == "`":
                e = k
                while e < n and text[e] == "`":
                    e += 1
                if e - k == run:
                    close = k
                    break
                k = e
            else:
                k += 1
        if close < 0:
            i = j
            continue
        for p in range(i, close + run):
            if out[p] != "\n":
                out[p] = " "
        i = close + run
    return "".join(out)


def line_of(seg: Segment, offset: int) -> int:
    return seg.line + seg.text.count("\n", 0, offset)


def check_mdx(doc: Doc, segments: list[Segment], problems: list[Problem]) -> None:
    shown = display(doc.path)
    for seg in segments:
        text = MDX_COMMENT.sub(lambda m: " " * len(m.group(0)), seg.text)
        for m in re.finditer(r"(?<!\\)\{", text):
            problems.append(Problem(shown, line_of(seg, m.start()),
                                    "`{` outside code starts an MDX expression: put it in `code` or escape it as \\{"))
        i = 0
        while True:
            i = text.find("<", i)
            if i < 0:
                break
            if i > 0 and text[i - 1] == "\\":
                i += 1
                continue
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt == "" or nxt.isspace():
                i += 1
                continue  # `a < b` is plain text in MDX
            if text.startswith("<!--", i):
                problems.append(Problem(shown, line_of(seg, i),
                                        "HTML comment: MDX does not allow `<!-- -->`; use {/* ... */}"))
                end = text.find("-->", i)
                i = end + 3 if end >= 0 else i + 4
                continue
            tag = TAG.match(text, i)
            if tag and tag.group("name").lower() in HTML_TAGS and tag.group("name") == tag.group("name").lower():
                name = tag.group("name")
                if name in VOID_TAGS and not tag.group("self") and not tag.group("close"):
                    problems.append(Problem(shown, line_of(seg, i),
                                            f"`<{name}>` must be self-closing in MDX: write `<{name} />`"))
                i = tag.end()
                continue
            snippet = text[i: i + 24].split("\n")[0]
            problems.append(Problem(shown, line_of(seg, i),
                                    f"`<` outside code breaks MDX (here: {snippet!r}): put it in `code`, "
                                    "escape it as \\<, or write &lt;"))
            i += 1


# github-slugger, which Docusaurus uses for heading anchors: lowercase, drop
# punctuation, spaces become '-'.
def slugify(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: keep the text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)
    text = text.strip().lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_" or ch == " " or cat[0] in ("L", "N") or cat in ("Mn", "Mc"):
            out.append("-" if ch == " " else ch)
    return "".join(out)


def collect_anchors(doc: Doc, headings: list[tuple[int, int, str]]) -> None:
    counts: dict[str, int] = {}
    for _, level, text in headings:
        m = HEADING_ID.search(text)
        if m:
            anchor = m.group("id")
        else:
            slug = slugify(text)
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            anchor = slug if n == 0 else f"{slug}-{n}"
        # The page title (h1) is rendered without an anchor.
        if level > 1:
            doc.anchors.add(anchor)
    body = "\n".join(doc.lines[doc.body_start:])
    for m in re.finditer(r"""\b(?:id|name)=["']([^"']+)["']""", body):
        doc.anchors.add(m.group(1))


INLINE_LINK = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s+[\"'(].*)?$", re.M)
ATTR_LINK = re.compile(r"""\b(?:href|src|to)=["'](?P<target>[^"']+)["']""")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


@dataclass
class Site:
    """What links can point at: every page by file and by route, and extra routes."""

    root: Path
    docs: dict[Path, Doc]
    routes: dict[str, Doc]
    extra_routes: set[str]
    static_dir: Path | None


def extra_routes_from_site(site_dir: Path) -> set[str]:
    """Routes that come from the site rather than from a page: the home page, generated indexes, src/pages."""
    routes = {"/"}
    sidebars = site_dir / "sidebars.js"
    if sidebars.exists():
        for m in re.finditer(r"""slug:\s*['"]([^'"]+)['"]""", sidebars.read_text(encoding="utf-8")):
            routes.add(ROUTE_BASE + "/" + m.group(1).strip("/"))
    pages = site_dir / "src" / "pages"
    if pages.is_dir():
        for p in pages.rglob("*"):
            if p.suffix in (".js", ".jsx", ".tsx", ".md", ".mdx") and not p.name.startswith("_"):
                route = "/" + p.relative_to(pages).with_suffix("").as_posix()
                routes.add(re.sub(r"/?index$", "", route) or "/")
    return routes


def check_links(doc: Doc, segments: list[Segment], site: Site, problems: list[Problem]) -> None:
    shown = display(doc.path)
    for seg in segments:
        targets = [(m.group("target"), m.start()) for m in INLINE_LINK.finditer(seg.text)]
        targets += [(m.group("target"), m.start()) for m in REF_DEF.finditer(seg.text)]
        targets += [(m.group("target"), m.start()) for m in ATTR_LINK.finditer(seg.text)]
        for target, offset in targets:
            why = resolve(doc, target, site)
            if why:
                problems.append(Problem(shown, line_of(seg, offset), f"broken link {target!r}: {why}"))


def resolve(doc: Doc, target: str, site: Site) -> str | None:
    """None when `target` resolves, else why not."""
    if not target:
        return "empty link target"
    if EXTERNAL.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if not path_part:
        return None if not anchor or anchor in doc.anchors else f"no heading with anchor #{anchor} on this page"
    if path_part.startswith("/"):
        route = path_part.rstrip("/") or "/"
        if route in site.routes:
            target_doc = site.routes[route]
            if anchor and anchor not in target_doc.anchors:
                return f"{display(target_doc.path)} has no heading with anchor #{anchor}"
            return None
        if route in site.extra_routes:
            return None
        if site.static_dir and (site.static_dir / route.lstrip("/")).is_file():
            return None
        return f"no page has the route {route} (pages are served under {ROUTE_BASE}/<doc id>)"
    resolved = (doc.path.parent / path_part).resolve()
    try:
        resolved.relative_to(site.root.resolve())
    except ValueError:
        return ("it points outside docs-cms/, which the site does not serve; name the file in `code` "
                "or link to it on the repository host")
    if resolved.suffix in (".md", ".mdx"):
        target_doc = site.docs.get(resolved)
        if target_doc is None:
            return "no such page in docs-cms/"
        if anchor and anchor not in target_doc.anchors:
            return f"{display(target_doc.path)} has no heading with anchor #{anchor}"
        return None
    if resolved.is_file():
        return None
    if resolved.with_suffix(".md").is_file() or resolved.with_suffix(".mdx").is_file():
        return "link to the page's file, with its .md extension, so that the link works on the site and on the repository host"
    return "no such file in docs-cms/"


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def validate(root: Path = DOCS, only: list[Path] | None = None, site_dir: Path = SITE) -> list[Problem]:
    """Every problem in the Markdown files under `root` (or only in `only`)."""
    problems: list[Problem] = []
    files = sorted(p for p in root.rglob("*") if p.suffix in (".md", ".mdx") and p.is_file())
    docs: dict[Path, Doc] = {}
    prose: dict[Path, list[Segment]] = {}
    scratch: list[Problem] = []
    for path in files:
        target = problems if only is None or path.resolve() in only else scratch
        doc = parse_doc(path, root, target)
        segments, headings = body_blocks(doc, target)
        collect_anchors(doc, headings)
        docs[path.resolve()] = doc
        prose[path.resolve()] = segments
    routes: dict[str, Doc] = {}
    ids: dict[str, Doc] = {}
    for doc in docs.values():
        if doc.doc_id in ids:
            problems.append(Problem(display(doc.path), doc.meta_lines.get("id", 1),
                                    f"doc id {doc.doc_id!r} is also used by {display(ids[doc.doc_id].path)}"))
        ids[doc.doc_id] = doc
        routes[doc.route] = doc
    site = Site(root=root, docs=docs, routes=routes, extra_routes=extra_routes_from_site(site_dir),
                static_dir=site_dir / "static" if (site_dir / "static").is_dir() else None)
    for key, doc in docs.items():
        if only is not None and key not in only:
            continue
        check_frontmatter(doc, problems)
        check_mdx(doc, prose[key], problems)
        check_links(doc, prose[key], site, problems)
        check_scratch_files(doc, problems)
    return sorted(problems)


# A repository path a README command uses: a file under one of the
# project's top directories, with an extension (so `proxy/` prose is not one).
README_PATH = re.compile(r"(?<![\w/.-])((?:proxy|docs-cms|tooling|patterns|tests|proto)/[\w./-]+\.(?:yaml|yml|md|py|rs|proto|toml))")


def check_readme(readme: Path, repo: Path) -> list[Problem]:
    """Every repository file the README names (in its commands and links) exists: a command that runs a file
    the reader cannot find is a broken instruction."""
    problems: list[Problem] = []
    for number, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), start=1):
        for match in README_PATH.finditer(line):
            if not (repo / match.group(1)).exists():
                problems.append(Problem(display(readme), number, f"{match.group(1)} does not exist"))
    return problems


# A shell command in a page that writes a file: `cat > FILE`, `tee FILE`.
WRITES_FILE = re.compile(r"(?:^|[\s;&|$])(?:cat\s*>|tee(?:\s+-a)?)\s*([^\s<>;&|]+)")
SCRATCH_DIR = re.compile(r"\bcd\s+\"?\$\(mktemp -d\)")


def check_scratch_files(doc: Doc, problems: list[Problem]) -> None:
    """A page's commands write their files into a scratch directory (after `cd "$(mktemp -d)"`) or to an absolute
    path, never into the directory the reader stands in, which for these guides is the repository. Reads the code
    lines `body_blocks` collected."""
    scratch = False
    for number, line in doc.code:
        if SCRATCH_DIR.search(line):
            scratch = True
        for match in WRITES_FILE.finditer(line):
            target = match.group(1).strip("'\"")
            if scratch or target.startswith(("/", "$", "~", "&")) or target in ("/dev/null", "-"):
                continue
            problems.append(Problem(display(doc.path), number,
                                    f"writes {target} into the current directory (the repository, for a reader "
                                    "following the guide); `cd \"$(mktemp -d)\"` first or write to an absolute path"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="check only these files (default: all of --root)")
    parser.add_argument("--root", type=Path, default=DOCS, help="the docs directory (default: docs-cms/)")
    parser.add_argument("--site", type=Path, default=SITE, help="the Docusaurus site (default: docusaurus/)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    only = [f.resolve() for f in args.files] if args.files else None
    for f in only or []:
        if not f.is_file():
            print(f"error: {f} does not exist", file=sys.stderr)
            return 2
    problems = validate(root, only, args.site.resolve())
    if only is None and root == DOCS.resolve():
        problems += check_readme(ROOT / "README.md", ROOT)
    for p in problems:
        print(p, file=sys.stderr)
    count = len(only) if only else sum(1 for p in root.rglob("*") if p.suffix in (".md", ".mdx"))
    if problems:
        files = len({p.path for p in problems})
        print(f"validate_docs: {len(problems)} problem(s) in {files} of {count} file(s)", file=sys.stderr)
        return 1
    print(f"validate_docs: {count} file(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
