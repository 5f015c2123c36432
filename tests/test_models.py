"""Tests of the reference architectures in tfmot_mtl.models."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tfmot_mtl import models
from tfmot_mtl.models.heads import scaled
from tfmot_mtl.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
SCENE = [Task("seg", "segmentation", 8), Task("depth", "depth", 1), Task("normals", "normals", 3)]
FACE = [Task("parts", "segmentation", 3), Task("attrs", "binary", 5), Task("kind", "classification", 4)]
DOMAINS = [("digits", 10), ("shapes", 4), ("letters", 26)]
ALLOWED_LAYERS = {
    "InputLayer", "Conv2D", "BatchNormalization", "ReLU", "Add", "Concatenate", "MaxPooling2D",
    "AveragePooling2D", "GlobalAveragePooling2D", "UpSampling2D", "Resizing", "Dense", "Dropout",
}
TINY = {"input_shape": (32, 32, 3), "width": 0.25}


def _build(name: str, targets=None, **kwargs) -> keras.Model:
    targets = targets if targets is not None else (DOMAINS if name == "mdl_resnet26" else SCENE)
    return models.build(name, targets, **{**TINY, **kwargs})


def _image(batch: int = 2, height: int = 32, width: int = 32) -> np.ndarray:
    return np.random.default_rng(1).random((batch, height, width, 3), dtype=np.float32)


def _predict(model: keras.Model, image: np.ndarray) -> dict:
    """Eager forward pass (no tf.function tracing: keeps the tests fast)."""
    return {k: np.asarray(v) for k, v in model({"image": image}, training=False).items()}


def _expected_shapes(targets, batch, height, width) -> dict:
    shapes = {}
    for t in targets:
        if isinstance(t, Task):
            shapes[t.name] = (batch, height, width, t.output_channels) if t.is_dense else (batch, t.output_channels)
        else:
            shapes[t[0]] = (batch, t[1])
    return shapes


def _targets_and_losses(targets, batch, height, width):
    rng = np.random.default_rng(2)
    y, losses = {}, {}
    for t in targets:
        name, kind, channels = (t.name, t.kind, t.output_channels) if isinstance(t, Task) else (t[0], "classification", t[1])
        if kind == "segmentation":
            y[name] = rng.integers(0, channels, (batch, height, width)).astype("int32")
        elif kind in ("depth", "normals"):
            y[name] = rng.random((batch, height, width, channels), dtype=np.float32)
        elif kind == "classification":
            y[name] = rng.integers(0, channels, (batch,)).astype("int32")
        else:
            y[name] = rng.integers(0, 2, (batch, channels)).astype("float32")
        if kind in ("segmentation", "classification"):
            losses[name] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        elif kind == "binary":
            losses[name] = keras.losses.BinaryCrossentropy(from_logits=True)
        else:
            losses[name] = keras.losses.MeanAbsoluteError()
    return y, losses


# ---------------------------------------------------------------- outputs, training, saving


@pytest.mark.parametrize(
    "name, targets",
    [("mtl_resnet", SCENE), ("mtl_resnet", FACE), ("mtl_vgg", SCENE), ("mtl_vgg", FACE), ("mdl_resnet26", DOMAINS)],
)
def test_outputs_match_tasks_and_a_training_step_is_finite(name, targets):
    model = _build(name, targets)
    names = [t.name if isinstance(t, Task) else t[0] for t in targets]
    assert list(model.input) == ["image"] and model.inputs[0].name == "image"
    assert sorted(model.output_names) == sorted(names)
    for key in names:  # the layer that produces each output is named after the task
        assert model.get_layer(key).output is model.output[key]

    outputs = _predict(model, _image(3))
    assert {k: v.shape for k, v in outputs.items()} == _expected_shapes(targets, 3, 32, 32)

    y, losses = _targets_and_losses(targets, 2, 32, 32)
    model.compile(optimizer="adam", loss=losses, run_eagerly=True)
    loss = model.train_on_batch({"image": _image(2)}, y, return_dict=True)["loss"]
    assert np.isfinite(loss) and loss > 0


@pytest.mark.slow
def test_compiled_fit_step_on_a_dataset_of_dicts():
    """Graph-mode training (Keras' default compile) on ({"image": x}, targets) batches."""
    import tensorflow as tf

    model = _build("mtl_resnet", FACE, width=0.125, head_channels=8)
    y, losses = _targets_and_losses(FACE, 4, 32, 32)
    data = tf.data.Dataset.from_tensor_slices(({"image": _image(4)}, y)).batch(2)
    model.compile(optimizer="adam", loss=losses)
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("name", models.available())
def test_keras_file_round_trip_in_safe_mode(name, tmp_path):
    model = _build(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    before, after = _predict(model, _image(2)), _predict(loaded, _image(2))
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize("name", models.available())
def test_only_standard_keras_layers(name):
    model = _build(name)
    for op in model.operations:
        assert isinstance(op, keras.layers.Layer), op
        assert type(op).__module__.startswith("keras.src.layers."), type(op)
        assert type(op).__name__ in ALLOWED_LAYERS, type(op).__name__


# ---------------------------------------------------------------- architecture details


def _conv_dilations(model, prefix):
    return {l.dilation_rate for l in model.layers if l.name.startswith(prefix) and isinstance(l, keras.layers.Conv2D)}


def test_mtl_resnet_output_stride_and_dilation():
    model = _build("mtl_resnet", input_shape=(64, 64, 3))
    # stem /4, stage2 /8, stages 3 and 4 stay at /8 with dilation 2 and 4
    assert model.get_layer("stage1_block1_out").output.shape[1:3] == (16, 16)
    assert model.get_layer("stage4_block1_out").output.shape[1:3] == (8, 8)
    assert _conv_dilations(model, "stage3_block1_2") == {(2, 2)}
    assert _conv_dilations(model, "stage4_block1_2") == {(4, 4)}
    assert _conv_dilations(model, "seg_aspp_rate3") == {(3, 3)}
    up = model.get_layer("seg")
    assert isinstance(up, keras.layers.UpSampling2D) and up.size == (8, 8) and up.interpolation == "bilinear"

    strided = _build("mtl_resnet", input_shape=(64, 64, 3), dilate_last=False)
    assert strided.get_layer("stage4_block1_out").output.shape[1:3] == (2, 2)
    assert strided.get_layer("seg").size == (32, 32)


def test_mtl_resnet_bottleneck_and_deeper_stages():
    model = _build("mtl_resnet", block="bottleneck", stages=(1, 2, 1, 1), base_channels=8, width=1.0)
    # bottleneck stage 4 expands to 4 * 8 * 2**3 channels; stage 2 has two blocks
    assert model.get_layer("stage4_block1_out").output.shape[-1] == 256
    assert model.get_layer("stage2_block2_out").output.shape[-1] == 64
    assert _predict(model, _image(1))["seg"].shape == (1, 32, 32, 8)


def _vgg_param_count(base, width, head, rates, tasks, cin=3):
    """VGG-16 encoder (conv + bias) and ASPP heads without BN, counted by hand."""
    total = 0
    for convs, multiple in ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8)):
        c = scaled(base * multiple, width)
        for _ in range(convs):
            total, cin = total + 9 * cin * c + c, c
    h = scaled(head, width)
    branches = (cin * h + h) + len(rates) * (9 * cin * h + h) + (cin * h + h)  # 1x1, rates, pooling
    for t in tasks:
        total += branches + (len(rates) + 2) * h * h + h + h * t.output_channels + t.output_channels
    return total


