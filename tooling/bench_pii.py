#!/usr/bin/env python3
"""What PII handling costs: get and put of 1 KiB typed values on memstore.

Starts one prism-proxy (memstore plugin, JWT auth from a local JWKS, a fresh
PII keyring) in a temporary directory, registers
tooling/prism-bench/proto/profile.proto with `prismctl schema push`, applies
four namespaces with `prismctl namespace apply`, and measures each case with
`prism-bench run --value profile` (the same 1 KiB `bench.v1.Profile` values,
five tagged fields, in every case):

    untyped      no schema: the proxy passes values through
    typed-pii    typed, read by a principal with the `pii` right: puts are
                 decoded (validated), gets are returned as stored
    typed-masked typed, read by a principal without `pii`: gets are decoded,
                 masked and re-encoded
    typed-enc    typed with `encrypt: true`, read without `pii`: puts are
                 encrypted and re-encoded, gets decrypted, masked, re-encoded

Get and put of every case run in turns for --rounds rounds (the case order
rotates each round), so machine noise falls on every case alike. Prints a
markdown table of the medians, each case's throughput against untyped, and
the issue's goals (masking costs at most 15% of untyped throughput,
encryption at most 25%).

    cargo build --release --bins
    uv run tooling/bench_pii.py                          # 3 rounds of 4 s
    uv run tooling/bench_pii.py --rounds 5 --json target/bench-pii.json

Builds nothing: expects prism-proxy, prism-plugin-memstore, prismctl and
prism-bench in --bin-dir. Tokens are signed with the test fixture key
(tests/data/jwt-rsa.key), with PyJWT when it is installed
(`uv run --group interop ...`), else with the openssl command.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import free_port, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The shared target directory of CLAUDE.md and .ci/run.
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "prism-target")
PROTO_DIR = ROOT / "tooling" / "prism-bench" / "proto"
JWT_KEY = ROOT / "tests" / "data" / "jwt-rsa.key"
JWT_N = ROOT / "tests" / "data" / "jwt-rsa.n"
BINARIES = ("prism-proxy", "prism-plugin-memstore", "prismctl", "prism-bench")
KID = "bench-key"
ISSUER = "https://issuer.bench.invalid"
MESSAGE = "bench.v1.Profile"
POLICY = "{email: mask, phone: last4, name: initial, ssn: redact, address: mask, default: redact}"
ACCESS = ("{read: [group:bench, group:support], write: [group:bench, group:support], "
          "pii: [group:support], admin: [group:ops]}")

# Case -> (namespace spec lines under `spec:` beyond pattern/backend, reader).
# The reader is the principal of gets; puts are by the same principal
# (writing needs no `pii` right and is handled the same for both).
CASES: dict[str, tuple[str, str]] = {
    "untyped": ("", "bench"),
    "typed-pii": (f"  schema: {{message: {MESSAGE}}}\n  pii: {{policy: {POLICY}, encrypt: false}}\n", "support"),
    "typed-masked": (f"  schema: {{message: {MESSAGE}}}\n  pii: {{policy: {POLICY}, encrypt: false}}\n", "bench"),
    "typed-enc": (f"  schema: {{message: {MESSAGE}}}\n  pii: {{policy: {POLICY}, encrypt: true}}\n", "bench"),
}
OPS = ("get", "put")
# The cases whose reader gets masked values.
MASKED = {"typed-masked", "typed-enc"}
# Largest share of untyped throughput each case may cost (the issue's goals).
GOALS = {"typed-masked": 0.15, "typed-enc": 0.25}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict) -> str:
    """An RS256 token signed with the fixture key, under KID."""
    try:
        import jwt  # PyJWT, in the `interop` dependency group
    except ImportError:
        jwt = None
    if jwt is not None:
        return jwt.encode(claims, JWT_KEY.read_bytes(), algorithm="RS256", headers={"kid": KID})
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KID}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(JWT_KEY)], input=signing_input.encode(),
                               capture_output=True, check=True).stdout
    return f"{signing_input}.{b64url(signature)}"


def token(sub: str, groups: list[str]) -> str:
    # Long enough for any run; the proxy checks exp on every call.
    return mint({"iss": ISSUER, "aud": "prism", "sub": sub, "groups": groups, "exp": int(time.time()) + 24 * 3600})


def write_setup(work: Path, port: int) -> Path:
    """Keyring, JWKS, namespace files and the proxy config in `work`."""
    # Private to this user, or the proxy warns that the keys are exposed.
    (work / "keyring").mkdir(mode=0o700)
    key = work / "keyring" / "1.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    key.chmod(0o600)
    jwks = {"keys": [{"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig", "n": JWT_N.read_text().strip(),
                      "e": "AQAB"}]}
    (work / "jwks.json").write_text(json.dumps(jwks))
    # Empty at start: the typed namespaces can only be applied once their
    # schema is registered, and all four go the same way.
    (work / "namespaces").mkdir()
    (work / "apply").mkdir()
    for case, (extra, _) in CASES.items():
        (work / "apply" / f"{case}.yaml").write_text(
            "apiVersion: prism/v1\nkind: Namespace\n"
            f"metadata: {{name: pii-{case}, team: bench}}\n"
            f"spec:\n  pattern: keyvalue\n  backend: memstore\n{extra}  access: {ACCESS}\n"
        )
    config = work / "prism.yaml"
    config.write_text(
        f"""listen: 127.0.0.1:{port}
