"""The torchrec ZCH baseline script, run in the separate torchrec interpreter.

The tests that run torchrec need ``$SUBZOO_TORCHREC_PYTHON`` (a python with torchrec and
fbgemm-gpu); the error-path tests always run.
"""

from __future__ import annotations

import os
import statistics

import pytest

from subspace_recsys.torchrec_baseline import TORCHREC_PYTHON_ENV, run_in_interpreter

TORCHREC_PYTHON = os.environ.get(TORCHREC_PYTHON_ENV)
needs_torchrec = pytest.mark.skipif(
    not TORCHREC_PYTHON,
    reason=f"{TORCHREC_PYTHON_ENV} is not set: no interpreter with torchrec + fbgemm-gpu "
    "(the workspace torch is too new for fbgemm-gpu-cpu 1.9.0)",
)


def test_missing_interpreter_raises_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-python")
    with pytest.raises(RuntimeError, match="could not be started") as info:
        run_in_interpreter(missing, num_ids=10, batch=4, repeats=1)
    assert missing in str(info.value)
    assert TORCHREC_PYTHON_ENV in str(info.value)


def test_failing_interpreter_reports_status_and_stderr_tail(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: torchrec' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="exited with status 3") as info:
        run_in_interpreter(str(fake), num_ids=10, batch=4, repeats=1)
    assert "stderr tail:\nModuleNotFoundError: torchrec" in str(info.value)


def test_interpreter_without_json_output_raises(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'not json'\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="printed no JSON object"):
        run_in_interpreter(str(fake))


def test_bad_options_fail_before_starting_the_interpreter(tmp_path):
    missing = str(tmp_path / "no-such-python")  # reaching it would raise RuntimeError instead
    with pytest.raises(TypeError, match="num_rows"):
        run_in_interpreter(missing, num_rows=10)
    with pytest.raises(ValueError, match=r"--num-ids.*>= 1, got 0"):
        run_in_interpreter(missing, num_ids=0)
    with pytest.raises(ValueError, match="--policy"):
        run_in_interpreter(missing, policy="fifo")
    with pytest.raises(TypeError, match="return_mapping must be a bool"):
        run_in_interpreter(missing, return_mapping="yes")


@pytest.fixture(scope="module")
def tiny_run():
    return run_in_interpreter(
        TORCHREC_PYTHON, num_ids=2000, batch=512, repeats=3, seed=0, return_mapping=True
    )


@needs_torchrec
def test_tiny_run_reports_versions_and_rates(tiny_run):
    for key in ("torch", "torchrec", "fbgemm_gpu"):
        assert isinstance(tiny_run[key], str) and tiny_run[key][:1].isdigit(), (key, tiny_run)
    assert tiny_run["num_ids"] == 2000
    assert tiny_run["zch_size"] == 2001  # one slot more than ids: torchrec's miss slot
    assert tiny_run["eviction_interval"] == 1
    for rate, seconds in (("inserts_per_s", "insert_seconds"), ("lookups_per_s", "lookup_seconds")):
        assert len(tiny_run[seconds]) == 3
        assert tiny_run[rate] == pytest.approx(2000 / statistics.median(tiny_run[seconds]))
    assert tiny_run["inserts_per_cpu_s"] > 0 and tiny_run["lookups_per_cpu_s"] > 0
    assert {"inserts", "lookups", "collisions"} <= set(tiny_run["notes"])


@needs_torchrec
def test_tiny_run_gives_every_id_its_own_slot(tiny_run):
    ids, slots = tiny_run["ids"], tiny_run["slots"]
    assert len(ids) == len(set(ids)) == 2000
    assert all(0 <= i < 2**63 - 1 for i in ids)
    assert len(slots) == 2000
    # Zero collisions: distinct ids, distinct slots, none on the miss slot zch_size - 1.
    assert len(set(slots)) == 2000
    assert all(0 <= s < tiny_run["zch_size"] - 1 for s in slots)
    assert tiny_run["collisions"] == 0
    assert tiny_run["misses"] == 0
    assert tiny_run["live_ids"] == tiny_run["distinct_slots"] == 2000


@needs_torchrec
def test_too_small_table_evicts_instead_of_colliding():
    # 2000 ids into 1001 slots: the table keeps zch_size - 1 = 1000 of them, each in its own
    # slot, and the other 1000 miss (ZCH never shares a slot, it evicts).
    run = run_in_interpreter(
        TORCHREC_PYTHON, num_ids=2000, batch=500, repeats=1, zch_size=1001, policy="lru"
    )
    assert run["eviction_policy"] == "LRU_EvictionPolicy"
    assert run["live_ids"] == 1000
    assert run["misses"] == 1000
    assert run["distinct_slots"] == 1000
    assert run["collisions"] == 0


def test_timeout_raises_with_stderr_tail(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'still importing torchrec' >&2\nexec sleep 5\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"timed out after 0\.5 s") as info:
        run_in_interpreter(str(fake), timeout=0.5)
    assert "still importing torchrec" in str(info.value)
