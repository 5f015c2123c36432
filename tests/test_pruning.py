"""Tests of tfmot_mtl.pruning's criteria (against hand-computed scores) and schedules; the
callback and reinit are in test_pruning_callback.py."""
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.pruning import (BNScale, ChannelPruningCallback, CosPrune, IterativeSchedule, Magnitude,
                               Random, Taylor, evaluate_schedule)

from pruning_models import BETA, GAMMA, HalfAtTen, dense_bn_model, linear_model

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ criteria


def test_magnitude_l1_l2_hand_computed():
    """The channel's own weights (``include_consumers=False``); the readers' rows are tested in
    test_criteria_lamp_fpgm.py."""
    model = dense_bn_model()
    graph = ChannelGraph.from_model(model)
    own = {"include_consumers": False}
    l1 = Magnitude(p=1, **own)(model, graph)
    np.testing.assert_allclose(l1["d1"], [1.5, 3.0, 3.0, 7.0], rtol=1e-6)
    l2 = Magnitude(p=2, **own)(model, graph)
    np.testing.assert_allclose(l2["d1"], np.sqrt([1.25, 5.0, 5.0, 25.0]), rtol=1e-6)
    with_bias = Magnitude(p=1, include_bias=True, **own)(model, graph)
    np.testing.assert_allclose(with_bias["d1"], [2.0, 4.0, 3.0, 9.0], rtol=1e-6)
    # BN unit (|gamma| + |beta|) combined with the kernel unit by each reduction
    bn_unit = np.abs(GAMMA) + np.abs(BETA)
    kernel_unit = np.array([2.0, 4.0, 3.0, 9.0])
    for red, expect in [("sum", kernel_unit + bn_unit), ("mean", (kernel_unit + bn_unit) / 2),
                        ("max", np.maximum(kernel_unit, bn_unit))]:
        got = Magnitude(p=1, include_bias=True, include_bn=True, reduction=red, **own)(model, graph)
        np.testing.assert_allclose(got["d1"], expect, rtol=1e-6)
    # every prunable group is scored, frozen ones are not
    assert set(l1) == {g.id for g in graph.prunable_groups}
    assert "a" not in l1 and "b" not in l1


def test_bn_scale_and_fallback():
    model = dense_bn_model()
    graph = ChannelGraph.from_model(model)
    scores = BNScale()(model, graph)
    np.testing.assert_allclose(scores["d1"], np.abs(GAMMA), rtol=1e-6)
    assert np.isnan(scores["ha"]).all()  # no BN in the head group: excluded
    fallback = BNScale(fallback="magnitude")(model, graph)
    ha_kernel = np.arange(12).reshape(4, 3) - 6
    readers = np.abs(model.get_layer("a").kernel.numpy()).sum(axis=1)  # the output layer reading ha
    np.testing.assert_allclose(fallback["ha"], np.abs(ha_kernel).sum(axis=0) + readers, rtol=1e-6)
    with pytest.raises(ValueError, match="fallback"):
        BNScale(fallback="zero")
    with pytest.raises(ValueError, match="reduction"):
        Magnitude(reduction="median")


def _linear_hand(model, x, ya, yb):
    w = model.get_layer("h").get_weights()[0]
    u = model.get_layer("a").get_weights()[0][:, 0]
    v = model.get_layer("b").get_weights()[0][:, 0]
    h = x @ w
    ea, eb = h @ u - ya, h @ v - yb
    n = len(x)
    grad_a = (2.0 / n) * np.outer(x.T @ ea, u)  # dL_a/dW, shape (3, 2)
    grad_b = (2.0 / n) * np.outer(x.T @ eb, v)
    return w, grad_a, grad_b


