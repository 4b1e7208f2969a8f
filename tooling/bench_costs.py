#!/usr/bin/env python3
"""How cost grows (issue 19): five curves, each next to its floor.

- value size, 100 B to 1 MiB: get and put MB/s and p99, Prism → redis plugin against grpc-redis-floor and
  Redis directly;
- batch size, 1 to 500: BatchGet and BatchPut items/s and p99, Prism → memstore against grpc-floor and
  Prism → redis against grpc-redis-floor;
- idle client connections, 10 to 10,000: proxy RSS per connection (against the same connections held by
  grpc-floor) and the p99 of a fixed-rate load on one more connection;
- declared namespaces, 10 to 10,000: proxy RSS, time to /readyz, ApplyNamespace latency as the client sees
  it and apply → servable;
- startup with one to five plugins: spawn → /readyz 200 and → first served call.

    uv run tooling/bench_costs.py             # build (release), measure, write target/bench-costs/
    uv run tooling/bench_costs.py --no-build  # reuse the release binaries
    uv run tooling/bench_costs.py --smoke     # debug build, tiny sizes, ~1 s per point; fails on any
                                              # request error; asserts nothing about timings
    uv run tooling/bench_costs.py --only connections  # measure one curve again, keep the others
    uv run tooling/bench_costs.py --report-only       # rewrite costs.md and the SVGs from costs.json

Another script imports it: `run_costs(bin_dir, out_dir, smoke)` measures and writes the raw JSON,
`doc_lines(results)` is the markdown section and `write_plots(results, img_dir)` the SVGs it links to
(`img/cost-*.svg`). Standalone, the section and plots go to the output directory, not to the docs.

Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and NATS JetStream
on 127.0.0.1:4222.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tooling directory is on the path when run as a script; also when imported from elsewhere.
from bench_report import POSTGRES_URL, REDIS_URL, ROOT, TARGET_DIR, free_port, pid_of  # noqa: E402

NATS_URL = "nats://127.0.0.1:4222"
PACKAGES = ["prism-bench", "prism-proxy"] + [
    f"prism-plugin-{p}" for p in ("memstore", "redis", "sqlite", "postgres", "nats")
]
# Plugins in the order the startup curve adds them, with their `config:`.
PLUGINS = {
    "memstore": "",
    "sqlite": "    config:\n      path: cost.sqlite3\n",
    "redis": f"    config:\n      url: {REDIS_URL}\n      key_prefix: prism-cost\n",
    "postgres": f"    config:\n      url: {POSTGRES_URL}\n      schema: prism_cost\n",
    "nats": f"    config:\n      url: {NATS_URL}\n      bucket_prefix: prism_cost\n      storage: memory\n",
}
KIB, MIB = 1024, 1024 * 1024
# A 1 MiB value is the proxy's default max_value_bytes exactly; room above it
# (max_message_bytes, 16 MiB by default, must exceed this plus a key + 1 KiB).
MAX_VALUE_BYTES = 2 * MIB
# Preloaded bytes per target at most: keys × value size.
PRELOAD_BUDGET = 64 * MIB
# `PREPARE_CONCURRENCY` in proxy/src/plugin/mod.rs, quoted in the page.
PREPARE_CONCURRENCY = 16


# --- processes ----------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set of one process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Proxy:
    """prism-proxy on loopback from a generated config, in a private directory."""

    def __init__(self, bin_dir: Path, work: Path, plugins: list[str], namespaces: dict[str, str]):
        self.bin_dir, self.work = bin_dir, work
        self.port, self.admin = free_port(), free_port()
        (work / "namespaces").mkdir(parents=True, exist_ok=True)
        for name, backend in namespaces.items():
            (work / "namespaces" / f"{name}.yaml").write_text(
                "apiVersion: prism/v1\nkind: Namespace\n"
                f"metadata:\n  name: {name}\n  team: bench\n"
                f"spec:\n  pattern: keyvalue\n  backend: {backend}\n"
            )
        plugin_text = "".join(f"  {p}:\n    command: [prism-plugin-{p}]\n{PLUGINS[p]}" for p in plugins)
        self.config = work / "prism.yaml"
        self.config.write_text(
            f"""listen: 127.0.0.1:{self.port}
admin_http: {{listen: "127.0.0.1:{self.admin}"}}
namespaces_dir: namespaces
plugins:
{plugin_text}limits:
  max_value_bytes: {MAX_VALUE_BYTES}
shutdown_grace: 1s
log:
  format: text
  level: warn
"""
        )
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.started_wall = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.log = open(self.work / "proxy.log", "ab")
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(self.bin_dir / "prism-proxy"), "--config", str(self.config)],
                                     cwd=self.work, stdin=subprocess.DEVNULL, stderr=self.log)

    def fail(self, why: str) -> None:
        tail = (self.work / "proxy.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{why}\n--- proxy log ---\n{tail}")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from spawn until /readyz answers 200, to about 1%."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            # Every 2 ms at first, then a hundredth of the time so far: a
            # start that takes seconds is timed to 1% without the polling
            # loading the proxy it times.
            poll = min(0.1, max(0.002, (time.monotonic() - self.started) / 100))
            if self.proc.poll() is not None:
                self.fail(f"prism-proxy exited with status {self.proc.returncode} before it was ready")
            try:
                status, _ = http_get(self.admin, "/readyz")
                if status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(poll)
        self.fail(f"prism-proxy not ready within {timeout:.0f} s")
        return math.nan

    def metric(self, name: str) -> float:
        _, text = http_get(self.admin, "/metrics", timeout=10)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proc = None


# --- prism-bench ------------------------------------------------------------


def bench(bin_dir: Path, args: list[str], out: Path) -> dict:
    cmd = [str(bin_dir / "prism-bench"), "run", *args, "--no-progress", "--json", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def first_call(bin_dir: Path, proxy: Proxy, namespace: str) -> subprocess.Popen:
    """Starts the waiter for the first served Get (before the proxy, so its own start is not counted)."""
    return subprocess.Popen([str(bin_dir / "prism-bench"), "first-call", "--prism", f"127.0.0.1:{proxy.port}",
                             "--namespace", namespace, "--timeout", "120s"],
                            stdout=subprocess.PIPE, text=True)


def served_after(waiter: subprocess.Popen, proxy: Proxy) -> float:
    out, _ = waiter.communicate(timeout=180)
    if waiter.returncode != 0:
        proxy.fail("prism-bench first-call failed")
    _, unix_us, _ = out.split()
    return int(unix_us) / 1e6 - proxy.started_wall


def check_runs(name: str, report: dict, bad: list[str]) -> None:
    for m in report["runs"]:
        if m["errors"] or m["ok"] == 0:
            bad.append(f"{name}: {m['target']} {m['workload']}: ok {m['ok']}, errors {m['errors']}")


def row_of(m: dict, **extra) -> dict:
    lat = m["latency_us"]
    ok = max(m["ok"], 1)
    # CPU per request of the target's own server processes (the proxy and
    # its plugins, or the floor process) and of redis-server behind it.
    procs = m.get("processes") or []
    server = {p["name"]: p["cpu_seconds"] * 1e6 / ok for p in procs}
    backend = m.get("backend")
    return {**extra, "target": m["target"], "workload": m["workload"], "throughput": m["throughput"],
            "items_per_second": m.get("items_per_second", m["throughput"]), "p50_us": lat["p50"],
            "p99_us": lat["p99"], "errors": sum(m["errors"].values()),
            "server_cpu_us": server, "redis_cpu_us": backend["cpu_seconds"] * 1e6 / ok if backend else None}


# --- the curves ---------------------------------------------------------------


def curve_value_size(bin_dir: Path, out_dir: Path, work: Path, o: dict, bad: list[str]) -> dict:
    proxy = Proxy(bin_dir, work / "value-size", ["redis"], {"cost-redis": "redis"})
    rows = []
    proxy.start()
    try:
        proxy.wait_ready()
        for size in o["sizes"]:
            keys = max(16, min(10_000, PRELOAD_BUDGET // size))
            args = ["-t", "prism/cost-redis", "-t", "grpc-redis-floor", "-t", "redis", "-w", "get,put",
                    "-c", str(o["concurrency"]), "--value-size", str(size), "--key-space", str(keys),
                    "--duration", o["duration"], "--warmup", o["warmup"], "--repeat", str(o["repeat"]),
                    "--prism", f"127.0.0.1:{proxy.port}", "--prism-pid", str(proxy.pid), "--redis", REDIS_URL]
            if (rp := pid_of("redis-server")) is not None:
                args += ["--redis-pid", str(rp), "--backend-pid", str(rp)]
            report = bench(bin_dir, args, out_dir / f"value-size-{size}.json")
            check_runs(f"value size {size}", report, bad)
            for m in report["summary"]:
                rows.append(row_of(m, size=size, key_space=keys, mb_per_s=m["throughput"] * size / 1e6))
    finally:
        proxy.stop()
    return {"concurrency": o["concurrency"], "sizes": o["sizes"], "rows": rows}


def curve_batch(bin_dir: Path, out_dir: Path, work: Path, o: dict, bad: list[str]) -> dict:
    proxy = Proxy(bin_dir, work / "batch", ["memstore", "redis"],
                  {"cost-memstore": "memstore", "cost-redis": "redis"})
    rows = []
    proxy.start()
    try:
        proxy.wait_ready()
        for batch in o["batches"]:
            args = ["-t", "prism/cost-memstore", "-t", "grpc-floor", "-t", "prism/cost-redis",
                    "-t", "grpc-redis-floor", "-w", "batch-get,batch-put", "--batch", str(batch),
                    "-c", str(o["concurrency"]), "--value-size", "100", "--key-space", str(o["key_space"]),
                    "--duration", o["duration"], "--warmup", o["warmup"], "--repeat", str(o["repeat"]),
                    "--prism", f"127.0.0.1:{proxy.port}", "--prism-pid", str(proxy.pid), "--redis", REDIS_URL]
            if (rp := pid_of("redis-server")) is not None:
                args += ["--backend-pid", str(rp)]
            report = bench(bin_dir, args, out_dir / f"batch-{batch}.json")
            check_runs(f"batch {batch}", report, bad)
            for m in report["summary"]:
                rows.append(row_of(m, batch=batch))
    finally:
        proxy.stop()
    return {"concurrency": o["concurrency"], "batches": o["batches"], "value_size": 100, "rows": rows}


# HTTP/2: the client preface, an empty SETTINGS frame and a SETTINGS ack.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


def open_idle(port: int, n: int) -> list[socket.socket]:
    """n HTTP/2 connections that have done their handshake and then say nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(H2_PREFACE + H2_SETTINGS)
        socks.append(s)
    # The server's SETTINGS (its first frame) shows it has taken the
    # connection in; the ack keeps the connection in good standing.
    for s in socks:
        head = recv_exact(s, 9)
        recv_exact(s, int.from_bytes(head[:3], "big"))
        if head[3] != 0x4:
            raise ConnectionError(f"expected SETTINGS first, got frame type {head[3]}")
        s.sendall(H2_SETTINGS_ACK)
    return socks


