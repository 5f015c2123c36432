"""Hostile and unusual inputs: each gets exactly the behaviour a user should see.

Models the graph cannot read, odd architectures, bad masks, out-of-range arguments, NaN/Inf
during training, mixed precision, models without shared layers, files that are not Keras
models or that carry Lambda code, corrupt mask JSON. Hostile training runs live in
``test_hostile_training.py``.
"""
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo as zoo
from test_strip import _inputs, _outputs, assert_parity
from tfmot_mtl import budget
from tfmot_mtl.app.cli import main
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks, apply_masks, masks_from_zeros
from tfmot_mtl.utils.model_files import load_model
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude, evaluate_schedule
from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity
from tfmot_mtl.strip import strip_channels

L = keras.layers


# ----------------------------------------------------------------------------- models


class Sub(keras.Model):
    """A subclassed model whose call uses a raw TensorFlow op: no inspectable graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(4, 3, padding="same")
        self.head = L.Conv2D(2, 1)

    def call(self, x):
        return self.head(tf.nn.relu(self.conv(x)))


class Doubler(L.Layer):
    """A custom layer no channel rule knows, whose call (a raw TensorFlow op) cannot be traced."""

    def call(self, x):
        return tf.multiply(x, 2.0)


def _built_sub():
    sub = Sub(name="sub")
    sub(np.zeros((1, 8, 8, 3), "float32"))
    return sub


@pytest.mark.parametrize("entry", [
    ChannelGraph.from_model,
    lambda m: strip_channels(m, None),
    lambda m: apply_group_sparsity(m, 1e-4, groups="shared"),
    lambda m: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=0.1).build(m),
    lambda m: ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5), verbose=0).setup(m),
    lambda m: budget.add_domain_switches(m, [("a", 2), ("b", 2)]),
], ids=["graph", "strip", "group_sparsity", "proximal", "pruning", "budget"])
def test_subclassed_model_is_refused_with_the_fix(entry):
    with pytest.raises(ValueError) as err:
        entry(_built_sub())
    text = str(err.value)
    assert "'sub' (Sub) is not a Keras functional or Sequential model" in text
    assert "rebuild it with the functional API (keras.Input -> layers -> keras.Model)" in text


def test_subclassed_model_rebuilt_functionally_from_its_layers_prunes():
    """The fix the message suggests: a functional model around the subclassed model's layers."""
    sub = zoo.randomize(_built_sub())
    image = keras.Input((8, 8, 3), name="image")
    wrapped = keras.Model(image, {"out": sub.head(L.ReLU()(sub.conv(image)))})
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(wrapped(x)["out"], sub(x), rtol=1e-6)  # same layers, same weights
    graph = ChannelGraph.from_model(wrapped)
    assert graph.groups[sub.conv.name].prunable
    small, report = strip_channels(wrapped, ChannelMasks({sub.conv.name: np.array([1, 0, 1, 0], bool)}))
    assert small.get_layer(sub.conv.name).filters == 2
    assert_parity(_outputs(apply_masks(wrapped, ChannelMasks({sub.conv.name: np.array([1, 0, 1, 0], bool)})), [x]),
                  _outputs(small, [x]))


def test_sequential_without_input_shape_is_refused():
    model = keras.Sequential([L.Dense(3), L.Dense(2)])
    with pytest.raises(ValueError, match=r"Sequential model '.*' has no known input shape; build it with "
                                         r"`keras.Input\(shape\)`"):
        ChannelGraph.from_model(model)


