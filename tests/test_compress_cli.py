"""`tfmot-mtl sparsify` and the fine-tuning flags of prune / sparsify / budget
(--finetune-epochs, --distill, --weighting, --patience), run in-process through `cli.main`."""
import json

import keras
import pytest

from tfmot_mtl import recipes

from tfmot_mtl.app import cli
from tfmot_mtl.recipes import experiment as ex
from tfmot_mtl.masks import ChannelMasks
from tfmot_mtl.pruning.run import compile_for_pruning

TASKS = {"segmentation", "depth", "normals"}


@pytest.fixture(scope="module")
def trained_path(tmp_path_factory):
    """A tiny multi-task VGG (16x16) trained for one step, saved compiled as .keras."""
    data = ex.load_data("synthetic_scenes", n_train=16, n_test=8, batch_size=8, resolution=16)
    model = ex.build_model("mtl_vgg", data.tasks, data.input_shape, base_channels=2, head_channels=2)
    compile_for_pruning(model, data.tasks, lr=1e-3, run_eagerly=True)
    model.fit(data.train.take(1), epochs=1, verbose=0)
    return ex.save_model(model, tmp_path_factory.mktemp("m") / "model.keras")


@pytest.fixture
def eager(monkeypatch):
    """Every compile runs eagerly: tracing the train / test functions costs more than these few steps."""
    real = keras.Model.compile

    def compile(self, *args, **kwargs):
        kwargs["run_eagerly"] = True
        return real(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile)


def _check_compressed(folder, model_file, trained_path):
    report = json.loads((folder / "report.json").read_text())
    small = keras.saving.load_model(folder / model_file, safe_mode=True)
    dense = keras.saving.load_model(trained_path, safe_mode=True)
    assert small.count_params() == report["strip"]["totals"]["params_after"] < dense.count_params()
    assert sorted(small.output_names) == sorted(dense.output_names)
    assert set(report["metrics"]) == {"dense", "stripped", "compressed"}
    assert all(set(m) == TASKS for m in report["metrics"].values())
    ChannelMasks.load(folder / "masks.json")
    return report


