"""tm.compress on a user's model: task inference, cost targets counted from masks, the layer floor,
the ramped group sparsity, warnings, and data checks."""
import json
import warnings

import keras
import numpy as np
import pytest

import tfmot_mtl as tm
from tfmot_mtl.recipes.batchnorm import recalibrate_batchnorm
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks
from tfmot_mtl.profile import profile
from tfmot_mtl.tasks.data import as_dataset
from tfmot_mtl.strip import strip_channels
from tfmot_mtl.tasks import infer_tasks
from tfmot_mtl.tasks.chance import chance_results, collapsed

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RES = 32


def nested_two_heads(seg_classes: int = 4, compile: bool = True) -> keras.Model:
    """A user-style model: a backbone nested as a feature extractor (residual add, depthwise conv),
    a segmentation head with a skip Concatenate and a classification head; dict outputs."""
    keras.utils.set_random_seed(0)
    x = keras.Input((RES, RES, 3))
    a = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = keras.layers.Conv2D(16, 1, name="pw")(b)
    b = keras.layers.BatchNormalization(name="pw_bn")(b)
    r = keras.layers.Activation("relu")(keras.layers.Add()([a, b]))
    top = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="top")(r)
    backbone = keras.Model(x, [r, top], name="features")
    image = keras.Input((RES, RES, 3), name="image")
    skip, feat = backbone(image)
    up = keras.layers.UpSampling2D(2)(keras.layers.Conv2D(16, 1, activation="relu", name="lateral")(feat))
    y = keras.layers.Concatenate()([up, skip])
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="fuse")(y)
    seg = keras.layers.UpSampling2D(2, name="seg_up")(keras.layers.Conv2D(seg_classes, 1, name="seg_logits")(y))
    cls = keras.layers.Dense(3, name="cls_logits")(keras.layers.GlobalAveragePooling2D()(feat))
    model = keras.Model(image, {"segmentation": seg, "label": cls})
    if compile:
        model.compile("adam", loss={"segmentation": CE, "label": keras.losses.SparseCategoricalCrossentropy(
            from_logits=True)})
    return model


def arrays(n: int = 32, seed: int = 0, seg_classes: int = 4):
    rng = np.random.default_rng(seed)
    x = rng.random((n, RES, RES, 3), dtype=np.float32)
    seg = (x[..., 0] * seg_classes).astype(np.int32).clip(0, seg_classes - 1)
    cls = (x.mean((1, 2, 3)) * 30).astype(np.int32) % 3
    return x, {"segmentation": seg, "label": cls}


# ----------------------------------------------------------------------- task inference
def test_task_inference_for_each_kind_and_the_ambiguous_case():
    x = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, padding="same")(x)
    g = keras.layers.GlobalAveragePooling2D()(h)
    outs = {"seg": keras.layers.Conv2D(5, 1)(h), "cls": keras.layers.Dense(4)(g),
            "attrs": keras.layers.Dense(3)(g), "depth": keras.layers.Conv2D(1, 1)(h),
            "normals": keras.layers.Conv2D(3, 1)(h)}
    model = keras.Model(x, outs)
    model.compile(loss={"seg": "sparse_categorical_crossentropy", "cls": CE,
                        "attrs": keras.losses.BinaryCrossentropy(from_logits=True), "depth": "mae",
                        "normals": keras.losses.CosineSimilarity()})
    tasks = {t.name: t for t in infer_tasks(model)}
    assert {n: (t.kind, t.output_channels) for n, t in tasks.items()} == {
        "seg": ("segmentation", 5), "cls": ("classification", 4), "attrs": ("binary", 3),
        "depth": ("depth", 1), "normals": ("normals", 3)}
    # L1 on a 3-channel map is not a kind: the error names the output and the accepted kinds
    model.compile(loss={"seg": CE, "cls": CE, "attrs": "mae", "depth": "mae", "normals": "mae"})
    with pytest.raises(ValueError, match=r"output 'attrs'.*pass tasks=.*segmentation"):
        infer_tasks(model)
    # a task given for it resolves the ambiguity; a given task must fit the output
    given = [tm.tasks.binary("attrs", 3), tm.tasks.normals("normals")]
    assert [t.kind for t in infer_tasks(model, given)] == ["binary", "classification", "depth", "normals",
                                                           "segmentation"]
    with pytest.raises(ValueError, match="expects 7 output channels"):
        infer_tasks(model, [tm.tasks.segmentation("seg", 7), *given])
    with pytest.raises(ValueError, match=r"\['nope'\] are not outputs"):
        infer_tasks(model, [tm.tasks.depth("nope")])


