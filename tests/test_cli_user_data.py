"""`tfmot-mtl` on a user's own model, data and tasks (`--data SPEC`, `--data-dir`, `--tasks FILE.json`),
run in-process through `tfmot_mtl.app.cli.main`; the user's model and data live in `tests/user_data.py`."""
import json

import keras
import numpy as np
import pytest

import user_data
from tfmot_mtl.app import cli
from tfmot_mtl.datasets.spec import FORMS, load_spec
from tfmot_mtl.tasks import load_tasks

SEG_TASKS = [{"name": "seg", "kind": "segmentation", "output_channels": 13},
             {"name": "cls", "kind": "classification", "output_channels": 3}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved user models: 32x32 (13 classes), 24x40, 8-channel "seg", uncompiled, two inputs."""
    folder = tmp_path_factory.mktemp("user")
    builds = {"square": lambda: user_data.build(),
              "wide": lambda: user_data.build((24, 40, 3)),
              "eight": lambda: user_data.build(seg_classes=8),
              "plain": lambda: user_data.build(compile=False),
              "two_inputs": lambda: user_data.build_two_inputs()}
    paths = {}
    for name, build in builds.items():
        paths[name] = folder / f"{name}.keras"
        build().save(paths[name])
    return paths


@pytest.fixture
def tasks_file(tmp_path):
    def write(content, name="tasks.json"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    return write


@pytest.fixture
def eager(monkeypatch):
    """Every compile runs eagerly: tracing the train / test functions costs more than these few steps."""
    real = keras.Model.compile

    def compile(self, *args, **kwargs):
        kwargs["run_eagerly"] = True
        return real(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile)


def _error(argv) -> str:
    """The one-line message a user error exits with."""
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in argv])
    message = str(exc.value)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message, message
    return message


# ----------------------------------------------------------------------------- the reported failures


def test_another_datasets_task_names_are_a_one_line_error(models):
    message = _error(["prune", models["square"]])
    assert message.startswith("error: --data (default synthetic_scenes): ")
    assert "['depth', 'normals', 'segmentation']" in message and "['cls', 'seg']" in message
    assert "package.module:function" in message and "nyuv2:PATH" in message


def test_nyuv2_is_a_data_form_and_a_missing_folder_is_named(models, tmp_path):
    missing = tmp_path / "no_nyu"
    message = _error(["train", "--data", f"nyuv2:{missing}"])
    assert message.startswith(f"error: --data nyuv2:{missing}: ") and f"'{missing}' does not exist" in message
    message = _error(["prune", models["square"], "--data", f"nyuv2:{missing}"])
    assert f"'{missing}' does not exist" in message
    assert "write nyuv2:PATH" in _error(["train", "--data", "nyuv2"])


def test_convert_int8_of_a_user_model_on_a_module_function(models, tmp_path):
    out = tmp_path / "bundle"
    assert cli.main(["convert", str(models["square"]), "--quantization", "int8", "--data", "user_data:two_heads",
                     "--calibration", "2", "--output", str(out)]) == 0
    desc = json.loads((out / "model.json").read_text())
    (pixels,) = desc["inputs"]
    assert pixels["name"] == "pixels" and pixels["shape"] == [-1, 32, 32, 3] and pixels["dtype"] == "int8"
    outputs = {o["name"]: o for o in desc["outputs"]}
    assert outputs["seg"]["task_kind"] == "segmentation" and outputs["seg"]["shape"] == [-1, 32, 32, 13]
    assert outputs["cls"]["task_kind"] == "classification"


def test_convert_int8_calibrated_on_an_embedded_dataset_keeps_the_models_tasks(models, tmp_path):
    """The embedded data give the inputs only: the bundle describes the model's own outputs."""
    out = tmp_path / "bundle"
    assert cli.main(["convert", str(models["wide"]), "--quantization", "int8", "--data", "synthetic_scenes",
                     "--calibration", "2", "--output", str(out)]) == 0
    desc = json.loads((out / "model.json").read_text())
    assert desc["inputs"][0]["shape"] == [-1, 24, 40, 3]
    assert {o["name"]: o["task_kind"] for o in desc["outputs"]} == {"seg": "segmentation", "cls": "classification"}


def test_a_non_square_model_prunes_on_its_own_data(models, tmp_path, tasks_file, eager):
    out = tmp_path / "pruned"
    # `eager` patches Model.compile, so Keras does not compile the loaded model: the tasks come from a file
    assert cli.main(["prune", str(models["wide"]), "--data", "user_data:two_heads", "--target", "0.5",
                     "--tasks", tasks_file(SEG_TASKS),
                     "--step", "0.25", "--frequency", "1", "--epochs", "1", "--batch-size", "16",
                     "--out", str(out)]) == 0
    small = keras.saving.load_model(out / "pruned_stripped.keras", safe_mode=True)
    assert tuple(small.inputs[0].shape) == (None, 24, 40, 3)
    y = small(np.zeros((1, 24, 40, 3), "float32"))
    assert tuple(y["seg"].shape) == (1, 24, 40, 13) and tuple(y["cls"].shape) == (1, 3)
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == "user_data:two_heads" and set(report["metrics"]["compressed"]) == {"seg", "cls"}
    assert report["strip"]["totals"]["params_after"] < report["strip"]["totals"]["params_before"]


def test_a_non_square_reference_model_on_embedded_data(tmp_path):
    """Embedded data generated at a 24x40 model's size (square at 40, resized)."""
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.app import model_data as md
    from tfmot_mtl.datasets import synthetic_scenes

    model = ex.build_model("mtl_vgg", synthetic_scenes.tasks(), (24, 40, 3), base_channels=2, head_channels=2)
    data = md.load_for_model("synthetic_scenes", model, n_train=8, n_test=8, batch_size=8)
    x, y = next(iter(data.train))
    assert tuple(x["image"].shape) == (8, 24, 40, 3) and tuple(y["segmentation"].shape) == (8, 24, 40)
    assert set(np.unique(y["segmentation"])) <= set(range(8))
    assert ex.evaluate(model, data).keys() == {"segmentation", "depth", "normals"}


def test_thirteen_classes_fit_and_a_mismatch_is_one_line(models, tasks_file):
    message = _error(["prune", models["eight"], "--data", "user_data:two_heads"])
    assert message.startswith("error: --data user_data:two_heads: ")
    assert "'seg'" in message and "class ids up to 12" in message and "8 classes" in message
    path = tasks_file(SEG_TASKS)
    message = _error(["prune", models["eight"], "--data", "user_data:two_heads", "--tasks", path])
    assert message == (f"error: --tasks {path}: output 'seg': the task file expects 13 classes (segmentation), "
                       f"the model's output has 8 channels")


def test_embedded_data_with_another_class_count_is_one_line(tmp_path):
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl import tasks as T

    tasks = [T.segmentation("segmentation", 13), T.depth(), T.normals()]
    path = tmp_path / "nyu13.keras"
    ex.build_model("mtl_vgg", tasks, (32, 32, 3), base_channels=2, head_channels=2).save(path)
    assert _error(["prune", path]) == ("error: --data (default synthetic_scenes): output 'segmentation': the data "
                                       "expect 8 classes (segmentation), the model's output has 13 channels")


def test_a_tasks_file_gives_an_uncompiled_model_its_tasks(models, tasks_file, tmp_path, eager):
    message = _error(["prune", models["plain"], "--data", "user_data:two_heads"])
    assert message.startswith("error: --tasks: ") and "--tasks FILE.json" in message and "'cls'" in message
    out = tmp_path / "pruned"
    path = tasks_file({"seg": {"kind": "segmentation", "output_channels": 13},
                       "cls": {"kind": "classification", "output_channels": 3}})
    assert cli.main(["prune", str(models["plain"]), "--data", "user_data:two_heads", "--tasks", path,
                     "--target", "0.5", "--step", "0.5", "--frequency", "1", "--epochs", "1", "--batch-size", "16",
                     "--out", str(out)]) == 0
    assert set(json.loads((out / "report.json").read_text())["metrics"]["compressed"]) == {"seg", "cls"}


def test_tasks_of_another_model_in_the_file_are_named(models, tasks_file):
    path = tasks_file([{"name": "depth", "kind": "depth"}])
    message = _error(["convert", models["square"], "--tasks", path])
    assert message.startswith(f"error: --tasks {path}: ") and "['depth']" in message and "['cls', 'seg']" in message


@pytest.mark.parametrize("content, expected", [
    ("not json", "is not valid JSON"),
    ('[{"name": "seg", "kind": "segmentation", "output_channels": 13}, {"name": "cls"}]', "entry 1: missing"),
    ('[{"name": "seg", "kind": "panoptic", "output_channels": 13}]', "entry 0: Task 'seg': kind must be one of"),
    ('{"seg": {"kind": "segmentation", "output_channels": 13, "colour": 1}}', "entry 'seg': unknown fields ['colour']"),
    ('"seg"', "must hold a list of task configs"),
])
def test_bad_task_files_name_the_file_and_the_entry(models, tasks_file, content, expected):
    path = tasks_file(content)
    message = _error(["prune", models["square"], "--data", "user_data:two_heads", "--tasks", path])
    assert message.startswith("error: --tasks: task file ") and path in message and expected in message


def test_missing_tasks_file(models, tmp_path):
    assert "does not exist" in _error(["convert", models["square"], "--tasks", tmp_path / "none.json"])


@pytest.mark.parametrize("spec, expected", [
    ("nope", "the embedded datasets are ['synthetic_scenes', 'multi_digits']"),
    ("mnist", "needs its data directory (--data-dir)"),
    ("two words", "is not one of the accepted forms: " + FORMS),
    ("user_data:no_function", "module 'user_data' has no function 'no_function'"),
    ("no_such_module_xyz:load", "cannot import module 'no_such_module_xyz'"),
    ("user_data:not_a_pair", "must return (train, test) or (train, test, tasks), got str"),
    ("user_data:broken", "raised FileNotFoundError: /data/mine/train.npz"),
    ("visual_decathlon:/no/such/folder", "'/no/such/folder' does not exist"),
])
def test_bad_data_forms(spec, expected):
    message = _error(["train", "--data", spec])
    assert message.startswith(f"error: --data {spec}: ") and expected in message


def test_train_builds_a_reference_model_from_the_datas_tasks(tmp_path, eager):
    assert "names no tasks" in _error(["train", "--data", "user_data:two_heads"])
    assert cli.main(["train", "--model", "mtl_vgg", "--data", "user_data:two_heads_datasets", "--epochs", "1",
                     "--width", "0.125", "--out", str(tmp_path), "--name", "mine"]) == 0
    model = keras.saving.load_model(tmp_path / "mine" / "model.keras", safe_mode=True)
    assert sorted(model.output_names) == ["cls", "seg"] and model.outputs[0].shape[-1] in (3, 13)
    metrics = json.loads((tmp_path / "mine" / "metrics.json").read_text())
    assert metrics["data"] == "user_data:two_heads_datasets" and set(metrics["metrics"]) == {"seg", "cls"}


def test_several_inputs_from_a_dict(models, tmp_path):
    out = tmp_path / "bundle"
    assert cli.main(["convert", str(models["two_inputs"]), "--quantization", "int8", "--data", "user_data:two_inputs",
                     "--calibration", "2", "--output", str(out)]) == 0
    desc = json.loads((out / "model.json").read_text())
    assert sorted(i["name"] for i in desc["inputs"]) == ["gain", "image"]
    message = _error(["convert", models["two_inputs"], "--quantization", "int8", "--data", "user_data:two_heads"])
    assert message.endswith("the model takes the inputs ['image', 'gain']; the data give one tensor")


def test_input_shape_mismatch_is_named(models):
    message = _error(["prune", models["wide"], "--data", "user_data:square_only"])
    assert message == ("error: --data user_data:square_only: input 'pixels': the model takes (24, 40, 3) "
                       "per example, the data give (32, 32, 3)")


def test_patience_needs_an_embedded_dataset(models):
    message = _error(["prune", models["square"], "--data", "user_data:two_heads", "--finetune-epochs", "1",
                      "--patience", "1"])
    assert message.startswith("error: --patience: early stopping needs a validation split")


def test_budget_takes_only_its_own_dataset():
    message = _error(["budget", "--data", "user_data:two_heads"])
    assert "budget trains its own mdl_resnet26" in message and "compress" in message


# ----------------------------------------------------------------------------- load_spec and load_tasks


def test_load_spec_forms():
    train, test, tasks = load_spec("multi_digits", input_shape=(24, 40, 3), n_train=4, n_test=4, batch_size=4)
    x, y = next(iter(train))
    assert tuple(x["image"].shape) == (4, 24, 40, 3) and tuple(y["left"].shape) == (4,)
    assert [t.name for t in tasks] == ["segmentation", "left", "right"]
    user_data.CALLS.clear()
    train, test, tasks = load_spec("user_data:calls", input_shape=(16, 24, 3), batch_size=5, n_train=7, seed=3)
    assert user_data.CALLS == [{"input_shape": (16, 24, 3), "batch_size": 5, "seed": 3}]
    assert [len(b[0]) for b in train] == [5, 2] and tasks is None
    assert sum(len(b[0]) for b in test) == user_data.N_TEST
    train, _, tasks = load_spec("user_data:two_heads_datasets", batch_size=4)
    assert [t.name for t in tasks] == ["seg", "cls"] and tasks[0].output_channels == 13


def test_load_spec_tfds_needs_supervised_dict_pairs(tmp_path):
    import tensorflow_datasets as tfds

    import tfmot_mtl.datasets  # noqa: F401  registers the builders

    tfds.builder("multi_digits/tiny", data_dir=str(tmp_path)).download_and_prepare()
    train, test, tasks = load_spec("multi_digits/tiny", data_dir=tmp_path, batch_size=8)
    x, y = next(iter(train))
    assert tuple(x["image"].shape) == (8, 32, 32, 3) and sorted(y) == ["left", "right", "segmentation"]
    assert tasks is None and sum(len(b[0]["image"]) for b in test) == 8
    with pytest.raises(ValueError, match="is not prepared in"):
        load_spec("synthetic_scenes/tiny", data_dir=tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_spec("surely_not_a_dataset", data_dir=tmp_path)


def _fake_nyuv2(root, n=3, size=(16, 20)):
    """The NYU-v2 folder layout with ``n`` random samples per split."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("image", "label", "depth", "normal"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random(size + (3,), dtype=np.float32))
            np.save(root / split / "label" / f"{i}.npy", rng.integers(-1, 13, size))
            np.save(root / split / "depth" / f"{i}.npy", rng.random(size, dtype=np.float32) + 0.5)
            np.save(root / split / "normal" / f"{i}.npy", rng.normal(size=size + (3,)).astype(np.float32))


def test_nyuv2_folder_at_the_models_size(tmp_path):
    from tfmot_mtl.recipes import experiment as ex
    from tfmot_mtl.app import model_data as md
    from tfmot_mtl.datasets import nyuv2_tasks

    _fake_nyuv2(tmp_path / "nyu")
    model = ex.build_model("mtl_vgg", nyuv2_tasks(), (24, 40, 3), base_channels=2, head_channels=2)
    data = md.load_for_model(f"nyuv2:{tmp_path / 'nyu'}", model, batch_size=2)
    x, y = next(iter(data.train))
    assert tuple(x["image"].shape) == (2, 24, 40, 3) and tuple(y["segmentation"].shape) == (2, 24, 40)
    assert tuple(y["normals"].shape) == (2, 24, 40, 3) and data.tasks[0].output_channels == 13
    assert set(ex.evaluate(model, data)) == {"segmentation", "depth", "normals"}


def test_load_tasks_layouts(tasks_file):
    listed = load_tasks(tasks_file(SEG_TASKS, "a.json"))
    mapped = load_tasks(tasks_file({"seg": {"kind": "segmentation", "output_channels": 13},
                                    "cls": {"kind": "classification", "output_channels": 3},
                                    "depth": {"kind": "depth"}}, "b.json"))
    assert listed == mapped[:2] and mapped[2].output_channels == 1
    with pytest.raises(ValueError, match="names the tasks \\['seg'\\] more than once"):
        load_tasks(tasks_file(SEG_TASKS + SEG_TASKS[:1], "c.json"))
    with pytest.raises(ValueError, match="its name 'x' differs from its key"):
        load_tasks(tasks_file({"seg": {"name": "x", "kind": "segmentation", "output_channels": 2}}, "d.json"))


# ----------------------------------------------------------------------------- compress


def test_compress_end_to_end(models, tmp_path, capsys, tasks_file, eager, monkeypatch):
    """Compress, save, bundle; a bundle the converter fails on is reported (exit 1) after the
    model, masks and report are written, and the other bundles are still made."""
    pytest.importorskip("tfmot_mtl.compress")
    out = tmp_path / "small"
    real = cli._compressed_bundle

    def bundle(model, data, quantization, *args):
        if quantization == "float16":
            assert (out / "report.json").exists()
            raise SystemExit("error: --quantization float16: TFLite conversion failed: a converter error")
        return real(model, data, quantization, *args)

    monkeypatch.setattr(cli, "_compressed_bundle", bundle)
    assert cli.main(["compress", str(models["wide"]), "--data", "user_data:two_heads", "--target-macs", "0.5",
                     "--tasks", tasks_file(SEG_TASKS), "--min-fraction", "0.3",
                     "--find-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16", "--calibration", "2",
                     "--quantization", "float32", "float16", "int8", "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["float32", "int8", "masks.json", "model.keras", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == "user_data:two_heads" and report["options"]["target_macs"] == 0.5
    assert report["options"]["min_fraction"] == 0.3 and report["evaluated_on"] == "validation"  # the test split
    assert report["bundles"]["float16"] == {"error": "error: --quantization float16: TFLite conversion failed: "
                                                     "a converter error"}
    assert set(report["bundles"]) == {"float32", "float16", "int8"}
    assert set(report["test_metrics"]) == {"dense", "compressed"}
    assert set(report["test_metrics"]["compressed"]) == {"seg", "cls"}
    small = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert small.count_params() == report["strip"]["params_after"] < report["strip"]["params_before"]
    for q in ("float32", "int8"):
        desc = json.loads((out / q / "model.json").read_text())
        assert {o["name"]: o["task_kind"] for o in desc["outputs"]} == {"seg": "segmentation",
                                                                         "cls": "classification"}
    assert json.loads((out / "int8" / "model.json").read_text())["quantization"] == "int8"
    captured = capsys.readouterr()
    assert "compressed vs dense (test split)" in captured.out and "a converter error" in captured.err


@pytest.mark.parametrize("argv, expected", [
    (["--target-macs", "0"], "error: --target-macs must be > 0"),
    (["--find-epochs", "-1"], "error: --find-epochs must be >= 0"),
    (["--calibration", "0"], "error: --calibration must be >= 1"),
    (["--quantization", "none", "int8"], "error: --quantization none means no bundle"),
    (["--min-fraction", "1.5"], "error: --min-fraction must be a number in [0, 1)"),
    (["--min-channels", "0"], "error: --min-channels must be >= 1"),
    (["--lr", "0"], "error: --lr must be in (0, 1)"),
])
def test_compress_bad_arguments(models, argv, expected):
    assert _error(["compress", models["square"], "--data", "user_data:two_heads", *argv]).startswith(expected)


def test_compress_errors_name_the_flags(models):
    pytest.importorskip("tfmot_mtl.compress")
    message = _error(["compress", models["square"], "--data", "user_data:two_heads", "--target-channels", "3"])
    assert message.startswith("error: compress: ") and "--target-channels" in message


def test_compress_quantization_none_means_no_bundle():
    assert cli._bundles_asked(["none"]) == [] and cli._bundles_asked(["int8", "float32", "int8"]) == ["int8", "float32"]
