"""LAMP, FPGM and the second-order criterion: hand-computed scores, attention heads, prune + strip parity."""
import keras
import numpy as np
import pytest

import tfmot_mtl as tm
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.pruning import FPGM, LAMP, ChannelPruningCallback, CosPrune, IterativeSchedule, Magnitude, Taylor
from tfmot_mtl.pruning.importance import lamp_scores
from tfmot_mtl.strip import strip_channels

import model_zoo
from test_attention import transformer
from pruning_models import K1, dense_bn_model


def test_lamp_by_hand():
    # magnitudes 4, 1, 9, 16: weakest first 1 (of 30), 4 (of 29), 9 (of 25), 16 (of 16)
    np.testing.assert_allclose(lamp_scores(np.array([4.0, 1.0, 9.0, 16.0])), [4 / 29, 1 / 30, 9 / 25, 1.0])
    np.testing.assert_allclose(lamp_scores(np.array([2.0, np.nan, 2.0])), [2 / 4, np.nan, 1.0])
    model = dense_bn_model()
    graph = ChannelGraph.from_model(model)
    squares = (K1 ** 2).sum(axis=0)  # d1's columns: 1.25, 5, 5, 25 (BN is not a kernel)
    scores = LAMP(include_consumers=False)(model, graph)["d1"]
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


def test_normalize_scores_puts_groups_on_one_scale():
    from tfmot_mtl.pruning.importance import normalize_scores

    scores = {"narrow": np.array([1.0, 2.0, 0.0, np.nan]), "wide": np.array([10.0, 30.0, 20.0]),
              "signed": np.array([-0.5, 1.5]), "dead": np.zeros(2)}
    mean = normalize_scores(scores, "mean")
    np.testing.assert_allclose(mean["narrow"][:3], [2 / 3, 4 / 3, 0.0])  # mean over live channels (1.5)
    assert np.isnan(mean["narrow"][3])
    np.testing.assert_allclose(mean["wide"], [0.5, 1.5, 1.0])
    np.testing.assert_allclose(mean["signed"], [-0.5, 1.5])  # mean |s| = 1: sign and order kept
    np.testing.assert_array_equal(mean["dead"], [0.0, 0.0])
    np.testing.assert_allclose(normalize_scores(scores, "max")["wide"], [1 / 3, 1.0, 2 / 3])
    assert normalize_scores(scores, None) is scores
    with pytest.raises(ValueError, match="normalize"):
        normalize_scores(scores, "std")
    with pytest.raises(ValueError, match="normalize"):
        Magnitude(normalize="l2")


def test_magnitude_normalised_ranking_does_not_empty_the_narrow_layer_first():
    """Two groups: a narrow layer of small weights and a wide one of large weights. Raw, the global
    ranking removes the narrow layer's channels first (down to the floor); normalised by the group
    mean it removes the weakest channels of each group relative to their own layer."""
    keras.utils.set_random_seed(0)
    x = keras.Input((4, 4, 3), name="image")
    a = keras.layers.Conv2D(4, 1, name="narrow")(x)
    b = keras.layers.Conv2D(8, 1, name="wide")(keras.layers.ReLU()(a))
    model = keras.Model(x, {"out": keras.layers.Conv2D(1, 1, name="out")(b)})
    model.get_layer("narrow").set_weights([np.array([[[[0.10, 0.11, 0.12, 0.13]] * 3]], np.float32), np.zeros(4, np.float32)])
    wide = np.tile(np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7], np.float32), (1, 1, 4, 1))
    model.get_layer("wide").set_weights([wide, np.zeros(8, np.float32)])
    weights = model.get_weights()

    def pruned(criterion):
        model.set_weights(weights)  # pruning zeroes the removed channels
        cb = ChannelPruningCallback(criterion, IterativeSchedule(target=0.25, frequency=1, step=0.25),
                                    groups="all", min_channels=1, min_fraction=0.0)
        cb.setup(model)
        masks = cb.prune_to(0.25)  # 3 of 12 channels
        return {g: int((~masks[g]).sum()) for g in ("narrow", "wide")}

    own = {"include_consumers": False}  # each channel's own filter: the scale differs by layer
    assert pruned(Magnitude(normalize=None, **own)) == {"narrow": 3, "wide": 0}
    assert pruned(Magnitude(**own)) == {"narrow": 1, "wide": 2}
    assert Magnitude().get_config()["normalize"] == "mean" and FPGM().normalize == "mean"
    assert Taylor().normalize is None and CosPrune().normalize is None


def test_magnitude_and_lamp_with_consumers_score_the_whole_coupled_group():
    """A residual Add couples two producers; two layers read the group. With include_consumers a
    channel's magnitude adds the input rows of both readers to both producers' columns."""
    keras.utils.set_random_seed(1)
    x = keras.Input((5, 5, 2), name="image")
    p1 = keras.layers.Conv2D(3, 1, name="p1")(x)
    p2 = keras.layers.Conv2D(3, 3, padding="same", name="p2")(x)
    h = keras.layers.Add()([p1, p2])
    model = keras.Model(x, {"a": keras.layers.Conv2D(2, 1, name="ra")(h),
                            "b": keras.layers.Conv2D(1, 3, padding="same", name="rb")(h)})
    graph = ChannelGraph.from_model(model)
    (group,) = [g for g in graph.prunable_groups if set(g.producers) == {"p1", "p2"}]
    k = {n: np.abs(model.get_layer(n).kernel.numpy()) for n in ("p1", "p2", "ra", "rb")}
    own = k["p1"].sum(axis=(0, 1, 2)) + k["p2"].sum(axis=(0, 1, 2))
    readers = k["ra"].sum(axis=(0, 1, 3)) + k["rb"].sum(axis=(0, 1, 3))
    np.testing.assert_allclose(Magnitude(normalize=None, include_consumers=False).score_group(graph, group), own,
                               rtol=1e-6)
    np.testing.assert_allclose(Magnitude(normalize=None).score_group(graph, group), own + readers, rtol=1e-6)
    sq = {n: np.square(model.get_layer(n).kernel.numpy()) for n in ("p1", "p2", "ra", "rb")}
    norms = (np.sqrt(sq["p1"].sum(axis=(0, 1, 2))) + np.sqrt(sq["p2"].sum(axis=(0, 1, 2)))
             + np.sqrt(sq["ra"].sum(axis=(0, 1, 3))) + np.sqrt(sq["rb"].sum(axis=(0, 1, 3))))
    np.testing.assert_allclose(LAMP().score_group(graph, group), lamp_scores(norms ** 2), rtol=1e-6)
    assert LAMP().get_config() == {"include_bias": False, "include_consumers": True}