def weighted_linear_case():
    """The linear model compiled with loss weights a: 2, b: 1, two batches, and per batch the
    hand-computed weights and total-loss gradient of layer h: ``(model, graph, data, [(w, g)])``."""
    model = linear_model(u=(1.0, 2.0), v=(0.5, -1.0))
    model.compile("sgd", loss={"a": "mse", "b": "mse"}, loss_weights={"a": 2.0, "b": 1.0})
    graph = ChannelGraph.from_model(model)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32),
                rng.standard_normal(5).astype(np.float32)) for _ in range(2)]
    hand = []
    for x, ya, yb in batches:
        w, ga, gb = _linear_hand(model, x.astype(np.float64), ya, yb)
        hand.append((w, 2.0 * ga + gb))
    data = [({"image": x}, {"a": ya[:, None], "b": yb[:, None]}) for x, ya, yb in batches]
    return model, graph, data, hand


def test_taylor_hand_computed_with_loss_weights():
    model, graph, data, hand = weighted_linear_case()
    expect = np.mean([(g * w).sum(axis=0) ** 2 for w, g in hand], axis=0)
    crit = Taylor()
    scores = crit(model, graph, data)
    np.testing.assert_allclose(scores["h"], expect, rtol=1e-4)
    assert crit.batches == 2
    crit.reset()
    with pytest.raises(ValueError, match="accumulate"):
        crit.scores()


def test_cosprune_opposite_gradients_rank_below_agreeing():
    model = linear_model(u=(1.0, 1.0), v=(1.0, -1.0))
    graph = ChannelGraph.from_model(model)
    x = np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32)
    out = model.predict({"image": x}, verbose=0)
    # equal per-sample errors for both tasks: r_a == r_b, so cos = sign(u_c * v_c)
    y = {"a": out["a"] - 1.0, "b": out["b"] - 1.0}
    crit = CosPrune(losses={"a": "mse", "b": "mse"})
    scores = crit(model, graph, ({"image": x}, y))["h"]
    np.testing.assert_allclose(scores, [1.0, -1.0], atol=1e-5)
    assert scores[1] < scores[0]  # conflicting channel goes first


def test_cosprune_matches_formula_and_uses_compiled_losses():
    model = linear_model(u=(0.3, -2.0), v=(1.5, 0.7))
    model.compile("sgd", loss={"a": "mse", "b": "mse"})
    graph = ChannelGraph.from_model(model)
    rng = np.random.default_rng(3)
    expect, data = np.zeros(2), []
    for _ in range(3):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        ya, yb = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
        _, ga, gb = _linear_hand(model, x.astype(np.float64), ya, yb)
        expect += (ga * gb).sum(0) / (np.linalg.norm(ga, axis=0) * np.linalg.norm(gb, axis=0))
        data.append(({"image": x}, {"a": ya[:, None], "b": yb[:, None]}))
    crit = CosPrune(tasks=["a", "b"])
    for x, y in data:
        crit.accumulate(model, graph, x, y)
    np.testing.assert_allclose(crit.scores()["h"], expect / 3, atol=1e-5)


