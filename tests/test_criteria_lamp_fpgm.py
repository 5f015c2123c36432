"""LAMP, FPGM and the second-order criterion: hand-computed scores, attention heads, prune + strip parity."""
import keras
import numpy as np
import pytest

import tfmot_mtl as tm
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.pruning import FPGM, LAMP, ChannelPruningCallback, IterativeSchedule
from tfmot_mtl.pruning.importance import lamp_scores
from tfmot_mtl.strip import strip_channels

import model_zoo
from test_attention import transformer
from test_pruning import K1, dense_bn_model


def test_lamp_by_hand():
    # magnitudes 4, 1, 9, 16: weakest first 1 (of 30), 4 (of 29), 9 (of 25), 16 (of 16)
    np.testing.assert_allclose(lamp_scores(np.array([4.0, 1.0, 9.0, 16.0])), [4 / 29, 1 / 30, 9 / 25, 1.0])
    np.testing.assert_allclose(lamp_scores(np.array([2.0, np.nan, 2.0])), [2 / 4, np.nan, 1.0])
    model = dense_bn_model()
    graph = ChannelGraph.from_model(model)
    squares = (K1 ** 2).sum(axis=0)  # d1's columns: 1.25, 5, 5, 25 (BN is not a kernel)
    scores = LAMP()(model, graph)["d1"]
    np.testing.assert_allclose(scores, [1.25 / 36.25, 5 / 35, 1 / 6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(scores, lamp_scores(squares), rtol=1e-6)


def test_fpgm_by_hand():
    model = dense_bn_model()
    graph = ChannelGraph.from_model(model)
    cols = K1.T.astype(np.float64)  # the four filters of d1
    expected = [sum(np.linalg.norm(cols[i] - cols[j]) for j in range(4)) for i in range(4)]
    np.testing.assert_allclose(FPGM()(model, graph)["d1"], expected, rtol=1e-6)
    # a filter equal to the mean of two others sits between them: it scores lowest of the three
    k = np.array([[1.0, 3.0, 2.0, 10.0], [1.0, 3.0, 2.0, -10.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    model.get_layer("d1").set_weights([k, np.zeros(4, np.float32)])
    scores = FPGM()(model, graph)["d1"]
    assert np.argmin(scores) == 2


def test_lamp_and_fpgm_score_attention_heads():
    model = transformer()
    graph = tm.ChannelGraph.from_model(model)
    for criterion in (LAMP(), FPGM()):
        scores = criterion(model, graph)["mha:heads"]
        assert scores.shape == (4,) and np.all(np.isfinite(scores)), criterion
    lamp = LAMP()(model, graph)["mha:heads"]
    assert np.isclose(lamp.max(), 1.0)
    model.compile(loss={"a": "mse", "b": "mse"})
    x = np.random.default_rng(1).standard_normal((8, 6, 8)).astype("float32")
    y = {"a": np.ones((8, 3), "float32"), "b": np.zeros((8, 2), "float32")}
    second = tm.pruning.SecondOrder()(model, graph, data=[(x, y)])["mha:heads"]
    assert second.shape == (4,) and np.all(np.isfinite(second)) and np.all(second > 0)


@pytest.mark.parametrize("name", ["lamp", "fpgm", "second_order"])
def test_new_criteria_prune_and_strip_with_parity_on_a_residual_model(name):
    model = model_zoo.randomize(model_zoo.multitask_trunk(), seed=1)
    x = np.random.default_rng(0).random((8,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    outs = model(x)
    model.compile("adam", loss={k: "mse" for k in outs})
    y = {k: np.zeros(v.shape, "float32") for k, v in outs.items()}
    cb = ChannelPruningCallback(tm.pruning.run.make_criterion(name), IterativeSchedule(target=0.4, frequency=1, step=0.4),
                                data=[(x, y)], score_batches=1, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    assert cb.sparsity() > 0.3
    small, _ = strip_channels(model, cb.masks)
    for key, value in model(x).items():
        np.testing.assert_allclose(small(x)[key], value, atol=1e-4)


def test_second_order_hand_computed():
    """OBD with the Fisher diagonal: 0.5 * sum over the channel's weights of (g * w)**2."""
    from test_pruning import weighted_linear_case

    from tfmot_mtl.pruning import SecondOrder

    model, graph, data, hand = weighted_linear_case()
    expect = np.mean([0.5 * ((g * w) ** 2).sum(axis=0) for w, g in hand], axis=0)
    np.testing.assert_allclose(SecondOrder()(model, graph, data)["h"], expect, rtol=1e-4)
    assert tm.pruning.run.make_criterion("second_order").__class__ is SecondOrder
