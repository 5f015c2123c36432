"""Task specs, losses, exact metrics, evaluate(), compile_args() and delta_m()."""
import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl import tasks as T

ROOT = Path(__file__).resolve().parents[1]


def onehot_logits(labels, num_classes):
    """Logits whose argmax is ``labels``."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels)] * 5.0


def loss_value(task, y_true, y_pred):
    return float(task.loss(tf.constant(y_true), tf.constant(y_pred, dtype=tf.float32)))


# ------------------------------------------------------------------------- Task spec


def test_task_defaults_hash_and_directions():
    seg = T.segmentation("seg", num_classes=3, class_names=["a", "b", "c"])
    assert seg.metrics == ("miou", "pixel_acc") and seg.is_dense
    assert dict(seg.higher_is_better) == {"miou": True, "pixel_acc": True}
    assert T.depth().higher_is_better["abs_err"] is False
    assert T.normals().higher_is_better["median_angle"] is False
    assert not T.binary("attr", 4).is_dense
    # Frozen, hashable, equality ignores the (derived) loss object.
    assert seg == T.segmentation("seg", num_classes=3, class_names=("a", "b", "c"))
    assert len({seg, T.segmentation("seg", num_classes=3, class_names=("a", "b", "c"))}) == 1
    with pytest.raises(Exception):
        seg.name = "other"
    # The original minimal constructor still works and gets a default loss.
    plain = T.Task("d", "depth", 1)
    assert isinstance(plain.loss, T.MaskedL1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="x", kind="colour", output_channels=1), "kind must be one of"),
        (dict(name="x", kind="depth", output_channels=3), "must be 1"),
        (dict(name="x", kind="normals", output_channels=1), "must be 3"),
        (dict(name="x", kind="segmentation", output_channels=2, class_names=("a",)), "class_names"),
        (dict(name="x", kind="depth", output_channels=1, metrics=("miou",)), "unknown metrics"),
        (dict(name="", kind="depth", output_channels=1), "non-empty"),
        (dict(name="x", kind="segmentation", output_channels=1), ">= 2 classes"),
    ],
)
def test_task_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.Task(**kwargs)


def test_task_config_json_round_trip():
    tasks = [
        T.segmentation("seg", 3, ignore_index=255, class_names=("a", "b", "c")),
        T.depth(metrics=("abs_err", "rmse")),
        T.normals(),
        T.classification("cls", 5),
        T.binary("attr", 2, ("smile", "hat")),
    ]
    for task in tasks:
        config = json.loads(json.dumps(task.get_config()))
        again = T.Task.from_config(config)
        assert again == task and "loss" not in config
        assert type(again.loss) is type(task.loss)
    assert T.Task.from_config(tasks[0].get_config()).loss.ignore_index == 255
    custom = T.Task("d", "depth", 1, loss=T.MaskedCosineDistance(name="odd"))
    again = T.Task.from_config(json.loads(json.dumps(custom.get_config())))
    assert isinstance(again.loss, T.MaskedCosineDistance)


# --------------------------------------------------------------------------- losses


def test_segmentation_loss_hand_computed_and_ignored():
    task = T.segmentation("seg", 2)
    # pixel 1: logits [0, ln3] -> p(1) = 3/4, label 1; pixel 2: [0, 0], label 0;
    # pixel 3 ignored with extreme logits. Two images, different valid counts.
    y_true = np.array([[[1, 0]], [[-1, -1]]], np.int32)  # (2, 1, 2)
    y_pred = np.array([[[[0, math.log(3)], [0, 0]]], [[[900, -900], [0, 1]]]], np.float32)
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert loss_value(task, y_true, y_pred) == pytest.approx(expected, rel=1e-5)
    # A trailing channel axis on the labels is accepted.
    assert loss_value(task, y_true[..., None], y_pred) == pytest.approx(expected, rel=1e-5)


def test_depth_loss_hand_computed():
    task = T.depth()
    t = np.array([2, 4, 0, 1, 5], np.float32).reshape(1, 1, 5, 1)
    p = np.array([1, 5, 3, 1, 9], np.float32).reshape(1, 1, 5, 1)
    assert loss_value(task, t, p) == pytest.approx((1 + 1 + 0 + 4) / 4)


def test_normals_loss_hand_computed():
    task = T.normals()
    t, p, _ = normals_example()
    expected = (0 + (1 - math.cos(math.radians(20))) + 0.5 + 1) / 4
    assert loss_value(task, t, p) == pytest.approx(expected, rel=1e-5)


def test_binary_and_classification_loss_hand_computed():
    x = np.array([[2.0, -1.0], [-1.0, 3.0]], np.float32)
    z = np.array([[1, 0], [1, -1]], np.float32)  # -1 ignored
    terms = [math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log1p(math.exp(1))]
    assert loss_value(T.binary("a", 2), z, x) == pytest.approx(sum(terms) / 3, rel=1e-5)
    logits = np.array([[0.0, math.log(3)], [0.0, 0.0]], np.float32)
    labels = np.array([1, 0], np.int32)
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert loss_value(T.classification("c", 2), labels, logits) == pytest.approx(expected, 1e-5)


@pytest.mark.parametrize(
    "task, y_true, pred_shape",
    [
        (T.segmentation("s", 3), np.full((2, 4, 4), -1, np.int32), (2, 4, 4, 3)),
        (T.depth(), np.zeros((2, 4, 4, 1), np.float32), (2, 4, 4, 1)),
        (T.depth(), np.full((2, 4, 4, 1), np.nan, np.float32), (2, 4, 4, 1)),
        (T.normals(), np.zeros((2, 4, 4, 3), np.float32), (2, 4, 4, 3)),
        (T.classification("c", 3), np.full((2,), -1, np.int32), (2, 3)),
        (T.binary("b", 3), np.full((2, 3), -1, np.float32), (2, 3)),
    ],
)
def test_losses_finite_on_all_invalid_batches(task, y_true, pred_shape):
    y_pred = tf.Variable(np.random.randn(*pred_shape).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = task.loss(tf.constant(y_true), y_pred)
    grad = tape.gradient(loss, y_pred)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_depth_loss_gradient_finite_with_nan_invalid_targets():
    t = np.array([[[[np.nan], [2.0]]]], np.float32)
    p = tf.Variable(np.array([[[[1.0], [1.0]]]], np.float32))
    with tf.GradientTape() as tape:
        loss = T.depth().loss(tf.constant(t), p)
    assert float(loss) == pytest.approx(1.0)
    np.testing.assert_allclose(tape.gradient(loss, p).numpy().ravel(), [0.0, -1.0])


# -------------------------------------------------------------------------- metrics


def test_segmentation_metrics_hand_computed():
    task = T.segmentation("seg", 4)  # class 3 never occurs: left out of the mean IoU
    t = np.array([[[0, 0, 1], [1, 2, -1]]], np.int32)
    p = np.array([[[0, 1, 1], [1, 0, 2]]])
    acc = task.accumulator()
    acc.update_state(t, onehot_logits(p, 4))
    # Confusion (rows truth): c0 -> [1, 1, 0], c1 -> [0, 2, 0], c2 -> [1, 0, 0].
    # IoU: c0 1/(2+2-1)=1/3, c1 2/(2+3-2)=2/3, c2 0/(1+0-0)=0; pixel acc 3/5.
    res = acc.result()
    assert res["miou"] == pytest.approx(100 / 3)
    assert res["pixel_acc"] == pytest.approx(60.0)
    np.testing.assert_allclose(acc.per_class_iou()[:3], [100 / 3, 200 / 3, 0.0])
    assert np.isnan(acc.per_class_iou()[3])
    # Accumulation is exact: the same pixels split over two updates give the same result.
    acc2 = task.accumulator()
    acc2.update_state(t[:, :1], p[:, :1])
    acc2.update_state(t[:, 1:], p[:, 1:])
    assert acc2.result() == res
    acc2.reset_state()  # the Keras metric protocol: update_state / result / reset_state
    assert math.isnan(acc2.result()["miou"]) and not acc2.confusion.any()


def test_miou_matches_sklearn_on_random_labels():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.integers(-1, 5, (2, 6, 7))
        p = rng.integers(0, 4, (2, 6, 7))  # class 4 only in truth, sometimes absent
        acc = T.segmentation("s", 5).accumulator()
        acc.update_state(t, p)
        keep = t >= 0
        expected = 100 * jaccard_score(t[keep], p[keep], average="macro")
        assert acc.result()["miou"] == pytest.approx(expected)
        assert acc.result()["pixel_acc"] == pytest.approx(100 * np.mean(t[keep] == p[keep]))


def test_segmentation_metric_errors_and_custom_ignore():
    task = T.segmentation("seg", 2, ignore_index=255)
    acc = task.accumulator()
    acc.update_state(np.array([[0, 255, 1]]), np.array([[0, 1, 0]]))
    assert acc.result()["pixel_acc"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="target labels"):
        acc.update_state(np.array([[0, -1]]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="'seg'.*channels"):
        acc.update_state(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 3)))
    assert math.isnan(T.segmentation("s", 2).accumulator().result()["miou"])


def test_depth_metrics_hand_computed():
    t = np.array([2, 4, 0, 1, 5], np.float32).reshape(1, 1, 5, 1)
    p = np.array([1, 5, 3, 1, 9], np.float32).reshape(1, 1, 5, 1)
    metrics = ("abs_err", "rel_err", "rmse", "delta1", "delta2", "delta3")
    acc = T.depth(metrics=metrics).accumulator()
    acc.update_state(t, p)
    res = acc.result()
    # valid: (2,1) (4,5) (1,1) (5,9); ratios 2, 1.25, 1, 1.8.
    assert res["abs_err"] == pytest.approx(6 / 4)
    assert res["rel_err"] == pytest.approx((0.5 + 0.25 + 0 + 0.8) / 4)
    assert res["rmse"] == pytest.approx(math.sqrt(18 / 4))
    assert res["delta1"] == pytest.approx(25.0)  # only ratio 1 < 1.25
    assert res["delta2"] == pytest.approx(50.0)  # 1.25 < 1.5625
    assert res["delta3"] == pytest.approx(75.0)  # 1.8 < 1.953125


def test_depth_metric_nonpositive_prediction_and_no_valid():
    acc = T.depth().accumulator()
    acc.update_state(np.array([[[1.0, 0.0]]]), np.array([[[-1.0, 2.0]]]))  # (B, H, W) accepted
    res = acc.result()
    assert res["abs_err"] == pytest.approx(2.0) and res["delta3"] == 0.0
    empty = T.depth().accumulator()
    empty.update_state(np.zeros((1, 2, 2, 1)), np.ones((1, 2, 2, 1)))
    assert all(math.isnan(v) for v in empty.result().values())


def normals_example():
    """Angles 0, 20, 60, 90 degrees and one invalid (zero) target."""
    s20, c20 = math.sin(math.radians(20)), math.cos(math.radians(20))
    s60, c60 = math.sin(math.radians(60)), math.cos(math.radians(60))
    t = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 0]], np.float32)
    p = np.array([[0, 0, 2], [3 * s20, 0, 3 * c20], [s60, 0, c60], [0, 1, 0], [5, 5, 5]])
    return t.reshape(1, 1, 5, 3), p.astype(np.float32).reshape(1, 1, 5, 3), [0, 20, 60, 90]


def test_normals_metrics_hand_computed():
    t, p, _ = normals_example()
    task = T.normals(metrics=T.KIND_METRICS["normals"][0] + ("within_45",))
    acc = task.accumulator()
    acc.update_state(t[:, :, :2], p[:, :, :2])
    acc.update_state(t[:, :, 2:], p[:, :, 2:])
    res = acc.result()
    assert res["mean_angle"] == pytest.approx(42.5, abs=1e-4)
    assert res["median_angle"] == pytest.approx(40.0, abs=1e-3)
    assert res["within_11.25"] == pytest.approx(25.0)
    assert res["within_22.5"] == pytest.approx(50.0)
    assert res["within_30"] == pytest.approx(50.0)
    assert res["within_45"] == pytest.approx(50.0)


def test_classification_metrics_hand_computed_and_match_sklearn():
    from sklearn.metrics import f1_score

    t = np.array([0, 1, 2, 2, 0])
    p = np.array([0, 2, 2, 2, 1])
    acc = T.classification("c", 3).accumulator()
    acc.update_state(t, onehot_logits(p, 3))
    res = acc.result()
    # F1: c0 2/(2+0+1), c1 0, c2 4/(4+1+0) -> mean 0.48889
    assert res["accuracy"] == pytest.approx(60.0)
    assert res["f1"] == pytest.approx(100 * (2 / 3 + 0 + 0.8) / 3)
    assert res["f1"] == pytest.approx(100 * f1_score(t, p, average="macro"))


def test_binary_metrics_hand_computed():
    t = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, -1, 0]], np.float32)
    logits = np.array([[2, -1, -1], [-1, 3, -1], [1, -2, -1], [-3, 5, -1]], np.float32)
    acc = T.binary("attr", 3).accumulator()
    acc.update_state(t, logits)
    res = acc.result()
    # attr0: tp fn fp tn -> acc 50, F1 0.5; attr1: tp tn tn (one ignored) -> 100, 1.0;
    # attr2: all negatives predicted negative -> acc 100, F1 undefined (left out).
    assert res["accuracy"] == pytest.approx((50 + 100 + 100) / 3)
    assert res["f1"] == pytest.approx(75.0)


# ---------------------------------------------------------------- compile, evaluate


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((4, 4, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    seg = keras.layers.Conv2D(3, 1, name="seg")(h)
    dep = keras.layers.Conv2D(1, 1, activation="softplus", name="depth")(h)
    return keras.Model({"image": x}, {"seg": seg, "depth": dep})


def tiny_data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4, 4, 3), np.float32)
    seg = rng.integers(-1, 3, (n, 4, 4)).astype(np.int32)
    dep = (rng.random((n, 4, 4, 1)) * 3).astype(np.float32) * (rng.random((n, 4, 4, 1)) > 0.3)
    return x, {"seg": seg, "depth": dep}


TASKS = [T.segmentation("seg", 3), T.depth("depth")]


def test_compile_args_and_one_fit_step():
    model = tiny_model()
    args = T.compile_args(TASKS, loss_weights={"depth": 0.5})
    assert args["loss_weights"] == {"seg": 1.0, "depth": 0.5}
    model.compile(keras.optimizers.SGD(0.1), **args)
    x, y = tiny_data()
    before = [w.numpy().copy() for w in model.trainable_weights]
    hist = model.fit({"image": x}, y, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    # Keras' total loss equals the weighted sum of the masked means computed by hand.
    out = model.predict_on_batch({"image": x})
    expected = loss_value(TASKS[0], y["seg"], out["seg"]) + 0.5 * loss_value(
        TASKS[1], y["depth"], out["depth"]
    )
    total = model.evaluate({"image": x}, y, batch_size=6, verbose=0, return_dict=True)["loss"]
    assert total == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="unknown tasks"):
        T.compile_args(TASKS, loss_weights={"normals": 1.0})


def test_compiled_model_round_trips_through_keras_file(tmp_path):
    model = tiny_model()
    model.compile("sgd", **T.compile_args([T.segmentation("seg", 3, ignore_index=7), T.depth()]))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x, y = tiny_data(3)
    y["seg"] = np.where(y["seg"] < 0, 7, y["seg"])
    np.testing.assert_allclose(
        loaded.evaluate({"image": x}, y, verbose=0), model.evaluate({"image": x}, y, verbose=0),
        rtol=1e-5,
    )
    assert loaded.loss["seg"].ignore_index == 7


def test_evaluate_matches_accumulating_everything_at_once():
    model = tiny_model()
    x, y = tiny_data()
    ds = tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(4)  # batches 4 + 2
    res = T.evaluate(model, ds, TASKS)
    out = model.predict({"image": x}, verbose=0)
    for task in TASKS:
        acc = task.accumulator()
        acc.update_state(y[task.name], out[task.name])
        for m, v in acc.result().items():
            assert res[task.name][m] == pytest.approx(v, rel=1e-6)
    assert set(res["depth"]) == set(TASKS[1].metrics)
    first_batch = T.evaluate(model, ds, {t.name: t for t in TASKS}, steps=1)
    assert first_batch != res


def test_evaluate_missing_task_errors():
    model = tiny_model()
    x, y = tiny_data(2)
    ds = tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(2)
    with pytest.raises(ValueError, match="'normals' is missing from the model outputs"):
        T.evaluate(model, ds, TASKS + [T.normals()])
    ds_no_depth = tf.data.Dataset.from_tensor_slices(({"image": x}, {"seg": y["seg"]})).batch(2)
    with pytest.raises(ValueError, match="'depth' is missing from the dataset targets"):
        T.evaluate(model, ds_no_depth, TASKS)
    with pytest.raises(ValueError, match="no batches"):
        T.evaluate(model, ds.take(0), TASKS)


def test_evaluate_accepts_a_plain_callable_and_single_output():
    model = tiny_model()
    x, y = tiny_data(4)
    ds = tf.data.Dataset.from_tensor_slices(({"image": x}, y["depth"])).batch(2)
    via_callable = T.evaluate(lambda inputs: model(inputs)["depth"], ds, [TASKS[1]], verbose=1)
    via_model = T.evaluate(model, ds.map(lambda a, b: (a, {"depth": b})), [TASKS[1]])
    assert via_callable["depth"] == pytest.approx(via_model["depth"])


# -------------------------------------------------------------------------- delta m


BASE = {"seg": {"miou": 50.0, "pixel_acc": 80.0}, "depth": {"abs_err": 0.5, "rel_err": 0.2}}


def test_delta_m_hand_computed_and_signs():
    res = {"seg": {"miou": 55.0, "pixel_acc": 80.0}, "depth": {"abs_err": 0.4, "rel_err": 0.25}}
    parts = T.delta_m_breakdown(res, BASE)
    assert parts["seg"] == pytest.approx({"miou": 10.0, "pixel_acc": 0.0})  # higher up: +
    assert parts["depth"] == pytest.approx({"abs_err": 20.0, "rel_err": -25.0})  # lower down: +
    assert T.delta_m_per_task(res, BASE) == pytest.approx({"seg": 5.0, "depth": -2.5})
    assert T.delta_m(res, BASE) == pytest.approx(1.25)
    assert T.delta_m(BASE, BASE) == 0.0
    chosen = {"seg": ["miou"], "depth": ["abs_err"]}
    assert T.delta_m(res, BASE, metrics=chosen) == pytest.approx(15.0)
    assert T.delta_m(res, BASE, tasks=["depth"], metrics=["abs_err"]) == pytest.approx(20.0)


def test_delta_m_uses_task_metrics_and_directions():
    seg = T.segmentation("seg", 3, metrics=("miou",))
    res = {"seg": {"miou": 40.0, "pixel_acc": 99.0}}
    assert T.delta_m(res, BASE, tasks=[seg]) == pytest.approx(-20.0)


def test_delta_m_errors():
    zero = {"seg": {"miou": 0.0, "pixel_acc": 80.0}}
    with pytest.raises(ValueError, match="baseline 'miou' of task 'seg' is 0"):
        T.delta_m(zero, zero)
    with pytest.raises(ValueError, match="task 'depth' is missing from results"):
        T.delta_m({"seg": BASE["seg"]}, BASE)
    with pytest.raises(ValueError, match="direction of metric 'iou_x'"):
        T.delta_m({"s": {"iou_x": 1.0}}, {"s": {"iou_x": 2.0}})
    with pytest.raises(ValueError, match="NaN"):
        T.delta_m({"seg": {"miou": float("nan"), "pixel_acc": 1.0}}, BASE, tasks=["seg"])


def test_defined_metrics_leave_out_the_zero_baselines():
    seg, attrs = T.segmentation("seg", 3), T.binary("attrs", 2)
    base = {"seg": {"miou": 0.0, "pixel_acc": 80.0}, "attrs": {"accuracy": 0.0, "f1": 0.0}}
    chosen = T.defined_metrics(base, [seg, attrs])
    assert chosen == {"seg": ["pixel_acc"], "attrs": []}
    res = {"seg": {"miou": 10.0, "pixel_acc": 88.0}, "attrs": {"accuracy": 50.0, "f1": 1.0}}
    assert T.delta_m(res, base, [seg], {"seg": chosen["seg"]}) == pytest.approx(10.0)


def test_format_results_table():
    res = {"seg": {"miou": 55.0, "pixel_acc": 80.0}, "depth": {"abs_err": 0.4, "rel_err": 0.25}}
    text = T.format_results(res, title="demo")
    assert "demo" in text and "miou (%) ↑" in text and "abs_err ↓" in text and "0.4000" in text
    text = T.format_results(res, baseline=BASE)
    assert "+10.00" in text and "-25.00" in text and "Δm = +1.25 %" in text


# ------------------------------------------------------------------ distribution


DISTRIBUTED = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from tfmot_mtl import tasks as T
tasks = [T.segmentation("seg", 3), T.depth("depth")]
rng = np.random.default_rng(0)
x = rng.random((4, 4, 4, 3), np.float32)
seg = rng.integers(0, 3, (4, 4, 4)).astype(np.int32); seg[:, 0] = -1  # same valid count per half
dep = rng.random((4, 4, 4, 1)).astype(np.float32) + 0.5; dep[:, :, 0] = 0
def build():
    keras.utils.set_random_seed(1)
    i = keras.Input((4, 4, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(i)
    return keras.Model(i, {"seg": keras.layers.Conv2D(3, 1, name="seg")(h),
                           "depth": keras.layers.Conv2D(1, 1, name="depth")(h)})
def step(strategy):
    with strategy.scope():
        m = build(); m.compile(keras.optimizers.SGD(0.5), **T.compile_args(tasks))
    m.fit({"image": x}, {"seg": seg, "depth": dep}, batch_size=4, epochs=1, verbose=0,
          shuffle=False)
    return [w.numpy() for w in m.trainable_weights]
one = step(tf.distribute.get_strategy())
two = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
assert max(float(np.abs(a - b).max()) for a, b in zip(one, two)) < 1e-5, "mismatch"
print("OK")
"""


@pytest.mark.slow  # ~14 s; test_distributed compares each method under a mirrored strategy
def test_losses_under_mirrored_strategy_match_single_device():
    proc = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED, str(ROOT)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow  # ~15 s; the tests above cover the example's calls
def test_example_runs_fast():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "metrics_and_delta_m.py"), "--fast"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Δm" in proc.stdout and "miou" in proc.stdout
