"""recipes.run: the dense parent, the compressed model and the same-budget dense model; BN recalibration."""
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


def test_recalibrate_batchnorm_averages_the_batch_statistics():
    """Moving mean / variance become the mean of the per-batch statistics; momentum is restored,
    a frozen BN layer keeps its statistics, no weight changes."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    feat = conv(inp)
    bn = keras.layers.BatchNormalization(name="bn")
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    model = keras.Model(inp, frozen(keras.layers.ReLU()(bn(feat))))
    frozen_stats = [w.numpy().copy() for w in frozen.non_trainable_weights]
    kernel = conv.kernel.numpy().copy()
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, (5, 6, 6, 3)).astype("float32") for _ in range(3)]
    bn.moving_mean.assign(np.full(4, 100.0, "float32"))
    assert recipes.recalibrate_batchnorm(model, batches) == 2
    acts = [keras.ops.convert_to_numpy(conv(b)) for b in batches]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([a.mean((0, 1, 2)) for a in acts], 0), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([a.var((0, 1, 2)) for a in acts], 0),
                               rtol=1e-3)
    assert bn.momentum == 0.99 and frozen.momentum == 0.99
    for w, before in zip(frozen.non_trainable_weights, frozen_stats):
        np.testing.assert_array_equal(w.numpy(), before)
    np.testing.assert_array_equal(conv.kernel.numpy(), kernel)
    assert recipes.recalibrate_batchnorm(model, [(b, None) for b in batches], batches=1) == 2
    np.testing.assert_allclose(bn.moving_mean.numpy(), acts[0].mean((0, 1, 2)), rtol=1e-4)
    with pytest.raises(ValueError, match="no batches"):
        recipes.recalibrate_batchnorm(model, [])
