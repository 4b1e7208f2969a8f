"""A KeyValue client in Python: Put, Get and Scan against a running proxy.

The client of docs-cms/guides/clients.md. It generates the Python stubs from
proto/ with grpcio-tools into a temporary directory at start, so there is no
generated code to keep in sync. Start the proxy of the quick start (it serves
the `demo` namespace on 127.0.0.1:8980), then:

    uv run --group interop tooling/examples/keyvalue_client.py --addr 127.0.0.1:8980 --namespace demo

With several proxies, give them all (--addr 127.0.0.1:8980,127.0.0.1:8981):
calls go round robin to those whose gRPC health service says SERVING.
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

PROTO = Path(__file__).resolve().parent.parent.parent / "proto"


def stubs(out: Path):
    """Compiles the KeyValue protos into `out` and imports them: (messages, service stubs)."""
    include = Path(protoc.__file__).resolve().parent / "_proto"  # the well-known types
    files = sorted((PROTO / "prism" / "keyvalue" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*args, *map(str, files)]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, str(out))
    return (
        importlib.import_module("prism.keyvalue.v1.keyvalue_pb2"),
        importlib.import_module("prism.keyvalue.v1.keyvalue_pb2_grpc"),
    )


def channel(addrs: str) -> grpc.Channel:
    """A plaintext channel to one proxy, or round robin over several ("a:1,b:2")."""
    if "," not in addrs:
        return grpc.insecure_channel(addrs)
    # gRPC's own mechanisms: the round_robin policy, and client-side health
    # checking, which watches grpc.health.v1 on each proxy and skips the ones
    # not SERVING (a proxy reports NOT_SERVING as it starts shutting down).
    config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
    options = [
        ("grpc.service_config", json.dumps(config)),
        # Otherwise the authority is the whole address list, which is no valid
        # host:port and the proxy refuses the calls (RST_STREAM).
        ("grpc.default_authority", "prism"),
    ]
    return grpc.insecure_channel(f"ipv4:{addrs}", options=options)


def run(channel: grpc.Channel, namespace: str, pb, pb_grpc) -> None:
    kv = pb_grpc.KeyValueServiceStub(channel)

    # Put answers the version it created; versions grow with every write.
    for key, value in (("user/1", b"alice"), ("user/2", b"bob")):
        put = kv.Put(pb.PutRequest(namespace=namespace, key=key, value=value), timeout=10)
        print(f"put {key} = {value.decode()} (version {put.version})")

    got = kv.Get(pb.GetRequest(namespace=namespace, key="user/1"), timeout=10)
    if got.found:
        print(f"get user/1 = {got.value.decode()} (version {got.version})")
    else:
        print("get user/1: not found")

    # Scan pages through the keys under a prefix; an empty token ends it.
    page_token = ""
    while True:
        page = kv.Scan(
            pb.ScanRequest(namespace=namespace, prefix="user/", page_size=100, page_token=page_token), timeout=10
        )
        for entry in page.items:
            print(f"scan {entry.key} = {entry.value.decode()} (version {entry.version})")
        if not page.next_page_token:
            break
        page_token = page.next_page_token


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:8980")
    p.add_argument("--namespace", default="demo")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = stubs(Path(tmp))
        # Plaintext, as the quick start's proxy serves loopback without TLS. With
        # TLS and a token: grpc.secure_channel(...) and metadata=[("authorization", "Bearer ...")].
        with channel(a.addr) as ch:
            run(ch, a.namespace, pb, pb_grpc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
