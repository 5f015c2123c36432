"""Models whose dict-output keys differ from their output layers' names, across every API.

Keras 3 names dict outputs by their keys (``compile(loss={key: ...})``, ``predict()[key]``)
while ``model.output_names`` lists the output *layers'* names. Every part of tfmot_mtl must
name tasks by the keys: ``tfmot_mtl.graph.walk.output_names``.
"""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo as zoo
from tfmot_mtl import budget, lite
from tfmot_mtl.app import cli
from tfmot_mtl import tasks as T
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.lite.io import named_outputs
from tfmot_mtl.masks import ChannelMasks, apply_masks
from tfmot_mtl.pruning import ChannelPruningCallback, CosPrune, IterativeSchedule, Magnitude, Taylor
from tfmot_mtl.pruning.gradient_criteria import resolve_losses
from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity
from tfmot_mtl.strip import strip_channels
from tfmot_mtl.graph.walk import output_names

SIZE = 16
KEYS = ["cls", "depth", "seg"]  # sorted, as Keras flattens a dict
LAYERS = {"seg": "seg_logits", "depth": "depth_out", "cls": "cls_logits"}
TASKS = [T.segmentation("seg", 3), T.depth("depth"), T.classification("cls", 4)]


def hard_model(heads=(("seg", "seg_logits", "seg", 3), ("depth", "depth_out", "depth", 1),
                      ("cls", "cls_logits", "cls", 4)), size=SIZE):
    """image -> c1 -> bn1 -> relu -> c2 (shared trunk) -> one head per (key, layer name, kind, width)."""
    x = keras.Input((size, size, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    outputs = {}
    for key, layer, kind, width in heads:
        if kind == "seg":
            t = keras.layers.Conv2D(6, 1, activation="relu", name=f"{key}_hidden")(h)
            outputs[key] = keras.layers.Conv2D(width, 1, name=layer)(t)
        elif kind == "depth":
            outputs[key] = keras.layers.Conv2D(width, 1, activation="softplus", name=layer)(h)
        else:
            g = keras.layers.GlobalAveragePooling2D(name=f"{key}_gap")(h)
            g = keras.layers.Dense(6, activation="relu", name=f"{key}_hidden")(g)
            outputs[key] = keras.layers.Dense(width, name=layer)(g)
    return keras.Model({"image": x}, outputs, name="hard")


def arrays(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, SIZE, SIZE, 3)).astype(np.float32)
    y = {"seg": rng.integers(0, 3, (n, SIZE, SIZE)).astype(np.int32),
         "depth": (rng.random((n, SIZE, SIZE, 1)) + 0.5).astype(np.float32),
         "cls": rng.integers(0, 4, n).astype(np.int32)}
    return x, y


def dataset(n=8, batch=4):
    x, y = arrays(n)
    return tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(batch)


def compiled(model=None):
    model = model or hard_model()
    model.compile(keras.optimizers.Adam(1e-2), run_eagerly=True, jit_compile=False, **T.compile_args(TASKS))
    return model


def max_rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(a)).max() + 1e-6))


# --------------------------------------------------------------------- the names themselves


def test_output_names_are_the_dict_keys():
    model = hard_model()
    assert sorted(model.output_names) == sorted(LAYERS.values())  # Keras: the layers' names
    assert output_names(model) == KEYS
    graph = ChannelGraph.from_model(model)
    assert sorted(graph.flat.outputs) == KEYS
    assert set().union(*(g.tasks for g in graph.groups.values())) == set(KEYS)
    assert graph.groups["c2"].tasks == frozenset(KEYS)
    assert graph.groups["seg_hidden"].tasks == frozenset(["seg"])
    # list and single outputs are named by their layers; a Sequential model by its last layer
    inp = keras.Input((4,), name="v")
    a, b = keras.layers.Dense(2, name="a_l")(inp), keras.layers.Dense(3, name="b_l")(inp)
    assert output_names(keras.Model(inp, [a, b])) == ["a_l", "b_l"]
    assert output_names(keras.Model(inp, a)) == ["a_l"]
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="last")])
    assert output_names(seq) == ["last"]
    assert output_names(keras.Sequential([keras.layers.Dense(2, name="unbuilt")])) == ["unbuilt"]
    assert list(named_outputs(seq, np.zeros((1, 2)))) == ["last"]
    assert list(named_outputs(keras.Model(inp, [a, b]), [1, 2])) == ["a_l", "b_l"]

    class Sub(keras.Model):
        def call(self, x):
            return {"k": x}

    with pytest.raises(ValueError, match="not a Keras functional or Sequential model"):
        output_names(Sub(name="sub"))


def test_resolve_losses_by_keys():
    model = compiled()
    losses = resolve_losses(model)
    assert sorted(losses) == KEYS
    listed = resolve_losses(hard_model(), losses=["mse", "mae", "mse"])  # list: in output order
    assert sorted(listed) == KEYS
    with pytest.raises(ValueError, match="not model outputs"):
        resolve_losses(hard_model(), losses={"seg_logits": "mse"})


