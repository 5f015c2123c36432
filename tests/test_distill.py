"""Multi-task distillation (keras.distillation) and learned task weighting."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmot_mtl as tm
from tfmot_mtl import distill
from tfmot_mtl.tasks import binary, classification, compile_args, depth, normals, segmentation

L = keras.layers


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# ----------------------------------------------------------------- losses by hand


def test_segmentation_kl_matches_hand_value():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 3, 4))
    T = 3.0
    p, q = _softmax(t / T), _softmax(s / T)
    want = T**2 * np.mean(np.sum(p * np.log(p / q), -1))
    got = distill.kind_loss(segmentation(num_classes=4), temperature=T)(t, s)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_classification_kl_is_zero_for_equal_logits_and_positive_otherwise():
    loss = distill.kind_loss(classification(num_classes=3), temperature=2.0)
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    p, q = _softmax(x / 2), _softmax(x[::-1] / 2)
    np.testing.assert_allclose(float(loss(x, x[::-1])), 4 * np.mean(np.sum(p * np.log(p / q), -1)), rtol=1e-5)


def test_binary_bce_against_teacher_probabilities():
    t = np.array([[2.0, -1.0, 0.0]])
    s = np.array([[0.5, 0.5, -3.0]])
    T = 2.0
    p = 1 / (1 + np.exp(-t / T))
    q = 1 / (1 + np.exp(-s / T))
    want = T**2 * np.mean(-(p * np.log(q) + (1 - p) * np.log(1 - q)))
    got = distill.kind_loss(binary(num_attributes=3), temperature=T)(t, s)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_depth_l1_only_where_the_teacher_depth_is_valid():
    t = np.array([[[[1.0], [0.0]], [[2.0], [-1.0]]]])  # two valid pixels
    s = np.array([[[[1.5], [9.0]], [[1.0], [9.0]]]])
    got = distill.kind_loss(depth())(t, s)
    assert float(got) == pytest.approx((0.5 + 1.0) / 2, rel=1e-6)


def test_normals_cosine_ignores_zero_teacher_normals():
    t = np.array([[[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]])
    s = np.array([[[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]])
    got = distill.kind_loss(normals())(t, s)
    assert float(got) == pytest.approx(1 - 1 / np.sqrt(2), rel=1e-5)


def test_unknown_kind_lists_the_supported_kinds():
    task = segmentation()
    object.__setattr__(task, "kind", "keypoints")
    with pytest.raises(ValueError, match="supported kinds are .*segmentation.*normals"):
        distill.kind_loss(task)


@pytest.mark.parametrize("temperature", [0, -1.0, "2"])
def test_bad_temperature_is_named(temperature):
    with pytest.raises(ValueError, match="temperature"):
        distill.kind_loss(segmentation(), temperature=temperature)


# ------------------------------------------------------------------ tiny models

TASKS = [segmentation("seg", num_classes=3), depth("depth")]


def _net(width=8, name="net", seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(width, 3, padding="same", activation="relu", name="trunk1")(inp)
    x = L.Conv2D(width, 3, padding="same", activation="relu", name="trunk2")(x)
    return keras.Model(inp, {"seg": L.Conv2D(3, 1, name="seg_logits")(x),
                             "depth": L.Conv2D(1, 1, name="depth_out")(x)}, name=name)


def _data(n=32, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    seg = (x[..., 0] > 0).astype("int32") + (x[..., 1] > 0.5).astype("int32")
    d = (2.0 + x[..., 2:3] ** 2 + noise * rng.normal(size=(n, 8, 8, 1))).astype("float32")
    return x, {"seg": seg, "depth": np.abs(d) + 0.1}


def _ds(x, y, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_distiller_rejects_different_output_names():
    teacher = _net()
    inp = keras.Input((8, 8, 3), name="image")
    other = keras.Model(inp, {"seg": L.Conv2D(3, 1)(inp), "height": L.Conv2D(1, 1)(inp)})
    with pytest.raises(ValueError, match=r"teacher \['depth', 'seg'\].*student \['height', 'seg'\]"):
        distill.multitask_distiller(teacher, other, TASKS)


def test_distiller_bad_arguments_are_named():
    teacher, student = _net(), _net(4, "student")
    with pytest.raises(ValueError, match=r"distill_weights\['seg'\]"):
        distill.multitask_distiller(teacher, student, TASKS, distill_weights={"seg": -1.0})
    with pytest.raises(ValueError, match="distill_weights.*unknown tasks"):
        distill.multitask_distiller(teacher, student, TASKS, distill_weights={"normals": 1.0})
    with pytest.raises(ValueError, match="temperature"):
        distill.multitask_distiller(teacher, student, TASKS, temperature=0.0)
    with pytest.raises(ValueError, match="student has no layer 'nope'"):
        distill.multitask_distiller(teacher, student, TASKS, features=[("trunk2", "nope")])
    with pytest.raises(ValueError, match="teacher has no layer 'nope'"):
        distill.multitask_distiller(teacher, student, TASKS, features=["nope"])


def test_distillation_beats_labels_only_fine_tuning_of_a_stripped_student():
    """Few noisy labels, a good teacher: the teacher's soft targets regularise the student."""
    x, y = _data(256, seed=1)
    teacher = _net(16, "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), **compile_args(TASKS))
    teacher.fit(_ds(x, y, 32), epochs=30, verbose=0)
    masks = tm.ChannelMasks({gid: np.arange(g.size) % 2 == 0
                             for gid, g in tm.ChannelGraph.from_model(teacher).groups.items()
                             if g.prunable})
    small, _ = tm.strip_channels(teacher, masks)
    rng = np.random.default_rng(5)
    few_x = x[:16]
    flip = rng.random(y["seg"][:16].shape) < 0.3
    few_y = {"seg": np.where(flip, rng.integers(0, 3, flip.shape), y["seg"][:16]).astype("int32"),
             "depth": y["depth"][:16] + np.abs(rng.normal(0, 1.0, y["depth"][:16].shape)).astype("float32")}
    test_x, test_y = _data(128, seed=2)

    def test_loss(model):
        out = model.predict_on_batch(test_x)
        return sum(float(t.loss(test_y[t.name], out[t.name])) for t in TASKS)

    labels_only = keras.models.clone_model(small)
    labels_only.set_weights(small.get_weights())
    labels_only.compile(keras.optimizers.Adam(3e-3), **compile_args(TASKS))
    labels_only.fit(_ds(few_x, few_y), epochs=20, verbose=0)

    student = keras.models.clone_model(small)
    student.set_weights(small.get_weights())
    d = distill.multitask_distiller(teacher, student, TASKS, student_loss_weight=0.3)
    d.compile(keras.optimizers.Adam(3e-3))
    history = d.fit(_ds(few_x, few_y), epochs=20, verbose=0)
    assert {"seg_distill_loss", "depth_distill_loss", "seg_task_loss", "distillation_loss"} <= set(history.history)
    assert test_loss(d.student) < test_loss(labels_only)


def test_teacher_annealing_scales_the_distillation_terms_down_to_zero():
    """loss = a * L + (1 - a) * max(0, 1 - step / N) * D, with D the unscaled distillation terms."""
    teacher, student = _net(), _net(4, "student", seed=1)
    x, y = _data(32)
    a, n = 0.4, 4
    d = distill.multitask_distiller(teacher, student, TASKS, student_loss_weight=a, anneal_steps=n)
    d.compile(keras.optimizers.SGD(1e-3))
    history = d.fit(_ds(x, y), epochs=1, verbose=0)  # 4 batches at steps 0, 1, 2, 3
    np.testing.assert_allclose(history.history["distill_scale"], [np.mean([1.0, 0.75, 0.5, 0.25])], rtol=1e-6)

    t_out, s_out = teacher(x[:8]), student(x[:8])
    labels = sum(float(t.loss({k: v[:8] for k, v in y.items()}[t.name], s_out[t.name])) for t in TASKS)
    teach = sum(float(distill.kind_loss(t)(t_out[t.name], s_out[t.name])) for t in TASKS)
    for step, scale in ((1, 0.75), (3, 0.25), (4, 0.0), (9, 0.0)):
        d.optimizer.iterations.assign(step)
        loss = d.compute_loss(x[:8], {k: v[:8] for k, v in y.items()}, s_out, training=True)
        np.testing.assert_allclose(float(loss), a * labels + (1 - a) * scale * teach, rtol=1e-5)
    with pytest.raises(ValueError, match="anneal_steps"):
        distill.multitask_distiller(teacher, student, TASKS, anneal_steps=0)


def test_distilled_student_saves_as_plain_keras_file(tmp_path):
    teacher, student = _net(), _net(4, "student", seed=1)
    d = distill.multitask_distiller(teacher, student, TASKS, weighting="uncertainty",
                                    features=["trunk2"])
    assert len(d.feature_adapters) == 1  # 4 student channels -> 8 teacher channels
    d.compile(keras.optimizers.Adam(1e-2))
    x, y = _data(16)
    adapter_before = d.feature_adapters[0].get_weights()[0].copy()
    d.fit(_ds(x, y), epochs=1, verbose=0)
    assert not np.allclose(d.feature_adapters[0].get_weights()[0], adapter_before)
    path = str(tmp_path / "student.keras")
    d.student.save(path)
    import json
    import zipfile

    config = zipfile.ZipFile(path).read("config.json").decode()
    assert "tfmot_mtl" not in config and "adapt_" not in json.dumps(json.loads(config))
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(x)["seg"], d.student.predict_on_batch(x)["seg"], atol=1e-6)


