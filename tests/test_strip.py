"""strip_channels: output parity with the masked model on every layer kind, and its contract."""
import keras
import numpy as np
import pytest

import model_zoo as zoo
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks, apply_masks
from tfmot_mtl.strip import strip_channels


def _inputs(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((batch,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]


def _outputs(model, xs):
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return {"out": np.asarray(out)}


def assert_parity(a, b, rtol=1e-4):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        scale = max(np.abs(a[k]).max(), 1e-6)
        assert np.abs(a[k] - b[k]).max() / scale <= rtol, (k, np.abs(a[k] - b[k]).max() / scale)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("build", zoo.PARITY_MODELS, ids=lambda f: f.__name__)
def test_strip_matches_masked_model(build, fraction):
    model = zoo.randomize(build())
    graph = ChannelGraph.from_model(model)
    assert graph.prunable_groups, "every zoo model has something to prune"
    masks = zoo.random_masks(graph, fraction, seed=int(fraction * 10))
    masked = apply_masks(model, masks)
    small, report = strip_channels(masked, masks)
    xs = _inputs(model)
    assert_parity(_outputs(masked, xs), _outputs(small, xs))
    assert small.count_params() < model.count_params()
    assert report.totals["params_after"] == small.count_params()


def test_strip_of_unmasked_model_applies_masks_itself():
    model = zoo.randomize(zoo.multitask_trunk())
    graph = ChannelGraph.from_model(model)
    masks = zoo.random_masks(graph, 0.5)
    xs = _inputs(model)
    small, _ = strip_channels(model, masks)
    assert_parity(_outputs(apply_masks(model, masks), xs), _outputs(small, xs))


def test_input_model_untouched_and_keras_roundtrip(tmp_path):
    model = zoo.randomize(zoo.multitask_trunk())
    before = [w.copy() for w in model.get_weights()]
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.5)
    small, _ = strip_channels(model, masks)
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    xs = _inputs(model)
    assert_parity(_outputs(small, xs), _outputs(loaded, xs), rtol=1e-7)
    assert set(loaded.output_names) == {"seg", "depth", "cls"}


def test_output_shapes_and_names_kept():
    model = zoo.randomize(zoo.multitask_trunk())
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.8)
    small, _ = strip_channels(model, masks)
    assert [tuple(t.shape) for t in small.outputs] == [tuple(t.shape) for t in model.outputs]
    assert small.input.name == "image"
    assert sorted(_outputs(small, _inputs(model))) == ["cls", "depth", "seg"]


def test_masks_none_strips_zero_channels():
    model = zoo.randomize(zoo.multitask_trunk())
    stem = model.get_layer("stem")
    kernel, bias = stem.get_weights()
    kernel[..., [1, 4]] = 0
    bias[[1, 4]] = 0
    stem.set_weights([kernel, bias])
    for name in ("res_conv",):
        k, b = model.get_layer(name).get_weights()
        k[..., [1, 4]], b[[1, 4]] = 0, 0
        model.get_layer(name).set_weights([k, b])
    for name in ("stem_bn", "res_bn"):
        g, beta, mean, var = model.get_layer(name).get_weights()
        g[[1, 4]], beta[[1, 4]] = 0, 0
        model.get_layer(name).set_weights([g, beta, mean, var])
    small, report = strip_channels(model)
    assert report.groups["stem"] == {"kept": 6, "size": 8}
    assert small.get_layer("stem").filters == 6
    xs = _inputs(model)
    assert_parity(_outputs(model, xs), _outputs(small, xs))


def test_round_to_keeps_multiples():
    model = zoo.randomize(zoo.multitask_trunk())
    graph = ChannelGraph.from_model(model)
    masks = zoo.random_masks(graph, 0.7)
    small, report = strip_channels(model, masks, round_to=4)
    for gid, g in report.groups.items():
        assert g["kept"] % 4 == 0 or g["kept"] == g["size"], (gid, g)
    assert small.get_layer("down").filters % 4 == 0