def test_taylor_on_sequential_and_list_outputs():
    # a Sequential model has no output_names: its output is named by its last layer
    seq = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, name="c"),
                            keras.layers.ReLU(name="r"), keras.layers.Conv2D(2, 1, name="out")])
    seq.compile("sgd", loss="mse")
    x = arrays(4)[0]
    y = np.random.default_rng(1).standard_normal((4, SIZE - 2, SIZE - 2, 2)).astype(np.float32)
    scores = Taylor()(seq, ChannelGraph.from_model(seq), (x, {"out": y}))
    assert scores["c"].shape == (4,) and np.isfinite(scores["c"]).all() and scores["c"].max() > 0
    # list outputs are named by their layers, as Keras names them in compile(loss={...})
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", name="c")(inp)
    listed = keras.Model(inp, [keras.layers.Conv2D(1, 1, name="p")(h), keras.layers.Conv2D(2, 1, name="q")(h)])
    listed.compile("sgd", loss={"p": "mse", "q": "mse"})
    rng = np.random.default_rng(2)
    ys = {"p": rng.standard_normal((4, SIZE, SIZE, 1)).astype(np.float32),
          "q": rng.standard_normal((4, SIZE, SIZE, 2)).astype(np.float32)}
    scores = CosPrune()(listed, ChannelGraph.from_model(listed), (x, ys))
    assert scores["c"].shape == (4,) and np.isfinite(scores["c"]).all()


# --------------------------------------------------------------------- pruning


@pytest.mark.parametrize("criterion", [Magnitude, Taylor, CosPrune], ids=["magnitude", "taylor", "cosprune"])
def test_criterion_scores(criterion):
    model = compiled()
    graph = ChannelGraph.from_model(model)
    crit = criterion()
    scores = crit(model, graph, dataset()) if criterion is not Magnitude else crit(model, graph)
    assert set(scores) == {g.id for g in graph.prunable_groups} == {"c1", "c2", "seg_hidden", "cls_hidden"}
    for gid in ("c1", "c2"):  # shared trunk: every criterion scores every channel
        assert scores[gid].shape == (8,) and np.isfinite(scores[gid]).all(), (gid, scores[gid])
    if criterion is CosPrune:  # single-task groups have no gradient conflict to score
        assert np.isnan(scores["seg_hidden"]).all()
    else:
        assert np.isfinite(scores["seg_hidden"]).all()


def test_cosprune_tasks_named_by_keys():
    model = compiled()
    graph = ChannelGraph.from_model(model)
    scores = CosPrune(tasks=["seg", "cls"])(model, graph, dataset())
    assert np.isfinite(scores["c2"]).all()


@pytest.mark.parametrize("criterion", [Magnitude, Taylor, CosPrune], ids=["magnitude", "taylor", "cosprune"])
def test_pruning_callback_fit_step(criterion):
    model = compiled()
    cb = ChannelPruningCallback(criterion(), IterativeSchedule(target=0.25, frequency=1, count=2),
                                groups="all", protect=("cls",), data=dataset().repeat(), score_batches=1,
                                accumulate_every=1, verbose=0)
    hist = model.fit(dataset(), epochs=1, callbacks=[cb], verbose=0)  # 2 steps: events at 0 and 1
    assert {g.id for g in cb.selected} == {"c1", "c2", "seg_hidden"}  # the cls head is protected
    assert cb.pruned_channels() == 4  # floor(0.25 * (8 + 8 + 6))
    assert cb.masks["cls_hidden"].all()
    assert np.isfinite(hist.history["loss"]).all()
    small, _ = strip_channels(model, cb.masks)
    assert output_names(small) == KEYS


# --------------------------------------------------------------------- group sparsity


def test_group_sparsity_fit_step():
    model = apply_group_sparsity(hard_model(), l1=1e-3, groups="shared")
    assert output_names(model) == KEYS
    compiled(model)
    cb = ProximalGroupLasso(l1=50.0, groups="shared")  # large: a couple of steps zero channels
    hist = model.fit(dataset(), epochs=1, callbacks=[cb], verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    zero = cb.zero_channels()
    assert set(zero) == {"c1", "c2"} and sum(int(z.sum()) for z in zero.values()) > 0
    assert "group_sparsity" in hist.history
    out = model.predict({"image": arrays(2)[0]}, verbose=0)
    assert sorted(out) == KEYS


# --------------------------------------------------------------------- strip / lite / evaluate


@pytest.fixture(scope="module")
def stripped():
    keras.utils.set_random_seed(0)
    model = zoo.randomize(hard_model())
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.5, seed=3)
    masked = apply_masks(model, masks)
    small, report = strip_channels(masked, masks)
    return masked, small, report