def test_unknown_layer_and_subclassed_sublayer_are_frozen_reported_and_kept_by_strip():
    image = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(6, 3, padding="same", name="a")(image)
    d = Doubler(name="doubler")(L.Conv2D(5, 3, padding="same", name="b")(a))
    s = Sub(name="inner_sub")(L.Conv2D(3, 1, name="c")(d))
    e = L.Conv2D(4, 3, padding="same", name="e")(L.Concatenate(name="cat")([s, a]))
    model = zoo.randomize(keras.Model(image, {"out": L.Conv2D(2, 1, name="out")(e)}))
    graph = ChannelGraph.from_model(model)
    assert not graph.groups["b"].prunable
    assert "layer 'doubler' (Doubler) is not understood by the channel graph" in graph.groups["b"].reason
    assert "layer 'inner_sub' (Sub) is not understood" in graph.groups["c"].reason
    assert graph.groups["a"].prunable and graph.groups["e"].prunable
    assert "doubler" in graph.summary(print_fn=lambda s: None)
    masks = ChannelMasks({"a": np.array([1, 0, 1, 1, 0, 1], bool), "e": np.array([0, 1, 1, 1], bool)})
    small, _ = strip_channels(model, masks)
    assert isinstance(small.get_layer("doubler"), Doubler) and small.get_layer("b").filters == 5
    assert isinstance(small.get_layer("inner_sub"), Sub)
    xs = _inputs(model)
    assert_parity(_outputs(apply_masks(model, masks), xs), _outputs(small, xs))
    with pytest.raises(ValueError, match=r"group 'b' is frozen \(layer 'doubler' \(Doubler\) is not "
                                         r"understood.*\); its mask must keep every channel"):
        strip_channels(model, ChannelMasks({"b": np.array([1, 0, 1, 1, 1], bool)}))


# ------------------------------------------------------------------------------ masks


@pytest.fixture(scope="module")
def trunk():
    model = zoo.randomize(zoo.multitask_trunk())
    return model, ChannelGraph.from_model(model)


@pytest.mark.parametrize("masks,needle", [
    ({"stem": np.ones(8)}, "mask for group 'stem' must be boolean (True = keep), got dtype float64"),
    ({"stem": [1, 0, 1, 1, 1, 1, 1, 1]}, "must be boolean (True = keep), got dtype int64"),
    ({"stem": "11110000"}, "must be boolean (True = keep), got dtype <U8"),
    ({"stem": np.ones((2, 4), bool)}, "mask for group 'stem' must be 1-D, got shape (2, 4)"),
    ({"stem": True}, "must be 1-D, got shape ()"),
    ([("stem", np.ones(8, bool))], "masks must be a mapping {group id: boolean array} (e.g. a dict), got list"),
])
def test_mask_of_wrong_type_is_refused(masks, needle):
    with pytest.raises(ValueError) as err:
        ChannelMasks(masks)
    assert needle in str(err.value)


@pytest.mark.parametrize("masks,needle", [
    ({"stem": np.ones(9, bool)}, "mask for group 'stem' has 9 entries; the group has 8 channels"),
    ({"nope": np.ones(3, bool)}, "mask for unknown channel group 'nope'"),
    ({"seg_logits": np.array([1, 0, 1, 1, 1], bool)}, "group 'seg_logits' is frozen (reaches model output"),
    ({"image": np.array([1, 0, 1], bool)}, "group 'image' is frozen (model input 'image')"),
    ([1, 2], "masks must be a ChannelMasks or a dict {group id: boolean array}, got list"),
])
def test_mask_not_fitting_the_model_is_refused_by_strip_and_apply(trunk, masks, needle):
    model, _ = trunk
    for fn in (strip_channels, apply_masks):
        with pytest.raises(ValueError) as err:
            fn(model, masks if isinstance(masks, list) else ChannelMasks(masks))
        assert needle in str(err.value)


def test_plain_dict_masks_are_accepted(trunk):
    model, _ = trunk
    mask = np.array([1, 0] * 4, bool)
    small, report = strip_channels(model, {"stem": mask})
    assert report.groups == {"stem": {"kept": 4, "size": 8}} and small.get_layer("stem").filters == 4
    assert not apply_masks(model, {"stem": mask}).get_layer("stem").get_weights()[0][..., 1].any()


