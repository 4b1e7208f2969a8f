"""Tests of tooling/validate_docs.py: each check catches what it is for, and the real docs pass."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import validate_docs  # noqa: E402

GUIDE_META = """---
id: {id}
title: A page
team: platform
created: 2026-11-01
updated: 2026-11-23
tags: [guide]
---
"""

ADR_META = """---
id: adr-007
title: A decision
sidebar_label: "ADR-007 — A decision"
status: accepted
date: 2026-11-23
tags: [architecture]
---
"""


@pytest.fixture
def docs(tmp_path: Path):
    """A docs tree and a site directory; returns a writer and a runner."""
    root = tmp_path / "docs-cms"
    site = tmp_path / "site"
    root.mkdir()
    (site / "src" / "pages").mkdir(parents=True)
    (site / "sidebars.js").write_text("export default {docs: [{type: 'category', link: {slug: '/adr'}}]};\n")

    def write(rel: str, text: str) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def run() -> list[str]:
        return [str(p) for p in validate_docs.validate(root, None, site)]

    write("intro.md", GUIDE_META.format(id="intro") + "\n# Intro\n\n## Getting started\n\nHello.\n")
    return write, run


def only(problems: list[str], needle: str) -> list[str]:
    return [p for p in problems if needle in p]


def test_a_clean_tree_passes(docs):
    write, run = docs
    write(
        "guides/use.md",
        GUIDE_META.format(id="use")
        + "\n# Use\n\nSee [the intro](../intro.md#getting-started), [the ADRs](/docs/adr) and\n"
        "[the site route](/docs/intro). Compare `a < b`, `Vec<String>` and `{x}` in code; a < b in prose is fine.\n"
        "An escaped \\{brace\\} and \\<tag\\> too. <br /> and <kbd>Ctrl</kbd> are HTML.\n\n"
        "```yaml\nkey: {a: <b>}\n```\n\n"
        "## Heading with id {#custom-id}\n\nA [self link](#custom-id) and [external](https://example.com/x).\n",
    )
    write("adr/007-decision.md", ADR_META + "\n# ADR-007\n\n[Use](../guides/use.md).\n")
    assert run() == []


def test_missing_frontmatter_key_is_reported_with_its_file(docs):
    write, run = docs
    write("guides/bad.md", "---\nid: bad\ntitle: Bad\ncreated: 2026-11-01\nupdated: 2026-11-23\ntags: [x]\n---\n\n# Bad\n")
    problems = run()
    assert only(problems, "guides/bad.md:1: frontmatter: `author` or `team` is required"), problems


def test_bad_frontmatter_values_are_reported_at_their_line(docs):
    write, run = docs
    write(
        "adr/008-x.md",
        "---\nid: adr-009\ntitle: X\nstatus: done\ndate: 23/11/2026\ntags: [Bad Tag]\ncolour: red\n---\n\n# X\n",
    )
    problems = run()
    assert only(problems, "adr/008-x.md:2: frontmatter: `id` 'adr-009' does not match the file name"), problems
    assert only(problems, "adr/008-x.md:4: frontmatter: `status` 'done' is not one of"), problems
    assert only(problems, "adr/008-x.md:5: frontmatter: `date` '23/11/2026' is not a date"), problems
    assert only(problems, "adr/008-x.md:6: frontmatter: tag 'Bad Tag'"), problems
    assert only(problems, "adr/008-x.md:7: frontmatter: unknown key `colour`"), problems


def test_an_adr_is_listed_with_its_number_and_title(docs):
    write, run = docs
    write("adr/007-decision.md", ADR_META.replace('sidebar_label: "ADR-007 — A decision"', "sidebar_label: Decision") + "\n# X\n")
    write("adr/008-other.md", ADR_META.replace("adr-007", "adr-008").replace('sidebar_label: "ADR-007 — A decision"\n', "") + "\n# Y\n")
    problems = run()
    assert only(problems, "adr/007-decision.md:4: frontmatter: `sidebar_label` must be 'ADR-007 — A decision'"), problems
    assert only(problems, "adr/008-other.md:3: frontmatter: `sidebar_label` must be 'ADR-008 — A decision'"), problems


def test_an_adr_needs_the_adr_fields(docs):
    write, run = docs
    write("adr/009-y.md", GUIDE_META.format(id="adr-009") + "\n# Y\n")
    problems = run()
    for key in ("status", "date"):
        assert only(problems, f"adr/009-y.md:1: frontmatter: `{key}` is required for ADR documents"), problems


def test_no_frontmatter_and_invalid_yaml(docs):
    write, run = docs
    write("none.md", "# No frontmatter\n")
    write("broken.md", "---\nid: broken\ntitle: [unclosed\n---\n\n# Broken\n")
    problems = run()
    assert only(problems, "none.md:1: no frontmatter"), problems
    assert only(problems, "broken.md:") and only(problems, "frontmatter is not valid YAML"), problems


def test_broken_links_are_caught(docs):
    write, run = docs
    write(
        "guides/links.md",
        GUIDE_META.format(id="links")
        + "\n# Links\n\n"
        "[gone](missing.md)\n\n"  # line 12
        "[bad anchor](../intro.md#nowhere)\n\n"  # line 14
        "[no route](/docs/nothing)\n\n"  # line 16
        "[outside](../../proxy/src/config.rs)\n\n"  # line 18
        "[own anchor](#not-here)\n\n"  # line 20
        "[ref]: ../intro.md#also-nowhere\n\n"  # line 22
        "`[in code](missing.md)` is not a link.\n"
        "[the title has no anchor](../intro.md#intro)\n",  # line 25
    )
    problems = run()
    assert only(problems, "guides/links.md:12: broken link 'missing.md': no such page"), problems
    assert only(problems, "guides/links.md:14: broken link '../intro.md#nowhere'"), problems
    assert only(problems, "guides/links.md:16: broken link '/docs/nothing'"), problems
    assert only(problems, "guides/links.md:18: broken link '../../proxy/src/config.rs': it points outside"), problems
    assert only(problems, "guides/links.md:20: broken link '#not-here'"), problems
    assert only(problems, "guides/links.md:22: broken link '../intro.md#also-nowhere'"), problems
    assert only(problems, "guides/links.md:25: broken link '../intro.md#intro'"), problems
    assert len(only(problems, "guides/links.md")) == 7, problems


def test_unescaped_angle_bracket_is_caught(docs):
    write, run = docs
    write(
        "guides/mdx.md",
        GUIDE_META.format(id="mdx")
        + "\n# MDX\n\n"
        "A map is BTreeMap<String, Plugin> here.\n\n"  # line 12
        "Durations <=10s.\n\n"  # line 14
        "See <https://example.com>.\n\n"  # line 16
        "<!-- a comment -->\n\n"  # line 18
        "Line break<br>here.\n",  # line 20
    )
    problems = run()
    assert only(problems, "guides/mdx.md:12: `<` outside code breaks MDX"), problems
    assert only(problems, "guides/mdx.md:14: `<` outside code breaks MDX"), problems
    assert only(problems, "guides/mdx.md:16: `<` outside code breaks MDX"), problems
    assert only(problems, "guides/mdx.md:18: HTML comment"), problems
    assert only(problems, "guides/mdx.md:20: `<br>` must be self-closing"), problems


def test_unescaped_brace_is_caught_but_code_is_not(docs):
    write, run = docs
    write(
        "guides/brace.md",
        GUIDE_META.format(id="brace")
        + "\n# Braces\n\n"
        "Write metadata: {name: demo} inline.\n\n"  # line 12
        "A ``code span with ` and {braces}`` is fine,\n"
        "and a span `across\nlines {x}` too.\n\n"
        "{/* an MDX comment */}\n",
    )
    problems = run()
    assert only(problems, "guides/brace.md:12: `{` outside code"), problems
    assert len(only(problems, "guides/brace.md")) == 1, problems


def test_code_blocks_need_a_language_and_a_close(docs):
    write, run = docs
    write(
        "guides/code.md",
        GUIDE_META.format(id="code") + "\n# Code\n\n```\nplain\n```\n\n~~~sh\necho {not checked} <x>\n~~~\n\n```yaml\nopen: forever\n",
    )
    problems = run()
    assert only(problems, "guides/code.md:12: code block without a language"), problems
    assert only(problems, "guides/code.md:20: code block opened with ``` is never closed"), problems
    assert not only(problems, "breaks MDX"), problems


def test_duplicate_ids_are_caught(docs):
    write, run = docs
    write("guides/one.md", GUIDE_META.format(id="same") + "\n# One\n")
    write("guides/two.md", GUIDE_META.format(id="same") + "\n# Two\n")
    problems = run()
    assert only(problems, "doc id 'guides/same' is also used by"), problems


def test_main_exits_non_zero_and_names_file_and_line(docs, tmp_path, capsys):
    write, _ = docs
    write("guides/bad.md", GUIDE_META.format(id="bad") + "\n# Bad\n\nx <y\n")
    code = validate_docs.main(["--root", str(tmp_path / "docs-cms"), "--site", str(tmp_path / "site")])
    err = capsys.readouterr().err
    assert code == 1
    assert "guides/bad.md:12: `<` outside code breaks MDX" in err
    assert "1 problem(s) in 1 of 2 file(s)" in err


def test_the_repository_docs_pass():
    problems = validate_docs.validate()
    assert problems == [], "\n".join(map(str, problems))


def test_the_readme_names_only_files_that_exist(tmp_path):
    (tmp_path / "proxy/config").mkdir(parents=True)
    (tmp_path / "proxy/config/prism.yaml").write_text("listen: x\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "run `prism-proxy --config proxy/config/prism.yaml`\n"
        "then `prismctl namespace apply -f proxy/config/examples/orders.yaml`\n"
        "the `proxy/` directory and [a page](docs-cms/guides/x.md)\n"
    )
    problems = validate_docs.check_readme(readme, tmp_path)
    assert [(p.line, p.message) for p in problems] == [
        (2, "proxy/config/examples/orders.yaml does not exist"),
        (3, "docs-cms/guides/x.md does not exist"),
    ]


def test_the_real_readme_passes():
    root = Path(validate_docs.ROOT)
    assert validate_docs.check_readme(root / "README.md", root) == []


def test_guide_commands_write_files_into_a_scratch_directory(tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text(
        "---\nid: guide\ntitle: Guide\n---\n\n# Guide\n\n```sh\ncat > orders.yaml <<'EOF'\nx: 1\nEOF\n```\n\n"
        "```sh\ncd \"$(mktemp -d)\"\ncat > later.yaml <<'EOF'\nEOF\nprismctl kv get demo k | tee /tmp/out\n```\n",
        encoding="utf-8",
    )
    problems = [p for p in validate_docs.validate(tmp_path) if "current directory" in p.message]
    assert [(p.line, "orders.yaml" in p.message) for p in problems] == [(9, True)], problems
