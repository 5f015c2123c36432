"""Masks made on a model apply to its clone_model copy and its .keras reload, whose layer names differ.

The trunk below is rebuilt from its constructor arguments (as keras-hub backbones are), so its
auto-named composite layers get new numbers in every clone and reload, and so do the group ids.
"""
import json
import pickle

import keras
import numpy as np
import pytest

import model_zoo as zoo
import tfmot_mtl as tm
from tfmot_mtl.graph import ChannelGraph, GroupId
from tfmot_mtl.masks import FORMAT, ChannelMasks, apply_masks, apply_masks_, clone_with_weights

L = keras.layers


@keras.saving.register_keras_serializable(package="tfmot_mtl_tests")
class ConvPair(L.Layer):
    """A composite layer without a channel rule: auto-named conv -> BN -> relu -> conv."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv_a = L.Conv2D(filters, 3, padding="same")
        self.bn = L.BatchNormalization()
        self.conv_b = L.Conv2D(filters, 1)

    def build(self, input_shape):
        self.conv_a.build(input_shape)
        inner = self.conv_a.compute_output_shape(input_shape)
        self.bn.build(inner)
        self.conv_b.build(inner)

    def call(self, x, training=None):
        return self.conv_b(keras.ops.relu(self.bn(self.conv_a(x), training=training)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="tfmot_mtl_tests")
class Trunk(keras.Model):
    """A functional model rebuilt from its arguments (like a keras-hub backbone): its ConvPair
    layers are auto-named anew in every clone and reload."""

    def __init__(self, widths=(8, 12), **kwargs):
        inp = keras.Input((16, 16, 3))
        x = inp
        for width in widths:
            x = ConvPair(width)(x)
        super().__init__(inp, x, **kwargs)
        self.widths = tuple(widths)

    def get_config(self):
        return {"widths": list(self.widths), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def two_heads(widths=(8, 12)) -> keras.Model:
    inp = keras.Input((16, 16, 3), name="image")
    x = L.GlobalAveragePooling2D(name="pool")(Trunk(widths, name="trunk")(inp))
    model = keras.Model(inp, {"a": L.Dense(4, name="task_a")(x), "b": L.Dense(3, name="task_b")(x)},
                        name="two_heads")
    return zoo.randomize(model)


X = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")


@pytest.fixture()
def made():
    model = two_heads()
    graph = ChannelGraph.from_model(model)
    masks = zoo.random_masks(graph, 0.5)
    return model, graph, masks, apply_masks(model, masks).predict(X, verbose=0)


def _close(expected: dict, got: dict) -> bool:
    return all(np.max(np.abs(expected[k] - got[k])) <= 1e-5 * max(1.0, np.max(np.abs(expected[k])))
               for k in expected)


def _old_format(masks: ChannelMasks) -> str:
    """A masks.json as written before ids carried the graph structure."""
    return json.dumps({"format": FORMAT, "version": 1, "min_channels": masks.min_channels,
                       "masks": {str(gid): m.astype(int).tolist() for gid, m in masks.items()}})


def test_group_ids_are_the_readable_layer_names_and_know_their_place(made):
    model, graph, masks, _ = made
    composite = [gid for gid in graph.groups if gid.endswith("_conv_a")]
    assert len(composite) == 2 and all(gid.startswith("conv_pair") for gid in composite)
    plain = ChannelGraph.from_model(zoo.multitask_trunk())
    assert {"stem", "down", "seg_head"} <= set(plain.groups) and plain.groups["stem"].id == "stem"
    for position, (gid, group) in enumerate(graph.groups.items()):
        assert isinstance(gid, GroupId) and gid is group.id
        assert (gid.graph, gid.position) == (graph.fingerprint, position)
    again = pickle.loads(pickle.dumps(masks))
    assert [(k.graph, k.position) for k in again] == [(k.graph, k.position) for k in masks]


def test_masks_apply_to_the_clone_model_copy(made):
    model, graph, masks, expected = made
    clone = clone_with_weights(model)
    clone_graph = ChannelGraph.from_model(clone)
    assert set(clone_graph.groups) != set(graph.groups), "the clone's composite layers are renamed"
    assert clone_graph.fingerprint == graph.fingerprint
    matched = masks.validate(clone_graph)
    assert set(matched) <= set(clone_graph.groups) and matched.validate(clone_graph) is matched
    assert _close(expected, apply_masks_(clone, masks).predict(X, verbose=0))
    small, _ = tm.strip_channels(clone, masks)
    assert _close(expected, small.predict(X, verbose=0))


def test_masks_json_applies_to_the_keras_reload(made, tmp_path):
    model, graph, masks, expected = made
    model.save(tmp_path / "model.keras")
    masks.save(tmp_path / "masks.json")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert set(ChannelGraph.from_model(reloaded).groups) != set(graph.groups)
    loaded = ChannelMasks.load(tmp_path / "masks.json")
    small, _ = tm.strip_channels(reloaded, loaded)
    assert _close(expected, small.predict(X, verbose=0))
    assert _close(expected, apply_masks(reloaded, loaded).predict(X, verbose=0))


def test_old_format_masks_json_still_loads_and_applies(made):
    model, graph, masks, expected = made
    old = ChannelMasks.from_json(_old_format(masks))
    assert list(old) == list(masks) and not any(isinstance(k, GroupId) for k in old)
    assert _close(expected, apply_masks(model, old).predict(X, verbose=0))
    small, _ = tm.strip_channels(model, old)
    assert _close(expected, small.predict(X, verbose=0))
    trunk = zoo.multitask_trunk()
    text = json.dumps({"format": FORMAT, "version": 1, "min_channels": 1, "masks": {"stem": [1, 0] * 4}})
    small, _ = tm.strip_channels(trunk, ChannelMasks.from_json(text))
    assert small.get_layer("stem").filters == 4


def test_masks_for_a_model_of_another_structure_are_refused(made):
    _, _, masks, _ = made
    other = two_heads(widths=(8, 16))
    with pytest.raises(ValueError, match=r"mask for unknown channel group '.*'.*were the masks made for "
                                         r"another model\? .*channel structure \(fingerprint"):
        apply_masks(other, masks)
    with pytest.raises(ValueError, match="were the masks made for another model"):
        tm.strip_channels(other, ChannelMasks.from_json(masks.to_json()))
    with pytest.raises(ValueError, match="were the masks made for another model"):
        tm.strip_channels(zoo.multitask_trunk(), masks)


def test_json_keeps_the_structure_and_rejects_a_bad_one(made):
    _, graph, masks, _ = made
    data = json.loads(masks.to_json())
    assert data["structure"]["graph"] == graph.fingerprint
    assert data["structure"]["positions"] == {gid: gid.position for gid in masks}
    again = ChannelMasks.from_json(masks.to_json())
    assert [(k, k.graph, k.position) for k in again] == [(k, k.graph, k.position) for k in masks]
    data["structure"] = {"graph": graph.fingerprint, "positions": {next(iter(masks)): "first"}}
    with pytest.raises(ValueError, match="\"structure\" must be an object"):
        ChannelMasks.from_json(json.dumps(data))


def test_a_merge_with_the_copys_all_kept_masks_matches_by_position(made):
    model, graph, masks, expected = made
    clone = clone_with_weights(model)
    clone_graph = ChannelGraph.from_model(clone)
    merged = ChannelMasks({**ChannelMasks.all_kept(clone_graph), **masks}).validate(clone_graph)
    assert list(merged) == list(ChannelMasks.all_kept(clone_graph))
    for gid in masks:
        np.testing.assert_array_equal(merged[list(clone_graph.groups)[gid.position]], masks[gid])
    assert _close(expected, apply_masks_(clone, merged, clone_graph).predict(X, verbose=0))