def _resnet26_param_count(base, width, domains):
    """ResNet-26 with BN (4 numbers per channel) and projection shortcuts, counted by hand."""
    cin = scaled(base, width)
    total = 27 * cin + 4 * cin
    for s in (1, 2, 3):
        c = scaled(base * 2**s, width)
        total += (9 * cin * c + 4 * c) + (9 * c * c + 4 * c) + (cin * c + 4 * c)  # block 1 with shortcut
        total += 3 * 2 * (9 * c * c + 4 * c)
        cin = c
    return total + sum(cin * n + n for _, n in domains)


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_parameter_counts_follow_the_width(width):
    vgg = models.mtl_vgg(SCENE, input_shape=(32, 32, 3), width=width)
    assert vgg.count_params() == _vgg_param_count(16, width, 32, (1, 2, 4, 6), SCENE)
    mdl = models.mdl_resnet26(DOMAINS, input_shape=(32, 32, 3), width=width)
    assert mdl.count_params() == _resnet26_param_count(16, width, DOMAINS)


def test_width_scales_resnet_roughly_quadratically_and_never_below_one_channel():
    half = _build("mtl_resnet", width=0.5).count_params()
    full = _build("mtl_resnet", width=1.0).count_params()
    assert 3.0 < full / half < 4.2
    tiny = _build("mtl_resnet", width=0.001)
    for layer in tiny.layers:
        if isinstance(layer, keras.layers.Conv2D) and not layer.name.endswith("_logits"):
            assert layer.filters == 1, layer.name
    assert tiny.get_layer("seg_logits").filters == 8


def test_layer_counts_of_the_named_architectures():
    vgg = _build("mtl_vgg")
    encoder = [l for l in vgg.layers if isinstance(l, keras.layers.Conv2D) and l.name.startswith("block")]
    assert len(encoder) == 13
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in vgg.layers)
    assert vgg.get_layer("block5_3_conv").output.shape[1:3] == (4, 4)  # output stride 8

    mdl = _build("mdl_resnet26")
    main_path = [l for l in mdl.layers if isinstance(l, keras.layers.Conv2D) and "shortcut" not in l.name]
    assert len(main_path) == 25  # stem + 24 block convs; + 1 classifier = 26 layers
    assert mdl.get_layer("stage3_block4_out").output.shape[1:3] == (4, 4)