def test_mask_emptying_one_layer_of_a_coupled_group_keeps_a_zeroed_channel():
    """Found by the fuzz suite: a concat + Add group spans three convs; keeping only channel 3
    (group channels 0-1 are 'a', 2-3 are 'b') removes every filter of 'a', which made
    Conv2D(filters=0) fail deep inside Keras."""
    image = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(2, 3, padding="same", name="a")(image)
    b = L.Conv2D(2, 3, padding="same", name="b")(a)
    y = L.Add(name="add")([L.Concatenate(name="cat")([b, a]), L.Conv2D(4, 1, name="proj")(a)])
    model = zoo.randomize(keras.Model(image, {"cls": L.Dense(3, name="cls")(L.GlobalAveragePooling2D()(y))}))
    graph = ChannelGraph.from_model(model)
    assert set(graph.groups["a"].producers) == {"a", "b", "proj"}
    masks = ChannelMasks({"a": np.array([0, 0, 0, 1], bool)})
    with pytest.warns(UserWarning, match="the masks remove every channel of 'a' \\(group 'a'\\); the stripped "
                                         "model keeps one zeroed channel there"):
        small, report = strip_channels(model, masks)
    assert [small.get_layer(n).filters for n in ("a", "b", "proj")] == [1, 1, 2]
    assert report.groups["a"] == {"kept": 2, "size": 4}
    xs = _inputs(model)
    assert_parity(_outputs(apply_masks(model, masks), xs), _outputs(small, xs))


# ----------------------------------------------------------------- ranges of arguments


def _schedule():
    return IterativeSchedule(0.5, 1, step=0.1)


@pytest.mark.parametrize("make,needle", [
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", target=0.0), "target sparsity must be in (0, 1), got 0.0"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", target=1.0), "target sparsity must be in (0, 1), got 1.0"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", target=float("nan")), "target sparsity must be in (0, 1), got nan"),
    (lambda: ProximalGroupLasso(min_channels=0, groups="shared", min_fraction=1.0), "min_fraction in [0, 1), got 0, 1.0"),
    (lambda: ProximalGroupLasso(min_channels=0, groups="shared", min_fraction=-0.1), "min_fraction in [0, 1)"),
    (lambda: ProximalGroupLasso(min_fraction=0.0, groups="shared", min_channels=-1), "min_channels must be >= 0"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=-1.0), "l1 must be a finite number >= 0, got -1.0"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=float("nan")), "l1 must be a finite number >= 0, got nan"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=float("inf")), "l1 must be a finite number >= 0, got inf"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1="big"), "l1 must be a number >= 0, a schedule or None, got 'big'"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", gain=0.0), "gain must be a finite number > 0"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", adapt_rate=1.0), "adapt_rate must be in (0, 1), got 1.0"),
    (lambda: ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", update_every=0), "update_every must be a positive integer, got 0"),
    (lambda: ChannelPruningCallback(Magnitude(), _schedule(), min_channels=0), "min_channels must be >= 1"),
    (lambda: ChannelPruningCallback(Magnitude(), _schedule(), round_to=0),
     "round_to must be None or a positive integer (kept channels per group become a multiple of it), got 0"),
    (lambda: ChannelPruningCallback(Magnitude(), _schedule(), accumulate_every=0),
     "accumulate_every must be None or a positive number of training steps, got 0"),
    (lambda: ChannelPruningCallback(Magnitude(), _schedule(), groups="shard"),
     "groups must be 'all', 'shared', a callable ChannelGroup -> bool or a list of group ids, got 'shard'"),
    (lambda: ChannelPruningCallback(Magnitude, _schedule()),
     "importance must be a criterion instance from tfmot_mtl.pruning, e.g. Magnitude()"),
    (lambda: ChannelPruningCallback("taylor", _schedule()), "importance must be a criterion instance"),
    (lambda: IterativeSchedule(0.0, 1, step=0.1), "target must be a sparsity in (0, 1), got 0.0"),
    (lambda: IterativeSchedule(float("nan"), 1, step=0.1), "target must be a sparsity in (0, 1), got nan"),
    (lambda: IterativeSchedule(0.5, 1, step=1.5), "step must be a sparsity increment in (0, 1], got 1.5"),
    (lambda: IterativeSchedule(0.5, 1, step=0.0), "step must be a sparsity increment in (0, 1], got 0.0"),
    (lambda: IterativeSchedule(0.5, 1, count=0), "count must be >= 1 channel, got 0"),
    (lambda: IterativeSchedule(0.5, 1, step=0.1, begin_step=-1), "begin_step must be >= 0, got -1"),
    (lambda: evaluate_schedule(lambda step: (True, 1.0), 3),
     "asked for sparsity 1.0 at step 3; it must be in [0, 1)"),
    (lambda: budget.BudgetCallback(budget=float("nan")), "budget must be a number in (0, 1]"),
    (lambda: budget.BudgetCallback(0.5, sharing_weight=float("inf")),
     "sharing_weight must be a finite number >= 0, got inf"),
    (lambda: budget.BudgetCallback(0.5, multiplier_lr=float("nan")), "multiplier_lr must be a finite number >= 0"),
    (lambda: budget.BudgetCallback(0.5, lr=-1e-3), "lr must be a finite number >= 0, got -0.001"),
    (lambda: budget.BudgetCallback(0.5, frequency=1.5), "frequency must be a positive int, got 1.5"),
    (lambda: ChannelMasks({}, min_channels=-1), "min_channels must be an integer >= 0, got -1"),
    (lambda: ChannelMasks({}, min_channels=1.5), "min_channels must be an integer >= 0, got 1.5"),
    (lambda: ChannelMasks.from_scores({"g": np.zeros(3, bool)}, {}),
     "from_scores: group 'g' has a mask of 3 channels but none scores"),
    (lambda: ChannelMasks.from_scores({"g": np.zeros(3, bool)}, {"g": np.ones(2)}),
     "group 'g' has a mask of 3 channels but shape (2,) scores"),
])
def test_out_of_range_argument_is_refused(make, needle):
    with pytest.raises(ValueError) as err:
        make()
    assert needle in str(err.value)


