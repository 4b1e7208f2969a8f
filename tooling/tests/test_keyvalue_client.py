"""The Python KeyValue client of docs-cms/guides/clients.md generates its stubs
from proto/, imports them, and makes well-formed Put, Get and Scan calls.

The calls go to a small in-process KeyValueService written here (one dict,
pages of one entry so the client's paging loop runs), not to the proxy: the
Rust end-to-end tests cover the proxy; this test covers the example. Needs the
`interop` dependency group (grpcio, grpcio-tools), as in .ci/docs.sh:

    uv run --group interop pytest -q tooling/tests/test_keyvalue_client.py
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from concurrent import futures
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed: run with `uv run --group interop`")
pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed: run with `uv run --group interop`")

CLIENT = Path(__file__).resolve().parent.parent / "examples" / "keyvalue_client.py"


@pytest.fixture(scope="module")
def client():
    spec = importlib.util.spec_from_file_location("keyvalue_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    before = list(sys.path)
    yield client.stubs(out)
    sys.path[:] = before


def test_stubs_are_generated_and_import(generated):
    pb, pb_grpc = generated
    assert hasattr(pb_grpc, "KeyValueServiceStub")
    for message in ("PutRequest", "GetRequest", "ScanRequest", "ScanResponse"):
        assert hasattr(pb, message)
    # The generated files are valid Python, not only importable from a cache.
    for path in Path(pb.__file__).parent.glob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_put_get_scan_against_a_service(client, generated):
    pb, pb_grpc = generated
    calls: list[str] = []

    class Store(pb_grpc.KeyValueServiceServicer):
        def __init__(self):
            self.items: dict[str, tuple[bytes, int]] = {}
            self.version = 0

        def Put(self, request, context):
            calls.append(f"Put {request.namespace} {request.key}")
            self.version += 1
            self.items[request.key] = (request.value, self.version)
            return pb.PutResponse(version=self.version)

        def Get(self, request, context):
            calls.append(f"Get {request.namespace} {request.key}")
            if request.key not in self.items:
                return pb.GetResponse(found=False)
            value, version = self.items[request.key]
            return pb.GetResponse(found=True, value=value, version=version)

        def Scan(self, request, context):
            calls.append(f"Scan {request.namespace} {request.prefix} {request.page_token or '-'}")
            keys = sorted(k for k in self.items if k.startswith(request.prefix) and k > request.page_token)
            page = keys[:1]
            more = len(keys) > 1
            return pb.ScanResponse(
                items=[pb.Entry(key=k, value=self.items[k][0], version=self.items[k][1]) for k in page],
                next_page_token=page[-1] if more else "",
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_KeyValueServiceServicer_to_server(Store(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = io.StringIO()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, contextlib.redirect_stdout(out):
            client.run(channel, "demo", pb, pb_grpc)
    finally:
        server.stop(None)
    assert calls == [
        "Put demo user/1",
        "Put demo user/2",
        "Get demo user/1",
        "Scan demo user/ -",
        "Scan demo user/ user/1",
    ]
    assert out.getvalue().splitlines() == [
        "put user/1 = alice (version 1)",
        "put user/2 = bob (version 2)",
        "get user/1 = alice (version 1)",
        "scan user/1 = alice (version 1)",
        "scan user/2 = bob (version 2)",
    ]


def test_round_robin_over_two_services_continues_when_one_stops(client, generated):
    pb, pb_grpc = generated
    served: dict[int, int] = {}

    class Counting(pb_grpc.KeyValueServiceServicer):
        def __init__(self, index):
            self.index = index

        def Put(self, request, context):
            served[self.index] = served.get(self.index, 0) + 1
            return pb.PutResponse(version=1)

    servers, ports = [], []
    for index in range(2):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_KeyValueServiceServicer_to_server(Counting(index), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    try:
        with client.channel(",".join(f"127.0.0.1:{p}" for p in ports)) as ch:
            kv = pb_grpc.KeyValueServiceStub(ch)
            put = pb.PutRequest(namespace="demo", key="k", value=b"v")
            # wait_for_ready: the first calls wait for the connections (and
            # the health checks, which these services do not implement: gRPC
            # then treats them as serving).
            for _ in range(20):
                kv.Put(put, timeout=5, wait_for_ready=True)
            assert served.get(0, 0) > 0 and served.get(1, 0) > 0, served
            servers[0].stop(None).wait()
            before = served.get(1, 0)
            failed = 0
            for _ in range(20):
                try:
                    kv.Put(put, timeout=5)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                    failed += 1
            # At most the call that found the stopped one's connection gone.
            assert failed <= 1 and served[1] - before >= 19, (failed, served)
    finally:
        for server in servers:
            server.stop(None)
