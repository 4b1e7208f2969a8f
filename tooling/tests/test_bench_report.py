"""Tests of tooling/bench_report.py: the targets table and the smoke check read prism-bench's JSON right."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_report as br  # noqa: E402


def measurement(target: str, throughput: float, p50: int, p99: int, *, concurrency: int = 64,
                processes: list[dict] | None = None, errors: dict | None = None, ok: int = 100) -> dict:
    return {
        "target": target,
        "workload": "get",
        "concurrency": concurrency,
        "throughput": throughput,
        "latency_us": {"p50": p50, "p90": p99, "p99": p99, "p999": p99, "max": p99},
        "processes": processes or [],
        "errors": errors or {},
        "ok": ok,
        "elapsed_seconds": 10.0,
        "server_cpu_seconds": None,
        "server_peak_rss_mib": None,
    }


def proc(name: str, cpu: float, peak_mib: float) -> dict:
    return {"name": name, "pid": 1, "cpu_per_second": cpu, "peak_rss_mib": peak_mib, "rss_mib": peak_mib}


def test_targets_compare_against_the_same_runs_floors() -> None:
    cells = [
        measurement("prism/bench-memstore", 7_500, 1, 1),
        measurement("grpc-floor", 10_000, 1, 1),
        measurement("prism/bench-redis", 8_000, 1, 1),
        measurement("grpc-redis-floor", 10_000, 1, 1),
    ]
    # The redis goal holds in every run: the second run's 70% fails it.
    runs = cells + [measurement("prism/bench-redis", 7_000, 1, 1), measurement("grpc-redis-floor", 10_000, 1, 1)]
    rows = br.target_rows({"summary": cells, "runs": runs}, None, None)
    memstore = next(r for r in rows if "memstore" in r)
    redis = next(r for r in rows if "Prism → redis" in r)
    assert "75% (7,500 / 10,000" in memstore and memstore.endswith("| **no** |")
    assert "80% (8,000 / 10,000; runs 80%, 70%)" in redis and redis.endswith("| **no** |")
    h2 = {"summary": [{"target": "prism/bench-memstore", "rps": 9_000}, {"target": "grpc-floor", "rps": 10_000}],
          "runs": [{"target": "prism/bench-memstore", "rps": 9_000}, {"target": "grpc-floor", "rps": 10_000}]}
    row = next(r for r in br.target_rows({"summary": cells, "runs": runs}, None, h2) if "h2load" in r)
    assert "90% (9,000 / 10,000; runs 90%)" in row and row.endswith("| yes |")


def test_rate_targets_use_the_proxy_and_the_serving_plugin() -> None:
    floor = measurement("grpc-redis-floor", 1000, 220, 400, concurrency=16)
    floor["server_cpu_seconds"] = 1.0  # 1 ms of CPU per request over its 1,000 answers
    rate = {
        "plan": {"concurrency": [16]},
        "targets": ["prism/bench-redis", "grpc-redis-floor"],
        "summary": [
            measurement("prism/bench-redis", 1000, 300, 1400, concurrency=16, ok=1000, processes=[
                proc("prism-proxy", 0.06, 20.0),
                proc("prism-plugin-memstore", 0.5, 500.0),  # idle in this cell; must not count
                proc("prism-plugin-redis", 0.03, 60.0),
            ]),
            floor,
        ],
    }
    floor["ok"] = 1000
    rows = br.target_rows({"summary": []}, rate, None)
    added = next(r for r in rows if "p50 added" in r)
    assert "+0.080 ms (300 − 220 µs)" in added and added.endswith("| yes |")
    assert next(r for r in rows if "p99 end to end" in r).endswith("| yes |")
    # CPU per request: (0.06 + 0.03) s/s × 10 s / 1,000 requests = 900 µs against the floor's 1,000 µs.
    cpu = next(r for r in rows if "CPU per request" in r)
    assert "0.90× (900 / 1000 µs)" in cpu and cpu.endswith("| yes |")
    # p99 is judged on the median of the runs, not on the run picked by p50.
    rate["runs"] = [
        measurement("prism/bench-redis", 1000, 300, p99, concurrency=16) for p99 in (1400, 2900, 1800)
    ] + [floor]
    p99_row = next(r for r in br.target_rows({"summary": []}, rate, None) if "p99 end to end" in r)
    assert "1.800 ms (median of runs: 1.40, 1.80, 2.90 ms)" in p99_row and p99_row.endswith("| **no** |")
    # 60 MiB is 62.9 MB: over the 50 MB goal.
    plugin_rss = next(r for r in rows if "peak RSS of prism-plugin-redis" in r)
    assert "62.9 MB" in plugin_rss and plugin_rss.endswith("| **no** |")
    assert next(r for r in rows if "peak RSS of prism-proxy" in r).endswith("| yes |")
    assert not any("memstore" in r for r in rows)


def test_smoke_fails_on_any_error_or_empty_run(capsys: pytest.CaptureFixture[str]) -> None:
    good = {"runs": [measurement("redis", 1, 1, 1)]}
    br.check_smoke({"main": good})
    assert "0 errors" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="UNAVAILABLE"):
        br.check_smoke({"main": good, "rate": {"runs": [measurement("x", 1, 1, 1, errors={"UNAVAILABLE": 2})]}})
    with pytest.raises(SystemExit, match="ok 0"):
        br.check_smoke({"main": {"runs": [measurement("x", 0, 1, 1, ok=0)]}})


def iso_runs(alone: list[int], beside: list[int], admitted: float, refused: float,
             other: dict | None = None) -> dict:
    """Isolation runs as bench_report's `isolation` records them: run i of
    `alone` and of `iso-flood` were measured back to back."""
    runs = []
    for i, (a, b) in enumerate(zip(alone, beside)):
        runs.append({"case": "alone", "run": i, "steady": measurement("prism/iso-steady", 1000, 200, a)})
        flood = measurement("prism/iso-flood", admitted, 150, 900, ok=int(admitted * 10),
                            errors={"ResourceExhausted": int(refused * 10), **(other or {})})
        runs.append({"case": "iso-flood", "run": i, "steady": measurement("prism/iso-steady", 1000, 200, b),
                     "flood": flood})
    return {"runs": runs, "quota": 500, "flood_rate": 5000, "steady_rate": 1000, "duration": "10s"}


def goal_rows(iso: dict) -> list[tuple]:
    rows: list[tuple] = []
    br.isolation_goal_rows(iso, lambda *row: rows.append(row))
    return rows


def test_isolation_goal_pairs_each_run_with_its_own_alone_run() -> None:
    # Medians of the columns would give 800 / 1000 = 0.8x; paired, the runs
    # are 2.0x, 1.5x and 0.5x, whose median (1.5x) misses the goal.
    (p99, excess) = goal_rows(iso_runs([400, 1000, 1600], [800, 1500, 800], 500, 4500))
    assert p99[2].startswith("1.50× (runs 2.00×, 1.50×, 0.50×)") and p99[3] is False
    assert excess[3] is True
    (p99, _) = goal_rows(iso_runs([1000, 1000, 1000], [1100, 1300, 1200], 500, 4500))
    assert p99[2].startswith("1.20×") and p99[3] is True


def test_isolation_goal_fails_when_the_flood_is_queued_or_errs_otherwise() -> None:
    # Admitted beyond the quota: the flood was not held to it.
    assert goal_rows(iso_runs([1000], [1000], 900, 4100))[1][3] is False
    # Too few refusals: the excess waited instead of being refused.
    assert goal_rows(iso_runs([1000], [1000], 500, 2000))[1][3] is False
    # Any error other than RESOURCE_EXHAUSTED.
    assert goal_rows(iso_runs([1000], [1000], 500, 4500, {"Unavailable": 3}))[1][3] is False


def test_a_ratio_just_under_its_goal_does_not_read_as_meeting_it() -> None:
    # 49.6% rounds to 50%: the page would say "50%" beside "no".
    assert br.percent(18894 / 38095, 0.5) == "49.6%"
    assert br.percent(0.5, 0.5) == "50%" and br.percent(0.85, 0.85) == "85%"
    assert br.percent(0.744, 0.75) == "74%"
    assert br.percent(0.7499, 0.75) == "74.99%"