@pytest.mark.parametrize("round_to", [0, -2, 2.5, "4", True])
def test_strip_round_to_must_be_a_positive_integer(trunk, round_to):
    model, graph = trunk
    with pytest.raises(ValueError, match=r"round_to must be None or a positive integer .*got "):
        strip_channels(model, zoo.random_masks(graph, 0.5), round_to=round_to)


# ------------------------------------------------------------ models without sharing


def single_task_model():
    image = keras.Input((8, 8, 3), name="image")
    h = L.ReLU()(L.Conv2D(6, 3, padding="same", name="c1")(image))
    model = keras.Model(image, {"a": L.Conv2D(2, 1, name="a")(h)})
    model.compile("adam", loss={"a": "mse"})
    return model


def test_no_shared_layers_warns_and_does_nothing_instead_of_crashing():
    from tfmot_mtl.pruning import CosPrune

    x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
    y = {"a": np.zeros((8, 8, 8, 2), "float32")}
    model = single_task_model()
    with pytest.warns(UserWarning, match="ChannelPruningCallback selected no channel group and will prune "
                                         "nothing: model '.*' has no prunable channel group shared by more "
                                         "than one task; pass groups='all'"):
        cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5), groups="shared", verbose=0)
        model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[cb])
    assert cb.sparsity() == 0.0 and cb.masks["c1"].all()
    with pytest.warns(UserWarning, match="CosPrune gave no finite score to any selected channel, so nothing is "
                                         "pruned .*use Magnitude\\(\\) or Taylor\\(\\) here"):
        cos = ChannelPruningCallback(CosPrune(), IterativeSchedule(0.5, 1, step=0.5), data=(x, y), verbose=0)
        model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[cos])
    assert cos.masks["c1"].all()
    with pytest.warns(UserWarning, match="no prunable channel group shared by more than one task"):
        prox = ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=1.0)
        model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[prox])
    assert prox.sparsity() == 0.0


# ---------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    (d / "notes.keras").write_text("not a model")
    (d / "empty.keras").write_bytes(b"")
    with zipfile.ZipFile(d / "other.keras", "w") as z:
        z.writestr("readme.txt", "a zip, but no Keras model")
    (d / "saved_model").mkdir()
    from tfmot_mtl.lite import convert

    image = keras.Input((4,), name="image")
    (d / "model.tflite").write_bytes(convert(keras.Model(image, {"a": L.Dense(2, name="a")(image)}),
                                             verbose=False))
    return d


