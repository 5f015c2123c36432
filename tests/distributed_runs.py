"""Training runs of the three methods under tf.distribute, for tests/test_distributed.py.

Run as a script in a fresh process (logical devices and TF_CONFIG must be set before
TensorFlow starts); each run is saved to ``<out_dir>/<prefix>_<method>.npz``:

    python tests/distributed_runs.py mirrored OUT_DIR single,mirrored sparsity,taylor
    TF_CONFIG=... python tests/distributed_runs.py worker OUT_DIR sparsity,taylor,budget
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if __name__ == "__main__" and sys.argv[1] == "mirrored":  # before TensorFlow initialises
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import tfmot_mtl.pruning.callback as pruning_callback  # noqa: E402
from tfmot_mtl import budget  # noqa: E402
from tfmot_mtl.training.distribute import patch_keras_multi_worker_fit  # noqa: E402
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude, Taylor  # noqa: E402
from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity  # noqa: E402

L = keras.layers
DOMAINS = [("a", 3), ("b", 4)]



# ---------------------------------------------------------------------- results


def replica_copies(variables) -> tuple[list[int], float]:
    """(copies per variable, largest difference between a replica's copy and the first)."""
    copies, worst = set(), 0.0
    for v in variables:
        value = getattr(v, "value", v)
        parts = list(getattr(value, "values", None) or [value])
        first = np.asarray(parts[0])
        copies.add(len(parts))
        worst = max([worst] + [float(np.abs(np.asarray(p) - first).max(initial=0)) for p in parts])
    return sorted(copies), worst


def summary(model, out: dict) -> dict:
    """Adds every model and optimizer variable (``var_###``) and the replica check to ``out``."""
    variables = list(model.weights) + list(model.optimizer.variables)
    copies, spread = replica_copies(variables)
    out.update({"copies": np.asarray(copies), "spread": np.float64(spread),
                "iterations": np.int64(int(model.optimizer.iterations.numpy()))})
    for i, v in enumerate(variables):
        out[f"var_{i:03d}"] = np.asarray(v.numpy())
    return out


# ------------------------------------------- group sparsity (Upadhyay et al. 2024)


def run_sparsity(strategy) -> dict:
    keras.utils.set_random_seed(0)
    with strategy.scope():
        x = keras.Input((6,), name="image")
        h = L.Dense(16, activation="relu", name="trunk")(x)
        model = keras.Model(x, {"a": L.Dense(1, name="a")(h), "b": L.Dense(1, name="b")(h)})
        model = apply_group_sparsity(model, l1=0.2)
        model.compile(keras.optimizers.SGD(0.1), loss={"a": "mse", "b": "mse"})
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((64, 6)).astype("float32")
    ys = {"a": xs[:, :1] * 2, "b": xs[:, 1:2] - xs[:, 2:3]}
    cb = ProximalGroupLasso()  # lambda from the ChannelGroupLasso regularizers
    applied = []  # the step of the last in-graph proximal step, after each batch
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: applied.append(cb.last_step))
    model.fit(tf.data.Dataset.from_tensor_slices((xs, ys)).batch(16), epochs=5, callbacks=[cb, record],
              verbose=0)
    return summary(model, {"zero": cb.zero_channels()["trunk"], "sparsity": cb.sparsity(),
                           "applied": np.asarray(applied)})


# ---------------------------------------------- filter pruning (Garg et al. 2023)