def test_uncompiled_output_and_probabilities_for_attributes_are_explained():
    model = nested_two_heads(compile=False)
    with pytest.raises(ValueError, match="output 'label'.*no compiled loss"):
        infer_tasks(model)
    x = keras.Input((4,))
    model = keras.Model(x, {"a": keras.layers.Dense(2, activation="sigmoid")(x),
                            "b": keras.layers.Dense(3)(x)})
    model.compile(loss={"a": "binary_crossentropy", "b": CE})
    with pytest.raises(ValueError, match="output 'a'.*from_logits=False"):
        infer_tasks(model)


# ----------------------------------------------------------------------- compress
@pytest.mark.parametrize("method", ["prune", "sparsity"])
def test_compress_lands_a_mac_target_on_a_nested_backbone_and_leaves_the_model_alone(method):
    model = nested_two_heads()
    x, y = arrays()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tm.CompressWarning)
        result = tm.compress(model, (x, y), validation=arrays(16, seed=1), target_macs=0.5, method=method,
                             find_epochs=2, finetune_epochs=1, batch_size=16, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    reached = profile(result.model).total_macs / profile(model).total_macs
    assert abs(reached / 0.5 - 1) <= 0.02, reached
    assert result.target["kind"] == "macs" and "missed" not in result.target
    assert set(result.before) == set(result.after) == {"segmentation", "label"}
    assert result.evaluated_on == "validation"
    out = result.to_dict()
    assert out["strip"]["macs_after"] == profile(result.model).total_macs and "delta_m" in out
    assert "segmentation" in result.table() and isinstance(result.model, keras.Model)
    if method == "sparsity":
        assert result.history["find"]["trimmed"] == result.trimmed >= 0
    # a plain Keras model: no regularizer or layer of ours left in it, so a .keras file loads anywhere
    assert "tfmot_mtl" not in json.dumps(keras.saving.serialize_keras_object(result.model))
    assert not result.model.losses


def test_compress_rejects_an_unreachable_target_before_training_with_the_range():
    model = nested_two_heads()
    with pytest.raises(ValueError, match=r"target_macs=0.01 cannot be reached.*reachable: 0\.\d+ to 1\.0"):
        tm.compress(model, arrays(16), target_macs=0.01, groups="shared", find_epochs=1, finetune_epochs=0,
                    verbose=0)


def test_compress_needs_exactly_one_target_and_fitting_data():
    model = nested_two_heads()
    x, y = arrays(16)
    with pytest.raises(ValueError, match="exactly one target"):
        tm.compress(model, (x, y), verbose=0)
    with pytest.raises(ValueError, match="exactly one target"):
        tm.compress(model, (x, y), target_macs=0.5, target_params=0.5, verbose=0)
    with pytest.raises(ValueError, match=r"no target for outputs \['label'\]"):
        tm.compress(model, (x, {"segmentation": y["segmentation"]}), target_macs=0.5, verbose=0)
    with pytest.raises(ValueError, match=r"targets \['depth'\] that are not outputs of the model"):
        tm.compress(model, (x, {**y, "depth": y["label"]}), target_macs=0.5, verbose=0)
    with pytest.raises(ValueError, match=r"output 'segmentation'.*shape \(None, 16, 16\).*\(B, 32, 32\)"):
        tm.compress(model, (x, {**y, "segmentation": y["segmentation"][:, :16, :16]}), target_macs=0.5, verbose=0)
    with pytest.raises(ValueError, match="class ids up to 9 but the output has 4 classes"):
        tm.compress(model, (x, {**y, "segmentation": y["segmentation"] + 6}), target_macs=0.5, verbose=0)


def test_target_miss_is_reported():
    model = nested_two_heads()
    x, y = arrays(16)
    with pytest.warns(tm.CompressWarning, match="target_macs=0.6 missed"):
        result = tm.compress(model, (x, y), target_macs=0.6, round_to=16, find_epochs=1, finetune_epochs=0,
                             batch_size=16, verbose=0)
    assert result.target["missed"] in result.warnings


@pytest.mark.heavy
def test_stale_batchnorm_statistics_of_the_parent_are_reestimated_on_a_copy_and_reported():
    model = nested_two_heads()
    x, y = arrays(32)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    bn = model.get_layer("features").get_layer("pw_bn")
    bn.moving_mean.assign(bn.moving_mean + 50.0)  # statistics of no batch the model will see
    stale = [w.copy() for w in model.get_weights()]
    with pytest.warns(tm.CompressWarning, match="BatchNorm statistics are stale"):
        result = tm.compress(model, (x, y), target_channels=0.3, find_epochs=1, finetune_epochs=0,
                             batch_size=16, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(stale, model.get_weights()))
    assert any("stale" in m for m in result.warnings)
    stored = tm.tasks.evaluate(model, as_dataset((x, y), 16), tm.tasks.infer_tasks(model))
    assert result.before["segmentation"]["miou"] > stored["segmentation"]["miou"] + 5
    fresh = nested_two_heads()
    fresh.fit(x, y, epochs=2, batch_size=16, verbose=0)
    recalibrate_batchnorm(fresh, as_dataset((x, y), 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tm.CompressWarning)
        quiet = tm.compress(fresh, (x, y), target_channels=0.3, find_epochs=1, finetune_epochs=0,
                            batch_size=16, verbose=0)
    assert not [m for m in quiet.warnings if "stale" in m]


def test_collapse_to_chance_is_detected():
    task = tm.tasks.classification("label", 3)
    y = np.array([0, 0, 0, 1, 2, 0])
    chance = chance_results([task], [(None, {"label": y})])
    assert chance["label"]["accuracy"] == pytest.approx(100 * 4 / 6)
    good, bad = {"label": {"accuracy": 95.0, "f1": 90.0}}, {"label": {"accuracy": 68.0, "f1": 20.0}}
    assert collapsed(bad, chance, good, [task]) == ["label"]
    assert collapsed(good, chance, good, [task]) == []
    depth = tm.tasks.depth("depth")
    d = np.random.default_rng(0).uniform(1, 5, (2, 4, 4, 1)).astype(np.float32)
    blind = chance_results([depth], [(None, {"depth": d})])["depth"]
    assert collapsed({"depth": blind}, {"depth": blind}, {"depth": {**blind, "abs_err": 0.1}}, [depth]) == ["depth"]


def test_task_monitor_warns_when_a_head_is_dead():
    from tfmot_mtl.compress import TaskMonitor
    from tfmot_mtl.tasks.data import as_dataset

    model = nested_two_heads()
    x, y = arrays(32)
    tasks = infer_tasks(model)
    ds = as_dataset((x, y), 16)
    reference = {"segmentation": {"miou": 90.0, "pixel_acc": 95.0}, "label": {"accuracy": 99.0, "f1": 99.0}}
    head = model.get_layer("cls_logits")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])  # constant logits: argmax is class 0
    from tfmot_mtl.tasks.chance import chance_results

    chance = chance_results(tasks, list(ds))
    chance["label"]["accuracy"] = max(chance["label"]["accuracy"], 100.0 * float(np.mean(y["label"] == 0)))
    monitor = TaskMonitor(tasks, ds, chance, reference).watching(model, "find")
    with pytest.warns(tm.CompressWarning, match="task 'label' fell to chance level during find"):
        monitor.on_epoch_end(0)
    assert monitor.records[0]["phase"] == "find"


