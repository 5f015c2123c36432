"""tfmot_mtl.lite: Keras -> .tflite conversion, LiteRT runtime, parity, benchmark, bundle."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl import lite
from tfmot_mtl.tasks import Task

SIZE = 16
TASKS = [Task("seg", "segmentation", 4), Task("cls", "classification", 3, class_names=("a", "b", "c"))]
# int8 outputs may differ from float by this share of the task's largest |output| (observed ~0.02).
INT8_REL_TOL = 0.08
REL_TOL = {None: 1e-4, "float16": 5e-3, "dynamic": 5e-2, "int8": INT8_REL_TOL}


def tiny_multitask_model(size=SIZE, domains=0, seed=0):
    """Conv trunk -> per-pixel "seg" head (4 classes) and pooled "cls" head (3 classes).

    The third conv has 2304 weights, enough for dynamic-range quantization (it skips tensors
    under 1024 elements). With `domains` > 0 an int32 "domain" input adds a learned bias.
    """
    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3), name="image")
    inputs = {"image": image}
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    if domains:
        inputs["domain"] = keras.Input((), dtype="int32", name="domain")
        bias = keras.layers.Embedding(domains, 16, embeddings_initializer="random_normal")(inputs["domain"])
        x = keras.layers.Add()([x, keras.layers.Reshape((1, 1, 16))(bias)])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    seg = keras.layers.Conv2D(4, 1, name="seg")(x)
    cls = keras.layers.Dense(3, name="cls")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, {"seg": seg, "cls": cls})


def make_dataset(n=12, batch=4, size=SIZE, domains=0, targets=True, seed=1):
    rng = np.random.default_rng(seed)
    x = {"image": rng.random((n, size, size, 3), dtype=np.float32)}
    if domains:
        x["domain"] = (np.arange(n) % domains).astype(np.int32)
    y = {"seg": rng.integers(0, 4, (n, size, size)).astype(np.int32), "cls": rng.integers(0, 3, n).astype(np.int32)}
    return tf.data.Dataset.from_tensor_slices((x, y) if targets else x).batch(batch)


def keras_outputs(model, inputs):
    outputs = model(lite.structure_inputs(model, inputs), training=False)
    return {k: np.asarray(v) for k, v in lite.named_outputs(model, outputs).items()}


def assert_close(expected, actual, rel_tol):
    assert set(expected) == set(actual)
    for name, ref in expected.items():
        assert actual[name].shape == ref.shape, name
        assert actual[name].dtype == np.float32, name
        err = np.abs(actual[name] - ref).max() / np.abs(ref).max()
        assert err <= rel_tol, (name, err)


@pytest.fixture(scope="module")
def model():
    return tiny_multitask_model()


@pytest.fixture(scope="module")
def converted(model):
    data = make_dataset()
    return {q: lite.convert(model, q, representative_data=data, num_calibration_steps=3, verbose=False)
            for q in (None, "float16", "dynamic", "int8")}


@pytest.mark.parametrize("quantization", [None, "float16", "dynamic", "int8"])
@pytest.mark.parametrize("num_threads", [1, 4])
def test_convert_and_run_batches(model, converted, quantization, num_threads):
    lm = lite.LiteModel(converted[quantization], num_threads=num_threads)
    assert lm.quantization == quantization
    assert sorted(lm.output_names) == ["cls", "seg"] and lm.input_names == ["image"]
    for batch in (1, 3, 1):  # growing then shrinking the batch re-sizes the input tensors
        x = np.random.default_rng(batch).random((batch, SIZE, SIZE, 3), dtype=np.float32)
        out = lm.predict({"image": x})
        assert out["seg"].shape == (batch, SIZE, SIZE, 4) and out["cls"].shape == (batch, 3)
        assert_close(keras_outputs(model, {"image": x}), out, REL_TOL[quantization])
    # a bare array works for a one-input model, and chunked prediction equals one call
    x = np.random.default_rng(7).random((5, SIZE, SIZE, 3), dtype=np.float32)
    whole, chunked = lm.predict(x), lm.predict({"image": x}, batch_size=2)
    for name in whole:
        np.testing.assert_allclose(whole[name], chunked[name], atol=1e-6)


def test_quantized_tensors_and_sizes(converted):
    float_lm, int8_lm = lite.LiteModel(converted[None]), lite.LiteModel(converted["int8"])
    assert float_lm.input_details["image"]["dtype"] == np.float32
    assert int8_lm.input_details["image"]["dtype"] == np.int8
    assert all(d["dtype"] == np.int8 for d in int8_lm.output_details.values())
    scale = int8_lm.input_details["image"]["quantization_parameters"]["scales"][0]
    assert scale == pytest.approx(1 / 255, rel=0.02)  # calibrated on images in [0, 1]
    sizes = {q: len(b) for q, b in converted.items()}
    assert sizes["int8"] < sizes[None] and sizes["dynamic"] < sizes[None] and sizes["float16"] < sizes[None]
    assert lite.LiteModel(converted["dynamic"]).input_details["image"]["dtype"] == np.float32


def test_quantize_dequantize_hand_values():
    details = {"dtype": np.int8, "quantization_parameters": {
        "scales": np.array([0.5], np.float32), "zero_points": np.array([-3]), "quantized_dimension": 0}}
    q = lite.quantize(np.array([0.0, 1.0, 1.26, 1000.0, -1000.0]), details)
    np.testing.assert_array_equal(q, np.array([-3, -1, -0, 127, -128], np.int8))
    np.testing.assert_allclose(lite.dequantize(q, details), [0.0, 1.0, 1.5, 65.0, -62.5])


def test_float_parity_and_int8_task_metrics(model, converted):
    data = make_dataset()
    report = lite.parity(model, converted[None], data)
    assert report["num_examples"] == 12 and report["quantization"] == "float32"
    assert set(report["errors"]) == {"seg", "cls"} and "metrics" not in report
    assert report["max_rel_error"] <= 1e-4

    int8 = lite.LiteModel(converted["int8"])
    report = lite.parity(model, int8, data, tasks=TASKS, max_batches=2)
    assert report["num_examples"] == 8 and report["quantization"] == "int8"
    assert 0 < report["errors"]["seg"]["max_rel_error"] <= INT8_REL_TOL
    # the side-by-side metrics equal the task accumulators run by hand on each model's outputs
    for task in TASKS:
        by_hand = {"keras": task.accumulator(), "tflite": task.accumulator()}
        for x, y in data.take(2).as_numpy_iterator():
            by_hand["keras"].update_state(y[task.name], keras_outputs(model, x)[task.name])
            by_hand["tflite"].update_state(y[task.name], int8.predict(x)[task.name])
        for side in ("keras", "tflite"):
            assert report["metrics"][task.name][side] == pytest.approx(by_hand[side].result(), nan_ok=True)
    keras_acc = report["metrics"]["seg"]["keras"]["pixel_acc"]
    assert abs(report["metrics"]["seg"]["tflite"]["pixel_acc"] - keras_acc) < 10  # percentage points


def test_parity_needs_targets_for_tasks(model, converted):
    with pytest.raises(ValueError, match="targets"):
        lite.parity(model, converted[None], make_dataset(targets=False), tasks=TASKS)
    with pytest.raises(ValueError, match="not outputs"):
        lite.parity(model, converted[None], make_dataset(), tasks=[Task("depth", "depth", 1)])


@pytest.mark.heavy
def test_fixed_batch_size_fuses_dilated_convs_and_runs_any_batch():
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(image)
    m = keras.Model(image, {"seg": keras.layers.Conv2D(4, 1, name="seg")(x),
                            "cls": keras.layers.Dense(3, name="cls")(keras.layers.GlobalAveragePooling2D()(x))})
    dynamic = lite.LiteModel(lite.convert(m, verbose=False))
    assert dynamic.fixed_batch_size is None and "SPACE_TO_BATCH_ND" in dynamic.describe()["op_counts"]
    x = np.random.default_rng(0).random((3, SIZE, SIZE, 3), dtype=np.float32)
    data = tf.data.Dataset.from_tensor_slices(x).batch(3)
    for quantization, tol in ((None, 1e-4), ("int8", INT8_REL_TOL)):
        fixed = lite.LiteModel(lite.convert(m, quantization, representative_data=data, batch_size=1, verbose=False))
        info = fixed.describe()
        assert fixed.fixed_batch_size == 1 and info["inputs"]["image"]["shape"] == [1, SIZE, SIZE, 3]
        assert "SPACE_TO_BATCH_ND" not in info["op_counts"] and info["op_counts"]["CONV_2D"] == 2
        assert_close(keras_outputs(m, {"image": x}), fixed.predict(x), tol)  # 3 examples, one at a time
        assert lite.benchmark(fixed, runs=2, batch_size=4, verbose=False)["batch_size"] == 1
    two = lite.LiteModel(lite.convert(m, batch_size=2, verbose=False))
    assert_close(keras_outputs(m, {"image": x}), two.predict(x), 1e-4)  # chunks of 2, the last one padded
    with pytest.raises(ValueError, match="batch_size"):
        lite.convert(m, batch_size=0)


def test_a_graph_the_converter_cannot_lower_at_a_dynamic_batch_converts_at_batch_one():
    """TensorFlow's converter leaves the convolution after two UpSampling2D in a row as a TF op
    when the batch is dynamic (a U-Net decoder); convert says so and fixes the batch at 1."""
    image = keras.Input((SIZE, SIZE + 4, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same")(image)
    x = keras.layers.UpSampling2D(2)(keras.layers.UpSampling2D(2)(x))
    m = keras.Model(image, {"seg": keras.layers.Conv2D(4, 3, padding="same", name="seg")(x)})
    with pytest.warns(UserWarning, match=r"Conv2D.*converted with batch_size=1"):
        fixed = lite.LiteModel(lite.convert(m, verbose=False))
    assert fixed.fixed_batch_size == 1
    x = np.random.default_rng(0).random((2, SIZE, SIZE + 4, 3), dtype=np.float32)
    assert_close(keras_outputs(m, {"image": x}), fixed.predict(x), 1e-4)


def test_outputs_keyed_by_name_not_order():
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    zeta = keras.layers.Conv2D(5, 1, name="zeta")(x)  # created first, sorts last
    alpha = keras.layers.Dense(2, name="alpha")(keras.layers.GlobalAveragePooling2D()(x))
    mid = keras.layers.Dense(7, name="mid")(keras.layers.Flatten()(x))
    dict_model = keras.Model(image, {"zeta": zeta, "alpha": alpha, "mid": mid})
    list_model = keras.Model(image, [zeta, mid, alpha])  # list outputs are named by output layer
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    for m in (dict_model, list_model):
        lm = lite.LiteModel(lite.convert(m, verbose=False))
        out = lm.predict(x)
        assert {k: v.shape for k, v in out.items()} == {"zeta": (2, 8, 8, 5), "alpha": (2, 2), "mid": (2, 7)}
        assert_close(keras_outputs(m, {"image": x}), out, 1e-4)


def test_two_named_inputs_float_and_int8():
    m = tiny_multitask_model(domains=2)
    data = make_dataset(domains=2)
    x = {"image": np.random.default_rng(3).random((3, SIZE, SIZE, 3), dtype=np.float32),
         "domain": np.array([0, 1, 1], np.int32)}
    for quantization, tol in ((None, 1e-4), ("int8", INT8_REL_TOL)):
        lm = lite.LiteModel(lite.convert(m, quantization, representative_data=data, verbose=False))
        assert sorted(lm.input_names) == ["domain", "image"]
        assert lm.input_details["domain"]["dtype"] == np.int32
        out = lm.predict(x)
        assert_close(keras_outputs(m, x), out, tol)
    # the domain input matters: same images, other domain, other outputs
    other = lm.predict({**x, "domain": np.array([1, 0, 0], np.int32)})
    assert not np.allclose(other["cls"], out["cls"])
    with pytest.raises(ValueError, match="dict"):
        lm.predict(x["image"])
    with pytest.raises(ValueError, match="int16x8"):
        lite.convert(m, "int16x8", representative_data=data)


def test_int16x8_and_representative_data_forms(model, capsys):
    images = np.random.default_rng(0).random((6, SIZE, SIZE, 3), dtype=np.float32)
    x = images[:2]
    forms = {
        "int16x8": tf.data.Dataset.from_tensor_slices(images).batch(2),  # bare inputs
        "int8": [({"image": images[i:i + 2]}, None) for i in range(0, 6, 2)],  # iterable of (x, y)
    }
    for quantization, data in forms.items():
        lm = lite.LiteModel(lite.convert(model, quantization, representative_data=data, num_calibration_steps=2))
        assert lm.quantization == quantization
        assert_close(keras_outputs(model, {"image": x}), lm.predict(x), INT8_REL_TOL)
    assert "calibrating: 2/2" in capsys.readouterr().out


@pytest.mark.parametrize("quantization", ["int8", "int16x8"])
def test_calibrated_quantization_needs_data(model, quantization):
    with pytest.raises(ValueError, match="representative_data"):
        lite.convert(model, quantization)


def test_bad_arguments(model, converted, tmp_path):
    with pytest.raises(ValueError, match="'dynamic'.*'int8'"):
        lite.convert(model, "int4")
    with pytest.raises(ValueError, match="no batches"):
        lite.convert(model, "int8", representative_data=[], verbose=False)
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a model\n" * 10)
    for bad in (b"", b"\x00" * 64, str(text), b"1234TFL3" + b"\xff" * 40):
        with pytest.raises(ValueError, match="TFLite|LiteRT"):
            lite.LiteModel(bad)
    with pytest.raises(ValueError, match="num_threads"):
        lite.LiteModel(converted[None], num_threads=0)


def test_predict_checks_inputs(converted):
    lm = lite.LiteModel(converted[None])
    with pytest.raises(ValueError, match="missing"):
        lm.predict({"img": np.zeros((1, SIZE, SIZE, 3), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        lm.predict(np.zeros((1, SIZE + 1, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        lm.predict(np.zeros((0, SIZE, SIZE, 3), np.float32))


def test_describe_lists_ops(converted, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(converted[None])
    info = lite.LiteModel(path).describe()  # from a file path this time
    assert info["op_counts"]["CONV_2D"] == 4  # three trunk convs + the 1x1 seg head
    assert info["op_counts"]["FULLY_CONNECTED"] == 1
    assert info["op_counts"].get("MEAN", 0) + info["op_counts"].get("AVERAGE_POOL_2D", 0) == 1
    assert all(op["version"] >= 1 and op["count"] >= 1 for op in info["ops"])
    assert sum(op["count"] for op in info["ops"]) == info["num_operators"]
    assert info["num_tensors"] > info["num_operators"] and info["size_bytes"] == len(converted[None])
    assert info["min_runtime_version"].count(".") == 2 and info["quantization"] == "float32"
    assert info["inputs"]["image"]["shape"] == [-1, SIZE, SIZE, 3]
    int8 = lite.LiteModel(converted["int8"]).describe()
    assert int8["inputs"]["image"] == {"shape": [-1, SIZE, SIZE, 3], "dtype": "int8", "quantized": True}
    assert {op["name"]: op["version"] for op in int8["ops"]}["CONV_2D"] >= 3  # int8 kernels are newer versions


def test_runtime_compat(converted):
    report = lite.runtime_compat(converted["int8"])
    assert report["compatible"] is True and report["custom_ops"] == []
    assert report["tflite_runtime"]["installed"] is False  # not installed here: skipped, not failed
    assert lite.runtime_compat(converted["int8"], target_version="1.0.0")["compatible"] is False


def test_benchmark_reports(converted, capsys):
    for num_threads in (1, 2):
        result = lite.benchmark(converted["int8"], runs=7, warmup=1, num_threads=num_threads, batch_size=2)
        assert result["num_threads"] == num_threads and result["batch_size"] == 2 and result["runs"] == 7
        assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
        assert result["mean_ms"] > 0 and result["size_bytes"] == len(converted["int8"])
        assert result["peak_rss_bytes"] > 10 * 2**20 and result["quantization"] == "int8"
    assert "benchmark (2 thread(s)): 7/7" in capsys.readouterr().out
    lm = lite.LiteModel(converted[None], num_threads=2)
    assert lite.benchmark(lm, runs=2, num_threads=None, verbose=False)["num_threads"] == 2
    with pytest.raises(ValueError, match="runs"):
        lite.benchmark(lm, runs=0)


def test_save_bundle(model, converted, tmp_path):
    folder = tmp_path / "bundle"
    written = lite.save_bundle(model, converted["int8"], folder, tasks=TASKS)
    assert sorted(os.listdir(folder)) == ["model.json", "model.tflite"]  # no temp files left behind
    assert (folder / "model.tflite").read_bytes() == converted["int8"]
    description = json.loads((folder / "model.json").read_text())
    assert description == written
    assert description["quantization"] == "int8" and description["tflite_size_bytes"] == len(converted["int8"])
    (image,) = description["inputs"]
    assert image["name"] == "image" and image["shape"] == [-1, SIZE, SIZE, 3] and image["dtype"] == "int8"
    assert image["normalisation"] == "float32 RGB in [0, 1]" and image["quantization"]["zero_point"] == -128
    outputs = {o["name"]: o for o in description["outputs"]}
    assert set(outputs) == {"seg", "cls"}
    assert outputs["seg"]["shape"] == [-1, SIZE, SIZE, 4] and "per-pixel class logits" in outputs["seg"]["meaning"]
    assert outputs["cls"]["class_names"] == ["a", "b", "c"] and outputs["cls"]["task_kind"] == "classification"
    lm, again = lite.load_bundle(folder)
    assert again == description and lm.size_bytes == len(converted["int8"])
    # rewriting replaces the files; a float bundle of a two-input model describes the int domain input
    two = tiny_multitask_model(domains=3)
    description = lite.save_bundle(two, lite.convert(two, verbose=False), folder)
    domain = {i["name"]: i for i in description["inputs"]}["domain"]
    assert domain["dtype"] == "int32" and "domain index" in domain["normalisation"]
    assert json.loads((folder / "model.json").read_text())["quantization"] == "float32"
    other = keras.Model(model.inputs, {"x": model.get_layer("seg").output})
    with pytest.raises(ValueError, match="converted from this model"):
        lite.save_bundle(other, converted[None], folder)
    with pytest.raises(ValueError, match="not outputs"):
        lite.save_bundle(model, converted[None], folder, tasks=[Task("depth", "depth", 1)])


@pytest.mark.slow  # ~17 s; the tests above cover the example's calls
def test_example_runs_fast(tmp_path):
    script = Path(__file__).resolve().parents[1] / "examples" / "convert_to_tflite.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(script), "--fast", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for word in ("float32", "float16", "int8", "median", "max_rel_error"):
        assert word in result.stdout
    assert (tmp_path / "int8" / "model.json").exists()


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_compiled_model_api_matches_the_interpreter(converted, quantization):
    interpreter = lite.LiteModel(converted[quantization])
    compiled = lite.LiteModel(converted[quantization], api="compiled")
    assert compiled.api == "compiled" and "api='compiled'" in repr(compiled)
    for batch in (2, 5, 1):  # the compiled model's input tensors are re-sized for each batch
        x = np.random.default_rng(batch).random((batch, SIZE, SIZE, 3), dtype=np.float32)
        feed = interpreter.feed(x)
        raw_i, raw_c = interpreter.run_raw(feed), compiled.run_raw(feed)
        for name in raw_i:
            assert raw_c[name].dtype == raw_i[name].dtype and raw_c[name].shape == raw_i[name].shape
            np.testing.assert_array_equal(raw_c[name], raw_i[name])
        out = compiled.predict(x)
        assert out["seg"].shape == (batch, SIZE, SIZE, 4) and out["seg"].dtype == np.float32
    timed = lite.benchmark(compiled, runs=3, warmup=1, verbose=False)
    assert timed["api"] == "compiled" and timed["median_ms"] > 0
    assert lite.benchmark(converted[None], runs=2, api="compiled", verbose=False)["api"] == "compiled"


def test_accelerator_choices_and_errors(converted):
    with pytest.raises(ValueError, match="api must be one of"):
        lite.LiteModel(converted[None], api="delegate")
    with pytest.raises(ValueError, match="accelerator must be one of"):
        lite.LiteModel(converted[None], api="compiled", accelerator="tpu")
    with pytest.raises(ValueError, match="needs api='compiled'"):
        lite.LiteModel(converted[None], accelerator="gpu")
    # this CI machine has no GPU / NPU: one clear error, never a silent CPU run
    for accelerator in ("gpu", "npu"):
        try:
            lm = lite.LiteModel(converted[None], api="compiled", accelerator=accelerator)
        except ValueError as err:
            assert f"on the {accelerator.upper()}" in str(err) and "accelerator='cpu'" in str(err)
        else:  # a machine with the device: the whole model runs on it
            assert lm._compiled.is_fully_accelerated()


X86_CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd aes asimddp i8mm\nCPU part\t: 0xd0b\n"


def test_cpu_features_read_the_simd_flags_litert_uses():
    x86 = lite.cpu_features(X86_CPUINFO, "x86_64")
    assert x86 == {"arch": "x86_64", "model": "Some CPU", "features": ["avx2", "fma", "avx512f", "avx512_vnni"],
                   "int8_dot": True}
    avx2 = lite.cpu_features("flags : avx2 fma\n", "x86_64")
    assert avx2["features"] == ["avx2", "fma"] and not avx2["int8_dot"]
    arm = lite.cpu_features(ARM_CPUINFO, "aarch64")
    assert arm["arch"] == "arm64" and arm["features"] == ["asimd", "asimddp", "i8mm"] and arm["int8_dot"]
    assert lite.cpu_features("", "aarch64")["features"] == []
    here = lite.cpu_features()
    assert isinstance(here["features"], list) and isinstance(here["int8_dot"], bool)


def test_recommendation_says_when_int8_is_slower():
    avx2 = lite.cpu_features("flags : avx2 fma\n", "x86_64")
    slow = lite.recommend_quantization(0.52, 0.71, avx2)
    assert slow.startswith("int8 is 1.37x slower than float32 on this CPU (x86_64 with avx2, fma)")
    assert "no int8 dot-product instructions" in slow and "ship float32" in slow
    fast = lite.recommend_quantization(1.0, 0.5, lite.cpu_features(ARM_CPUINFO, "aarch64"))
    assert fast.startswith("int8 is 2.00x faster") and "ship int8" in fast


def test_cli_bench_times_both_apis_and_recommends(converted, tmp_path, capsys):
    from tfmot_mtl.app import cli

    paths = []
    for q in (None, "int8"):
        path = tmp_path / f"{q or 'float32'}.tflite"
        path.write_bytes(converted[q])
        paths.append(str(path))
    assert cli.main(["bench", *paths, "--api", "both", "--runs", "2", "--warmup", "0",
                     "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "than float32 on this CPU" in out
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [(r["api"], r["quantization"]) for r in rows] == [
        ("interpreter", "float32"), ("compiled", "float32"), ("interpreter", "int8"), ("compiled", "int8")]
    with pytest.raises(SystemExit, match="^error: no .tflite file at"):
        cli.main(["bench", str(tmp_path / "missing.tflite")])


@pytest.mark.slow  # ~15 s
def test_keras_export_is_the_same_float_model(model, converted):
    theirs = lite.convert(model, via="keras")
    ours, keras_file = lite.LiteModel(converted[None]), lite.LiteModel(theirs)
    assert keras_file.describe()["op_counts"] == ours.describe()["op_counts"]
    assert sorted(keras_file.output_names) == sorted(ours.output_names) and keras_file.input_names == ["image"]
    x = np.random.default_rng(3).random((3, SIZE, SIZE, 3), dtype=np.float32)
    a, b = ours.predict(x), keras_file.predict(x)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-6)
    with pytest.raises(ValueError, match="float32 models with a dynamic batch only"):
        lite.convert(model, "int8", representative_data=make_dataset(), via="keras")
    with pytest.raises(ValueError, match="via must be one of"):
        lite.convert(model, via="tflite_converter")


@pytest.mark.slow  # ~10-20 s; the demo test converts through convert_all by default
def test_convert_all_exports_once_and_matches_convert(model, converted):
    files = lite.convert_all(model, ["float32", "int8"], representative_data=make_dataset(), num_calibration_steps=3,
                             verbose=False)
    assert list(files) == ["float32", "int8"]
    x = np.random.default_rng(4).random((2, SIZE, SIZE, 3), dtype=np.float32)
    for label, key in (("float32", None), ("int8", "int8")):
        got, ref = lite.LiteModel(files[label]), lite.LiteModel(converted[key])
        assert got.quantization == key
        a, b = got.predict(x), ref.predict(x)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    with pytest.raises(ValueError, match="representative_data"):
        lite.convert_all(model, [None, "int8"])
    with pytest.raises(ValueError, match="quantization must be one of"):
        lite.convert_all(model, ["int4"])


@pytest.mark.slow  # ~15 s
def test_int8_with_float_outputs_keeps_a_heads_tail_in_float(model, converted):
    from tfmot_mtl.lite.convert import float_tail

    data = make_dataset()
    seg_output = lite.LiteModel(converted[None]).output_details["seg"]["name"]
    assert float_tail(converted[None], {"seg": 1}) == [seg_output]  # the head's last conv writes the output
    assert len(float_tail(converted[None], {"cls": 2})) == 2  # the dense layer and the pooling before it
    mixed = lite.LiteModel(lite.convert(model, "int8", representative_data=data, num_calibration_steps=3,
                                        verbose=False, float_outputs={"seg": 1}))
    assert mixed.quantization == "int8-mixed"
    assert mixed.input_details["image"]["dtype"] == np.float32
    assert mixed.describe()["op_counts"].get("DEQUANTIZE", 0) >= 1
    full = lite.parity(model, lite.LiteModel(converted["int8"]), data)["errors"]
    kept = lite.parity(model, mixed, data)["errors"]
    assert kept["seg"]["max_rel_error"] <= full["seg"]["max_rel_error"] + 1e-6
    assert kept["cls"]["max_rel_error"] < INT8_REL_TOL
    with pytest.raises(ValueError, match="not outputs of the model"):
        lite.convert(model, "int8", representative_data=data, float_outputs={"depth": 1})
    with pytest.raises(ValueError, match="positive number of operations"):
        lite.convert(model, "int8", representative_data=data, float_outputs={"seg": 0})
    with pytest.raises(ValueError, match="keeps parts of an int8 model"):
        lite.convert(model, "dynamic", float_outputs={"seg": 1})