def test_uncertainty_weighting_down_weights_the_noisier_task():
    tasks = [depth("clean"), depth("noisy")]
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    model = keras.Model(inp, {"clean": L.Conv2D(1, 1)(h), "noisy": L.Conv2D(1, 1)(h)})
    x, y = _data(128)
    rng = np.random.default_rng(3)
    targets = {"clean": y["depth"], "noisy": y["depth"] + np.abs(rng.normal(0, 3.0, y["depth"].shape)).astype("float32")}
    trainer = distill.TaskWeightedModel(model, tasks, weighting="uncertainty")
    trainer.compile(keras.optimizers.Adam(2e-2))
    history = trainer.fit(_ds(x, targets, 16), epochs=8, verbose=0)
    log_var = trainer.weighting.log_variance.numpy()
    assert log_var[1] > log_var[0] + 0.3
    assert history.history["noisy_weight"][-1] < history.history["clean_weight"][-1]
    assert not any(w.path.startswith(trainer.weighting.name) for w in trainer.model.weights)


def test_dwa_weights_follow_the_loss_ratios():
    dwa = distill.DynamicWeightAveraging(["a", "b"], temperature=2.0, period=2)
    sequence = [(4.0, 4.0), (4.0, 4.0), (1.0, 3.0), (1.0, 3.0), (1.0, 3.0)]
    for step, (la, lb) in enumerate(sequence):
        dwa.observe("a", la)
        dwa.observe("b", lb)
        dwa.update()
        if step < 3:
            np.testing.assert_allclose(dwa.weights_var.numpy(), [1.0, 1.0])
    # windows: mean (4, 4), then (1, 3): ratios 0.25 and 0.75
    want = 2 * _softmax(np.array([0.25, 0.75]) / 2.0)
    np.testing.assert_allclose(dwa.weights_var.numpy(), want, rtol=1e-5)