def test_proximal_ramp_reaches_its_target_without_a_cliff():
    """With ramp_steps the share of dead channels follows the ramp from below: no epoch adds more
    than about a third of the target, and the ramp is never exceeded."""
    model = nested_two_heads()
    x, y = arrays(64)
    model.compile(keras.optimizers.Adam(1e-3), loss=model.loss)
    prox = tm.sparsity.ProximalGroupLasso(l1=0.3, target=0.5, adapt_rate=0.3, ramp_steps=3 * 8, gain="auto")
    history = model.fit(x, y, batch_size=8, epochs=4, callbacks=[prox], verbose=0)
    per_epoch = [0.0] + [float(v) for v in history.history["group_sparsity"]]
    assert per_epoch[-1] >= 0.45, per_epoch  # 0.5 of 80 channels less what the layer floor keeps
    assert max(b - a for a, b in zip(per_epoch, per_epoch[1:])) <= 0.5 / 3 + 0.05, per_epoch
    # the ramp caps the dead share: at no epoch end above the ramp's value
    assert all(v <= 0.5 * min(1.0, 8 * (e + 1) / 24) + 1e-9 for e, v in enumerate(per_epoch[1:])), per_epoch


def test_both_phases_start_from_the_learning_rate_the_model_was_compiled_with(monkeypatch):
    """lr=None: the initial rate of the model's Adam (a schedule's value at step 0) for group
    sparsity, half of it for pruning; an optimizer that is not Adam's says nothing about Adam's
    rate: 1e-3. The rate both phases use is recorded."""
    import tfmot_mtl.recipes.train as train
    from tfmot_mtl.compress import DEFAULT_LR, PRUNE_LR_SHARE, _learning_rate

    used = []
    original = train.cosine_adam
    monkeypatch.setattr(train, "cosine_adam", lambda lr, *a, **k: used.append(lr) or original(lr, *a, **k))
    model = nested_two_heads()
    x, y = arrays(16)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(5e-3, 100)), loss=model.loss)
    result = tm.compress(model, (x, y), target_channels=0.3, method="sparsity", find_epochs=1, finetune_epochs=1,
                         batch_size=8, verbose=0)
    assert result.lr == 5e-3 and used == [5e-3, 5e-3] and result.to_dict()["lr"] == 5e-3
    model.compile(keras.optimizers.SGD(0.1), loss=model.loss)
    assert _learning_rate(model, None) == DEFAULT_LR == 1e-3 and _learning_rate(model, 4e-4) == 4e-4
    model.compile(keras.optimizers.AdamW(3e-3), loss=model.loss)
    assert _learning_rate(model, None, PRUNE_LR_SHARE) == 1.5e-3 and _learning_rate(model, None) == 3e-3
    for bad in (0.0, 1.5, True, "fast"):
        with pytest.raises(ValueError, match="lr must be a learning rate in"):
            tm.compress(model, (x, y), target_channels=0.3, lr=bad, verbose=0)


