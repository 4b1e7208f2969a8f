#!/usr/bin/env python3
"""What shadow traffic costs the primary: get and put on memstore with the
shadow off, mirroring writes, and mirroring writes while comparing every read.

Starts one prism-proxy (dev mode, two memstore plugins: the primary and the
shadow) in a temporary directory with three namespaces:

    off       no shadow
    mirror    shadow: {backend: shadowstore}: every acknowledged write copied
    compare   shadow: {backend: shadowstore, compare_reads: 1}: writes copied
              and every read sent to the shadow too and compared

and measures each with `prism-bench run`, closed loop at --concurrency in
flight (throughput) and open loop at --rate calls per second (latency), in
rounds whose case order rotates, so machine noise falls on every case alike.
Prints the medians, each case against `off`, and the shadow's own counters
(mirrored, dropped): the primary's numbers are only half of the story when
the shadow cannot keep up.

    cargo build --release --bins
    uv run tooling/bench_shadow.py                      # 3 rounds of 4 s
    uv run tooling/bench_shadow.py --rounds 5 --json target/bench-shadow.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import free_port, wait_port  # noqa: E402

TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "prism-target")
BINARIES = ("prism-proxy", "prism-plugin-memstore", "prismctl", "prism-bench")
CASES = {
    "off": "",
    "mirror": "  shadow: {backend: shadowstore}\n",
    "compare": "  shadow: {backend: shadowstore, compare_reads: 1}\n",
}
OPS = ("get", "put")


def write_setup(work: Path, port: int) -> Path:
    ns = work / "namespaces"
    ns.mkdir()
    for case, shadow in CASES.items():
        (ns / f"{case}.yaml").write_text(
            "apiVersion: prism/v1\nkind: Namespace\n"
            f"metadata: {{name: sh-{case}}}\nspec:\n  pattern: keyvalue\n  backend: memstore\n{shadow}"
        )
    config = work / "prism.yaml"
    config.write_text(
        f"""listen: 127.0.0.1:{port}
admin_http: {{listen: "127.0.0.1:0"}}
namespaces_dir: namespaces
plugins:
  memstore:
    command: [prism-plugin-memstore]
  shadowstore:
    command: [prism-plugin-memstore]
"""
    )
    return config


def measure(opts: argparse.Namespace, port: int, pid: int, case: str, op: str, rate: float | None, out: Path) -> dict:
    cmd = [str(opts.bin_dir / "prism-bench"), "run", "-t", f"prism/sh-{case}", "-w", op, "--key-space",
           str(opts.key_space), "--duration", opts.duration, "--warmup", opts.warmup, "--prism", f"127.0.0.1:{port}",
           "--prism-pid", str(pid), "--no-progress", "--json", str(out)]
    cmd += ["--rate", str(rate), "-c", "16"] if rate else ["-c", str(opts.concurrency)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    [m] = json.loads(out.read_text())["summary"]
    return m


def shadow_status(bin_dir: Path, port: int, case: str) -> dict:
    out = subprocess.run([str(bin_dir / "prismctl"), "--endpoint", f"http://127.0.0.1:{port}", "-o", "json", "shadow",
                          "status", f"sh-{case}"], check=True, capture_output=True, text=True,
                         env={**os.environ, "PRISMCTL_CONFIG": "/dev/null"}).stdout
    return json.loads(out)


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for mode in ("closed", "open"):
        for op in OPS:
            base = None
            for case in CASES:
                ms = [r for r in runs if r["case"] == case and r["op"] == op and r["mode"] == mode]
                row = {
                    "mode": mode,
                    "case": case,
                    "op": op,
                    "throughput": statistics.median(r["throughput"] for r in ms),
                    "p50_us": statistics.median(r["latency_us"]["p50"] for r in ms),
                    "p99_us": statistics.median(r["latency_us"]["p99"] for r in ms),
                    "errors": sum(sum(r["errors"].values()) for r in ms),
                }
                if case == "off":
                    base = row
                row["ratio"] = row["throughput"] / base["throughput"] if base and base["throughput"] else None
                row["p50_added_us"] = row["p50_us"] - base["p50_us"] if base else None
                rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, default=TARGET_DIR / "release", help="directory of the release binaries")
    ap.add_argument("--rounds", type=int, default=3, help="runs per case, op and mode (default 3)")
    ap.add_argument("--duration", default="4s", help="measurement per run (default 4s)")
    ap.add_argument("--warmup", default="1s", help="unrecorded load before each run (default 1s)")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight, closed loop (default 64)")
    ap.add_argument("--rate", type=float, default=1000.0, help="calls per second, open loop (default 1000)")
    ap.add_argument("--key-space", type=int, default=10_000, help="distinct keys (default 10000)")
    ap.add_argument("--json", type=Path, help="also write every run and the summary as JSON here")
    opts = ap.parse_args()
    opts.bin_dir = opts.bin_dir.resolve()
    for name in BINARIES:
        if not (opts.bin_dir / name).is_file():
            sys.exit(f"missing {opts.bin_dir / name}; run `cargo build --release --bins` (or give --bin-dir)")
    if opts.rounds < 1:
        sys.exit("--rounds must be at least 1")

    runs: list[dict] = []
    shadows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="prism-shadow-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_setup(work, port)
        proxy = subprocess.Popen([str(opts.bin_dir / "prism-proxy"), "--config", str(config)], cwd=work,
                                 stdin=subprocess.DEVNULL, env={**os.environ, "PRISM_LOG": "warn"})
        try:
            wait_port(port, proxy, "prism-proxy")
            names = list(CASES)
            for r in range(opts.rounds):
                turn = names[r % len(names):] + names[:r % len(names)]
                for mode, rate in (("closed", None), ("open", opts.rate)):
                    for op in OPS:
                        for case in turn:
                            m = measure(opts, port, proxy.pid, case, op, rate, work / "run.json")
                            m.update(case=case, op=op, mode=mode, round=r + 1)
                            runs.append(m)
                            print(f"round {r + 1} {mode:6} {case:8} {op}: {m['throughput']:8.0f} ops/s  p50 "
                                  f"{m['latency_us']['p50']} µs  p99 {m['latency_us']['p99']} µs", flush=True)
            for case in ("mirror", "compare"):
                shadows[case] = shadow_status(opts.bin_dir, port, case)
        finally:
            proxy.terminate()
            try:
                proxy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proxy.kill()

    rows = summarize(runs)
    print(f"\n{opts.rounds} interleaved rounds of {opts.duration}; closed loop at {opts.concurrency} in flight, open "
          f"loop at {opts.rate:.0f}/s; memstore primary and shadow; medians\n")
    print("| mode | case | op | ops/s | vs off | p50 µs | p50 added µs | p99 µs | errors |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"| {r['mode']} | {r['case']} | {r['op']} | {r['throughput']:,.0f} | {ratio} | {r['p50_us']:.0f} | "
              f"{r['p50_added_us']:+.0f} | {r['p99_us']:.0f} | {r['errors']} |")
    print("\nThe shadows, after every run:\n")
    for case, s in shadows.items():
        print(f"- {case}: writes {s['writes']}, reads {s['reads']}, queue {s['queue']}")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) for k, v in vars(opts).items() if k not in ("json", "bin_dir")}
        opts.json.write_text(json.dumps({"settings": settings, "summary": rows, "shadows": shadows, "runs": runs},
                                        indent=2) + "\n")
        print(f"\nwrote {opts.json}")


if __name__ == "__main__":
    main()
