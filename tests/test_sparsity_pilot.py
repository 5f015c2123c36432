"""The adaptive group lasso: pilot weights (sparsity/pilot.py) and ProximalGroupLasso's channel_weights."""
import keras
import numpy as np
import pytest

from tfmot_mtl.pruning.gradient_criteria import Taylor
from tfmot_mtl.sparsity import ProximalGroupLasso, pilot_weights
from tfmot_mtl.sparsity.pilot import CLIP, normalised_weights

from test_sparsity import data, two_task_model, zero_loss


def test_weights_are_scores_over_their_global_mean_clipped_and_one_where_unscored():
    weights = normalised_weights({"a": np.array([1.0, 3.0]), "b": np.array([0.0, np.nan])})
    np.testing.assert_allclose(weights["a"], [0.75, 2.25])  # mean of the finite scores: 4/3
    np.testing.assert_allclose(weights["b"], [1.0 / CLIP, 1.0])
    root = normalised_weights({"a": np.array([1.0, 9.0])}, exponent=0.5)
    np.testing.assert_allclose(root["a"], [np.sqrt(0.2), np.sqrt(1.8)])


def _equal_norm_model():
    keras.utils.set_random_seed(0)
    model = two_task_model(bn=False)
    for name in ("c1", "c2"):
        layer = model.get_layer(name)
        layer.kernel.assign(np.ones(layer.kernel.shape, np.float32) / np.sqrt(np.prod(layer.kernel.shape[:-1])))
        layer.bias.assign(np.zeros(8, np.float32))
    model.compile(keras.optimizers.SGD(1e-9), loss={"seg": zero_loss, "cls": zero_loss})
    return model


def test_channel_weights_decide_which_of_equal_channels_die():
    """Every channel of c1 and c2 has norm 1: the plain step would treat them alike; with
    weights, threshold / weight kills the low-weight channels and spares the rest."""
    weights = {"c1": [0.5, 0.5, 2, 2, 2, 2, 2, 2], "c2": [2, 2, 2, 2, 2, 2, 0.4, 0.5]}
    model = _equal_norm_model()
    cb = ProximalGroupLasso(l1=1.0 / 1e-9, groups=["c1", "c2"], scale="none", relative=True,
                            min_channels=0, min_fraction=0.0, channel_weights=weights)
    model.fit(*data(8), batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    killed = {gid: np.flatnonzero(zero).tolist() for gid, zero in cb.zero_channels().items()}
    assert killed == {"c1": [0, 1], "c2": [6, 7]}  # threshold 1 / w: 2 and 2.5 > 1 > 0.5
    config = cb.get_config()
    assert config["channel_weights"]["c2"] == [2, 2, 2, 2, 2, 2, 0.4, 0.5]
    again = ProximalGroupLasso.from_config(config)
    np.testing.assert_array_equal(again.channel_weights["c1"], weights["c1"])


def test_a_channel_the_loss_does_not_use_gets_the_lowest_pilot_weight():
    keras.utils.set_random_seed(0)
    model = two_task_model(bn=False)
    model.compile(keras.optimizers.SGD(0.01), loss={"seg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)})
    c2 = model.get_layer("c2")
    kernel = c2.kernel.numpy()
    kernel[:, :, 3, :] = 0.0  # nothing reads channel 3 of c1: removing it changes no loss
    c2.kernel.assign(kernel)
    x, y = data(32)
    batches = [(x[i:i + 8], {k: v[i:i + 8] for k, v in y.items()}) for i in range(0, 32, 8)]
    weights = pilot_weights(model, batches, batches=2)
    scores = Taylor()(model, None, batches[:2])  # the default pilot, on the first two batches
    assert scores["c1"][3] == 0.0 and weights["c1"][3] == pytest.approx(1.0 / CLIP)
    for gid, w in normalised_weights(scores).items():
        np.testing.assert_allclose(weights[gid], w)
    assert weights["c1"].max() > 1.0


def test_bad_channel_weights_are_refused():
    with pytest.raises(ValueError, match="finite weights > 0"):
        ProximalGroupLasso(l1=0.1, channel_weights={"c1": [1.0, -1.0]})
    with pytest.raises(ValueError, match="must be a dict"):
        ProximalGroupLasso(l1=0.1, channel_weights=[1.0, 2.0])
    model = _equal_norm_model()
    cb = ProximalGroupLasso(l1=0.1, groups=["c1"], channel_weights={"c1": [1.0, 2.0]})
    with pytest.raises(ValueError, match="has 2 values; the group has 8 channels"):
        cb.build(model)
    with pytest.raises(ValueError, match="batches must be >= 1"):
        pilot_weights(model, [], batches=0)