def test_mdl_resnet26_is_flat_and_shares_the_backbone():
    backbone = models.resnet26_backbone(input_shape=(32, 32, 3), width=0.25)
    assert backbone.output.shape == (None, 4, 4, 32)
    mdl = _build("mdl_resnet26", [Task("cars", "classification", 7), ("birds", 3)])
    assert not any(isinstance(l, keras.Model) for l in mdl.layers)
    assert mdl.get_layer("cars").units == 7 and mdl.get_layer("birds").units == 3


# ---------------------------------------------------------------- input sizes


@pytest.mark.parametrize("name", ["mtl_resnet", "mtl_vgg"])
@pytest.mark.parametrize("size, layer", [((24, 40), "UpSampling2D"), ((36, 28), "Resizing")])
def test_dense_models_on_other_input_sizes(name, size, layer):
    targets = [Task("seg", "segmentation", 5), Task("attrs", "binary", 2)]
    model = _build(name, targets, input_shape=(*size, 3))
    assert type(model.get_layer("seg")).__name__ == layer
    out = _predict(model, _image(2, *size))
    assert out["seg"].shape == (2, *size, 5) and out["attrs"].shape == (2, 2)


def test_mdl_resnet26_accepts_any_input_size():
    model = _build("mdl_resnet26", input_shape=(None, None, 3))
    for size in ((32, 32), (40, 24)):
        assert _predict(model, _image(2, *size))["letters"].shape == (2, 26)


# ---------------------------------------------------------------- registry and bad arguments


def test_registry():
    assert models.available() == ("mtl_resnet", "mtl_vgg", "mdl_resnet26")
    assert models.build("mtl_vgg", SCENE, **TINY, name="v").name == "v"
    with pytest.raises(ValueError, match="mtl_resnet.*mtl_vgg.*mdl_resnet26"):
        models.build("resnet50", SCENE)


def _tampered(**fields) -> Task:
    """A Task whose fields were changed after its own validation ran."""
    task = Task("x", "segmentation", 4)
    for key, value in fields.items():
        object.__setattr__(task, key, value)
    return task


def test_tasks_may_be_one_task_or_a_mapping():
    single = models.mtl_resnet(SCENE[0], **TINY)
    assert single.output_names == ["seg"]
    mapping = models.mtl_vgg({t.name: t for t in FACE}, **TINY)
    assert sorted(mapping.output_names) == ["attrs", "kind", "parts"]


@pytest.mark.parametrize("name", ["mtl_resnet", "mtl_vgg"])
@pytest.mark.parametrize(
    "tasks, kwargs, match",
    [
        ([], {}, "tasks"),
        (None, {}, "tasks"),
        (["seg"], {}, "Task"),
        ([_tampered(kind="keypoints")], {}, "unknown kind"),
        ([_tampered(output_channels=0)], {}, "output_channels"),
        ([SCENE[0], SCENE[0]], {}, "duplicate"),
        (SCENE, {"width": 0}, "width"),
        (SCENE, {"width": -1.0}, "width"),
        (SCENE, {"input_shape": (None, None, 3)}, "input_shape"),
        (SCENE, {"input_shape": (32, 32)}, "input_shape"),
        (SCENE, {"aspp_rates": (2, 2)}, "aspp_rates"),
        (SCENE, {"dropout": 1.0}, "dropout"),
    ],
)
def test_multi_task_models_reject_bad_arguments(name, tasks, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build(name, tasks, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"block": "wide"}, "block"), ({"stages": ()}, "stages"), ({"stages": (1, 0)}, "stages")],
)
def test_mtl_resnet_rejects_bad_structure(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.mtl_resnet(SCENE, **kwargs)


@pytest.mark.parametrize(
    "domains, kwargs, match",
    [
        ([], {}, "domains"),
        ([("a", 3, 1)], {}, "pair"),
        ([("a", 0)], {}, "num_classes"),
        ([("a", 2), ("a", 3)], {}, "unique"),
        (DOMAINS, {"width": 0.0}, "width"),
        (DOMAINS, {"input_shape": (32, 32, None)}, "input_shape"),
    ],
)
def test_mdl_resnet26_rejects_bad_arguments(domains, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.mdl_resnet26(domains, **kwargs)


# ---------------------------------------------------------------- example


@pytest.mark.slow  # ~13 s
def test_build_models_example_runs_fast():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "build_models.py"), "--fast"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in models.available():
        assert f"{name}:" in result.stdout
    assert "(4, 32, 32, 8)" in result.stdout and "(4, 26)" in result.stdout
