"""tf.distribute: group sparsity, channel pruning and budget switches under Mirrored and
MultiWorkerMirrored strategies.

Each strategy needs a fresh TensorFlow process (logical devices, TF_CONFIG), so the runs
(tests/distributed_runs.py) execute in subprocesses and save what they ended with (weights,
optimizer state, masks, switch states) to .npz files that the tests compare.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "tests", "distributed_runs.py")


def _start(args: list[str], log, env=None) -> subprocess.Popen:
    """Starts ``distributed_runs.py *args`` in the repository root, output to the open ``log``."""
    return subprocess.Popen([sys.executable, RUNS, *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait_all(procs: list[subprocess.Popen], logs: list, timeout: float = 500) -> None:
    """Waits for every process; once one fails (or time is up) the others are killed, since
    a worker left alone would wait for its peer's collective ops forever."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        failed = any(p.poll() not in (None, 0) for p in procs)
        if failed or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            break
        time.sleep(0.2)
    for p, log in zip(procs, logs):
        log.seek(0)
        assert p.returncode == 0, log.read()[-4000:]


def _run(args: list[str], out_dir, envs: list) -> None:
    """Runs one process per entry of ``envs`` (None: this environment) and waits for all."""
    logs = [open(out_dir / f"log{i}.txt", "w+") for i in range(len(envs))]
    try:
        _wait_all([_start(args, log, env) for log, env in zip(logs, envs)], logs)
    finally:
        for log in logs:
            log.close()


