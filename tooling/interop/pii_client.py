"""PII interop check from a non-Rust client: Python grpcio compiles the team's
own profile.proto (with the Prism options file on its include path) using its
own tools, writes a profile as a writer, reads it back as a reader without the
`pii` right (masked) and as a support engineer with it (raw), decodes both with
its own generated class, and tries a plain-bytes write. Prints one JSON line
with what it saw; the Rust test (tests/tests/pii.rs) checks it.

    uv run --group interop tooling/interop/pii_client.py --addr 127.0.0.1:8980 \\
        --namespace profiles --writer TOKEN --reader TOKEN --support TOKEN
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent.parent


def compile_protos(out: Path):
    include = Path(protoc.__file__).resolve().parent / "_proto"
    proto = ROOT / "proto"
    team = ROOT / "tests" / "data" / "pii"
    files = [
        *sorted((proto / "prism" / "keyvalue" / "v1").glob("*.proto")),
        proto / "prism" / "options" / "v1" / "pii.proto",
        team / "acme" / "profile" / "v1" / "profile.proto",
    ]
    args = ["protoc", f"-I{proto}", f"-I{team}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*args, *[str(f) for f in files]]) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, str(out))
    kv = importlib.import_module("prism.keyvalue.v1.keyvalue_pb2")
    kv_grpc = importlib.import_module("prism.keyvalue.v1.keyvalue_pb2_grpc")
    profile = importlib.import_module("acme.profile.v1.profile_pb2")
    return kv, kv_grpc, profile


def fields(p) -> dict:
    return {
        "user_id": p.user_id,
        "email": p.email,
        "name": p.name,
        "phone": p.phone,
        "home_street": p.home.street,
        "home_city": p.home.city,
        "aliases": list(p.aliases),
        "notes": p.notes,
        "ssn": p.ssn,
        "has_ssn": p.ssn != "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--addr", "--namespace", "--writer", "--reader", "--support"):
        ap.add_argument(flag, required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kv, kv_grpc, profile = compile_protos(Path(tmp))
        stub = kv_grpc.KeyValueServiceStub(grpc.insecure_channel(a.addr))

        def auth(token: str):
            return [("authorization", f"Bearer {token}")]

        p = profile.UserProfile(
            user_id="u-42",
            email="jane.doe@example.com",
            name="Jane Doe",
            phone="+1 555-010-0199",
            home=profile.Address(street="1 Main Street", city="Springfield", postcode="SP1 2AB"),
            aliases=["JD", "Janie Q"],
            notes="prefers email",
            ssn="123-45-6789",
        )
        p.labels["tier"] = "gold"
        stub.Put(kv.PutRequest(namespace=a.namespace, key="py/jane", value=p.SerializeToString()), metadata=auth(a.writer))
        seen = {}
        masked = stub.Get(kv.GetRequest(namespace=a.namespace, key="py/jane"), metadata=auth(a.reader))
        seen["masked"] = fields(profile.UserProfile.FromString(masked.value))
        raw = stub.Get(kv.GetRequest(namespace=a.namespace, key="py/jane"), metadata=auth(a.support))
        seen["raw"] = fields(profile.UserProfile.FromString(raw.value))
        seen["raw_equal"] = profile.UserProfile.FromString(raw.value) == p
        try:
            stub.Put(
                kv.PutRequest(namespace=a.namespace, key="py/bytes", value=b"\xff\xfe not a profile"),
                metadata=auth(a.writer),
            )
            seen["plain_bytes"] = "OK"
        except grpc.RpcError as e:
            seen["plain_bytes"] = e.code().name
            seen["plain_bytes_message"] = e.details()
        print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
