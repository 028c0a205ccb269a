"""The benchmark suite at tiny scale, so its code keeps working (no timing assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: benchmarks/

from benchmarks.drain_memory import write_project  # noqa: E402
from benchmarks.report import Figure, table  # noqa: E402
from benchmarks.store_builder import SCALES, build_store  # noqa: E402
from benchmarks.timing import autopack_argv, autopack_env, time_process  # noqa: E402

from autopack.plan import load_plan  # noqa: E402
from autopack.store import open_store  # noqa: E402
from autopack.store.drainable import drainable_phases, phase_categories, run_types  # noqa: E402
from autopack.store.queries import count_runs, list_runs, run_status  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("bench") / "tiny.db", SCALES["tiny"])


def test_built_store_has_the_scale_and_a_current_schema(tiny):
    scale = SCALES["tiny"]
    assert tiny.counts["runs"] == scale.runs
    assert tiny.counts["phases"] == scale.runs * scale.phases_per_run
    assert tiny.counts["llm_calls"] == scale.runs * scale.llm_calls_per_run
    assert tiny.counts["test_runs"] == scale.runs * scale.test_runs_per_run
    with open_store(tiny.path, create=False) as store:  # refuses a database that needs migrating
        status = run_status(store, tiny.sample_run)
        assert {"failed", "skipped"} <= {phase["state"] for phase in status["phases"]}
        assert status["run"]["tokens"]["input"] > 0


def test_listing_the_newest_runs_is_a_prefix_of_the_full_list(tiny):
    with open_store(tiny.path, create=False) as store:
        everything = list_runs(store)
        assert count_runs(store) == len(everything) == SCALES["tiny"].runs
        assert list_runs(store, limit=5) == everything[:5]
        assert [run["id"] for run in everything] == sorted((run["id"] for run in everything), reverse=True)


def test_pick_next_reads_run_types_and_categories_from_the_json(tiny):
    with open_store(tiny.path, create=False) as store:
        phases = drainable_phases(store)
        specs = {(p.run_id, p.phase_id): p.spec for run_id in {d.run_id for d in phases}
                 for p in store.phases(run_id)}
        categories = phase_categories(store, [p.phase_pk for p in phases])
        types = run_types(store, sorted({p.run_id for p in phases}))
    assert phases and all(p.state in ("queued", "failed") for p in phases)
    assert all(categories[p.phase_pk] == specs[(p.run_id, p.phase_id)]["category"] for p in phases)
    assert types and set(types.values()) == {None}  # the generated plans declare no run.type


def test_drain_memory_project_is_a_valid_plan_with_one_cassette_line_per_phase(tmp_path):
    plan = load_plan(write_project(tmp_path, 3))
    lines = [json.loads(line) for line in (tmp_path / "cassette.jsonl").read_text().splitlines()]
    assert [p.id for p in plan.phases] == [line["phase"] for line in lines] == ["p0001", "p0002", "p0003"]
    assert not plan.run.test_command.startswith("python -m pytest")


def test_process_timing_and_table(tmp_path):
    timing = time_process(autopack_argv("--help"), tmp_path, autopack_env(), repeats=2)
    assert len(timing.wall_s) == len(timing.cpu_s) == 2 and timing.max_rss_kb > 0
    figure = Figure("autopack --help", timing.median_s * 1000, "ms", 150.0,
                    {"cpu_ms_median": timing.cpu_median_s * 1000})
    text = table([figure, Figure("growth", 20.0, "MiB", 10.0)])
    assert "autopack --help" in text and "MISSED" in text.splitlines()[-1]


def test_the_agent_benchmark_times_each_turn_and_models_the_cache(tmp_path):
    from benchmarks.agent_turns import run_attempt_scripted

    cached = run_attempt_scripted(tmp_path / "on", 24, keep_requests=True)
    plain = run_attempt_scripted(tmp_path / "off", 24, cache=False, keep_requests=True)
    assert cached.turns == plain.turns == 24 and len(cached.overheads_ms) == 23
    assert set(cached.rss_mib) == {20, 24}
    assert plain.uncached_bytes == [size for size in plain.request_bytes]  # nothing cached without marks
    assert cached.uncached_bytes[0] == plain.uncached_bytes[0]  # the first request only writes the cache
    assert all(later < size / 4 for later, size in zip(cached.uncached_bytes[2:], cached.request_bytes[2:]))


def test_the_sandbox_benchmark_times_both_modes(tmp_path):
    from benchmarks.sandbox_ratio import suite_timings
    from test_sandbox import usable_bwrap

    usable_bwrap()
    plain, boxed = suite_timings(tmp_path, 1)
    assert len(plain) == len(boxed) == 1 and min(plain + boxed) > 0


def test_the_postgresql_read_benchmark_times_every_read_command_on_both_databases(tmp_path, pg_server, capsys):
    """Each read command, as the command a user runs and as its read model, on a copy of the store in a
    throwaway server: a row of figures per command (pg_server: skipped, or failed in CI, without a server)."""
    import re

    from benchmarks import read_commands_pg

    assert read_commands_pg.main(["--scale", "tiny", "--repeats", "1", "--cache-dir", str(tmp_path)]) == 0
    rows = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in read_commands_pg.COMMANDS:
        assert len(re.findall(r" \d+\.\d ms", rows[name])) == 4, rows[name]
        assert len(re.findall(r" \d+\.\d\dx", rows[name])) == 2, rows[name]