@pytest.mark.slow  # ~50 s; test_cli_user_data runs sparsify-free compress, test_compress the sparsity path
def test_sparsify_distilled_with_early_stopping(trained_path, tmp_path, capsys, eager):
    out = tmp_path / "sparse"
    rc = cli.main(["sparsify", str(trained_path), "--data", "synthetic_scenes", "--target", "0.5",
                   "--epochs", "1", "--l1", "20", "--lr", "0.05", "--n-train", "32", "--n-test", "8",
                   "--batch-size", "8", "--distill", "--finetune-epochs", "2", "--patience", "1",
                   "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "strip_channels report" in printed and "vs dense (baseline)" in printed
    assert "training budget: dense loaded | find channels 1 epochs | fine-tune" in printed
    assert "distilled from the dense parent, fixed task weighting" in printed
    report = _check_compressed(out, "sparse_stripped.keras", trained_path)
    assert report["method"] == "sparsity" and report["sparsity"] > 0
    budget = report["training_budget"]
    assert budget["dense"] == "loaded" and budget["find"] == 1 and budget["finetune"] == 2
    assert "total" not in budget  # the loaded model's training is unknown
    phase = report["finetune"]
    assert phase["distilled"] and phase["patience"] == 1 and phase["weighting"] == "fixed"
    assert 1 <= phase["epochs_run"] == budget["finetune_run"] <= 2
    # --patience made a validation split (max(32, 32 // 10) = 32 images) and early stopping watched it
    assert {"val_loss", "distillation_loss", "segmentation_distill_loss"} <= set(phase["history"])


@pytest.mark.slow  # ~15 s
def test_prune_distilled_with_uncertainty_weighting(trained_path, tmp_path, capsys, eager):
    out = tmp_path / "pruned"
    rc = cli.main(["prune", str(trained_path), "--criterion", "magnitude", "--target", "0.5",
                   "--step", "0.25", "--frequency", "1", "--epochs", "1", "--n-train", "8", "--n-test", "8",
                   "--batch-size", "8", "--distill", "--anneal", "--finetune-epochs", "1",
                   "--weighting", "uncertainty", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "distilled from the dense parent, uncertainty task weighting" in printed and "Δm" in printed
    report = _check_compressed(out, "pruned_stripped.keras", trained_path)
    # 2 pruning events 1 step apart + 1 fine-tuning step of prune itself, 1 batch per epoch: 2 epochs
    assert report["training_budget"] == {"dense": "loaded", "find": 2.0, "finetune": 1, "finetune_run": 1}
    phase = report["finetune"]
    assert phase["distilled"] and phase["weighting"] == "uncertainty" and phase["epochs_run"] == 1
    assert phase["teacher_annealing"] and phase["history"]["distill_scale"] == [1.0]  # one step: 1 - 0 / 1
    assert {"segmentation_weight", "depth_distill_loss", "student_loss"} <= set(phase["history"])
    assert "val_loss" not in phase["history"]
    assert report["metrics_pruned"] == report["metrics"]["compressed"] != report["metrics"]["stripped"]
    assert report["metrics_dense"] == report["metrics"]["dense"]


@pytest.mark.slow  # ~21 s; test_recipes covers the same-budget baseline
def test_prune_with_a_same_budget_dense_baseline(trained_path, tmp_path, capsys, eager):
    out = tmp_path / "pruned_same"
    rc = cli.main(["prune", str(trained_path), "--criterion", "magnitude", "--target", "0.5",
                   "--step", "0.25", "--frequency", "1", "--epochs", "1", "--n-train", "8", "--n-test", "8",
                   "--batch-size", "8", "--finetune-epochs", "1", "--same-budget", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "the loaded model trained 3 more epochs" in printed and "vs the dense model trained as long" in printed
    report = json.loads((out / "report.json").read_text())
    # 2 epochs finding the channels + 1 of fine-tuning after loading: the baseline trains as many
    assert report["same_budget"] == {"epochs_after_loading": 3, "baseline": "continue"}
    assert set(report["metrics"]) == {"dense", "stripped", "compressed", "dense, same budget"}
    same = keras.saving.load_model(out / "dense_same_budget.keras", safe_mode=True)
    dense = keras.saving.load_model(trained_path, safe_mode=True)
    assert same.count_params() == dense.count_params()
    assert any(not (a == b).all() for a, b in zip(same.get_weights(), dense.get_weights()))  # trained on
    assert report["metrics"]["dense, same budget"] != report["metrics"]["dense"]


@pytest.mark.slow
def test_budget_distilled_from_the_unpruned_model(tmp_path, capsys):
    out = tmp_path / "budget"
    rc = cli.main(["budget", "--budget", "0.5", "--epochs", "1", "--budget-epochs", "1", "--finetune", "0",
                   "--width", "0.125", "--resolution", "16", "--n-train", "8", "--distill",
                   "--finetune-epochs", "1", "--patience", "1", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "training budget: dense 1 epochs | find channels 1 epochs | fine-tune 1 epochs (distilled" in printed
    assert "unpruned" in printed and "compressed" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["training_budget"] == {"dense": 1, "find": 1, "finetune": 1, "finetune_run": 1, "total": 3}
    domains = {"digits", "shapes", "textures", "scenes"}
    assert set(report["metrics"]) == {"dense", "stripped", "compressed"}
    assert all(set(m) == domains for m in report["metrics"].values())
    assert report["metrics"]["compressed"] == report["accuracy"]
    phase = report["finetune"]
    assert phase["distilled"] and phase["epochs_run"] == 1
    assert {"distillation_loss", "student_loss", "val_loss"} <= set(phase["history"])  # 32 validation images per domain
    small = keras.saving.load_model(out / "budget_stripped.keras", safe_mode=True)
    assert sorted(small.output_names) == sorted(domains)
    assert small.count_params() == report["strip"]["params_after"] < report["strip"]["params_before"]


@pytest.mark.parametrize("argv, message", [
    (["--finetune-epochs", "-1"], "--finetune-epochs must be >= 0"),
    (["--distill"], "--distill act on the fine-tuning after stripping: add --finetune-epochs"),
    (["--weighting", "dwa", "--patience", "2"], "--weighting dwa, --patience act on the fine-tuning"),
    (["--finetune-epochs", "1", "--patience", "0"], "--patience must be >= 1"),
])
@pytest.mark.parametrize("command", ["prune", "sparsify", "budget"])
def test_bad_finetune_flags_exit_cleanly(trained_path, command, argv, message):
    model = [] if command == "budget" else [str(trained_path)]
    with pytest.raises(SystemExit, match=message):
        cli.main([command, *model, *argv])


@pytest.mark.parametrize("argv, message", [
    (["sparsify", "MODEL", "--target", "1.5"], "--target must be"),
    (["sparsify", "MODEL", "--epochs", "0"], "--epochs must be >= 1"),
    (["budget", "--finetune-epochs", "1", "--weighting", "uncertainty"], "only --weighting fixed"),
    (["prune", "MODEL", "--finetune-epochs", "1", "--anneal"], "--anneal fades the distillation terms out: it needs"),
    (["sparsify", "MODEL", "--anneal"], "--anneal act on the fine-tuning after stripping"),
])
def test_bad_sparsify_and_budget_arguments(trained_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main([str(trained_path) if a == "MODEL" else a for a in argv])


def test_sparsify_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="no model file"):
        cli.main(["sparsify", str(tmp_path / "nope.keras")])


def test_budget_helpers():
    assert recipes.validation_size(None, 2000) == 200 and recipes.validation_size(100, 2000) == 32
    b = recipes.phase_budget(8, 4, 4, 3)
    assert b == {"dense": 8, "find": 4, "finetune": 4, "finetune_run": 3, "total": 15}
    line = recipes.format_budget(b, {"distilled": False, "weighting": "dwa"})
    assert line == ("training budget: dense 8 epochs | find channels 4 epochs | fine-tune 3 epochs of 4 "
                    "(early stop) (on labels, dwa task weighting) | total 15 epochs")
    assert recipes.phase_budget("loaded", 2 / 3, 0) == {"dense": "loaded", "find": 0.667, "finetune": 0,
                                                         "finetune_run": 0}


def test_own_domain_logits_pick_each_examples_head():
    import numpy as np

    from tfmot_mtl.budget.finetune import PAD_LOGIT, own_domain_model

    image = keras.Input((4,), name="image")
    domain = keras.Input((), dtype="int32", name="domain")
    model = keras.Model({"image": image, "domain": domain},
                        {"a": keras.layers.Dense(3, name="a")(image), "b": keras.layers.Dense(5, name="b")(image)})
    x = {"image": np.random.default_rng(0).normal(size=(4, 4)).astype("float32"),
         "domain": np.array([0, 1, 1, 0], "int32")}
    out, own = model(x), np.asarray(own_domain_model(model, ["a", "b"])(x))
    assert own.shape == (4, 5)
    np.testing.assert_allclose(own[[0, 3], :3], np.asarray(out["a"])[[0, 3]], rtol=1e-6)
    assert (own[[0, 3], 3:] == PAD_LOGIT).all()
    np.testing.assert_allclose(own[[1, 2]], np.asarray(out["b"])[[1, 2]], rtol=1e-6)
    with pytest.raises(ValueError, match="no outputs for domains"):
        own_domain_model(model, ["a", "c"])


def test_a_fresh_process_loads_a_model_saved_compiled_with_task_losses(trained_path):
    """`tfmot-mtl train` saves the task losses with the model; the CLI registers them before loading."""
    import subprocess
    import sys

    code = f"from tfmot_mtl.app.cli_compress import load_keras; print(load_keras({str(trained_path)!r}).name)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("mtl_vgg")
