"""recipes.run: the dense parent, the compressed model and the same-budget dense model."""
import keras
import numpy as np
import pytest

from tfmot_mtl import experiment as ex
from tfmot_mtl import recipes
from tfmot_mtl.demo import PRIMARY_METRICS


@pytest.mark.slow  # three trainings (~30 s); the demo test covers the same chain by default
def test_run_compares_with_a_dense_model_of_the_same_budget():
    data = ex.load_data("synthetic_scenes", n_train=32, n_test=16, batch_size=16, resolution=32)
    budget = recipes.Budget(1, 1, 1)
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


