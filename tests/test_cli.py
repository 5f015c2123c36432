"""`tfmot-mtl` convert / bench / strip, run in-process through `tfmot_mtl.app.cli.main`."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import model_zoo as zoo
from tfmot_mtl import models
from tfmot_mtl.app.cli import main
from tfmot_mtl.datasets import synthetic_scenes
from tfmot_mtl.graph import ChannelGraph

SIZE = 32


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = models.build("mtl_resnet", synthetic_scenes.tasks(), input_shape=(SIZE, SIZE, 3), width=0.125)
    path = tmp_path_factory.mktemp("cli") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def bundle(model_path):
    folder = model_path.parent / "bundle_int8"
    assert main(["convert", str(model_path), "--quantization", "int8", "--data", "synthetic_scenes",
                 "--calibration", "4", "--output", str(folder)]) == 0
    return folder


def test_convert_int8_writes_a_described_bundle(bundle):
    assert sorted(os.listdir(bundle)) == ["model.json", "model.tflite"]
    desc = json.loads((bundle / "model.json").read_text())
    assert desc["quantization"] == "int8"
    assert desc["tflite_size_bytes"] == os.path.getsize(bundle / "model.tflite")
    (image,) = desc["inputs"]
    assert image["name"] == "image" and image["shape"] == [-1, SIZE, SIZE, 3]
    assert image["dtype"] == "int8" and image["real_dtype"] == "float32"
    assert image["quantization"]["scale"] > 0 and "[0, 1]" in image["normalisation"]
    outputs = {o["name"]: o for o in desc["outputs"]}
    assert set(outputs) == {"segmentation", "depth", "normals"}
    assert outputs["segmentation"]["shape"] == [-1, SIZE, SIZE, 8]
    assert outputs["segmentation"]["class_names"] == list(synthetic_scenes.CLASS_NAMES)
    assert outputs["depth"]["shape"] == [-1, SIZE, SIZE, 1] and outputs["normals"]["shape"] == [-1, SIZE, SIZE, 3]
    for name, kind in (("segmentation", "segmentation"), ("depth", "depth"), ("normals", "normals")):
        assert outputs[name]["task_kind"] == kind and outputs[name]["meaning"]
        assert outputs[name]["dtype"] == "int8" and outputs[name]["quantization"]["scale"] > 0


@pytest.mark.slow  # ~18 s; test_convert_int8_writes_a_described_bundle converts through the same command
def test_convert_float_default_folder(model_path):
    assert main(["convert", str(model_path)]) == 0
    folder = model_path.parent / "tiny_float32"
    desc = json.loads((folder / "model.json").read_text())
    assert desc["quantization"] == "float32"
    assert {o["name"] for o in desc["outputs"]} == {"segmentation", "depth", "normals"}
    assert all(o["quantization"] is None and o["dtype"] == "float32" for o in desc["outputs"])


def test_bench_prints_table_and_writes_json(bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle), "--runs", "5", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LiteRT benchmark" in printed and "median_ms" in printed
    result = json.loads(out.read_text())
    assert result["runs"] == 5 and result["num_threads"] == 1 and result["quantization"] == "int8"
    assert 0 < result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["size_bytes"] == os.path.getsize(bundle / "model.tflite")


def test_strip_with_masks_writes_smaller_model(model_path, tmp_path):
    model = keras.saving.load_model(model_path, safe_mode=True)
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.5, seed=2)
    masks_path = tmp_path / "masks.json"
    masks.save(masks_path)
    out = tmp_path / "small.keras"
    assert main(["strip", str(model_path), "--masks", str(masks_path), "--output", str(out)]) == 0
    small = keras.saving.load_model(out, safe_mode=True)
    report = json.loads((tmp_path / "small_report.json").read_text())
    assert report["totals"]["params_after"] == small.count_params() < 0.6 * model.count_params()
    assert report["totals"]["params_before"] == model.count_params()
    x = {"image": np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)}
    y = small(x, training=False)
    assert {k: tuple(v.shape) for k, v in y.items()} == {
        "segmentation": (2, SIZE, SIZE, 8), "depth": (2, SIZE, SIZE, 1), "normals": (2, SIZE, SIZE, 3)}


def test_strip_round_to_nearest_keeps_multiples(model_path, tmp_path):
    model = keras.saving.load_model(model_path, safe_mode=True)
    masks = zoo.random_masks(ChannelGraph.from_model(model), 0.7, seed=3)
    masks.save(tmp_path / "masks.json")
    counts = {}
    for mode in ("up", "nearest"):
        out = tmp_path / f"{mode}.keras"
        assert main(["strip", str(model_path), "--masks", str(tmp_path / "masks.json"), "--round-to", "4",
                     "--round-mode", mode, "--output", str(out)]) == 0
        groups = json.loads((tmp_path / f"{mode}_report.json").read_text())["groups"]
        assert all(g["kept"] % 4 == 0 or g["kept"] == g["size"] for g in groups.values()), groups
        counts[mode] = sum(g["kept"] for g in groups.values())
    assert counts["nearest"] < counts["up"]  # nearest also rounds down: closer to the masks' 70%


def test_strip_default_output_name(model_path):
    assert main(["strip", str(model_path)]) == 0  # no masks: strips exactly-zero channels (none here)
    assert (model_path.parent / "tiny_stripped.keras").is_file()
    assert (model_path.parent / "tiny_stripped_report.json").is_file()


@pytest.mark.parametrize("command", ["convert", "strip"])
def test_missing_model_is_a_clear_error(tmp_path, command):
    with pytest.raises(SystemExit) as exc:
        main([command, str(tmp_path / "missing.keras")])
    assert "no model file" in str(exc.value) and "missing.keras" in str(exc.value)


def test_non_keras_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(bad)])
    assert "not a loadable .keras model" in str(exc.value)


def test_int8_without_data_is_a_clear_error(model_path):
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(model_path), "--quantization", "int8"])
    assert "--data" in str(exc.value)


def test_bench_bad_inputs(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(tmp_path / "nothing.tflite")])
    assert "no .tflite file" in str(exc.value)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(junk)])
    assert "not a TFLite model" in str(exc.value)


def test_module_entry_point_exits_non_zero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tfmot_mtl.app.cli", "bench", str(tmp_path / "x.tflite")],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode != 0
    assert "no .tflite file" in proc.stderr
