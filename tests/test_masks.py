"""ChannelMasks validation and JSON, apply_masks semantics, masks_from_zeros."""
import numpy as np
import pytest

import model_zoo as zoo
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks, apply_masks, apply_masks_, masks_from_zeros, nonzero_in_removed


@pytest.fixture()
def trunk():
    model = zoo.randomize(zoo.multitask_trunk())
    return model, ChannelGraph.from_model(model)


def test_json_roundtrip(tmp_path):
    masks = ChannelMasks({"a": np.array([True, False, True]), "b": np.ones(2, bool)}, min_channels=1)
    again = ChannelMasks.from_json(masks.to_json())
    assert list(again) == ["a", "b"]
    np.testing.assert_array_equal(again["a"], [True, False, True])
    masks.save(tmp_path / "m.json")
    np.testing.assert_array_equal(ChannelMasks.load(tmp_path / "m.json")["a"], masks["a"])


@pytest.mark.parametrize("text,needle", [
    ("{not json", "corrupt"),
    ('{"masks": {}}', "not a channel masks file"),
    ('{"format": "tfmot_mtl.ChannelMasks", "masks": {"a": [0, 2]}}', "list of 0/1"),
])
def test_corrupt_json(text, needle):
    with pytest.raises(ValueError, match=needle):
        ChannelMasks.from_json(text)


def test_validation_errors(trunk):
    _, graph = trunk
    with pytest.raises(ValueError, match="unknown channel group 'nope'"):
        ChannelMasks({"nope": np.ones(3, bool)}).validate(graph)
    with pytest.raises(ValueError, match="has 3 entries; the group has 8"):
        ChannelMasks({"stem": np.ones(3, bool)}).validate(graph)
    with pytest.raises(ValueError, match="must be boolean"):
        ChannelMasks({"stem": np.ones(8, int)})
    with pytest.raises(ValueError, match="frozen"):
        ChannelMasks({"seg_logits": np.array([True, False, True, True, True])}).validate(graph)


def test_min_channels_keeps_best_scores():
    with pytest.warns(UserWarning):
        masks = ChannelMasks.from_scores({"g": np.zeros(4, bool)}, {"g": np.array([0.1, 0.9, 0.5, 0.2])},
                                         min_channels=2)
    np.testing.assert_array_equal(masks["g"], [False, True, True, False])


def test_apply_masks_returns_copy_and_zeroes_owned_slices(trunk):
    model, graph = trunk
    before = [w.copy() for w in model.get_weights()]
    mask = np.ones(8, bool)
    mask[[2, 5]] = False
    masked = apply_masks(model, ChannelMasks({"stem": mask}))
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    k, b = masked.get_layer("stem").get_weights()
    assert not k[..., [2, 5]].any() and not b[[2, 5]].any() and k[..., 0].any()
    gamma, beta, mean, var = masked.get_layer("res_bn").get_weights()
    assert not gamma[[2, 5]].any() and not beta[[2, 5]].any() and var[[2, 5]].all()
    # consumers keep their input rows (relu(0) = 0 leaves nothing to fold)
    assert masked.get_layer("down").get_weights()[0][:, :, [2, 5], :].any()


def test_fold_preserves_function_of_producer_zeroed_model():
    """Zeroing a sigmoid producer leaves 0.5; apply_masks folds it so stripping changes nothing."""
    model = zoo.randomize(zoo.sigmoid_fold())
    mask = np.ones(6, bool)
    mask[[0, 3]] = False
    masks = ChannelMasks({"a": mask})
    masked = apply_masks(model, masks)
    reference = apply_masks(model, ChannelMasks({}))
    k, b = reference.get_layer("a").get_weights()
    k[..., [0, 3]], b[[0, 3]] = 0, 0
    reference.get_layer("a").set_weights([k, b])
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    for key in ("seg", "cls"):
        np.testing.assert_allclose(masked(x)[key], reference(x)[key], rtol=1e-5, atol=1e-5)
    rows = masked.get_layer("pointwise").get_weights()[0][:, :, [0, 3], :]
    assert not rows.any()  # the constant now lives in the bias


def test_apply_masks_is_idempotent(trunk):
    model, graph = trunk
    masks = zoo.random_masks(graph, 0.5)
    once = apply_masks(model, masks)
    twice = apply_masks(once, masks)
    for w0, w1 in zip(once.get_weights(), twice.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_masks_from_zeros_roundtrip(trunk):
    model, graph = trunk
    masks = zoo.random_masks(graph, 0.5)
    apply_masks_(model, masks, graph)
    found = masks_from_zeros(model, graph=graph)
    for gid, mask in masks.items():
        np.testing.assert_array_equal(found[gid], mask)
    assert abs(found.sparsity() - masks.sparsity()) < 1e-9


def test_nonzero_in_removed_counts_owned_slices_until_masked(trunk):
    model, graph = trunk
    mask = np.ones(8, bool)
    mask[[2, 5]] = False
    masks = ChannelMasks({"stem": mask})
    # stem kernel (3x3x3 per channel) + bias + res_bn gamma/beta for two channels
    k = model.get_layer("stem").get_weights()[0]
    assert nonzero_in_removed(graph, masks) >= np.count_nonzero(k[..., [2, 5]]) > 0
    assert nonzero_in_removed(graph, ChannelMasks({})) == 0
    apply_masks_(model, masks, graph)
    assert nonzero_in_removed(graph, masks) == 0
    assert model.get_layer("stem").get_weights()[0][..., 0].any()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    from tfmot_mtl.utils.atomic import atomic_save_model, atomic_write

    path = tmp_path / "report.json"
    atomic_write(path, "good")

    class Broken:
        def save(self, tmp):
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_save_model(Broken(), path)
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_variable_multipliers_zero_exactly_what_masking_zeroes_and_the_folded_rows():
    """The in-graph masks of the pruning callback: multiplying every variable by its multiplier
    leaves the removed channels' slices at zero, the consumer rows a sigmoid's constant was folded
    out of at zero, and every other weight as it was."""
    from tfmot_mtl.masks import maskable_variables, variable_multipliers

    model = zoo.randomize(zoo.sigmoid_fold())
    graph = ChannelGraph.from_model(model)
    mask = np.ones(6, bool)
    mask[[0, 3]] = False
    masks = ChannelMasks({"a": mask})
    pairs = variable_multipliers(graph, masks)
    candidates = {id(v) for v in maskable_variables(graph, ["a"])}
    assert pairs and all(id(var) in candidates for var, _ in pairs)
    for var, m in pairs:
        assert m.shape == tuple(var.shape) and set(np.unique(m)) <= {0.0, 1.0}
        var.assign(var.numpy() * m)
    assert nonzero_in_removed(graph, masks) == 0
    kernel = model.get_layer("a").get_weights()[0]
    assert not kernel[..., [0, 3]].any() and kernel[..., [1, 2, 4, 5]].all()
    rows = model.get_layer("pointwise").get_weights()[0]
    assert not rows[:, :, [0, 3], :].any() and rows[:, :, [1, 2, 4, 5], :].any()
    assert variable_multipliers(graph, ChannelMasks({})) == []