admin_http: {{listen: "127.0.0.1:0"}}
namespaces_dir: namespaces
plugins:
  memstore:
    command: [prism-plugin-memstore]
auth:
  require: jwt
  admins: ["group:ops"]
  jwt:
    issuer: {ISSUER}
    audiences: [prism]
    jwks_file: jwks.json
    leeway: 5s
pii:
  keyring: keyring
log:
  format: text
  level: warn
"""
    )
    return config


def prismctl(bin_dir: Path, port: int, tok: str, args: list[str]) -> str:
    cmd = [str(bin_dir / "prismctl"), "--endpoint", f"http://127.0.0.1:{port}", *args]
    # The token through the environment: it stays out of `ps`.
    env = {**os.environ, "PRISMCTL_CONFIG": "/dev/null", "PRISM_TOKEN": tok}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"prismctl {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def check_disclosure(bin_dir: Path, port: int, tokens: dict[str, str]) -> None:
    """Each case's reader gets what the case claims to measure: raw emails
    from untyped and from typed-pii, masked ones from typed-masked and
    typed-enc (decrypted first). Run after the gets, which preloaded the keys."""
    for case, (_, reader) in CASES.items():
        doc = json.loads(prismctl(bin_dir, port, tokens[reader],
                                  ["-o", "json", "kv", "get", f"pii-{case}", "bench:0000000001"]))
        value = doc["value"].encode() if "value" in doc else base64.b64decode(doc["value_base64"])
        masked = b"***@example.com" in value
        raw = not masked and b"@example.com" in value
        if not (masked if case in MASKED else raw):
            sys.exit(f"{case}: the {reader} principal got an unexpected value: {value[:80]!r}")
    print("checked: typed-masked and typed-enc readers got masked emails, untyped and typed-pii readers raw ones")


def measure(opts: argparse.Namespace, port: int, pid: int, case: str, op: str, tok: str, out: Path) -> dict:
    cmd = [str(opts.bin_dir / "prism-bench"), "run", "-t", f"prism/pii-{case}", "-w", op, "-c", str(opts.concurrency),
           "--value", "profile", "--key-space", str(opts.key_space), "--duration", opts.duration,
           "--warmup", opts.warmup, "--prism", f"127.0.0.1:{port}", "--prism-pid", str(pid), "--no-progress",
           "--json", str(out)]
    # The token through the environment: it stays out of `ps`.
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PRISM_TOKEN": tok})
    [m] = json.loads(out.read_text())["summary"]
    return m


def proxy_cpu_us(m: dict) -> float | None:
    """CPU of the proxy per answered request, in µs: where the codec runs."""
    proxy = next((p for p in m.get("processes") or [] if p["name"] == "prism-proxy"), None)
    if proxy is None or not m["ok"]:
        return None
    return proxy["cpu_seconds"] / m["ok"] * 1e6


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for op in OPS:
        base = None
        for case in CASES:
            ms = [r for r in runs if r["case"] == case and r["op"] == op]
            cpu = [c for c in (r["proxy_cpu_us_per_op"] for r in ms) if c is not None]
            row = {
                "case": case,
                "op": op,
                "runs": [round(r["throughput"]) for r in ms],
                "throughput": statistics.median(r["throughput"] for r in ms),
                "p50_us": statistics.median(r["latency_us"]["p50"] for r in ms),
                "p99_us": statistics.median(r["latency_us"]["p99"] for r in ms),
                "proxy_cpu_us_per_op": statistics.median(cpu) if cpu else None,
                "errors": sum(sum(r["errors"].values()) for r in ms),
            }
            if case == "untyped":
                base = row
            row["ratio"] = row["throughput"] / base["throughput"] if base and base["throughput"] else None
            # Each run against the untyped run of the same round and op,
            # which ran minutes apart at most: less exposed to slow drifts
            # in the machine's load than the ratio of medians.
            paired = []
            for r in ms:
                same = [u for u in runs if u["case"] == "untyped" and u["op"] == op and u["round"] == r["round"]]
                if same and same[0]["throughput"]:
                    paired.append(r["throughput"] / same[0]["throughput"])
            row["paired_ratio"] = statistics.median(paired) if paired else None
            rows.append(row)
    return rows


def print_report(rows: list[dict], opts: argparse.Namespace) -> None:
    print(f"\n{opts.rounds} interleaved rounds of {opts.duration} (warm-up {opts.warmup}), {opts.concurrency} in "
          f"flight, 1 KiB bench.v1.Profile values, memstore; medians of the runs\n")
    print("| case | op | ops/s (median) | runs | p50 µs | p99 µs | vs untyped | vs untyped, per round | "
          "proxy CPU µs/op | errors |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cpu = "-" if r["proxy_cpu_us_per_op"] is None else f"{r['proxy_cpu_us_per_op']:.1f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        paired = "-" if r["paired_ratio"] is None else f"{r['paired_ratio']:.2f}"
        runs = ", ".join(f"{x / 1000:.1f}k" for x in r["runs"])
        print(f"| {r['case']} | {r['op']} | {r['throughput']:,.0f} | {runs} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
              f"{ratio} | {paired} | {cpu} | {r['errors']} |")
    print("\n`vs untyped`: ratio of the medians; `per round`: median of each run's ratio to the untyped run of "
          "its round. typed-pii gets do no PII work, so their distance from 1.00 shows the noise of this run.\n")
    for r in rows:
        if r["case"] in GOALS and r["ratio"] is not None:
            cost = 1 - r["ratio"]
            limit = GOALS[r["case"]]
            verdict = "met" if cost <= limit else "**missed**"
            print(f"- {r['case']} {r['op']}: costs {100 * cost:.0f}% of untyped throughput "
                  f"(goal at most {100 * limit:.0f}%): {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, default=TARGET_DIR / "release",
                    help="directory of the release binaries (default: $CARGO_TARGET_DIR/release, "
                         "else ~/.cache/prism-target/release)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per case and op (default 3)")
    ap.add_argument("--duration", default="4s", help="measurement per run (default 4s)")
    ap.add_argument("--warmup", default="1s", help="unrecorded load before each run (default 1s)")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    ap.add_argument("--key-space", type=int, default=10_000, help="distinct keys (default 10000)")
    ap.add_argument("--json", type=Path, help="also write every run and the summary as JSON here")
    ap.add_argument("--hold", action="store_true",
                    help="after the setup, print the proxy's pid, port and tokens and wait for Enter before measuring "
                         "(to attach a profiler)")
    opts = ap.parse_args()
    opts.bin_dir = opts.bin_dir.resolve()
    for name in BINARIES:
        if not (opts.bin_dir / name).is_file():
            sys.exit(f"missing {opts.bin_dir / name}; run `cargo build --release --bins` (or give --bin-dir)")
    if opts.rounds < 1:
        sys.exit("--rounds must be at least 1")

    tokens = {"bench": token("bench", ["bench"]), "support": token("support", ["support"])}
    admin = token("ops", ["ops"])
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="prism-pii-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_setup(work, port)
        # PRISM_LOG for the plugins too, which inherit it: no lines at
        # start and stop in the middle of the report.
        proxy = subprocess.Popen([str(opts.bin_dir / "prism-proxy"), "--config", str(config)], cwd=work,
                                 stdin=subprocess.DEVNULL, env={**os.environ, "PRISM_LOG": "warn"})
        try:
            wait_port(port, proxy, "prism-proxy")
            prismctl(opts.bin_dir, port, admin, ["schema", "push", "profile.proto", "-I", str(PROTO_DIR)])
            for case in CASES:
                prismctl(opts.bin_dir, port, admin, ["namespace", "apply", "-f", str(work / "apply" / f"{case}.yaml")])
            if opts.hold:
                print(f"proxy pid {proxy.pid}, port {port}")
                for who, tok in tokens.items():
                    print(f"token {who}: {tok}")
                input("press Enter to measure ")
            names = list(CASES)
            for r in range(opts.rounds):
                # The order rotates each round: every case runs first as often.
                turn = names[r % len(names):] + names[:r % len(names)]
                for op in OPS:
                    for case in turn:
                        m = measure(opts, port, proxy.pid, case, op, tokens[CASES[case][1]], work / "run.json")
                        m.update(case=case, op=op, round=r + 1, proxy_cpu_us_per_op=proxy_cpu_us(m))
                        runs.append(m)
                        print(f"round {r + 1} {case:12} {op}: {m['throughput']:8.0f} ops/s  p50 "
                              f"{m['latency_us']['p50']} µs  p99 {m['latency_us']['p99']} µs", flush=True)
            check_disclosure(opts.bin_dir, port, tokens)
        finally:
            proxy.terminate()
            try:
                proxy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proxy.kill()

    rows = summarize(runs)
    print_report(rows, opts)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(opts).items() if k not in ("json", "hold", "bin_dir")}
        opts.json.write_text(json.dumps({"settings": settings, "goals": GOALS, "summary": rows, "runs": runs},
                                        indent=2) + "\n")
        print(f"\nwrote {opts.json}")


if __name__ == "__main__":
    main()
