"""recipes.run: the dense parent, the compressed model and the same-budget dense model."""
import keras
import numpy as np
import pytest

from tfmot_mtl.recipes import experiment as ex
from tfmot_mtl import recipes
from tfmot_mtl.app.demo import PRIMARY_METRICS


@pytest.mark.slow  # three trainings (~30 s); the demo test covers the same chain by default
def test_run_compares_with_a_dense_model_of_the_same_budget():
    data = ex.load_data("synthetic_scenes", n_train=32, n_test=16, batch_size=16, resolution=32)
    budget = recipes.Epochs(1, 1, 1)
    result = recipes.run(data, width=0.25, method="prune", target=0.5, budget=budget, log=lambda m: None,
                         primary_metrics=PRIMARY_METRICS)
    rows = result.rows
    assert set(rows) == {"dense parent", "compressed", "dense, same budget"}
    assert rows["compressed"]["epochs"] == rows["dense, same budget"]["epochs"] == budget.total == 3
    assert rows["dense parent"]["epochs"] == 1
    assert rows["compressed"]["macs"] < rows["dense, same budget"]["macs"]
    assert rows["dense, same budget"]["delta_m"] == 0.0
    assert result.info["sparsity"] > 0.4 and "finetune_history" in result.info
    assert result.dense.trainable  # distillation froze it only while it was the teacher
    assert result.to_dict()["budget"]["total"] == 3


def test_budget_is_the_deprecated_name_of_epochs():
    with pytest.warns(DeprecationWarning, match="recipes.Epochs"):
        old = recipes.Budget(2, 1, 3)
    assert isinstance(old, recipes.Epochs) and old.total == 6
    assert old.to_dict() == recipes.Epochs(2, 1, 3).to_dict() == {"dense": 2, "find": 1, "finetune": 3, "total": 6}


def _tiny():
    data = ex.load_data("synthetic_scenes", n_train=16, n_test=8, batch_size=8, resolution=32)
    build = lambda: ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=0.25, seed=0)  # noqa: E731
    return data, build


@pytest.mark.heavy
def test_same_budget_dense_continues_a_copy_of_the_parent():
    data, build = _tiny()
    parent = recipes.train_dense(build(), data, 1)
    kernel = next(i for i, w in enumerate(parent.weights) if len(w.shape) == 4)
    parent.weights[kernel].assign(parent.weights[kernel] + 0.5)  # far from any new initialisation
    before = [np.array(w) for w in parent.get_weights()]
    same = recipes.train_same_budget(parent, data, recipes.Epochs(1, 1, 1))
    assert same is not parent
    for w, b in zip(parent.get_weights(), before):  # the parent itself is left as it was
        np.testing.assert_array_equal(w, b)
    moved = [not np.array_equal(a, b) for a, b in zip(same.get_weights(), before)]
    assert any(moved)  # trained on from the parent's weights (a clone alone would equal it)
    # starts from the parent, not from a new initialisation: still close to the parent's kernel
    np.testing.assert_allclose(same.get_weights()[kernel], before[kernel], atol=0.05)
    fresh = build().get_weights()[kernel]
    assert np.abs(same.get_weights()[kernel] - fresh).mean() > 0.4


@pytest.mark.slow  # ~15 s
def test_same_budget_dense_from_scratch_and_bad_values():
    data, build = _tiny()
    parent = recipes.train_dense(build(), data, 1)
    scratch = recipes.train_same_budget(parent, data, recipes.Epochs(1, 0, 0), baseline="scratch", build=build)
    assert scratch.count_params() == parent.count_params()
    with pytest.raises(ValueError, match="needs `build`"):
        recipes.train_same_budget(parent, data, recipes.Epochs(1, 0, 0), baseline="scratch")
    with pytest.raises(ValueError, match="`baseline` must be one of"):
        recipes.train_same_budget(parent, data, recipes.Epochs(1, 0, 0), baseline="longer")
    with pytest.raises(ValueError, match="`baseline` must be one of"):
        recipes.run(data, baseline="longer")