def test_weighting_choices_and_errors():
    assert isinstance(distill.make_weighting(None, TASKS), distill.FixedWeighting)
    assert isinstance(distill.make_weighting("dwa", TASKS), distill.DynamicWeightAveraging)
    fixed = distill.make_weighting({"seg": 2.0}, TASKS)
    assert float(fixed.weight("seg")) == 2.0 and float(fixed.weight("depth")) == 1.0
    with pytest.raises(ValueError, match="must be one of"):
        distill.make_weighting("gradnorm", TASKS)
    with pytest.raises(ValueError, match="weights.*>= 0"):
        distill.make_weighting({"seg": -1.0}, TASKS)
    with pytest.raises(ValueError, match="period"):
        distill.DynamicWeightAveraging(["a"], period=0)
    with pytest.raises(ValueError, match="no outputs \\['normals'\\]"):
        distill.TaskWeightedModel(_net(), [*TASKS, normals()])


def test_dict_keys_that_differ_from_layer_names():
    """Output keys 'seg'/'depth' are not the layer names 'seg_logits'/'depth_out'."""
    teacher, student = _net(), _net(4, "student")
    assert "seg" not in [layer.name for layer in teacher.layers]
    d = distill.multitask_distiller(teacher, student, TASKS, weighting="dwa")
    d.compile("adam")
    x, y = _data(16)
    d.fit(_ds(x, y), epochs=1, verbose=0)