def _load(path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _variables(result: dict) -> list[np.ndarray]:
    return [result[k] for k in sorted(result) if k.startswith("var_")]


def _assert_same_keys(a: dict, b: dict, prefix: str) -> list[str]:
    keys = sorted(k for k in a if k.startswith(prefix))
    assert keys and keys == sorted(k for k in b if k.startswith(prefix))
    return keys


# ------------------------------------------------------------------ MirroredStrategy


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """``get(strategies, methods)``: runs (once) and loads each method under each strategy
    ("single": one CPU, "mirrored": MirroredStrategy over two logical CPUs)."""
    out = tmp_path_factory.mktemp("mirrored")

    def get(strategies: list[str], methods: list[str]) -> dict:
        paths = {(s, m): out / f"{s}_{m}.npz" for s in strategies for m in methods}
        if not all(p.exists() for p in paths.values()):
            _run(["mirrored", str(out), ",".join(strategies), ",".join(methods)], out, [None])
        return {key: _load(path) for key, path in paths.items()}

    return get


@pytest.mark.slow  # ~32 s; the per-method mirrored tests below compare with a single device
def test_mirrored_replicas_stay_identical_for_every_method(mirrored):
    """Two replicas: callbacks act once per global step and their writes reach both replicas."""
    runs = mirrored(["mirrored"], ["sparsity", "taylor", "budget"])
    for (_, method), run in runs.items():
        assert list(run["copies"]) == [2], method  # every variable is mirrored on both CPUs
        assert run["spread"] == 0.0, method  # weights, masks' zeros, switch latents, optimizer
    sparsity, taylor, budget = (runs["mirrored", m] for m in ("sparsity", "taylor", "budget"))
    np.testing.assert_array_equal(sparsity["applied"], np.arange(1, 21))  # 5 epochs x 4 steps
    assert 0 < sparsity["sparsity"] < 1
    np.testing.assert_array_equal(taylor["pruned_steps"], [0, 2])
    assert taylor["sparsity"] == 0.5 and taylor["dead_max"] == 0.0
    assert budget["calls"] == budget["iterations"] == 12
    assert (budget["usage"] <= 0.5 + 1e-9).all() and (budget["usage"] > 0).all()


ALL_METHODS = ["sparsity", "magnitude", "taylor", "budget"]


def _assert_mirrored_like_single(single: dict, mirror: dict, atol: float) -> None:
    assert list(single["copies"]) == [1] and list(mirror["copies"]) == [2]
    assert mirror["spread"] == 0.0  # every replica holds exactly the same values
    assert mirror["iterations"] == single["iterations"]
    for a, b in zip(_variables(single), _variables(mirror), strict=True):
        np.testing.assert_allclose(a, b, atol=atol)


@pytest.mark.slow  # a fresh TF process runs every method on one CPU: ~25 s on 2 shared cores
def test_mirrored_group_sparsity_matches_single_device(mirrored):
    runs = mirrored(["single", "mirrored"], ALL_METHODS)
    single, mirror = runs["single", "sparsity"], runs["mirrored", "sparsity"]
    _assert_mirrored_like_single(single, mirror, atol=1e-5)
    np.testing.assert_array_equal(single["zero"], mirror["zero"])
    assert 0 < mirror["sparsity"] < 1 and mirror["sparsity"] == single["sparsity"]
    # one proximal step per global step (20 = 5 epochs x 4 batches), not one per replica
    np.testing.assert_array_equal(mirror["applied"], np.arange(1, 21))


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
def test_mirrored_pruning_matches_single_device(mirrored, criterion):
    runs = mirrored(["single", "mirrored"], ALL_METHODS)
    single, mirror = runs["single", criterion], runs["mirrored", criterion]
    _assert_mirrored_like_single(single, mirror, atol=1e-5)
    for key in _assert_same_keys(single, mirror, "mask_"):
        np.testing.assert_array_equal(single[key], mirror[key], err_msg=key)
    np.testing.assert_array_equal(mirror["pruned_steps"], [0, 2])
    assert mirror["sparsity"] == single["sparsity"] == 0.5


@pytest.mark.slow
def test_mirrored_budget_switches_match_single_device(mirrored):
    runs = mirrored(["single", "mirrored"], ALL_METHODS)
    single, mirror = runs["single", "budget"], runs["mirrored", "budget"]
    _assert_mirrored_like_single(single, mirror, atol=1e-5)
    for key in _assert_same_keys(single, mirror, "switch_"):
        np.testing.assert_array_equal(single[key], mirror[key], err_msg=key)
    np.testing.assert_allclose(mirror["lambdas"], single["lambdas"], atol=1e-6)
    assert mirror["calls"] == single["calls"] == 12  # one penalty step per global step
    assert (mirror["usage"] <= 0.5 + 1e-9).all() and (mirror["usage"] > 0).all()


# ------------------------------------------------------------------ MultiWorkerMirroredStrategy


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _multi_worker(out_dir, methods: list[str]) -> list[dict]:
    """Runs two local worker processes forming one MultiWorkerMirroredStrategy cluster."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    envs = [dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                   "task": {"type": "worker", "index": index}}))
            for index in range(2)]
    _run(["worker", str(out_dir), ",".join(methods)], out_dir, envs)
    return [{m: _load(out_dir / f"worker{i}_{m}.npz") for m in methods} for i in range(2)]


def _assert_workers_identical(w0: dict, w1: dict) -> None:
    assert w0["replicas"] == w1["replicas"] == 2
    assert w0["iterations"] == w1["iterations"] > 0
    for a, b in zip(_variables(w0), _variables(w1), strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit, optimizer state included


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi_worker")
    runs = _multi_worker(out, ["sparsity", "magnitude", "taylor", "taylor_unsynced", "budget"])
    for i, run in enumerate(runs):
        run["unpatched"] = (out / f"worker{i}_unpatched.txt").read_text()
    return runs


@pytest.mark.slow
def test_keras_multi_worker_fit_still_needs_the_patch(workers):
    """Keras 3.15: plain fit fails under 2 workers (keras#20585); if this fails, Keras was
    fixed and the README patch can go."""
    for run in workers:
        assert "PerReplica" in run["unpatched"], run["unpatched"][:500]


def test_multi_worker_patch_is_idempotent_and_only_for_multi_worker():
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    from tfmot_mtl.training.distribute import patch_keras_multi_worker_fit

    assert patch_keras_multi_worker_fit() is True
    reduce_logs = trainer.reduce_per_replica
    assert patch_keras_multi_worker_fit() is True and trainer.reduce_per_replica is reduce_logs
    # a one-device strategy keeps Keras's own reduction
    values = {"loss": tf.constant(2.0)}
    out = trainer.reduce_per_replica(values, tf.distribute.get_strategy(), "auto")
    assert float(out["loss"]) == 2.0


@pytest.mark.slow  # two TF processes on 2 shared cores: ~60 s for all methods
def test_multi_worker_group_sparsity_identical(workers):
    w0, w1 = workers[0]["sparsity"], workers[1]["sparsity"]
    _assert_workers_identical(w0, w1)
    np.testing.assert_array_equal(w0["zero"], w1["zero"])
    assert 0 < w0["sparsity"] < 1
    np.testing.assert_array_equal(w0["applied"], np.arange(1, int(w0["iterations"]) + 1))


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
def test_multi_worker_pruning_masks_identical(workers, criterion):
    w0, w1 = workers[0][criterion], workers[1][criterion]
    _assert_workers_identical(w0, w1)
    for key in _assert_same_keys(w0, w1, "mask_"):
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    assert w0["sparsity"] == 0.5 and w0["dead_max"] == 0.0
    np.testing.assert_array_equal(w0["pruned_steps"], [0, 2])


@pytest.mark.slow
def test_multi_worker_scores_must_be_averaged(workers):
    """Control: with per-worker scoring data and no all-reduce the workers' masks diverge."""
    w0, w1 = workers[0]["taylor_unsynced"], workers[1]["taylor_unsynced"]
    keys = _assert_same_keys(w0, w1, "mask_")
    assert any(not np.array_equal(w0[k], w1[k]) for k in keys)


@pytest.mark.slow
def test_multi_worker_budget_switches_identical(workers):
    w0, w1 = workers[0]["budget"], workers[1]["budget"]
    _assert_workers_identical(w0, w1)
    for key in _assert_same_keys(w0, w1, "switch_"):
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    np.testing.assert_array_equal(w0["lambdas"], w1["lambdas"])
    assert (w0["usage"] <= 0.5 + 1e-9).all() and (w0["usage"] > 0).all()


# ------------------------------------------------------------------ in-process helpers


def test_mean_across_workers_is_identity_without_workers():
    import tensorflow as tf

    from tfmot_mtl.pruning._sync import mean_across_workers, num_workers

    scores = {"b": np.array([1.0, np.nan]), "a": np.arange(3.0)}
    strategy = tf.distribute.get_strategy()
    assert num_workers(strategy) == 1 and num_workers(None) == 1
    assert mean_across_workers(scores, strategy) is scores

    class Extended:
        worker_devices = ("/gpu:0", "/gpu:1")

    class TwoWorkersOfTwoGPUs:
        num_replicas_in_sync, extended = 4, Extended()

    assert num_workers(TwoWorkersOfTwoGPUs()) == 2
