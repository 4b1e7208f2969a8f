"""Tests of tooling/check_reference.py: each drift between code and reference pages is caught."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import check_reference as cr  # noqa: E402

SPEC_RS = """
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Doc {
    pub kind: String,
    pub spec: Spec,
}
#[derive(Deserialize)]
pub struct Spec {
    /// The pattern.
    pub pattern: Kind,
    #[serde(default)]
    pub backend: Option<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind { Keyvalue, Graph }
"""

SPEC_PAGE = """
| field | type | default | meaning |
|---|---|---|---|
| `kind` | string | required | Always `Namespace`. |
| `spec` | mapping | required | The spec. |
| `spec.pattern` | `keyvalue` or `graph` | required | The pattern. |
| `spec.backend` | string | chosen | The plugin. |

`spec.shadow` is reserved.
"""

VALIDATE_RS = """
pub const DOCUMENT_FIELDS: &[&str] = &["kind", "spec"];
pub const SPEC_FIELDS: &[&str] = &["pattern", "backend", "shadow"];
"""

SELECT_RS = """
pub const RULES: &[Rule] = &[
    Rule { when: "durable", matches: |n| n.durable, prefer: &["postgres", "sqlite"] },
    Rule {
        when: "ephemeral cache: a TTL",
        matches: |n| n.ttl.is_some(),
        prefer: &["redis"],
    },
];
pub const FALLBACK: &[&str] = &["sqlite", "memstore"];
"""

SELECT_PAGE = """
| rule | when the needs are | backend kinds |
|---|---|---|
| 1 | durable | `postgres`, `sqlite` |
| 2 | ephemeral cache: a TTL | `redis` |
| fallback | no rule decided | `sqlite`, `memstore` |
"""

PROTO = """
syntax = "proto3";
service Admin {
  // Applies.
  rpc Apply(ApplyRequest) returns (ApplyResponse);
  rpc List(ListRequest) returns (ListResponse);
}
message ApplyRequest { string spec_yaml = 1; bool dry_run = 2; }
message ApplyResponse {
  message Inner { string not_mine = 1; }
  Plan plan = 1;
  repeated string warnings = 2;
}
message ListRequest {}
message ListResponse { repeated string names = 1; }
"""

API_PAGE = """
| call | request | response | meaning |
|---|---|---|---|
| `Apply` | `spec_yaml`, `dry_run` | `plan`, `warnings` | Applies. |
| `List` | none | `names` | Lists. |
"""


def test_the_repository_pages_match_the_code(capsys):
    assert cr.main([]) == 0, capsys.readouterr().err


def test_field_tables_match():
    assert cr.check_target(SPEC_RS, SPEC_PAGE, "Doc", "spec.rs", "page.md") == []


def test_an_undocumented_field_and_a_stale_row_are_caught():
    code = SPEC_RS.replace("pub backend: Option<String>,", "pub backend: Option<String>,\n    pub needs: Option<u64>,")
    page = SPEC_PAGE.replace("| `kind` | string | required | Always `Namespace`. |\n", "| `kind` | string | required | Always `Namespace`. |\n| `spec.colour` | string | none | Gone. |\n")
    errors = cr.check_target(code, page, "Doc", "spec.rs", "page.md")
    assert any("field `spec.needs`" in e and "is not documented" in e for e in errors), errors
    assert any("`spec.colour` is documented but spec.rs has no such field" in e for e in errors), errors


def test_an_enum_value_missing_from_its_row_is_caught():
    page = SPEC_PAGE.replace("`keyvalue` or `graph`", "`keyvalue`")
    errors = cr.check_target(SPEC_RS, page, "Doc", "spec.rs", "page.md")
    assert any("does not name the value `graph`" in e for e in errors), errors


def test_reserved_fields_must_be_named():
    assert cr.check_reserved(SPEC_RS, VALIDATE_RS, SPEC_PAGE, "Doc", "page.md") == []
    errors = cr.check_reserved(SPEC_RS, VALIDATE_RS, SPEC_PAGE.replace("`spec.shadow`", "shadow"), "Doc", "page.md")
    assert any("`spec.shadow` is known to" in e and "name it on the page as reserved" in e for e in errors), errors


def test_a_spec_field_the_validator_does_not_know_is_caught():
    errors = cr.check_reserved(SPEC_RS, VALIDATE_RS.replace('"backend", ', ""), SPEC_PAGE, "Doc", "page.md")
    assert any("`spec.backend`" in e and "the validator does not know it" in e for e in errors), errors


def test_the_selection_table_matches():
    assert cr.check_selection(SELECT_RS, SELECT_PAGE, "page.md") == []


def test_selection_drift_is_caught():
    swapped = SELECT_PAGE.replace("`postgres`, `sqlite`", "`sqlite`, `postgres`")
    assert any("rule 1 prefers ['sqlite', 'postgres']" in e for e in cr.check_selection(SELECT_RS, swapped, "page.md"))
    reworded = SELECT_PAGE.replace("| 2 | ephemeral cache: a TTL |", "| 2 | a cache |")
    assert any("rule 2 reads 'a cache'" in e for e in cr.check_selection(SELECT_RS, reworded, "page.md"))
    code = SELECT_RS.replace("];\npub const FALLBACK", '    Rule { when: "ephemeral", matches: |n| true, prefer: &["memstore"] },\n];\npub const FALLBACK')
    errors = cr.check_selection(code, SELECT_PAGE, "page.md")
    assert any("expected the row '3' here, found 'fallback'" in e for e in errors), errors
    fallback = SELECT_RS.replace('["sqlite", "memstore"]', '["memstore"]')
    assert any("rule fallback prefers" in e for e in cr.check_selection(fallback, SELECT_PAGE, "page.md"))


def test_api_pages_match_the_proto():
    assert cr.check_api(PROTO, "Admin", API_PAGE, "admin.proto", "page.md") == []


def test_api_drift_is_caught():
    proto = PROTO.replace("  rpc List(", "  rpc Delete(ListRequest) returns (ListResponse);\n  rpc List(")
    proto = proto.replace("bool dry_run = 2;", "bool dry_run = 2; bool force = 3;")
    page = API_PAGE + "| `Watch` | none | none | Gone. |\n"
    errors = cr.check_api(proto, "Admin", page, "admin.proto", "page.md")
    assert any("rpc `Delete` (admin.proto:" in e and "is not in a call table" in e for e in errors), errors
    assert any("`Apply` does not name the request field `force`" in e for e in errors), errors
    assert any("`Watch` is documented but Admin in admin.proto has no such rpc" in e for e in errors), errors
    assert not any("not_mine" in e for e in errors), errors


def test_a_list_and_a_mapping_of_one_name_resolve_to_the_mapping():
    paths = {
        "spec": None,
        "spec.access": None,
        "spec.access.pii": None,
        "spec.pii": None,
        "spec.pii.encrypt": None,
    }
    known, errors = cr.validator_fields('pub const PII_FIELDS: &[&str] = &["encrypt"];\n', paths)
    assert errors == []
    assert known == {"spec.pii.encrypt": 1}


def test_a_page_calling_a_shipped_feature_planned_is_caught():
    pages = {
        "intro.md": (
            "Prism is young. The following are **planned, not built**; see below:\n\n"
            "- TLS and mTLS termination, OAuth2/JWT client authentication.\n"
            "- TimeSeries and Graph patterns.\n"
        ),
        "reference/spec.md": "| `spec.access` | who may do what; not enforced yet |\n",
        "ops.md": "```text\nplanned TLS in a code sample is not prose\n```\n",
    }
    errors = cr.check_shipped(pages)
    assert any("intro.md:3:" in e and "TLS" in e for e in errors), errors
    assert any("intro.md:4:" in e and "TimeSeries" in e for e in errors), errors
    assert any("reference/spec.md:1:" in e and "access control" in e for e in errors), errors
    assert not any("ops.md" in e for e in errors), errors


def test_true_statements_pass():
    pages = {
        "admin.md": "In dev mode (no client authentication) every caller\nmay do everything; `spec.access` is not enforced.\n",
        "changelog.md": "- TLS was planned, now it ships.\n",
        "adr/001-x.md": "TimeSeries is planned for a later release.\n",
        "guide.md": "The plan shows which backend serves the namespace.\n",
    }
    assert cr.check_shipped(pages) == []


EXCERPT_PROTO = """
service S {
  // Writes.
  rpc Put(PutRequest) returns (PutResponse);
  rpc Get(GetRequest) returns (GetResponse);
}
message PutRequest { string key = 1; bytes value = 2; }
message PutResponse { uint64 version = 1; }
"""


def _page(block: str) -> str:
    return f"# API\n\n```protobuf\n{block}\n```\n"


def test_excerpt_matching_the_proto_passes():
    block = "service S {\n  rpc Put(PutRequest) returns (PutResponse);\n  rpc Get(GetRequest) returns (GetResponse);\n}\n" \
            "message PutRequest {\n  string key = 1;\n  // The bytes.\n  bytes value = 2;\n}"
    assert cr.check_excerpts(EXCERPT_PROTO, _page(block), "s.proto", "api.md") == []


def test_excerpt_missing_an_rpc_or_field_fails():
    block = "service S {\n  rpc Put(PutRequest) returns (PutResponse);\n}\nmessage PutRequest { string key = 1; }"
    errors = cr.check_excerpts(EXCERPT_PROTO, _page(block), "s.proto", "api.md")
    assert len(errors) == 2
    assert "service S differs" in errors[0] and "'Get'" in errors[0]
    assert "message PutRequest differs" in errors[1] and "'value'" in errors[1]


def test_excerpt_showing_what_the_proto_lacks_fails():
    block = "message Gone { string key = 1; }\nmessage PutResponse { uint64 version = 1; bool created = 2; }"
    errors = cr.check_excerpts(EXCERPT_PROTO, _page(block), "s.proto", "api.md")
    assert any("message Gone, which s.proto does not define" in e for e in errors)
    assert any("message PutResponse differs" in e and "'created'" in e for e in errors)


def test_a_block_titled_with_a_file_must_be_that_file(tmp_path):
    (tmp_path / "ex.py").write_text("print('a')\nprint('b')\n", encoding="utf-8")
    same = "# Page\n\n```python title=\"ex.py\"\nprint('a')\nprint('b')\n```\n"
    stale = "# Page\n\n```python title=\"ex.py\"\nprint('a')\n```\n"
    label = "# Page\n\n```yaml title=\"prism.yaml\"\nx: 1\n```\n"
    assert cr.check_included_files({"same.md": same, "label.md": label}, tmp_path) == []
    errors = cr.check_included_files({"stale.md": stale}, tmp_path)
    assert errors == ["docs-cms/stale.md:3: the block titled ex.py is not that file's content; copy it again"]
