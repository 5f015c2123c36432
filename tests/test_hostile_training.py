"""Hostile inputs during training: NaN/Inf, Sequential / nested / shared models, mixed precision.

NaN/Inf policy (all three callbacks): the callback warns with ``NonFiniteWarning``, sets
``model.stop_training = True`` (``fit`` ends after the current batch) and keeps its masks /
zero pattern / switch latents at the last values computed from finite numbers.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo as zoo
from test_budget import DOMAINS, tiny_backbone, tiny_data
from pruning_models import conv_data, conv_model
from test_sparsity import two_task_model
from test_strip import assert_parity
from tfmot_mtl import budget, lite
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import apply_masks, masks_from_zeros
from tfmot_mtl.training.nonfinite import NonFiniteWarning
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity
from tfmot_mtl.strip import strip_channels

L = keras.layers
STOPPED = r"training stopped \(model.stop_training = True\)\. "


class Poison(keras.callbacks.Callback):
    """At the end of batch `at` (1-based), records `snapshot()` and fills `variable()` with NaN."""

    def __init__(self, at, variable, snapshot):
        super().__init__()
        self.at, self.variable, self.snapshot, self.batches = at, variable, snapshot, 0
        self.before = None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.at:
            self.before = self.snapshot()
            var = self.variable(self.model)
            var.assign(np.full(var.shape, np.nan, "float32"))


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _prox_setup(poison_loss):
    model = two_task_model()
    model.compile(keras.optimizers.SGD(0.05), loss={"seg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)})
    rng = np.random.default_rng(0)
    x = rng.random((32, 6, 6, 3)).astype("float32")
    y = {"seg": rng.random((32, 6, 6, 2)).astype("float32"), "cls": rng.integers(0, 3, 32)}
    if poison_loss:
        y["seg"][12] = np.inf  # the 4th batch of 4 has an infinite target: loss inf, weights NaN
    return model, (x, y), ProximalGroupLasso(l1=2.0, groups="all")


@pytest.mark.parametrize("how", ["weights", "loss"])
def test_proximal_stops_on_nonfinite_and_keeps_last_zero_pattern(how):
    model, (x, y), prox = _prox_setup(how == "loss")
    snap = {}

    def keep_pattern():
        snap["zeros"] = {g: z.copy() for g, z in prox.zero_channels().items()}

    poison = Poison(3, lambda m: m.get_layer("c2").kernel, keep_pattern)
    recorder = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: keep_pattern()
                                              if prox.nonfinite is None else None)
    count = CountBatches()
    callbacks = ([poison] if how == "weights" else [recorder]) + [prox, count]
    with pytest.warns(NonFiniteWarning, match="ProximalGroupLasso: " + (
            r"weight 'c2/kernel' holds NaN/Inf values at step 3; " if how == "weights" else
            r"the training loss is inf at step 4; ") + STOPPED + r"The zero pattern \(zero_channels\(\)\) is "
            r"the last one computed from finite weights\."):
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
    assert count.batches == (3 if how == "weights" else 4)  # stopped right after the bad batch
    assert prox.nonfinite and model.stop_training
    kept = prox.zero_channels()
    assert any(z.any() for z in kept.values()), "the proximal step had zeroed channels before"
    for gid, zeros in snap["zeros"].items():
        np.testing.assert_array_equal(kept[gid], zeros)
    with pytest.raises(ValueError, match="has NaN/Inf weights, so which channels are zero is undefined"):
        masks_from_zeros(model)


@pytest.mark.parametrize("how", ["weights", "loss"])
def test_pruning_stops_on_nonfinite_and_keeps_last_masks(how):
    model = conv_model()
    data = conv_data(n=64, batch=8)
    if how == "loss":
        x, y = next(iter(data.unbatch().batch(64)))
        seg = y["a"].numpy()
        seg[40] = np.inf  # batch 6 of 8
        data = tf.data.Dataset.from_tensor_slices((x, {"a": seg, "b": y["b"]})).batch(8)
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.9, frequency=1, step=0.1), verbose=0)
    poison = Poison(3, lambda m: m.get_layer("c1").kernel, lambda: dict(cb.masks))
    count = CountBatches()
    problem = r"weight 'c1/kernel' holds NaN/Inf values at step 3" if how == "weights" else \
        r"the training loss is inf at step 6"
    with pytest.warns(NonFiniteWarning, match=r"ChannelPruningCallback: " + problem + "; " + STOPPED +
                      r"The masks \(cb.masks\) are the last ones computed from finite weights\."):
        model.fit(data, epochs=2, verbose=0, shuffle=False,
                  callbacks=([poison] if how == "weights" else []) + [cb, count])
    last_good = [h for h in cb.history]
    if how == "weights":
        assert count.batches == 4  # batch 4 ran (its pruning step was refused), then fit stopped
        assert len(last_good) == 3 and poison.before is not None
        for gid, mask in poison.before.items():
            np.testing.assert_array_equal(cb.masks[gid], mask)
    else:
        assert count.batches == 6 and len(last_good) == 6  # pruned before each of batches 1..6
    assert cb.pruned_channels() == last_good[-1]["pruned"] > 0
    with pytest.raises(ValueError, match=r"prune_to: weight '.*' holds NaN/Inf values; channel scores would "
                                         r"be NaN, so the masks are left unchanged"):
        cb.prune_to(0.9)
    assert cb.pruned_channels() == last_good[-1]["pruned"]


def test_budget_stops_on_nan_latent_and_restores_last_finite_switches():
    keras.utils.set_random_seed(0)
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    budget.compile_domain_model(model, keras.optimizers.Adam(0.01))
    switch = budget.switch_layers(model)[0]
    cb = budget.BudgetCallback(budget=0.5, multiplier_lr=0.5, project=False)
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
        [np.array(s.latent.numpy()) for s in budget.switch_layers(model)]))
    poison = Poison(3, lambda m: switch.latent, lambda: None)
    with pytest.warns(NonFiniteWarning, match=r"BudgetCallback: the switch latents of \['" + switch.name +
                      r"'\] hold NaN/Inf values at step 3; " + STOPPED +
                      r"The switch latents were restored to those of the last finite batch\."):
        model.fit(budget.domain_targets(tiny_data(), ["a", "b"]), epochs=2, verbose=0, shuffle=False,
                  callbacks=[poison, cb, record])
    assert len(seen) == 3 and cb.nonfinite
    for now, before in zip(seen[-1], seen[1]):  # batch 3 ends with the latents batch 2 left
        np.testing.assert_array_equal(now, before)
    assert all(np.isfinite(m).all() for m in budget.union_masks(model).values())
    switch.latent.assign(np.full(switch.latent.shape, np.inf, "float32"))
    with pytest.raises(ValueError, match=f"DomainSwitch '{switch.name}': latents hold NaN/Inf, so the switch "
                                         "states \\(and masks\\) are undefined"):
        budget.union_masks(model)
    with pytest.raises(ValueError, match=r"BudgetCallback: the switch latents of .* hold NaN/Inf"):
        budget.BudgetCallback(0.5).attach(model)


# --------------------------------------------------------------- unusual architectures


def _fit_prune_strip(model, loss, x, y, **callback_kwargs):
    model.compile(keras.optimizers.Adam(1e-2), loss=loss)
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 2, step=0.25), verbose=0, **callback_kwargs)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[cb])
    small, report = strip_channels(model, cb.masks)
    assert_parity({k: np.asarray(v) for k, v in _as_dict(model, model(x[:4])).items()},
                  {k: np.asarray(v) for k, v in _as_dict(small, small(x[:4])).items()})
    assert report.totals["params_after"] < report.totals["params_before"]
    return small, cb


def _as_dict(model, out):
    return out if isinstance(out, dict) else {"out": out}


def test_sequential_model_end_to_end_graph_prune_strip_tflite():
    model = zoo.randomize(zoo.sequential())
    graph = ChannelGraph.from_model(model)
    assert graph.groups["c1"].prunable and graph.groups["c2"].prunable
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 3)).astype("float32")
    small, cb = _fit_prune_strip(model, "mse", x, rng.random((16, 2)).astype("float32"))
    assert cb.sparsity() == pytest.approx(0.5, abs=0.1)
    for m in (model, small):  # LiteRT runs both the Sequential and the stripped model
        lm = lite.LiteModel(lite.convert(m, verbose=False))
        out = lm.predict({lm.input_names[0]: x[:4]})
        assert list(out) == ["out"]
        assert_parity({"out": np.asarray(m(x[:4]))}, out)


def test_nested_model_and_shared_layer_train_prune_and_strip():
    model = zoo.randomize(zoo.nested_and_shared())
    rng = np.random.default_rng(1)
    x = rng.random((16, 8, 8, 3)).astype("float32")
    y = {"out": rng.random((16, 8, 8, 2)).astype("float32")}
    small, cb = _fit_prune_strip(model, {"out": "mse"}, x, y)
    assert {"stem", "shared_conv"} <= set(cb.masks)
    assert small.get_layer("inner_conv").kernel.shape[2] == int(cb.masks["stem"].sum())  # inlined nested model
    prox_model = apply_group_sparsity(zoo.randomize(zoo.nested_and_shared()), 1e-4, groups="all")
    prox_model.compile(keras.optimizers.SGD(0.1), loss={"out": "mse"})
    prox = ProximalGroupLasso(l1=3.0, groups="all")
    prox_model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[prox])
    masks = masks_from_zeros(prox_model)
    assert prox.sparsity() > 0 and masks.sparsity() > 0
    small2, _ = strip_channels(prox_model, masks)
    assert_parity({"out": np.asarray(prox_model(x[:4])["out"])}, {"out": np.asarray(small2(x[:4])["out"])})


# ------------------------------------------------------------------- mixed precision


@pytest.fixture()
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _mixed_model():
    x = keras.Input((8, 8, 3), name="image")
    h = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(x)))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    seg = L.Conv2D(2, 1, name="seg", dtype="float32")(h)
    cls = L.Dense(3, name="cls", dtype="float32")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(x, {"seg": seg, "cls": cls})
    return model


def test_mixed_float16_graph_sparsity_pruning_strip_and_tflite(mixed_float16):
    loss = {"seg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 3)).astype("float32")
    y = {"seg": rng.random((16, 8, 8, 2)).astype("float32"), "cls": rng.integers(0, 3, 16)}
    model = _mixed_model()
    assert model.get_layer("c1").compute_dtype == "float16"
    graph = ChannelGraph.from_model(model)
    assert [g.id for g in graph.shared_groups()] == ["c1", "c2"]
    sparse = apply_group_sparsity(model, 1e-4)
    sparse.compile(keras.optimizers.Adam(1e-2), loss=loss)  # wrapped in a LossScaleOptimizer
    prox = ProximalGroupLasso(l1=3.0)
    sparse.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[prox])
    masks = masks_from_zeros(sparse)
    assert prox.sparsity() > 0 and masks.sparsity() > 0
    small, _ = strip_channels(sparse, masks)
    assert small.get_layer("c1").compute_dtype == "float16"  # the policy is kept
    assert_parity({k: np.asarray(v) for k, v in sparse(x[:4]).items()},
                  {k: np.asarray(v) for k, v in small(x[:4]).items()})

    pruned, cb = _fit_prune_strip(_mixed_model(), loss, x, y)
    assert cb.sparsity() == pytest.approx(0.5)
    tfl = lite.convert(pruned, verbose=False)  # converted through a float32 copy
    out = lite.LiteModel(tfl).predict({"image": x[:4]})
    reference = lite.float32_compute(pruned)
    assert reference.get_layer("c1").compute_dtype == "float32"
    assert_parity({k: np.asarray(v) for k, v in reference(x[:4]).items()}, out)
    assert_parity({k: np.asarray(v) for k, v in pruned(x[:4]).items()}, out, rtol=2e-2)  # float16 vs 32
    masked = apply_masks(pruned, {})
    assert masked.get_layer("c2").compute_dtype == "float16"