def _residual_two_head_model():
    """conv -> BN -> relu -> depthwise -> conv, + the first conv (residual Add) -> two heads."""
    keras.utils.set_random_seed(5)
    x = keras.Input((8, 8, 3), name="image")
    c1 = keras.layers.Conv2D(6, 3, padding="same", name="c1")(x)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(c1))
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = keras.layers.Conv2D(6, 1, name="c2")(h)
    h = keras.layers.Add()([h, c1])
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="shared")(h)
    a = keras.layers.Conv2D(2, 1, name="a")(h)
    b = keras.layers.Conv2D(1, 1, name="b")(keras.layers.Conv2D(4, 1, activation="relu", name="hb")(h))
    model = keras.Model(x, {"a": a, "b": b})
    for layer in model.layers:  # non-trivial BN affine parameters
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([w + np.random.default_rng(0).standard_normal(w.shape).astype(np.float32) * 0.3
                               for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("consumers", [False, True], ids=["producers", "with_readers"])
def test_gradient_scores_in_the_graph_match_a_numpy_oracle(consumers):
    """Residual Add, depthwise, BN and a layer feeding two heads: the compiled per-channel
    reductions equal sums of the tape's gradients over each channel's slices in numpy (Taylor
    with ``include_consumers``: the readers' input rows too)."""
    from tfmot_mtl.pruning.units import channel_sum, combine_units, group_units

    model = _residual_two_head_model()
    graph = ChannelGraph.from_model(model)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 8, 8, 3)).astype(np.float32)
    y = {"a": rng.standard_normal((3, 8, 8, 2)).astype(np.float32),
         "b": rng.standard_normal((3, 8, 8, 1)).astype(np.float32)}
    mse = keras.losses.MeanSquaredError()
    losses = {"a": mse, "b": mse}
    taylor, cos = Taylor(losses=losses, include_consumers=consumers), CosPrune(losses=losses, tasks=["a", "b"])
    got_t, got_c = taylor(model, graph, ({"image": x}, y)), cos(model, graph, ({"image": x}, y))

    variables = [w for layer in model.layers for w in layer.trainable_weights]
    with tf.GradientTape(persistent=True) as tape:
        out = model({"image": x}, training=False)
        task = {t: tf.reduce_mean(mse(y[t], out[t])) for t in ("a", "b")}
    grads = {t: {id(v): np.zeros(v.shape) if g is None else np.asarray(g, np.float64)
                 for v, g in zip(variables, tape.gradient(task[t], variables))} for t in ("a", "b")}
    checked = 0
    for group in graph.prunable_groups:
        units = group_units(graph, group, lambda layer, s: True)
        if not units:
            continue
        t_units_of = group_units(graph, group, lambda layer, s: True, consumers=consumers)
        total = {id(p.var): grads["a"][id(p.var)] + grads["b"][id(p.var)] for u in t_units_of for p in u}
        t_units = [sum(channel_sum(total[id(p.var)] * p.var.numpy(), p, group.size) for p in u) ** 2
                   for u in t_units_of]
        np.testing.assert_allclose(got_t[group.id], combine_units(t_units, group.size, "sum"), rtol=1e-5, atol=1e-12)
        if consumers:  # Torch-Pruning's per-weight form: sum of |w * dL/dw|
            per_weight = Taylor(losses=losses, include_consumers=True, per_weight=True)(model, graph, ({"image": x}, y))
            w_units = [sum(channel_sum(np.abs(total[id(p.var)] * p.var.numpy()), p, group.size) for p in u)
                       for u in t_units_of]
            np.testing.assert_allclose(per_weight[group.id], combine_units(w_units, group.size, "sum"), rtol=1e-5,
                                       atol=1e-12)
        if {"a", "b"} <= set(group.tasks):
            def dot(u, s, t):
                return sum(channel_sum(grads[s][id(p.var)] * grads[t][id(p.var)], p, group.size) for p in u)
            c_units = [dot(u, "a", "b") / np.sqrt(dot(u, "a", "a") * dot(u, "b", "b")) for u in units]
            np.testing.assert_allclose(got_c[group.id], np.mean(c_units, axis=0), rtol=1e-5, atol=1e-7)
            checked += 1
        else:
            assert np.isnan(got_c[group.id]).all(), group.id
    assert checked >= 2  # the residual group (c1 + c2 + bn1 + dw) and "shared" feed both heads
    if consumers:  # the readers' rows are really in the score: more units than the producers alone
        assert any(len(group_units(graph, g, lambda layer, s: True, consumers=True))
                   > len(group_units(graph, g, lambda layer, s: True)) for g in graph.prunable_groups)
    assert any(len(group_units(graph, g, lambda layer, s: True)) >= 3 for g in graph.prunable_groups)


def test_cosprune_single_task_groups_are_nan_and_bad_task_named():
    model = dense_bn_model()
    model.compile("sgd", loss={"a": "mse", "b": "mse"})
    graph = ChannelGraph.from_model(model)
    x = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    y = {"a": np.zeros((4, 2), np.float32), "b": np.zeros((4, 1), np.float32)}
    scores = CosPrune()(model, graph, ({"image": x}, y))
    assert np.isnan(scores["ha"]).all() and np.isfinite(scores["d1"]).all()
    with pytest.raises(ValueError, match="no loss"):
        CosPrune(tasks=["a", "depth"])(model, graph, ({"image": x}, y))
    with pytest.raises(ValueError, match="losses"):
        CosPrune()(dense_bn_model(), None, ({"image": x}, y))  # not compiled, no losses=