def test_round_masks_nearest_moves_both_ways_and_keeps_strongest():
    from tfmot_mtl.masks import channel_norms, read_weights
    from tfmot_mtl.masks import round_masks

    graph = ChannelGraph.from_model(zoo.randomize(zoo.multitask_trunk()))
    weights = read_weights(graph)
    size = graph.groups["stem"].size  # 8 channels
    norms = channel_norms(graph, weights, "stem")
    order = np.argsort(-norms, kind="stable")
    cases = {1: 4, 2: 4, 5: 4, 6: 8, 7: 8}  # kept -> nearest multiple of 4 (at least 4, ties up)
    for kept, want in cases.items():
        mask = np.zeros(size, bool)
        mask[order[::-1][:kept]] = True  # keep the WEAKEST channels
        rounded = round_masks(graph, ChannelMasks({"stem": mask}), 4, weights, mode="nearest")["stem"]
        assert rounded.sum() == want, (kept, rounded)
        if want < kept:  # dropped the weakest of the kept ones
            assert set(np.flatnonzero(rounded)) == set(order[::-1][kept - want:kept])
        else:  # added the strongest of the removed ones, kept all the old ones
            assert rounded[mask].all()
            added = np.flatnonzero(rounded & ~mask)
            assert set(added) == set([i for i in order if not mask[i]][:want - kept])
    five = ChannelMasks({"stem": np.isin(np.arange(size), order[:5])})
    assert round_masks(graph, five, 4, weights)["stem"].sum() == 8  # mode="up"
    assert round_masks(graph, five, 4, weights, mode="nearest")["stem"].sum() == 4
    with pytest.raises(ValueError, match="mode"):
        round_masks(graph, ChannelMasks({}), 4, weights, mode="down")
    with pytest.raises(ValueError, match="positive integer"):
        round_masks(graph, ChannelMasks({}), 0, weights)


def test_mask_dropping_everything_keeps_min_channels():
    model = zoo.randomize(zoo.multitask_trunk())
    with pytest.warns(UserWarning, match="min_channels"):
        masks = ChannelMasks({"stem": np.zeros(8, bool)}, min_channels=2)
    small, _ = strip_channels(model, masks)
    assert small.get_layer("stem").filters == 2


def test_report_counts_per_task():
    model = zoo.randomize(zoo.multitask_trunk())
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.5)
    _, report = strip_channels(model, masks)
    assert set(report.per_task) == {"seg", "depth", "cls"}
    for v in report.per_task.values():
        assert v["params_after"] < v["params_before"]
        assert v["macs_after"] < v["macs_before"]
    assert 0 < report.param_ratio < 1 and 0 < report.mac_ratio < 1
    assert "TOTAL" in str(report)


@pytest.mark.parametrize("app", ["ResNet50", "MobileNetV2", pytest.param("DenseNet121", marks=pytest.mark.slow)])
def test_keras_applications_parity(app):
    model = zoo.randomize(getattr(keras.applications, app)(weights=None, input_shape=(32, 32, 3),
                                                           classes=5, classifier_activation=None))
    graph = ChannelGraph.from_model(model)
    assert len(graph.prunable_groups) > 20
    masks = zoo.random_masks(graph, 0.5)
    masked = apply_masks(model, masks)
    small, report = strip_channels(masked, masks)
    xs = _inputs(model)
    assert_parity(_outputs(masked, xs), _outputs(small, xs))
    assert report.param_ratio < 0.5


def test_inputs_without_channel_axis_and_frozen_reshape():
    image = keras.Input((8, 8, 3), name="image")
    domain = keras.Input((), name="domain")
    x = keras.layers.Conv2D(6, 3, padding="same", name="c")(image)
    gate = keras.layers.Reshape((1, 1, 1), name="gate")(domain)  # rank-1 input: frozen, kept as is
    x = keras.layers.Multiply(name="mul")([x, gate])
    x = keras.layers.Conv2D(4, 1, name="d")(x)
    model = zoo.randomize(keras.Model({"image": image, "domain": domain},
                                      {"out": keras.layers.Conv2D(2, 1, name="out")(x)}))
    graph = ChannelGraph.from_model(model)
    assert graph.groups["c"].prunable and graph.groups["d"].prunable
    masks = zoo.random_masks(graph, 0.5)
    small, _ = strip_channels(model, masks)
    feed = {"image": np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32"),
            "domain": np.array([0.5, 2.0], "float32")}
    a = apply_masks(model, masks)(feed)["out"]
    np.testing.assert_allclose(np.asarray(small(feed)["out"]), np.asarray(a), rtol=1e-4, atol=1e-5)
    assert small.get_layer("gate").target_shape == (1, 1, 1)