def test_pruning_callback_aims_at_macs_and_reports_the_floor():
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude

    model = nested_two_heads()
    x, y = arrays(32)
    model.compile(keras.optimizers.Adam(1e-3), loss=model.loss)
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.5, frequency=2, step=0.25),
                                target_macs=0.4, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    small, _ = strip_channels(model, cb.masks)
    reached = profile(small).total_macs / profile(model).total_macs
    assert abs(reached / 0.4 - 1) <= 0.02 and cb.reached()["macs_share"] == pytest.approx(reached)
    goals = [e["target"] for e in cb.history]
    assert [round(cb.cost_goal(s), 3) for s in goals] == [0.7, 0.4]
    with pytest.raises(ValueError, match="target_macs=0.01 cannot be reached"):
        ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.5, frequency=2, step=0.25),
                               target_macs=0.01, groups="shared").setup(nested_two_heads())
    with pytest.raises(ValueError, match="one of target_macs and target_params"):
        ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.5, frequency=2, step=0.25),
                               target_macs=0.5, target_params=0.5)
    with pytest.raises(ValueError, match="cost_exponent must be in"):
        ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.5, frequency=2, step=0.25),
                               target_macs=0.5, cost_exponent=-1)


def test_proximal_group_lasso_lands_a_parameter_target():
    model = nested_two_heads()
    x, y = arrays(32)
    model.compile(keras.optimizers.Adam(1e-3), loss=model.loss)
    prox = tm.sparsity.ProximalGroupLasso(l1=0.3, target_params=0.6, ramp_steps=4)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[prox], verbose=0)
    small, _ = strip_channels(model, prox.masks)
    assert abs(profile(small).total_params / profile(model).total_params / 0.6 - 1) <= 0.02
    zeros = tm.masks_from_zeros(model)  # channels kept back are zero until fine-tuned
    assert all(np.all(prox.masks[g] >= zeros[g]) for g in zeros)
    assert prox.get_config()["target_params"] == 0.6 and prox.get_config()["target"] is None