def test_mirrored_strategy_distillation_step():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _data(16)
    with strategy.scope():
        teacher, student = _net(), _net(4, "student")
        d = distill.multitask_distiller(teacher, student, TASKS, weighting="uncertainty")
        d.compile(keras.optimizers.Adam(1e-2))
    before = [w.copy() for w in student.get_weights()]
    history = d.fit(_ds(x, y), epochs=1, verbose=0)
    assert np.isfinite(history.history["total_loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))


def test_recipe_finetune_gives_the_teacher_back_trainable():
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl import recipes

    x, y = _data(16)
    data = ex.Data("tiny", _ds(x, y), _ds(x, y), TASKS, (8, 8, 3))
    teacher, student = _net(), _net(4, "student")
    history = recipes.finetune(student, data, 1, teacher=teacher, weighting="uncertainty")
    assert teacher.trainable and "seg_weight" in history.history
    with pytest.raises(ValueError, match="patience.*validation"):
        recipes.finetune(student, data, 1, patience=2)


@pytest.mark.slow  # ~11 s
def test_pruning_the_student_while_distilling():
    """ChannelPruningCallback(pruned_model=student) prunes inside a MultiTaskDistiller fit
    with a gradient criterion: the removed channels stay exactly zero, the teacher is untouched."""
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Taylor

    x, y = _data(64)
    teacher, student = _net(8, "teacher"), _net(8, "student", seed=1)
    before = [w.copy() for w in teacher.get_weights()]
    d = distill.multitask_distiller(teacher, student, TASKS, student_loss_weight=0.5)
    d.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
    cb = ChannelPruningCallback(Taylor(losses={t.name: t.loss for t in TASKS}),
                                IterativeSchedule(target=0.5, frequency=4, step=0.25, end_step=4), scope="layer",
                                data=_ds(x, y), score_batches=2, pruned_model=student, verbose=0)
    d.fit(_ds(x, y).repeat(), steps_per_epoch=16, epochs=1, verbose=0, callbacks=[cb])
    assert cb.graph.model is student and cb.model is d
    assert [h["step"] for h in cb.history] == [0, 4]
    assert all((~cb.masks[g.id]).sum() == g.size // 2 for g in cb.selected)
    assert tm.nonzero_in_removed(cb.graph, cb.masks) == 0  # 16 distilled Adam steps later
    for w, b in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    small, _ = tm.strip_channels(student, cb.masks)
    np.testing.assert_allclose(small.predict_on_batch(x[:4])["seg"], student.predict_on_batch(x[:4])["seg"],
                               atol=1e-5)
    outsider = ChannelPruningCallback(Taylor(losses={t.name: t.loss for t in TASKS}), IterativeSchedule(0.5, frequency=4, step=0.25),
                                      data=_ds(x, y), pruned_model=_net(8, "outsider", seed=2), verbose=0)
    with pytest.raises(ValueError, match="'outsider' is not part of the fitted model"):
        d.fit(_ds(x, y), epochs=1, verbose=0, callbacks=[outsider])


def test_group_sparsity_of_the_model_inside_task_weighting():
    """ProximalGroupLasso(sparse_model=net) shrinks the channels of the model inside a
    TaskWeightedModel (uncertainty weighting, Adam-reweighted step on the wrapper's moments):
    exact zeros appear in that model, the task weights are learned and logged."""
    from tfmot_mtl.sparsity import ProximalGroupLasso

    x, y = _data(64)
    net = _net(8, "net")
    trainer = distill.TaskWeightedModel(net, TASKS, weighting="uncertainty")
    trainer.compile(keras.optimizers.Adam(1e-2), jit_compile=False)
    prox = ProximalGroupLasso(l1=0.5, mode="adam", groups="all", sparse_model=net, min_fraction=0.25)
    history = trainer.fit(_ds(x, y).repeat(), steps_per_epoch=12, epochs=2, verbose=0, callbacks=[prox])
    assert prox.graph.model is net and prox.model is trainer
    assert 0 < prox.sparsity() <= 0.75
    zero = prox.zero_channels()
    kernel = net.get_layer(prox.groups[0].producers[0]).kernel.numpy()
    dead = np.flatnonzero(zero[prox.groups[0].id])
    assert np.all(kernel[..., dead] == 0)
    assert {f"{t.name}_weight" for t in TASKS} <= set(history.history)
    assert "group_sparsity" in history.history
    outsider = ProximalGroupLasso(l1=0.5, sparse_model=_net(8, "outsider", seed=2))
    with pytest.raises(ValueError, match="sparse_model 'outsider' is not part of the fitted model"):
        trainer.fit(_ds(x, y), epochs=1, verbose=0, callbacks=[outsider])