def conv_model() -> keras.Model:
    x = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(8, 3, padding="same", name="c1")(x)
    h = L.BatchNormalization(synchronized=True, name="bn1")(h)  # global-batch statistics
    h = L.ReLU(name="r1")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    a = L.Conv2D(2, 1, name="a")(h)
    b = L.Dense(3, name="b")(L.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model({"image": x}, {"a": a, "b": b})
    model.compile(keras.optimizers.SGD(0.05),
                  loss={"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def conv_data(seed: int = 0, n: int = 32, batch: int = 8):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype(np.float32)
    y = {"a": rng.standard_normal((n, 8, 8, 2)).astype(np.float32),
         "b": rng.integers(0, 3, n).astype(np.int32)}
    return tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(batch)


def run_pruning(strategy, criterion: str, score_seed: int = 0) -> dict:
    """Prunes to 25% at step 0 and 50% at step 2; scores on batches seeded by ``score_seed``."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = conv_model()
    importance = {"magnitude": Magnitude, "taylor": Taylor}[criterion]()
    cb = ChannelPruningCallback(importance, IterativeSchedule(target=0.5, frequency=2, step=0.25, end_step=2),
                                data=conv_data(seed=100 + score_seed).repeat(), score_batches=2,
                                verbose=0)
    model.fit(conv_data(), epochs=2, callbacks=[cb], verbose=0)
    out = {f"mask_{g}": m for g, m in cb.masks.items()}
    out["dead_max"] = max(float(np.abs(model.get_layer(g).kernel.numpy()[..., ~m]).max(initial=0))
                          for g, m in cb.masks.items())  # pruned producer columns
    out.update({"sparsity": cb.sparsity(), "pruned_steps": np.asarray([h["step"] for h in cb.history])})
    return summary(model, out)


# ------------------------------------- budget-aware pruning (dos Santos et al. 2023)


def tiny_backbone() -> keras.Model:
    image = keras.Input((8, 8, 3), name="image")
    x = image
    for i in range(2):
        x = L.Conv2D(8, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = L.BatchNormalization(synchronized=True, name=f"bn{i}")(x)
        x = L.ReLU(name=f"r{i}")(x)
    return keras.Model({"image": image}, x, name="tiny")


def domain_data(n: int = 64):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 3)).astype("float32") * 0.5
    dom = (np.arange(n) % 2).astype("int32")
    y = np.where(dom == 0, rng.integers(0, 3, n), rng.integers(0, 4, n)).astype("int32")
    x[np.arange(n), :, :, y % 3] += 0.5
    ds = tf.data.Dataset.from_tensor_slices(({"image": x, "domain": dom}, {"label": y})).batch(16)
    return budget.domain_targets(ds, [name for name, _ in DOMAINS])


def run_budget(strategy) -> dict:
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
        budget.compile_domain_model(model, keras.optimizers.SGD(0.05))
    cb = budget.BudgetCallback(budget=0.5, sharing="jaccard", multiplier_lr=0.5)
    model.fit(domain_data(), epochs=3, callbacks=[cb], verbose=0)
    out = {f"switch_{s.name}": s.binary() for s in budget.switch_layers(model)}
    out.update({"usage": cb.usage(), "lambdas": cb.lambdas, "calls": np.int64(cb._step)})
    return summary(model, out)


# ---------------------------------------------------------------------- entry points


def _runs(strategy, score_seed: int = 0) -> dict:
    return {"sparsity": lambda: run_sparsity(strategy), "budget": lambda: run_budget(strategy),
            **{c: (lambda c=c: run_pruning(strategy, c, score_seed)) for c in ("magnitude", "taylor")}}


def main_mirrored(out_dir: str, strategy_names: list[str], methods: list[str]) -> None:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategies = {"single": lambda: tf.distribute.OneDeviceStrategy(devices[0]),
                  "mirrored": lambda: tf.distribute.MirroredStrategy(devices)}
    for strategy_name in strategy_names:
        runs = _runs(strategies[strategy_name]())
        for name in methods:
            path = os.path.join(out_dir, f"{strategy_name}_{name}.npz")
            if not os.path.exists(path):  # an earlier test already ran it
                np.savez(path, **runs[name]())


def main_worker(out_dir: str, methods: list[str]) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    task = strategy.cluster_resolver.task_id
    with strategy.scope():  # unpatched Keras fails before any collective op, on every worker
        model = conv_model()
    try:
        model.fit(conv_data(), epochs=1, verbose=0)
        error = ""
    except ValueError as e:
        error = str(e)
    with open(os.path.join(out_dir, f"worker{task}_unpatched.txt"), "w") as f:
        f.write(error)
    patch_keras_multi_worker_fit()
    runs = _runs(strategy, score_seed=task)  # every worker scores on different batches
    for name in methods:
        if name == "taylor_unsynced":  # control: every worker keeps its own scores
            synced = pruning_callback.mean_across_workers
            pruning_callback.mean_across_workers = lambda scores, strategy: scores
            result = run_pruning(strategy, "taylor", score_seed=task)
            pruning_callback.mean_across_workers = synced
        else:
            result = runs[name]()
        result["replicas"] = np.int64(strategy.num_replicas_in_sync)
        np.savez(os.path.join(out_dir, f"worker{task}_{name}.npz"), **result)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "mirrored":
        main_mirrored(out, sys.argv[3].split(","), sys.argv[4].split(","))
    else:
        main_worker(out, sys.argv[3].split(","))