def still_open(socks: list[socket.socket]) -> int:
    """Connections the server has neither closed nor sent GOAWAY on."""
    alive = 0
    for s in socks:
        data, closed = b"", False
        s.setblocking(False)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed = True
        goaway, i = False, 0
        while i + 9 <= len(data):
            length, kind = int.from_bytes(data[i:i + 3], "big"), data[i + 3]
            goaway |= kind == 0x7
            i += 9 + length
        alive += not (closed or goaway)
    return alive


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 1024))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < n + 256:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is too low for {n} connections")


def floor_rss_per_conn(bin_dir: Path, n: int) -> dict:
    """The same idle connections held by grpc-floor: tonic's default server, no proxy."""
    floor = subprocess.Popen([str(bin_dir / "prism-bench"), "floor", "--kind", "grpc", "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = floor.stdout.readline().strip()
        port = int(line.rsplit(":", 1)[1])
        # A first few connections allocate what every later one shares
        # (buffers per worker thread), as the proxy's warm-up run does.
        close_all(open_idle(port, 4))
        time.sleep(0.5)
        before = rss_bytes(floor.pid)
        socks = open_idle(port, n)
        time.sleep(1.0)
        after = rss_bytes(floor.pid)
        alive = still_open(socks)
        close_all(socks)
        return {"rss_before": before, "rss_after": after, "bytes_per_conn": (after - before) / n, "still_open": alive}
    finally:
        floor.terminate()
        floor.wait(timeout=10)


def curve_connections(bin_dir: Path, out_dir: Path, work: Path, o: dict, bad: list[str]) -> dict:
    raise_nofile(max(o["connections"]))
    rows = []
    for n in o["connections"]:
        proxy = Proxy(bin_dir, work / f"connections-{n}", ["memstore"], {"cost-memstore": "memstore"})
        proxy.start()
        socks: list[socket.socket] = []
        runs: dict[str, list[dict]] = {"without": [], "with": []}
        try:
            proxy.wait_ready()
            common = ["-t", "prism/cost-memstore", "-w", "get", "-c", "16", "--rate", str(o["rate"]),
                      "--key-space", "1000", "--prism", f"127.0.0.1:{proxy.port}", "--prism-pid", str(proxy.pid)]
            # Warm the request path first, so the memory it takes is not
            # charged to the idle connections.
            warm = bench(bin_dir, [*common, "--duration", o["warm"], "--warmup", "0s"],
                         out_dir / f"connections-{n}-warm.json")
            check_runs(f"connections {n} warm-up", warm, bad)
            time.sleep(0.5)
            before = rss_bytes(proxy.pid)
            # Runs without and with the idle connections alternate on the same
            # proxy, so that the machine's drift does not pass for their effect.
            for rep in range(o["repeat"]):
                for idle in (False, True):
                    if idle:
                        t0 = time.monotonic()
                        socks = open_idle(proxy.port, n)
                        if rep == 0:
                            open_s = time.monotonic() - t0
                            time.sleep(1.0)
                            after = rss_bytes(proxy.pid)
                            cpu0, c0 = cpu_seconds(proxy.pid), time.monotonic()
                            time.sleep(o["idle"])
                            idle_cpu = (cpu_seconds(proxy.pid) - cpu0) / (time.monotonic() - c0)
                    name = f"connections-{n}-{'with' if idle else 'without'}-{rep}.json"
                    report = bench(bin_dir, [*common, "--duration", o["duration"], "--warmup", o["warmup"]],
                                   out_dir / name)
                    check_runs(name, report, bad)
                    runs["with" if idle else "without"].append(report["summary"][0])
                    if idle and rep < o["repeat"] - 1:
                        close_all(socks)
                        socks = []
                        time.sleep(0.5)
            end = rss_bytes(proxy.pid)
            alive = still_open(socks)
        finally:
            close_all(socks)
            proxy.stop()

        def lat(which: str, q: str) -> float:
            return median([m["latency_us"][q] for m in runs[which]])

        cpu = [p["cpu_per_second"] for m in runs["with"] for p in m["processes"] if p["name"] == "prism-proxy"]
        floor = floor_rss_per_conn(bin_dir, n)
        rows.append({"connections": n, "open_seconds": open_s, "rss_before": before, "rss_after": after,
                     "rss_end": end, "bytes_per_conn": (after - before) / n, "still_open": alive,
                     "idle_cpu_per_s": idle_cpu, "proxy_cpu_per_s": median(cpu) if cpu else None,
                     "p50_us": lat("with", "p50"), "p99_us": lat("with", "p99"),
                     "p50_without_us": lat("without", "p50"), "p99_without_us": lat("without", "p99"),
                     "p99_runs_us": [m["latency_us"]["p99"] for m in runs["with"]],
                     "p99_runs_without_us": [m["latency_us"]["p99"] for m in runs["without"]],
                     "errors": sum(sum(m["errors"].values()) for r in runs.values() for m in r), "floor": floor})
        r = rows[-1]
        print(f"connections {n}: {r['bytes_per_conn'] / KIB:.1f} KiB/conn (floor "
              f"{floor['bytes_per_conn'] / KIB:.1f}), p99 {r['p99_us']:.0f} us with, {r['p99_without_us']:.0f} "
              f"without, open {alive}/{n}", flush=True)
    return {"rate": o["rate"], "repeat": o["repeat"], "rows": rows}


def apply_one(bin_dir: Path, proxy: Proxy, prefix: str, out: Path) -> dict:
    cmd = [str(bin_dir / "prism-bench"), "apply-latency", "--prism", f"127.0.0.1:{proxy.port}", "--prefix", prefix,
           "--count", "1", "--backend", "memstore", "--json", str(out)]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["samples"][0]


def curve_namespaces(bin_dir: Path, out_dir: Path, work: Path, o: dict, bad: list[str]) -> dict:
    rows = []
    for n in o["namespaces"]:
        names = {f"cost-ns-{i:05}": "memstore" for i in range(n)}
        starts = []
        for r in range(o["starts"]):
            proxy = Proxy(bin_dir, work / f"namespaces-{n}-{r}", ["memstore"], names)
            waiter = first_call(bin_dir, proxy, f"cost-ns-{n - 1:05}")
            time.sleep(0.2)
            proxy.start()
            last = r == o["starts"] - 1
            try:
                ready = proxy.wait_ready(timeout=900)
                served = served_after(waiter, proxy)
                starts.append({"ready_s": ready, "first_call_s": served, "proxy_cpu_s": cpu_seconds(proxy.pid),
                               "tree_cpu_s": tree_cpu(proxy.pid)})
                print(f"namespaces {n}: ready {ready:.3f} s", flush=True)
                if last:
                    row = measure_namespaces(bin_dir, out_dir, proxy, n, o)
            finally:
                if waiter.poll() is None:
                    waiter.kill()
                proxy.stop()
        row.update({"namespaces": n, "starts": starts, "ready_s": median([s["ready_s"] for s in starts]),
                    "first_call_s": median([s["first_call_s"] for s in starts]),
                    "start_cpu_s": median([s["tree_cpu_s"] for s in starts])})
        rows.append(row)
        print(f"namespaces {n}: ready {row['ready_s']:.3f} s, RSS {row['proxy_rss'] / MIB:.1f} MiB, "
              f"apply {row['apply_ms']:.2f} ms, servable {row['servable_ms']:.2f} ms, "
              f"reload {row['reload_done_ms']:.0f} ms, idle {row['idle_cpu_per_s']:.4f} CPU-s/s", flush=True)
    return {"rows": rows, "applies": o["applies"], "idle_window_s": o["idle_window"]}


def measure_namespaces(bin_dir: Path, out_dir: Path, proxy: Proxy, n: int, o: dict) -> dict:
    """Memory, idle CPU and applies of a started proxy holding n namespaces."""
    reloads = "prism_registry_reloads_total"
    time.sleep(1.0)
    rss = rss_bytes(proxy.pid)
    plugin_rss = sum(rss_bytes(p) for p in children(proxy.pid))
    # Idle: long enough to include the directory's periodic full reload
    # (every 30 s) in the real run.
    reloads0 = proxy.metric(reloads)
    cpu0, c0 = tree_cpu(proxy.pid), time.monotonic()
    time.sleep(o["idle_window"])
    idle_cpu = (tree_cpu(proxy.pid) - cpu0) / (time.monotonic() - c0)
    idle_reloads = proxy.metric(reloads) - reloads0
    samples = []
    for i in range(o["applies"]):
        before = proxy.metric(reloads)
        cpu0, c0 = tree_cpu(proxy.pid), time.monotonic()
        s = apply_one(bin_dir, proxy, f"probe{i}", out_dir / f"namespaces-{n}-apply-{i}.json")
        # The namespaces directory changed: the watcher reloads it (after a
        # 200 ms debounce). Wait for that reload to end.
        end = time.monotonic() + 120
        while proxy.metric(reloads) <= before and time.monotonic() < end:
            time.sleep(0.01)
        s["reload_done_ms"] = (time.monotonic() - c0) * 1000
        time.sleep(o["pause"])
        s["cpu_ms"] = (tree_cpu(proxy.pid) - cpu0) * 1000
        samples.append(s)
    return {"proxy_rss": rss, "plugin_rss": plugin_rss, "proxy_rss_after_applies": rss_bytes(proxy.pid),
            "idle_cpu_per_s": idle_cpu, "idle_reloads": idle_reloads,
            "dry_run_ms": median([s["dry_run_us"] / 1000 for s in samples]),
            "apply_ms": median([s["apply_us"] / 1000 for s in samples]),
            "servable_ms": median([s["servable_us"] / 1000 for s in samples]),
            "reload_done_ms": median([s["reload_done_ms"] for s in samples]),
            "cpu_per_apply_ms": median([s["cpu_ms"] for s in samples]), "samples": samples}


def start_once(bin_dir: Path, work: Path, plugins: list[str]) -> dict:
    proxy = Proxy(bin_dir, work, plugins, {f"cost-{p}": p for p in plugins})
    waiter = first_call(bin_dir, proxy, f"cost-{plugins[0]}")
    # The waiter is up and polling before the proxy is spawned.
    time.sleep(0.2)
    proxy.start()
    try:
        ready = proxy.wait_ready()
        served = served_after(waiter, proxy)
        rss = rss_bytes(proxy.pid)
    finally:
        if waiter.poll() is None:
            waiter.kill()
        proxy.stop()
    return {"ready_ms": ready * 1000, "first_call_ms": served * 1000, "proxy_rss": rss}


def curve_startup(bin_dir: Path, out_dir: Path, work: Path, o: dict, bad: list[str]) -> dict:
    order = list(PLUGINS)
    rows, alone = [], []
    for k in o["plugin_counts"]:
        plugins = order[:k]
        runs = [start_once(bin_dir, work / f"startup-{k}-{r}", plugins) for r in range(o["starts"])]
        rows.append({"plugins": plugins, "count": k, "runs": runs,
                     "ready_ms": median([r["ready_ms"] for r in runs]),
                     "first_call_ms": median([r["first_call_ms"] for r in runs])})
        print(f"startup with {k} plugin(s): ready {rows[-1]['ready_ms']:.0f} ms, "
              f"first call {rows[-1]['first_call_ms']:.0f} ms", flush=True)
    for p in o["alone"]:
        runs = [start_once(bin_dir, work / f"alone-{p}-{r}", [p]) for r in range(o["alone_starts"])]
        alone.append({"plugin": p, "runs": runs, "ready_ms": median([r["ready_ms"] for r in runs]),
                      "first_call_ms": median([r["first_call_ms"] for r in runs])})
        print(f"startup with {p} alone: ready {alone[-1]['ready_ms']:.0f} ms", flush=True)
    return {"rows": rows, "alone": alone, "starts": o["starts"], "cores": os.cpu_count()}


def options(smoke: bool) -> dict:
    if smoke:
        short = {"duration": "1s", "warmup": "200ms", "repeat": 1, "concurrency": 16}
        return {
            "value_size": {**short, "sizes": [100, MIB]},
            "batch": {**short, "batches": [1, 500], "key_space": 1000},
            "connections": {**short, "connections": [10, 100], "rate": 200, "warm": "1s", "idle": 0.5},
            "namespaces": {"namespaces": [10, 100], "starts": 1, "applies": 2, "pause": 0.3, "idle_window": 0.5},
            "startup": {"plugin_counts": [1, 5], "starts": 1, "alone": [], "alone_starts": 1},
        }
    run = {"duration": "3s", "warmup": "1s", "repeat": 3, "concurrency": 16}
    return {
        "value_size": {**run, "sizes": [100, KIB, 10 * KIB, 100 * KIB, MIB]},
        "batch": {**run, "batches": [1, 10, 100, 500], "key_space": 10_000},
        "connections": {**run, "duration": "5s", "connections": [10, 1000, 10_000], "rate": 1000, "warm": "2s",
                        "idle": 3.0},
        "namespaces": {"namespaces": [10, 1000, 10_000], "starts": 3, "applies": 5, "pause": 1.0,
                       "idle_window": 31.0},
        "startup": {"plugin_counts": [1, 2, 3, 4, 5], "starts": 5, "alone": list(PLUGINS), "alone_starts": 3},
    }


CURVES = {
    "value_size": curve_value_size,
    "batch": curve_batch,
    "connections": curve_connections,
    "namespaces": curve_namespaces,
    "startup": curve_startup,
}


def run_costs(bin_dir: Path, out_dir: Path, smoke: bool, only: list[str] | None = None) -> dict:
    """Measures every curve (or those in `only`, kept with the others of the last `costs.json`) with the
    binaries in `bin_dir`; writes the raw JSON to `out_dir` (`costs.json` and each prism-bench report).
    Exits non-zero on any failed request."""
    for p in PACKAGES:
        if not (bin_dir / p).exists():
            raise SystemExit(f"missing {bin_dir / p}; build it first")
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = options(smoke)
    unknown = set(only or []) - set(CURVES)
    if unknown:
        raise SystemExit(f"unknown curves {sorted(unknown)}; choose from {', '.join(CURVES)}")
    results: dict = {}
    if only and (out_dir / "costs.json").exists():
        results = json.loads((out_dir / "costs.json").read_text())
    results.update({"build": bin_dir.name, "smoke": smoke, "cores": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d"), "options": opts})
    bad: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prism-costs-") as tmp:
        for name, curve in CURVES.items():
            if only and name not in only:
                continue
            print(f"== {name}", flush=True)
            results[name] = curve(bin_dir, out_dir, Path(tmp), opts[name], bad)
            (out_dir / "costs.json").write_text(json.dumps(results, indent=1) + "\n")
    if bad:
        raise SystemExit("requests failed:\n  " + "\n  ".join(bad))
    return results


# --- plots --------------------------------------------------------------------

COLORS = {"prism": "#1f77b4", "floor": "#ff7f0e", "redis": "#2ca02c", "other": "#7f7f7f"}
# A target keeps its colour on every plot.
TARGET_COLORS = {"prism/cost-memstore": "#1f77b4", "grpc-floor": "#ff7f0e", "prism/cost-redis": "#9467bd",
                 "grpc-redis-floor": "#8c564b", "redis": "#2ca02c"}


def fmt_num(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def fmt_size(n: float) -> str:
    for unit, div in (("MiB", MIB), ("KiB", KIB)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n:g} B"


def log_ticks(lo: float, hi: float) -> list[float]:
    out, decade = [], 10 ** math.floor(math.log10(lo))
    while decade <= hi:
        out += [decade * m for m in (1, 2, 5) if lo <= decade * m <= hi]
        decade *= 10
    return out


def nice_step(raw: float) -> float:
    """The 1, 2 or 5 × 10^k at or above `raw`."""
    decade = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(decade * m for m in (1, 2, 5, 10) if decade * m >= raw)


def svg_panels(path: Path, title: str, xlabel: str, panels: list[dict], xticks: list[tuple[float, str]]) -> None:
    """Panels side by side over one log-scale x axis, as a dependency-free SVG. A panel is
    {"ylabel", "ylog", "series": [{"label", "color", "dash", "points": [(x, y)]}]}; the legend lists
    the labels of every panel once."""
    pw, ph, ml, mr, mt, mb = 400, 260, 64, 16, 40, 46
    labels: dict[str, tuple[str, bool]] = {}
    for panel in panels:
        for s in panel["series"]:
            labels.setdefault(s["label"], (s["color"], s["dash"]))
    legend_rows = math.ceil(len(labels) / 3)
    w, h = pw * len(panels), ph + 28 + 18 * legend_rows
    xs = [x for _, x in [(0, t[0]) for t in xticks]]
    lx0, lx1 = math.log10(min(xs)) - 0.08, math.log10(max(xs)) + 0.08
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             'font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{ml}" y="18" font-size="13">{title}</text>']
    for k, panel in enumerate(panels):
        x0 = k * pw
        pts = [p for s in panel["series"] for p in s["points"]
               if p[1] is not None and (p[1] > 0 or not panel.get("ylog"))]
        if not pts:
            continue
        ylo, yhi = min(p[1] for p in pts), max(p[1] for p in pts)
        if panel.get("ylog"):
            ly0, ly1 = math.log10(ylo) - 0.1, math.log10(yhi) + 0.1

            def sy(v: float, ly0=ly0, ly1=ly1) -> float:
                return ph - mb - (math.log10(v) - ly0) / (ly1 - ly0) * (ph - mt - mb)

            yticks = log_ticks(10 ** ly0, 10 ** ly1)
            if len(yticks) > 8:
                yticks = [t for t in yticks if str(t).lstrip("0.").startswith("1")]
        else:
            step = nice_step(yhi / 4)
            top = step * math.ceil(yhi * 1.05 / step)

            def sy(v: float, top=top) -> float:
                return ph - mb - v / top * (ph - mt - mb)

            yticks = [step * i for i in range(round(top / step) + 1)]

        def sx(v: float, x0=x0) -> float:
            return x0 + ml + (math.log10(v) - lx0) / (lx1 - lx0) * (pw - ml - mr)

        parts.append(f'<line x1="{x0 + ml}" y1="{ph - mb}" x2="{x0 + pw - mr}" y2="{ph - mb}" stroke="black"/>')
        parts.append(f'<line x1="{x0 + ml}" y1="{mt}" x2="{x0 + ml}" y2="{ph - mb}" stroke="black"/>')
        for v in yticks:
            y = sy(v)
            parts.append(f'<line x1="{x0 + ml}" y1="{y:.1f}" x2="{x0 + pw - mr}" y2="{y:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{x0 + ml - 4}" y="{y + 4:.1f}" text-anchor="end">{fmt_num(round(v, 3))}</text>')
        for v, label in xticks:
            x = sx(v)
            parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{ph - mb}" stroke="#eee"/>')
            parts.append(f'<text x="{x:.1f}" y="{ph - mb + 14}" text-anchor="middle">{label}</text>')
        parts.append(f'<text x="{x0 + (ml + pw - mr) / 2}" y="{ph - mb + 32}" text-anchor="middle">{xlabel}</text>')
        cy = (mt + ph - mb) / 2
        scale = " (log)" if panel.get("ylog") else ""
        parts.append(f'<text x="{x0 + 14}" y="{cy}" transform="rotate(-90 {x0 + 14} {cy})" '
                     f'text-anchor="middle">{panel["ylabel"]}{scale}</text>')
        for s in panel["series"]:
            points = [(x, y) for x, y in s["points"] if y is not None and (y > 0 or not panel.get("ylog"))]
            if not points:
                continue
            dash = ' stroke-dasharray="5 3"' if s["dash"] else ""
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{s["color"]}" stroke-width="2"{dash}/>')
            for x, y in points:
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s["color"]}">'
                             f'<title>{s["label"]}: {fmt_num(x)} → {y:.4g}</title></circle>')
    for i, (label, (color, dash)) in enumerate(labels.items()):
        lx, ly = 20 + (i % 3) * (w - 40) / 3, ph + 20 + 18 * (i // 3)
        d = ' stroke-dasharray="5 3"' if dash else ""
        parts.append(f'<line x1="{lx:.0f}" y1="{ly}" x2="{lx + 24:.0f}" y2="{ly}" stroke="{color}" '
                     f'stroke-width="2"{d}/>')
        parts.append(f'<text x="{lx + 30:.0f}" y="{ly + 4}">{label}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def series_of(rows: list[dict], xkey: str, ykey, workloads: list[str]) -> list[dict]:
    out = []
    for wl in workloads:
        for t in dict.fromkeys(r["target"] for r in rows):
            pts = sorted((r[xkey], ykey(r)) for r in rows if r["target"] == t and r["workload"] == wl)
            if pts:
                out.append({"label": f"{t} {wl}", "color": TARGET_COLORS.get(t, COLORS["other"]),
                            "dash": wl.endswith("put"),
                            "points": pts})
    return out


def write_plots(results: dict, img_dir: Path) -> list[str]:
    """One SVG per measured curve in `img_dir`; returns the file names."""
    written = []

    def out(name: str) -> Path:
        written.append(name)
        return img_dir / name

    if vs := results.get("value_size"):
        rows = vs["rows"]
        svg_panels(out("cost-value-size.svg"), f"Value size: get and put at {vs['concurrency']} in flight",
                   "value size", [
                       {"ylabel": "MB/s", "ylog": True, "series": series_of(rows, "size", lambda r: r["mb_per_s"],
                                                                             ["get", "put"])},
                       {"ylabel": "p99, ms", "ylog": True,
                        "series": series_of(rows, "size", lambda r: r["p99_us"] / 1000, ["get", "put"])}],
                   [(s, fmt_size(s)) for s in vs["sizes"]])
    if b := results.get("batch"):
        rows = b["rows"]
        svg_panels(out("cost-batch.svg"), f"Batch size: BatchGet and BatchPut at {b['concurrency']} in flight",
                   "keys per request", [
                       {"ylabel": "keys/s", "ylog": True,
                        "series": series_of(rows, "batch", lambda r: r["items_per_second"],
                                            ["batch-get", "batch-put"])},
                       {"ylabel": "p99, ms", "ylog": True,
                        "series": series_of(rows, "batch", lambda r: r["p99_us"] / 1000,
                                            ["batch-get", "batch-put"])}],
                   [(x, str(x)) for x in b["batches"]])
    if c := results.get("connections"):
        rows = c["rows"]
        n = [r["connections"] for r in rows]
        svg_panels(out("cost-connections.svg"), f"Idle client connections; get at {c['rate']}/s on one more",
                   "idle connections", [
                       {"ylabel": "RSS per connection, KiB", "ylog": False, "series": [
                           {"label": "prism-proxy", "color": COLORS["prism"], "dash": False,
                            "points": [(r["connections"], r["bytes_per_conn"] / KIB) for r in rows]},
                           {"label": "grpc-floor", "color": COLORS["floor"], "dash": False,
                            "points": [(r["connections"], r["floor"]["bytes_per_conn"] / KIB) for r in rows]}]},
                       {"ylabel": "latency of the active calls, µs", "ylog": False, "series": [
                           {"label": "p99", "color": COLORS["prism"], "dash": False,
                            "points": [(r["connections"], r["p99_us"]) for r in rows]},
                           {"label": "p50", "color": COLORS["prism"], "dash": True,
                            "points": [(r["connections"], r["p50_us"]) for r in rows]}]}],
                   [(x, fmt_num(x)) for x in n])
    if ns := results.get("namespaces"):
        rows = ns["rows"]
        n = [r["namespaces"] for r in rows]
        svg_panels(out("cost-namespaces.svg"), "Declared namespaces (memstore)", "namespaces", [
            {"ylabel": "RSS, MiB", "ylog": False, "series": [
                {"label": "prism-proxy RSS", "color": COLORS["prism"], "dash": False,
                 "points": [(r["namespaces"], r["proxy_rss"] / MIB) for r in rows]},
                {"label": "memstore plugin RSS", "color": COLORS["other"], "dash": False,
                 "points": [(r["namespaces"], r["plugin_rss"] / MIB) for r in rows]}]},
            {"ylabel": "ms", "ylog": True, "series": [
                {"label": "start → /readyz", "color": COLORS["redis"], "dash": False,
                 "points": [(r["namespaces"], r["ready_s"] * 1000) for r in rows]},
                {"label": "apply (client)", "color": "#d62728", "dash": False,
                 "points": [(r["namespaces"], r["apply_ms"]) for r in rows]},
                {"label": "apply → servable", "color": "#d62728", "dash": True,
                 "points": [(r["namespaces"], r["servable_ms"]) for r in rows]},
                {"label": "apply → directory reloaded", "color": COLORS["floor"], "dash": True,
                 "points": [(r["namespaces"], r["reload_done_ms"]) for r in rows]}]}],
            [(x, fmt_num(x)) for x in n])
    if st := results.get("startup"):
        rows = st["rows"]
        svg_panels(out("cost-startup.svg"), "Proxy start with 1 to 5 plugins (median of starts)", "plugins", [
            {"ylabel": "ms from spawn", "ylog": False, "series": [
                {"label": "→ /readyz 200", "color": COLORS["prism"], "dash": False,
                 "points": [(r["count"], r["ready_ms"]) for r in rows]},
                {"label": "→ first served Get", "color": COLORS["floor"], "dash": True,
                 "points": [(r["count"], r["first_call_ms"]) for r in rows]}]}],
            [(r["count"], str(r["count"])) for r in rows])
    return written


# --- the section --------------------------------------------------------------


def pick(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def ratio(a: float | None, b: float | None) -> str:
    return f"{100 * a / b:.0f}%" if a is not None and b else "-"


def doc_lines(results: dict) -> list[str]:
    """The `## How cost grows` section: one `###` per curve with its plot, its numbers and where the
    cost per unit bends."""
    lines = [
        "## How cost grows",
        "",
        f"Each curve next to its floor, measured by `uv run tooling/bench_costs.py` ({results['build']} build, "
        f"{results['cores']} cores, {results['date']}; everything on loopback on one machine, the load generator "
        "included, and shared with other work). Throughput figures are the median of the runs of a point; runs of "
        "one point vary by tens of percent here, so compare Prism with its floor within a point. The raw JSON is "
        "in `target/bench-costs/`.",
        "",
    ]
    if vs := results.get("value_size"):
        lines += value_size_lines(vs)
    if b := results.get("batch"):
        lines += batch_lines(b)
    if c := results.get("connections"):
        lines += connections_lines(c)
    if ns := results.get("namespaces"):
        lines += namespaces_lines(ns)
    if st := results.get("startup"):
        lines += startup_lines(st)
    return lines


def value_size_lines(vs: dict) -> list[str]:
    rows = vs["rows"]
    lines = [
        "### Value size",
        "",
        f"Get and put of one value, {vs['concurrency']} in flight on one connection: Prism → redis plugin, "
        "`grpc-redis-floor` (one tonic hop to the same Redis) and Redis directly, interleaved in one run. Keys "
        f"preloaded: 10,000, fewer for large values (at most {PRELOAD_BUDGET // MIB} MiB per target). MB/s counts "
        "value bytes. CPU per request is the CPU time of the proxy and its plugin, of the floor process, and of "
        "redis-server over the measurement, divided by the requests answered.",
        "",
        "![Value size: MB/s and p99](img/cost-value-size.svg)",
        "",
        "| value | workload | Prism MB/s | floor MB/s | Redis MB/s | Prism / floor | Prism p99 µs | floor p99 µs "
        "| Redis p99 µs | CPU µs/req: proxy + plugin / floor | redis-server µs/req: Prism / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in vs["sizes"]:
        for wl in ("get", "put"):
            p = pick(rows, size=size, workload=wl, target="prism/cost-redis")
            f = pick(rows, size=size, workload=wl, target="grpc-redis-floor")
            r = pick(rows, size=size, workload=wl, target="redis")
            if not (p and f and r):
                continue
            lines.append(
                f"| {fmt_size(size)} | {wl} | {p['mb_per_s']:.1f} | {f['mb_per_s']:.1f} | {r['mb_per_s']:.1f} | "
                f"{ratio(p['throughput'], f['throughput'])} | {p['p99_us']:,} | {f['p99_us']:,} | {r['p99_us']:,} | "
                f"{gateway_cpu(p)} / {gateway_cpu(f)} | {us(p['redis_cpu_us'])} / {us(f['redis_cpu_us'])} |"
            )
    lines += ["", *value_size_bends(vs), ""]
    return lines


def us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def gateway_cpu(row: dict) -> str:
    """CPU µs per request of the target's server: proxy + plugin (named apart), or the floor."""
    cpu = row["server_cpu_us"]
    if row["target"].startswith("prism/"):
        plugin = "prism-plugin-" + row["target"].removeprefix("prism/cost-")
        return f"{us(cpu.get('prism-proxy'))} + {us(cpu.get(plugin))}"
    return us(sum(cpu.values())) if cpu else "-"


def batch_lines(b: dict) -> list[str]:
    rows = b["rows"]
    lines = [
        "### Batch size",
        "",
        f"One BatchGet of N random preloaded keys, or one BatchPut of N random keys, {b['value_size']}-byte "
        f"values, {b['concurrency']} in flight, the four targets interleaved in one run. Floors: `grpc-floor` (a "
        "map in memory) for memstore, `grpc-redis-floor` (one MGET / one MSET) for redis. keys/s = requests/s × N; "
        "redis-server CPU is per key.",
        "",
        "![Batch size: keys/s and p99](img/cost-batch.svg)",
        "",
        "| N | workload | target | requests/s | keys/s | vs floor | p50 µs | p99 µs | redis-server µs/key |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    floors = {"prism/cost-memstore": "grpc-floor", "prism/cost-redis": "grpc-redis-floor"}
    for n in b["batches"]:
        for wl in ("batch-get", "batch-put"):
            for t in ("prism/cost-memstore", "grpc-floor", "prism/cost-redis", "grpc-redis-floor"):
                m = pick(rows, batch=n, workload=wl, target=t)
                if not m:
                    continue
                f = pick(rows, batch=n, workload=wl, target=floors[t]) if t in floors else None
                vs = ratio(m["throughput"], f["throughput"]) if f else ""
                redis = f"{m['redis_cpu_us'] / n:.2f}" if "redis" in t and m["redis_cpu_us"] is not None else ""
                lines.append(f"| {n} | {wl} | {t} | {m['throughput']:,.0f} | {m['items_per_second']:,.0f} | {vs} | "
                             f"{m['p50_us']:,} | {m['p99_us']:,} | {redis} |")
    lines += ["", *batch_bends(b), ""]
    return lines


def connections_lines(c: dict) -> list[str]:
    rows = c["rows"]
    lines = [
        "### Idle connections",
        "",
        "N client connections that complete the HTTP/2 handshake (preface, SETTINGS, ack) and then stay "
        "silent, while `prism-bench` sends Gets to memstore at a fixed "
        f"{c['rate']:,}/s (open loop, 16 in flight) on one more connection. RSS per connection is the proxy's "
        "VmRSS after opening them minus before, over N (the request path warmed first); the floor is the "
        "same connections held by `grpc-floor` (tonic's default server). A fresh proxy per N; on it, "
        f"{c.get('repeat', 1)} runs with the idle connections open alternate with {c.get('repeat', 1)} without "
        "them, and the latency columns are the median run of each.",
        "",
        "![Idle connections: RSS per connection and latency](img/cost-connections.svg)",
        "",
        "| idle connections | proxy RSS before → after, MiB | per connection, KiB | grpc-floor per connection, KiB "
        "| still open at the end | proxy CPU while idle, s/s | get p50 µs with / without | get p99 µs with / without "
        "| p99 of each run with / without, µs | proxy CPU under the load, s/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = "-" if r["proxy_cpu_per_s"] is None else f"{r['proxy_cpu_per_s']:.3f}"
        lines.append(
            f"| {r['connections']:,} | {r['rss_before'] / MIB:.1f} → {r['rss_after'] / MIB:.1f} | "
            f"{r['bytes_per_conn'] / KIB:.1f} | {r['floor']['bytes_per_conn'] / KIB:.1f} | "
            f"{r['still_open']:,} | {r['idle_cpu_per_s']:.3f} | {r['p50_us']:,.0f} / {r['p50_without_us']:,.0f} | "
            f"{r['p99_us']:,.0f} / {r['p99_without_us']:,.0f} | "
            f"{', '.join(f'{x:,}' for x in r['p99_runs_us'])} / "
            f"{', '.join(f'{x:,}' for x in r['p99_runs_without_us'])} "
            f"| {cpu} |"
        )
    lines += ["", *connections_bends(c), ""]
    return lines


def namespaces_lines(ns: dict) -> list[str]:
    rows = ns["rows"]
    starts = len(rows[0]["starts"]) if rows else 0
    lines = [
        "### Namespaces",
        "",
        f"The proxy started with N memstore KeyValue namespaces in its namespaces directory ({starts} start(s) per "
        f"N, median), then {ns['applies']} more applied one at a time through the Admin API "
        "(`prism-bench apply-latency`). *Apply* is ApplyNamespace's latency as the client sees it: the route-table "
        "swap happens inside it and cannot be timed apart from outside. *Dry run* is the same document applied "
        "with `dry_run` just before (validation and plan; no registry write, plugin preparation or swap). "
        "*Servable* is from sending the apply until a Get on the new namespace is answered (a key never written, "
        "found = false; the proxy answers NOT_FOUND for a namespace it does not route, so that is retried). "
        "*Reloaded* is from sending the apply until `prism_registry_reloads_total` ticks: the directory watcher's "
        "reload, which the apply's own file write triggers. CPU per apply is the proxy's and plugin's CPU from the "
        f"apply until 1 s after that reload; idle CPU is theirs over {ns['idle_window_s']:g} s with nothing to do.",
        "",
        "![Namespaces: RSS and latencies](img/cost-namespaces.svg)",
        "",
        "| namespaces | start → /readyz, ms | → first Get, ms | CPU to start, s | proxy RSS, MiB | memstore RSS, MiB "
        "| idle CPU, s/s | dry run, ms | apply, ms | apply → servable, ms | apply → reloaded, ms | CPU per apply, ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['namespaces']:,} | {r['ready_s'] * 1000:,.0f} | {r['first_call_s'] * 1000:,.0f} | "
            f"{r['start_cpu_s']:.2f} | {r['proxy_rss'] / MIB:.1f} | {r['plugin_rss'] / MIB:.1f} | "
            f"{r['idle_cpu_per_s']:.4f} | {r['dry_run_ms']:.2f} | {r['apply_ms']:.2f} | {r['servable_ms']:.2f} | "
            f"{r['reload_done_ms']:,.0f} | {r['cpu_per_apply_ms']:,.0f} |"
        )
    lines += ["", *namespaces_bends(ns), ""]
    return lines


def startup_lines(st: dict) -> list[str]:
    rows = st["rows"]
    lines = [
        "### Startup",
        "",
        "From spawning `prism-proxy` until `/readyz` answers 200, and until a Get on the memstore namespace is "
        "answered (a waiter started before the proxy, polling every 2 ms). One namespace per plugin, so "
        f"`/readyz` waits for every plugin. Median of {st['starts']} starts per row; plugins added in the order "
        "memstore, sqlite, redis, postgres, nats.",
        "",
        "![Startup](img/cost-startup.svg)",
        "",
        "| plugins | start → /readyz, ms | → first Get, ms | each start → /readyz, ms |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        each = ", ".join(f"{x['ready_ms']:.0f}" for x in r["runs"])
        lines.append(f"| {r['count']}: {', '.join(r['plugins'])} | {r['ready_ms']:.0f} | {r['first_call_ms']:.0f} | "
                     f"{each} |")
    if st.get("alone"):
        lines += ["", "Each plugin alone:", "", "| plugin | start → /readyz, ms | → first Get, ms |",
                  "|---|---:|---:|"]
        for a in st["alone"]:
            lines.append(f"| {a['plugin']} | {a['ready_ms']:.0f} | {a['first_call_ms']:.0f} |")
    lines += ["", *startup_bends(st), ""]
    return lines


# Where each curve bends and why: computed from the results, with the mechanism each one was traced to (in the
# code named, and for the namespace start in a `perf` profile of the proxy and the plugin).


def value_size_bends(vs: dict) -> list[str]:
    rows, sizes = vs["rows"], vs["sizes"]
    get = {s: pick(rows, size=s, workload="get", target="prism/cost-redis") for s in sizes}
    if len(sizes) < 3 or not all(get.values()):
        return []
    base = get[sizes[0]]["throughput"]
    bend = next((s for s in sizes if get[s]["throughput"] < 0.75 * base), sizes[-1])
    before = sizes[max(0, sizes.index(bend) - 1)]
    big, small = sizes[-1], sizes[0]

    def ratios(wl: str) -> list[float]:
        out = []
        for s in sizes:
            p = pick(rows, size=s, workload=wl, target="prism/cost-redis")
            f = pick(rows, size=s, workload=wl, target="grpc-redis-floor")
            out.append(100 * p["throughput"] / f["throughput"])
        return out

    gr, pr = ratios("get"), ratios("put")
    pp = pick(rows, size=big, workload="put", target="prism/cost-redis")
    fp = pick(rows, size=big, workload="put", target="grpc-redis-floor")
    pg = pick(rows, size=big, workload="get", target="prism/cost-redis")
    rd = pick(rows, size=big, workload="get", target="redis")
    pg_small = pick(rows, size=small, workload="get", target="prism/cost-redis")
    rd_small = pick(rows, size=small, workload="get", target="redis")
    fg = pick(rows, size=big, workload="get", target="grpc-redis-floor")
    text = (
        f"**Where it bends and why.** Up to {fmt_size(before)} a request costs about the same whatever its value "
        f"(Prism get: {base:,.0f} requests/s at {fmt_size(small)}, {get[before]['throughput']:,.0f} at "
        f"{fmt_size(before)}), so MB/s grows in step with the value. Past {fmt_size(before)} the work per byte "
        f"takes over and requests/s fall nearly as fast as the value grows ({get[bend]['throughput']:,.0f} at "
        f"{fmt_size(bend)}, {get[big]['throughput']:,.0f} at {fmt_size(big)}): the proxy's CPU per get goes from "
        f"{us(pg_small['server_cpu_us'].get('prism-proxy'))} µs at {fmt_size(small)} to "
        f"{us(pg['server_cpu_us'].get('prism-proxy'))} µs at {fmt_size(big)}, and MB/s flattens, at "
        f"{pg['mb_per_s']:.0f} MB/s for a {fmt_size(big)} get. The floor bends at the same place: it is the same "
        f"work minus the second hop, and Prism's get keeps {min(gr):.0f}–{max(gr):.0f}% of it at every size "
        f"({gr[-1]:.0f}% at {fmt_size(big)}). Its put keeps {pr[-1]:.0f}% at {fmt_size(big)}, for two costs that "
        f"grow with the value. The second hop carries the value once more: per {fmt_size(big)} put the proxy spent "
        f"{us(pp['server_cpu_us'].get('prism-proxy'))} µs of CPU and the plugin "
        f"{us(pp['server_cpu_us'].get('prism-plugin-redis'))} µs, where the whole floor process spent "
        f"{gateway_cpu(fp)} µs. And the plugin writes with a Lua script (HSET of value and version, the scan index "
        "and the version counter; `patterns/redis/src/scripts.rs`) where the floor sends one SET: redis-server "
        f"spent {us(pp['redis_cpu_us'])} µs of CPU per {fmt_size(big)} put from Prism against "
        f"{us(fp['redis_cpu_us'])} µs from the floor, while a get cost it about the same from either "
        f"({us(pg['redis_cpu_us'])} and {us(fg['redis_cpu_us'])} µs). Redis directly, with no HTTP/2 or protobuf "
        f"on its path, stays {rd_small['throughput'] / pg_small['throughput']:.0f}× above Prism at "
        f"{fmt_size(small)} and {rd['throughput'] / pg['throughput']:.1f}× at {fmt_size(big)}."
    )
    return [text]


def batch_bends(b: dict) -> list[str]:
    rows, ns = b["rows"], b["batches"]
    if len(ns) < 3:
        return []
    first, last = ns[0], ns[-1]

    def r(t: str, wl: str, n: int) -> dict:
        return pick(rows, batch=n, workload=wl, target=t)

    def pct(t: str, f: str, wl: str, n: int) -> float:
        return 100 * r(t, wl, n)["throughput"] / r(f, wl, n)["throughput"]

    mem = [pct("prism/cost-memstore", "grpc-floor", wl, n) for wl in ("batch-get", "batch-put") for n in ns]

    def growth(t: str) -> str:
        k = [r(t, "batch-get", n)["items_per_second"] for n in ns]
        return ", ".join(f"×{y / x:.1f}" for x, y in zip(k, k[1:]))

    steps = ", ".join(f"×{y // x}" for x, y in zip(ns, ns[1:]))
    put_p, put_f = r("prism/cost-redis", "batch-put", last), r("grpc-redis-floor", "batch-put", last)
    get_p, get_f = r("prism/cost-redis", "batch-get", last), r("grpc-redis-floor", "batch-get", last)
    text = (
        f"**Where it bends and why.** keys/s grows with N while the per-request cost dominates and flattens once "
        f"the per-key cost does. From one N to the next ({', '.join(map(str, ns))}; {steps} the keys) BatchGet's "
        f"keys/s grew {growth('grpc-floor')} on grpc-floor and {growth('prism/cost-memstore')} on Prism → "
        f"memstore. Prism → memstore follows the floor's curve at {min(mem):.0f}–{max(mem):.0f}% of it at every "
        "N: the second hop adds per-key work in "
        "proportion to the floor's own, so the ratio does not bend. Prism → redis does bend: batch-put falls from "
        f"{pct('prism/cost-redis', 'grpc-redis-floor', 'batch-put', first):.0f}% of grpc-redis-floor at N = "
        f"{first} to {pct('prism/cost-redis', 'grpc-redis-floor', 'batch-put', last):.0f}% at {last}, batch-get "
        f"from {pct('prism/cost-redis', 'grpc-redis-floor', 'batch-get', first):.0f}% to "
        f"{pct('prism/cost-redis', 'grpc-redis-floor', 'batch-get', last):.0f}%. The floor sends one MSET or one "
        "MGET. The redis plugin's BatchPut is one Lua script doing two commands per key (HSET of the value and "
        "its version, then PEXPIRE or PERSIST) and, once per batch, an INCRBY of the version counter and variadic "
        "ZADD/ZREM of the scan and expiry indexes (five commands per key until ADR-007's BatchPut change); its "
        "BatchGet is a pipeline of one HMGET per key "
        f"(`patterns/redis/src/lib.rs`). At N = {last}, redis-server spent "
        f"{put_p['redis_cpu_us'] / last:.1f} µs of CPU per key of Prism's BatchPut against "
        f"{put_f['redis_cpu_us'] / last:.1f} µs for the floor's MSET, and "
        f"{get_p['redis_cpu_us'] / last:.1f} against {get_f['redis_cpu_us'] / last:.1f} µs per key read; "
        f"single-threaded, Redis was busy {put_p['redis_cpu_us'] * put_p['throughput'] / 1e4:.0f}% of a core "
        "during Prism's BatchPut, which is its ceiling."
    )
    return [text]


def connections_bends(c: dict) -> list[str]:
    rows = c["rows"]
    if len(rows) < 2 or "p99_without_us" not in rows[0]:
        return []
    big = rows[1:]
    per = ", ".join(f"{r['bytes_per_conn'] / KIB:.1f} KiB at {r['connections']:,}" for r in big)
    floor = ", ".join(f"{r['floor']['bytes_per_conn'] / KIB:.1f}" for r in big)
    alike = all(abs(r["bytes_per_conn"] - r["floor"]["bytes_per_conn"]) <= 0.15 * r["floor"]["bytes_per_conn"]
                for r in big)
    same = ("about the same, so it is the HTTP/2 server's per-connection state (tonic over hyper, the same in "
            "both), not anything Prism adds" if alike else "a different amount")
    flat = abs(big[-1]["bytes_per_conn"] - big[0]["bytes_per_conn"]) <= 0.15 * big[0]["bytes_per_conn"]
    shape = ("It does not bend: each idle connection costs the proxy a fixed amount of memory" if flat else
             "Each idle connection costs the proxy")
    shifts = [r["p99_us"] / r["p99_without_us"] for r in rows]
    pairs = ", ".join(f"{r['p99_us']:,.0f} against {r['p99_without_us']:,.0f} µs at {r['connections']:,}"
                      for r in rows)
    # Whether the runs with and without overlap, N by N: then the
    # difference is within what repeating a run changes.
    overlap = all(min(r["p99_runs_us"]) <= max(r["p99_runs_without_us"])
                  and min(r["p99_runs_without_us"]) <= max(r["p99_runs_us"]) for r in rows)
    if overlap:
        latency = (f"the p99 of the active calls was the same with them as without, within the spread of repeated "
                   f"runs ({pairs})")
    else:
        rising = all(y > x for x, y in zip(shifts, shifts[1:]))
        latency = (f"the p99 of the active calls with them was ×{min(shifts):.2f} to ×{max(shifts):.2f} of the "
                   f"p99 without them in the alternating runs ({pairs}); "
                   + ("the ratio grows with N" if rising else "the ratio does not grow with N"))
    closed = all(r["still_open"] == r["connections"] for r in rows)
    first = rows[0]
    text = (
        f"**Where it bends and why.** {shape} ({per}), and grpc-floor holds the same connections for {same} "
        f"({floor} KiB). At {first['connections']} connections the expected growth, about "
        f"{first['connections'] * big[-1]['bytes_per_conn'] / KIB:.0f} KiB, is too small to read reliably from "
        f"VmRSS (measured: {(first['rss_after'] - first['rss_before']) / KIB:.0f} KiB in all). Idle "
        f"connections cost no CPU ({big[-1]['idle_cpu_per_s']:.3f} CPU-s/s at {big[-1]['connections']:,}) and "
        f"{latency}."
        + (" The server closed none of them during the run: no idle timeout applies." if closed else
           " Some were closed by the server during the run (see the table).")
    )
    return [text]


def namespaces_bends(ns: dict) -> list[str]:
    rows = ns["rows"]
    if len(rows) < 3:
        return []
    a, b, c = rows[0], rows[1], rows[-1]
    per_b = (b["ready_s"] - a["ready_s"]) / (b["namespaces"] - a["namespaces"]) * 1000
    per_c = (c["ready_s"] - b["ready_s"]) / (c["namespaces"] - b["namespaces"]) * 1000
    rss = (c["proxy_rss"] - b["proxy_rss"]) / (c["namespaces"] - b["namespaces"]) / KIB
    plug = (c["plugin_rss"] - b["plugin_rss"]) / (c["namespaces"] - b["namespaces"]) / KIB
    reload_per = (c["cpu_per_apply_ms"] - a["cpu_per_apply_ms"]) / (c["namespaces"] - a["namespaces"]) * 1000
    # Quadratic growth shows as a per-namespace cost that rises with N;
    # linear growth keeps it flat (within the noise of a 2-core machine).
    quadratic = per_c > 3 * max(per_b, 0.001)
    starts = ", ".join(f"{x['ready_s']:.1f}" for x in c["starts"])
    if quadratic:
        shape = (
            f"{per_b:.2f} ms per added namespace up to {b['namespaces']:,}, {per_c:.2f} ms beyond: quadratic (the "
            f"starts at {c['namespaces']:,} took {starts} s). Something copies a table that grows with N once per "
            "namespace; a `perf` profile of the start shows where."
        )
    else:
        shape = (
            f"{per_b:.2f} ms per added namespace up to {b['namespaces']:,}, {per_c:.2f} ms beyond: linear (the "
            f"starts at {c['namespaces']:,} took {starts} s). The namespaces loaded at start are prepared on their "
            f"plugin ({PREPARE_CONCURRENCY} PrepareNamespace calls in flight) and published as one route table, and "
            "the plugin SDK keeps its namespaces in a persistent map (`imbl`), so neither side copies a growing "
            "table once per namespace. Until ADR-007's namespace-start change both did, and the start was "
            "quadratic: 47.7 s for 10,000."
        )
    text = [
        f"**Where it bends and why.** Start time: {a['ready_s'] * 1000:,.0f} ms for {a['namespaces']:,}, "
        f"{b['ready_s'] * 1000:,.0f} ms for {b['namespaces']:,}, {c['ready_s']:,.1f} s for {c['namespaces']:,} — "
        + shape,
        "",
        f"One apply copies the table once: ApplyNamespace takes {a['apply_ms']:.1f} ms at {a['namespaces']:,} and "
        f"{c['apply_ms']:.1f} ms at {c['namespaces']:,}, while its dry run, which plans without publishing, stays at "
        f"{min(r['dry_run_ms'] for r in rows):.1f}–{max(r['dry_run_ms'] for r in rows):.1f} ms. Apply → servable "
        "is the apply plus one Get "
        f"({c['servable_ms']:.1f} ms at {c['namespaces']:,}): the route is published before ApplyNamespace "
        "answers. The cost that grows with N is the reload every apply sets off: 200 ms after any change the "
        "directory watcher reads every namespace file again (a document served as it is, is compared, not parsed), "
        f"so the CPU of one apply goes from {a['cpu_per_apply_ms']:,.0f} ms at {a['namespaces']:,} to "
        f"{c['cpu_per_apply_ms']:,.0f} ms at {c['namespaces']:,} (about {reload_per:.0f} µs per namespace), and the "
        f"new namespace is on disk and reloaded {c['reload_done_ms']:,.0f} ms after the apply. The same reload runs "
        f"every 30 s with nothing to do: idle, the proxy and plugin used {a['idle_cpu_per_s']:.4f} CPU-s/s with "
        f"{a['namespaces']:,} namespaces and {c['idle_cpu_per_s']:.4f} with {c['namespaces']:,}. Memory is "
        f"linear: {rss:.1f} KiB of proxy RSS and {plug:.1f} KiB of plugin RSS per namespace.",
    ]
    return text


def startup_bends(st: dict) -> list[str]:
    rows, alone = st["rows"], st.get("alone") or []
    if len(rows) < 2 or not alone:
        return []
    last = rows[-1]
    total = sum(a["ready_ms"] for a in alone)
    slow = max(alone, key=lambda a: a["ready_ms"])
    text = (
        f"**Where it bends and why.** Barely: {rows[0]['ready_ms']:.0f} ms with {rows[0]['plugins'][0]} alone, "
        f"{last['ready_ms']:.0f} ms with all {last['count']} plugins. Plugins start in parallel (a supervisor "
        "task each; the client listener opens once all are connected: `proxy/src/server.rs`), so the plugins "
        f"together cost far less than their times alone added up ({total:.0f} ms): the slowest alone is "
        f"{slow['plugin']} ({slow['ready_ms']:.0f} ms), and the remaining "
        f"{last['ready_ms'] - slow['ready_ms']:.0f} ms is what starting them together adds on "
        f"{st.get('cores') or 'these'} cores. The first Get is answered "
        f"{last['first_call_ms'] - last['ready_ms']:.0f} ms after /readyz with five plugins."
    )
    return [text]


# --- standalone -----------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--smoke", action="store_true",
                    help="debug build, tiny sizes, about a second per point, fail on any request error")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section and plots from costs.json")
    ap.add_argument("--only", help=f"measure only these curves (comma separated: {', '.join(CURVES)}), keeping "
                    "the others from the last costs.json")
    opts = ap.parse_args()
    bin_dir = TARGET_DIR / ("debug" if opts.smoke else "release")
    out_dir = ROOT / "target" / ("bench-costs-smoke" if opts.smoke else "bench-costs")
    if opts.report_only:
        results = json.loads((out_dir / "costs.json").read_text())
    else:
        if not opts.no_build:
            profile = [] if opts.smoke else ["--release"]
            cmd = ["cargo", "build", "--locked", *profile] + [a for p in PACKAGES for a in ("-p", p)]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
        try:
            results = run_costs(bin_dir, out_dir, opts.smoke, opts.only.split(",") if opts.only else None)
        except subprocess.CalledProcessError as e:
            sys.exit(f"bench_costs: {' '.join(map(str, e.cmd[:3]))} ... exited with status {e.returncode}")
    names = write_plots(results, out_dir / "img")
    (out_dir / "costs.md").write_text("\n".join(doc_lines(results)) + "\n")
    print(f"wrote {out_dir / 'costs.json'}, {out_dir / 'costs.md'} and {', '.join(names)} in {out_dir / 'img'}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