def test_random_is_seeded():
    model = dense_bn_model()
    graph = ChannelGraph.from_model(model)
    s1, s2 = Random(seed=4)(model, graph), Random(seed=4)(model, graph)
    np.testing.assert_array_equal(s1["d1"], s2["d1"])
    assert not np.array_equal(s1["d1"], Random(seed=5)(model, graph)["d1"])


# ------------------------------------------------------------------ schedules


def test_iterative_schedule_values():
    s = IterativeSchedule(target=0.5, frequency=10, step=0.2, begin_step=5)
    got = {k: evaluate_schedule(s, k) for k in (0, 4, 5, 6, 15, 25, 35)}
    assert got[0][0] is False and got[4][0] is False and got[6][0] is False
    assert got[5] == (True, pytest.approx(0.2))
    assert got[15] == (True, pytest.approx(0.4))
    assert got[25] == (True, pytest.approx(0.5)) and got[35] == (True, pytest.approx(0.5))
    ended = IterativeSchedule(target=0.5, frequency=10, step=0.2, begin_step=5, end_step=20)
    assert evaluate_schedule(ended, 15)[0] is True and evaluate_schedule(ended, 25)[0] is False
    counted = IterativeSchedule(target=0.3, frequency=2, count=3, total_channels=20)
    assert evaluate_schedule(counted, 0) == (True, pytest.approx(0.15))
    assert evaluate_schedule(counted, 2)[1] == pytest.approx(0.3)
    assert evaluate_schedule(counted, 8)[1] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="total_channels"):
        IterativeSchedule(target=0.3, frequency=2, count=3)(0)


def test_schedule_config_round_trip_and_errors():
    s = IterativeSchedule(target=0.7, frequency=500, count=100, begin_step=10, end_step=5000)
    again = IterativeSchedule.from_config(s.get_config())
    assert again.get_config() == s.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(restored, IterativeSchedule) and restored.get_config() == s.get_config()
    for kwargs, word in [({"target": 1.2, "frequency": 1, "step": 0.1}, "target"),
                         ({"target": 0.5, "frequency": 0, "step": 0.1}, "frequency"),
                         ({"target": 0.5, "frequency": 1}, "exactly one"),
                         ({"target": 0.5, "frequency": 1, "step": 0.1, "count": 2}, "exactly one"),
                         ({"target": 0.5, "frequency": 1, "step": 0.1, "begin_step": 5, "end_step": 2},
                          "end_step")]:
        with pytest.raises(ValueError, match=word):
            IterativeSchedule(**kwargs)


def test_duck_typed_schedule_accepted_and_bad_return_rejected():
    assert evaluate_schedule(HalfAtTen(), 10) == (True, 0.5)
    assert evaluate_schedule(HalfAtTen(), 3)[0] is False
    with pytest.raises(ValueError, match="should_prune"):
        evaluate_schedule(lambda step: 0.5, 1)
    with pytest.raises(ValueError, match="callable"):
        ChannelPruningCallback(Magnitude(), schedule=0.5)


@pytest.mark.slow  # importing tfmot + TF in a fresh process takes ~25 s
def test_tfmot_polynomial_decay_accepted_in_subprocess():
    code = ("import tensorflow_model_optimization as tfmot\n"
            "from tfmot_mtl.pruning.schedules import evaluate_schedule\n"
            "s = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=100, frequency=10)\n"
            "c = tfmot.sparsity.keras.ConstantSparsity(0.3, begin_step=4, frequency=2)\n"
            "print(evaluate_schedule(s, 0), evaluate_schedule(s, 5), evaluate_schedule(s, 100),"
            " evaluate_schedule(c, 6))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(True, 0.0) (False, " in res.stdout and "(True, 0.5)" in res.stdout
    assert "(True, 0.3" in res.stdout