def test_strip_keeps_keys_and_matches_masked_model(stripped):
    masked, small, report = stripped
    assert output_names(small) == KEYS
    assert small.count_params() < masked.count_params() and report.totals["params_after"] == small.count_params()
    x = arrays(3, seed=1)[0]
    ref, got = masked({"image": x}, training=False), small({"image": x}, training=False)
    assert sorted(got) == KEYS
    for k in KEYS:
        assert got[k].shape == ref[k].shape, k
        assert max_rel_err(ref[k], got[k]) <= 1e-4, k


def test_lite_outputs_named_by_keys_and_match_keras(stripped):
    _, small, _ = stripped
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    assert sorted(lm.output_names) == KEYS
    x = arrays(3, seed=2)[0]
    ref = small.predict({"image": x}, verbose=0)
    got = lm.predict({"image": x})
    assert sorted(got) == KEYS
    for k in KEYS:
        assert got[k].shape == ref[k].shape, k
        assert max_rel_err(ref[k], got[k]) <= 1e-4, k


def test_tasks_evaluate_by_keys():
    model = hard_model()
    res = T.evaluate(model, dataset(), TASKS)
    assert sorted(res) == KEYS
    out = model.predict({"image": arrays()[0]}, verbose=0)
    acc = TASKS[2].accumulator()
    acc.update_state(arrays()[1]["cls"], out["cls"])
    for metric, value in acc.result().items():
        assert res["cls"][metric] == pytest.approx(value, rel=1e-6)


# --------------------------------------------------------------------- budget


def test_add_domain_switches_on_keyed_heads():
    image = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(6, 3, padding="same", name="c0")(image)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.ReLU(name="r0")(h))
    outs = {"a": keras.layers.Dense(3, name="a_logits")(g), "b": keras.layers.Dense(4, name="b_logits")(g)}
    model = budget.add_domain_switches(keras.Model({"image": image}, outs), [("a", 3), ("b", 4)])
    assert output_names(model) == ["a", "b"]
    x = {"image": np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32"),
         "domain": np.array([0, 1, 0, 1], "int32")}
    out = model(x, training=False)
    assert sorted(out) == ["a", "b"] and out["a"].shape == (4, 3) and out["b"].shape == (4, 4)
    masks = budget.union_masks(model)
    assert "c0" in masks and masks["c0"].shape == (6,)


# --------------------------------------------------------------------- CLI


@pytest.fixture
def eager_fits(monkeypatch):
    """Skips graph tracing of the train function (much slower than a few eager steps here)."""
    from tfmot_mtl.pruning import run

    real = run.compile_for_pruning
    monkeypatch.setattr(run, "compile_for_pruning",
                        lambda model, tasks, lr, run_eagerly=False: real(model, tasks, lr, True))


def test_cli_strip_and_convert_keep_keys(tmp_path):
    model = zoo.randomize(hard_model())
    path = tmp_path / "hard.keras"
    model.save(path)
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.5, seed=1)
    masks.save(tmp_path / "masks.json")
    out = tmp_path / "small.keras"
    assert cli.main(["strip", str(path), "--masks", str(tmp_path / "masks.json"), "--output", str(out)]) == 0
    small = keras.saving.load_model(out, safe_mode=True)
    assert output_names(small) == KEYS
    x = arrays(2, seed=4)[0]
    ref, got = apply_masks(model, masks).predict({"image": x}, verbose=0), small.predict({"image": x}, verbose=0)
    assert all(max_rel_err(ref[k], got[k]) <= 1e-4 for k in KEYS)
    folder = tmp_path / "bundle"
    assert cli.main(["convert", str(out), "--output", str(folder)]) == 0
    desc = json.loads((folder / "model.json").read_text())
    assert sorted(o["name"] for o in desc["outputs"]) == KEYS


@pytest.mark.parametrize("criterion", ["taylor", "cosprune"])
def test_cli_prune_gradient_criterion(criterion, tmp_path, capsys, eager_fits):
    # multi_digits names its tasks segmentation / left / right: keys, not the layers' names
    model = hard_model(heads=(("segmentation", "seg_logits", "seg", 11), ("left", "left_logits", "cls", 10),
                              ("right", "right_logits", "cls", 10)))
    path = tmp_path / "digits.keras"
    model.save(path)
    out = tmp_path / "pruned"
    rc = cli.main(["prune", str(path), "--criterion", criterion, "--target", "0.25", "--step", "0.25",
                   "--frequency", "1", "--epochs", "0", "--data", "multi_digits", "--n-train", "8",
                   "--n-test", "8", "--batch-size", "8", "--out", str(out)])
    assert rc == 0
    assert "strip_channels report" in capsys.readouterr().out
    small = keras.saving.load_model(out / "pruned_stripped.keras", safe_mode=True)
    assert output_names(small) == ["left", "right", "segmentation"]
    report = json.loads((out / "report.json").read_text())
    assert report["strip"]["totals"]["params_after"] < report["strip"]["totals"]["params_before"]
    assert set(report["metrics"]["compressed"]) == {"segmentation", "left", "right"}
    masks = ChannelMasks.load(out / "masks.json")
    assert sum(int((~np.asarray(masks[g])).sum()) for g in masks.keys()) > 0
