#!/usr/bin/env python3
"""Compare builds or settings of Prism, interleaved, with prism-bench.

Starts one proxy per side, each from a directory of binaries (prism-proxy,
prism-plugin-memstore and prism-plugin-redis), all on loopback with the same
config (a memstore and a redis namespace), then runs the same prism-bench cells
against them in turns (the order rotates every round), so machine noise falls
on every side alike. Prints the per-run figures and the medians, each side
against the first, and writes the raw JSON to target/bench-ab/.

    uv run tooling/bench_ab.py --before /tmp/prism-before --after target/release
    uv run tooling/bench_ab.py --before A --after B --rounds 5 --duration 5s
    # what tracing costs: one build, traces off and on at two ratios, into
    # `prism-bench otlp-sink` (a collector that costs next to nothing)
    uv run tooling/bench_ab.py --side off=target/release --side ratio-0.01=target/release \
        --side ratio-1=target/release --tracing ratio-0.01=0.01 --tracing ratio-1=1

Cells: get at 64 in flight (closed loop: throughput) and get at a fixed
1,000 requests/s (open loop: latency), on memstore and on redis; with
`--batch N`, BatchPut and BatchGet of N items at 16 in flight too
(`--no-get` leaves the get cells out); with `--sqlite`, Put on an SQLite
namespace at 64 and at 1 in flight (and BatchPut with `--batch`), then Get and
the mixed workload at 64 in flight on it (what the writes leave costs reads). The proxy
and plugin CPU per request of every cell is reported too. The load
client is the `prism-bench` of `--bench` (default: the --after directory's),
the same for both sides. Needs Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import free_port, pid_of, wait_port, write_namespaces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "target" / "bench-ab"
REDIS_URL = "redis://127.0.0.1:6379"


def has_admin_http(proxy: Path) -> bool:
    """Whether a prism-proxy build knows `admin_http` (older builds refuse the field)."""
    return b"admin_http" in proxy.read_bytes()


def write_config(work: Path, port: int, side: str, tracing: str = "", admin_http: bool = True,
                 sqlite: bool = False) -> Path:
    write_namespaces(work, "ab", ("memstore", "redis", "sqlite") if sqlite else ("memstore", "redis"))
    # Each side's database lives in its own work directory (on disk, as in
    # the report), with the plugin's default `synchronous`.
    plugin = "  sqlite:\n    command: [prism-plugin-sqlite]\n    config:\n      path: ab.sqlite3\n" if sqlite else ""
    config = work / "prism.yaml"
    config.write_text(
        f"""listen: 127.0.0.1:{port}
{'admin_http: {listen: "127.0.0.1:0"}' if admin_http else ''}
namespaces_dir: namespaces
plugins:
  memstore:
    command: [prism-plugin-memstore]
{plugin}  redis:
    command: [prism-plugin-redis]
    config:
      url: {REDIS_URL}
      key_prefix: prism-ab-{side}