@pytest.mark.heavy
def test_compress_own_model_example(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "examples/compress_own_model.py", "--fast", "--out",
                           str(tmp_path / "small.keras")], capture_output=True, text=True, timeout=600,
                          cwd=__file__.rsplit("/tests/", 1)[0], env={**__import__("os").environ,
                                                                      "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tasks inferred from the compiled losses: [('cls', 'classification'), ('seg', 'segmentation')]" \
        in proc.stdout
    assert "saved" in proc.stdout and (tmp_path / "small.keras").exists()
    keras.saving.load_model(tmp_path / "small.keras")


@pytest.mark.slow  # a benchmark's smoke run (~3 min): four trainings of a MobileNetV2 two-head model
def test_own_models_benchmark_runs(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "own.json"
    proc = subprocess.run([sys.executable, "benchmarks/own_models.py", "--quick", "--models", "mobilenetv2",
                           "--out", str(out)], capture_output=True, text=True, timeout=1200,
                          cwd=__file__.rsplit("/tests/", 1)[0], env={**__import__("os").environ,
                                                                      "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    rows = saved["results"]["mobilenetv2"]["rows"]
    assert set(rows) == {"dense, same budget", "prune", "sparsity"}
    for method in ("prune", "sparsity"):
        assert abs(rows[method]["mac_share"] / 0.33 - 1) <= 0.02, rows[method]
        assert rows[method]["epochs"] == rows["dense, same budget"]["epochs"] == 3
    assert set(saved["verdict"]) == {"prune", "sparsity"}


@pytest.mark.slow  # ~25 s; test_own_models_benchmark_runs runs the benchmark
def test_own_models_reuses_cached_parents_only_for_the_same_setting(tmp_path):
    import importlib.util

    path = __file__.rsplit("/tests/", 1)[0] + "/benchmarks/own_models.py"
    spec = importlib.util.spec_from_file_location("own_models", path)
    own = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own)
    cfg = {**own.PRESETS["quick"], "n_train": 16, "n_test": 8, "cache_dir": str(tmp_path)}
    logs = []
    first = own.run_model("unet", [], cfg, log=logs.append)
    again = own.run_model("unet", [], cfg, log=logs.append)
    assert not any("from " + str(tmp_path) in line for line in logs[:1])
    assert "from " + str(tmp_path) in logs[1]
    assert again["rows"]["dense, same budget"]["metrics"] == first["rows"]["dense, same budget"]["metrics"]
    assert len(list(tmp_path.glob("unet-*.keras"))) == 2
    for key, value in (("dense_epochs", 2), ("seed", 1), ("lr", 1e-3), ("n_train", 32)):  # another setting: anew
        assert own._cache_stem("unet", {**cfg, key: value}) != own._cache_stem("unet", cfg), key
    assert own._cache_stem("unet", {**cfg, "cache_dir": None}) is None


def test_delta_m_leaves_out_metrics_whose_baseline_is_zero():
    from tfmot_mtl.compress import defined_delta_m

    tasks = [tm.tasks.binary("attrs", 3), tm.tasks.classification("cls", 3)]
    base = {"attrs": {"accuracy": 80.0, "f1": 0.0}, "cls": {"accuracy": 50.0, "f1": 40.0}}
    new = {"attrs": {"accuracy": 88.0, "f1": 30.0}, "cls": {"accuracy": 55.0, "f1": 44.0}}
    assert defined_delta_m(new, base, tasks) == pytest.approx((10.0 + 10.0) / 2)
    assert np.isnan(defined_delta_m(new, {"attrs": {"accuracy": 0.0, "f1": 0.0}, "cls": {"accuracy": 0.0,
                                                                                        "f1": 0.0}}, tasks))


@pytest.mark.parametrize("method", ["prune", "sparsity"])
def test_compress_builds_the_channel_graph_once_per_model_object(method, monkeypatch):
    """The find phase, the reports, the masks and the surgeon share the graph of each model they see
    (ChannelGraph.of); a model object is walked once."""
    built = []
    original = ChannelGraph.from_model.__func__

    def counting(cls, model):
        built.append(model)
        return original(cls, model)

    monkeypatch.setattr(ChannelGraph, "from_model", classmethod(counting))
    model = nested_two_heads()
    x, y = arrays(32)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    tm.compress(model, (x, y), method=method, target_channels=0.3, find_epochs=1, finetune_epochs=1,
                batch_size=16, verbose=0)
    assert built, "compress built no graph at all"
    assert len({id(m) for m in built}) == len(built), [m.name for m in built]


def test_a_graph_is_refused_for_another_model_object(tmp_path):
    model = nested_two_heads(compile=False)
    graph = ChannelGraph.of(model)
    assert ChannelGraph.of(model) is graph
    copy = keras.models.clone_model(model)
    assert ChannelGraph.of(copy) is not graph
    masks = ChannelMasks({"stem": np.r_[np.zeros(4, bool), np.ones(12, bool)]})
    with pytest.raises(ValueError, match="built from the model 'functional"):
        strip_channels(copy, masks, graph=graph)
    small, _ = strip_channels(model, masks, graph=graph)
    assert small.get_layer("stem").filters == 12
    assert len(model.weights) == len(copy.weights)  # the cached graph is not a tracked attribute
    model.save(tmp_path / "model.keras")
    assert len(keras.saving.load_model(tmp_path / "model.keras").weights) == len(model.weights)