@pytest.mark.parametrize("name,needle", [
    ("notes.keras", "notes.keras is not a loadable .keras model: a .keras file is a zip archive holding "
                    "config.json and the weights (this file is 11 bytes of something else)"),
    ("empty.keras", "is not a loadable .keras model"),
    ("other.keras", "other.keras is a zip archive but not a .keras model (no config.json inside)"),
    ("saved_model", "saved_model is a folder (a TensorFlow SavedModel?), not a Keras model file"),
    ("model.tflite", "model.tflite is a TFLite flatbuffer, not a Keras model: run it with "
                     "tfmot_mtl.lite.LiteModel"),
])
def test_non_keras_files_get_a_clear_error_from_loader_and_cli(files, name, needle):
    with pytest.raises(ValueError) as err:
        load_model(files / name)
    assert needle in str(err.value)
    for command in ("strip", "convert", "prune"):
        with pytest.raises(SystemExit) as exc:
            main([command, str(files / name)])
        assert str(exc.value).startswith("error: ") and needle in str(exc.value)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file at .*missing.keras"):
        load_model(tmp_path / "missing.keras")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_file_is_refused_and_never_executed(tmp_path, suffix):
    marker = tmp_path / "executed.txt"
    code = f"lambda t: (open({str(marker)!r}, 'w').write('ran'), t)[1]"
    image = keras.Input((4,), name="image")
    hidden = L.Lambda(eval(code), name="evil")(image)  # runs once here, while building
    path = tmp_path / f"model{suffix}"
    keras.Model(image, {"a": L.Dense(2, name="a")(hidden)}).save(path)
    marker.unlink()
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert "contains a Lambda layer with Python code; it was refused and NOT executed (safe_mode=True)" \
        in str(err.value)
    with pytest.raises(SystemExit) as exc:
        main(["strip", str(path)])
    assert "refused and NOT executed" in str(exc.value)
    with pytest.raises(ValueError, match="Lambda"):
        keras.saving.load_model(path)  # Keras' own default is safe_mode=True too
    assert not marker.exists()


# ------------------------------------------------------------------- corrupt mask JSON


def _mask_json(**fields):
    return json.dumps({"format": "tfmot_mtl.ChannelMasks", "version": 1, "masks": {"stem": [1, 0, 1]},
                       **fields})


@pytest.mark.parametrize("content,needle", [
    (_mask_json()[:40], "channel masks JSON is corrupt: "),
    ("", "channel masks JSON is corrupt: Expecting value: line 1 column 1 (char 0)"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "is not a channel masks file (not UTF-8 JSON text)"),
    ("[1, 0, 1]", "not a channel masks file: expected a JSON object with \"format\""),
    (_mask_json(masks=[[1, 0]]), "\"masks\" must be an object {group id: [0/1, ...]}, got list"),
    (_mask_json(masks={"stem": 3}), "group 'stem' must be a list of 0/1"),
    (_mask_json(masks={"stem": [1, 0.5]}), "group 'stem' must be a list of 0/1"),
    (_mask_json(min_channels="two"), "min_channels must be an integer >= 0, got 'two'"),
    (_mask_json(version=2), "channel masks JSON has version 2; this tfmot_mtl reads version 1"),
])
def test_corrupt_mask_file_names_the_file_and_the_problem(tmp_path, content, needle):
    path = tmp_path / "masks.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as err:
        ChannelMasks.load(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_cli_strip_with_bad_masks_exits_with_a_message(tmp_path):
    model_path = tmp_path / "trunk.keras"
    zoo.multitask_trunk().save(model_path)
    cases = {"corrupt.json": ("{\"format\": ", "channel masks JSON is corrupt"),
             "other_model.json": (ChannelMasks({"conv9": np.ones(3, bool)}).to_json(),
                                  "mask for unknown channel group 'conv9'")}
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SystemExit) as exc:
            main(["strip", str(model_path), "--masks", str(tmp_path / name)])
        assert str(exc.value).startswith("error: ") and needle in str(exc.value)
    with pytest.raises(SystemExit, match="No such file"):
        main(["strip", str(model_path), "--masks", str(tmp_path / "absent.json")])


def test_masks_from_zeros_refuses_nan_weights(trunk):
    model, _ = trunk
    bad = apply_masks(model, {})
    kernel, bias = bad.get_layer("stem").get_weights()
    kernel[..., 3] = np.nan
    bad.get_layer("stem").set_weights([kernel, bias])
    for fn in (masks_from_zeros, lambda m: strip_channels(m, None)):
        with pytest.raises(ValueError, match="channel group 'stem' .* has NaN/Inf weights, so which channels "
                                             "are zero is undefined"):
            fn(bad)