log:
  format: text
  level: warn
{tracing}"""
    )
    return config


def cells(rate: int, duration: str, batches: list[int], gets: bool = True,
          sqlite: bool = False) -> dict[str, list[str]]:
    targets = ["-t", "prism/ab-memstore", "-t", "prism/ab-redis"]
    plan = {
        "get-c64": [*targets, "-w", "get", "-c", "64", "--duration", duration],
        f"get-{rate}rps": [*targets, "-w", "get", "-c", "16", "--rate", str(rate), "--duration", duration],
    } if gets else {}
    if sqlite:
        # The SQLite plugin's writes: many in flight (group commit) and one.
        for conc in ("64", "1"):
            plan[f"sqlite-put-c{conc}"] = ["-t", "prism/ab-sqlite", "-w", "put", "-c", conc, "--duration", duration]
        # Reads after and among those writes: what a write-side change (a
        # longer WAL, say) costs the readers.
        for workload in ("get", "mixed"):
            plan[f"sqlite-{workload}-c64"] = ["-t", "prism/ab-sqlite", "-w", workload, "-c", "64",
                                              "--duration", duration]
        for n in batches:
            plan[f"sqlite-batch-put-{n}-c16"] = ["-t", "prism/ab-sqlite", "-w", "batch-put", "--batch", str(n),
                                                 "-c", "16", "--duration", duration]
    for n in batches:
        for workload in ("batch-put", "batch-get"):
            plan[f"{workload}-{n}-c16"] = [*targets, "-w", workload, "--batch", str(n), "-c", "16",
                                           "--duration", duration]
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="directory of the baseline binaries (side 'before')")
    ap.add_argument("--after", type=Path, help="directory of the binaries to compare (side 'after')")
    ap.add_argument("--side", action="append", default=[], metavar="NAME=DIR",
                    help="a side and its binaries, repeatable; the first is the baseline")
    ap.add_argument("--tracing", action="append", default=[], metavar="NAME=RATIO",
                    help="export that side's traces, at this sampling ratio, to a prism-bench otlp-sink")
    ap.add_argument("--bench", type=Path, help="prism-bench binary (default: the last side's)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per side and cell (default 3)")
    ap.add_argument("--duration", default="3s", help="measurement per run (default 3s)")
    ap.add_argument("--rate", type=int, default=1000, help="the fixed-rate cell's requests/s (default 1000)")
    ap.add_argument("--batch", type=int, action="append", default=[], metavar="N",
                    help="add BatchPut and BatchGet cells of N items at 16 in flight (repeatable)")
    ap.add_argument("--no-get", action="store_true", help="leave out the get cells (with --batch or --sqlite)")
    ap.add_argument("--sqlite", action="store_true",
                    help="add an sqlite namespace and its put cells (64 and 1 in flight; BatchPut with --batch)")
    opts = ap.parse_args()
    sides: dict[str, Path] = {}
    if opts.before:
        sides["before"] = opts.before.resolve()
    if opts.after:
        sides["after"] = opts.after.resolve()
    for side in opts.side:
        name, _, bindir = side.partition("=")
        sides[name] = Path(bindir).resolve()
    if len(sides) < 2:
        sys.exit("give at least two sides (--before and --after, or --side NAME=DIR twice)")
    ratios = {name: float(ratio) for name, _, ratio in (t.partition("=") for t in opts.tracing)}
    bench = opts.bench or list(sides.values())[-1] / "prism-bench"
    for side, bindir in sides.items():
        for name in ("prism-proxy", "prism-plugin-memstore", "prism-plugin-redis",
                     *(("prism-plugin-sqlite",) if opts.sqlite else ())):
            if not (bindir / name).is_file():
                sys.exit(f"{side}: missing {bindir / name}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    results: dict[str, dict[str, list[dict]]] = {}
    sink = None
    with tempfile.TemporaryDirectory(prefix="prism-ab-") as tmp:
        try:
            endpoint = ""
            if ratios:
                sink = subprocess.Popen([str(bench), "otlp-sink"], stdout=subprocess.PIPE, text=True)
                endpoint = "http://" + sink.stdout.readline().split()[1]
            for side, bindir in sides.items():
                work = Path(tmp) / side
                ports[side] = free_port()
                tracing = ""
                if side in ratios:
                    tracing = f'tracing: {{otlp_endpoint: "{endpoint}", sampling_ratio: {ratios[side]}}}\n'
                config = write_config(work, ports[side], side, tracing, has_admin_http(bindir / "prism-proxy"),
                                      opts.sqlite)
                procs[side] = subprocess.Popen([str(bindir / "prism-proxy"), "--config", str(config)], cwd=work,
                                               stdin=subprocess.DEVNULL)
            for side, proc in procs.items():
                wait_port(ports[side], proc, f"prism-proxy ({side})")
            plan = cells(opts.rate, opts.duration, opts.batch, gets=not (opts.no_get and (opts.batch or opts.sqlite)),
                         sqlite=opts.sqlite)
            names = list(sides)
            # The order rotates each round: every side runs first as often.
            order = [names[r % len(names):] + names[:r % len(names)] for r in range(opts.rounds)]
            # Redis's own CPU is counted too: a plugin change can move work
            # into (or out of) the server, which the proxy's figures miss.
            redis_pid = pid_of("redis-server")
            backend = ["--backend-pid", str(redis_pid)] if redis_pid is not None else []
            for r, turn in enumerate(order):
                for cell, args in plan.items():
                    for side in turn:
                        out = OUT_DIR / f"{cell}-{side}-{r}.json"
                        cmd = [str(bench), "run", *args, "--prism", f"127.0.0.1:{ports[side]}",
                               "--prism-pid", str(procs[side].pid), *backend, "--redis", REDIS_URL, "--warmup", "1s",
                               "--no-progress", "--json", str(out)]
                        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                        summary = json.loads(out.read_text())["summary"]
                        results.setdefault(cell, {}).setdefault(side, []).extend(summary)
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if sink is not None:
                sink.send_signal(2)
                try:
                    print(f"otlp-sink: {sink.communicate(timeout=10)[0].strip()}")
                except subprocess.TimeoutExpired:
                    sink.kill()

    report(results, list(sides), opts)


def cpu_per_request_us(m: dict) -> float | None:
    procs = [p for p in m.get("processes") or [] if p["name"] in ("prism-proxy", "prism-plugin-memstore",
                                                                    "prism-plugin-redis", "prism-plugin-sqlite")]
    busy = [p for p in procs if p["cpu_seconds"] > 0.0]
    if not busy or not m["ok"]:
        return None
    # The idle plugin of the other namespace costs next to nothing; count
    # the proxy and the plugin that served this target.
    plugin = "prism-plugin-" + m["target"].rsplit("-", 1)[-1]
    cpu = sum(p["cpu_seconds"] for p in procs if p["name"] in ("prism-proxy", plugin))
    return cpu / m["ok"] * 1e6


def redis_cpu_per_request_us(m: dict) -> float | None:
    """redis-server's CPU per request of a redis target's run, when it was measured."""
    backend = m.get("backend")
    if not backend or not m["ok"] or not m["target"].endswith("redis"):
        return None
    return backend["cpu_seconds"] / m["ok"] * 1e6


def report(results: dict[str, dict[str, list[dict]]], names: list[str], opts: argparse.Namespace) -> None:
    print(f"\n{opts.rounds} interleaved rounds, {opts.duration} each; medians of the runs\n")
    for cell, sides in results.items():
        fixed = "rps" in cell
        print(f"## {cell}")
        header = "| target | side | runs (p50 µs) | median p50 µs | median p99 µs | CPU µs/request |" if fixed else \
            "| target | side | runs (ops/s) | median ops/s | median p50 µs | median p99 µs | CPU µs/request |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        medians: dict[tuple[str, str], float] = {}
        for target in sorted({m["target"] for ms in sides.values() for m in ms}):
            for side in names:
                ms = [m for m in sides.get(side, []) if m["target"] == target]
                errors = sum(sum(m["errors"].values()) for m in ms)
                p50 = statistics.median(m["latency_us"]["p50"] for m in ms)
                p99 = statistics.median(m["latency_us"]["p99"] for m in ms)
                # Proxy and plugin CPU per request: under a closed loop too,
                # where a cheaper server shows as throughput and as this.
                cpu = [c for c in (cpu_per_request_us(m) for m in ms) if c is not None]
                cpu_text = f"{statistics.median(cpu):.1f}" if cpu else "n/a"
                if fixed:
                    runs = ", ".join(f"{m['latency_us']['p50']}" for m in ms)
                    medians[(target, side)] = p50
                    print(f"| {target} | {side} | {runs} | {p50} | {p99} | {cpu_text} |")
                else:
                    runs = ", ".join(f"{m['throughput']:.0f}" for m in ms)
                    ops = statistics.median(m["throughput"] for m in ms)
                    medians[(target, side)] = ops
                    print(f"| {target} | {side} | {runs} | {ops:.0f} | {p50} | {p99} | {cpu_text} |")
                redis_cpu = [c for c in (redis_cpu_per_request_us(m) for m in ms) if c is not None]
                if redis_cpu:
                    print(f"  (redis-server CPU per request: median {statistics.median(redis_cpu):.1f} µs)")
                if errors:
                    print(f"  ({errors} failed requests)")
        for target in sorted({t for t, _ in medians}):
            base = medians.get((target, names[0]))
            for side in names[1:]:
                other = medians.get((target, side))
                if base and other:
                    what = "p50 latency" if fixed else "throughput"
                    print(f"{target}: {side}/{names[0]} {what} = {other / base:.2f}")
        print()


if __name__ == "__main__":
    main()
