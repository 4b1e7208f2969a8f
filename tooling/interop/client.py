"""Interop check from a non-Rust client: Python grpcio with mTLS and a
PyJWT-minted bearer token, against a running Prism proxy.

It generates the Python stubs from proto/ (grpcio-tools) into a temporary
directory, mints an RS256 token, and with both credentials puts a key,
reads it back, and checks that a call without the token is refused with
UNAUTHENTICATED (the proxy is expected to require both). Prints one JSON
line with what it saw; exits non-zero on any mismatch.

    uv run --group interop tooling/interop/client.py --addr 127.0.0.1:8980 \\
        --ca ca.pem --cert client.pem --key client.key \\
        --jwt-key signing.key --kid key-1 --issuer http://127.0.0.1:9000 --audience prism
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
import jwt
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent.parent


def stubs(out: Path):
    """Compiles the KeyValue protos into `out` and imports them."""
    proto = ROOT / "proto"
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{proto}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in sorted((proto / "prism" / "keyvalue" / "v1").glob("*.proto"))],
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, str(out))
    return (
        importlib.import_module("prism.keyvalue.v1.keyvalue_pb2"),
        importlib.import_module("prism.keyvalue.v1.keyvalue_pb2_grpc"),
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--addr", "--ca", "--cert", "--key", "--jwt-key", "--kid", "--issuer", "--audience"):
        p.add_argument(flag, required=True)
    p.add_argument("--namespace", default="orders")
    p.add_argument("--groups", default="readers,writers")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = stubs(Path(tmp))
        now = int(time.time())
        claims = {"iss": a.issuer, "aud": a.audience, "sub": "python", "groups": a.groups.split(","), "iat": now, "exp": now + 300}
        token = jwt.encode(claims, Path(a.jwt_key).read_bytes(), algorithm="RS256", headers={"kid": a.kid})
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(a.ca).read_bytes(),
            private_key=Path(a.key).read_bytes(),
            certificate_chain=Path(a.cert).read_bytes(),
        )
        # The server certificate names localhost; connect by address.
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(a.addr, creds, options=options) as channel:
            kv = pb_grpc.KeyValueServiceStub(channel)
            auth = [("authorization", f"Bearer {token}")]
            put = kv.Put(pb.PutRequest(namespace=a.namespace, key="py/1", value=b"from python"), metadata=auth, timeout=10)
            got = kv.Get(pb.GetRequest(namespace=a.namespace, key="py/1"), metadata=auth, timeout=10)
            try:
                kv.Get(pb.GetRequest(namespace=a.namespace, key="py/1"), timeout=10)
                refused = "OK"
            except grpc.RpcError as e:
                refused = e.code().name
    result = {"put_version": put.version, "found": got.found, "value": got.value.decode(), "without_token": refused}
    print(json.dumps(result))
    ok = got.found and got.value == b"from python" and got.version == put.version and refused == "UNAUTHENTICATED"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
