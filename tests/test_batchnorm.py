"""BatchNorm recalibration: the one-shot re-estimate and the callback that runs it inside fit."""
import keras
import numpy as np
import pytest

from tfmot_mtl import recipes
from tfmot_mtl.recipes.batchnorm import RecalibrateBatchNorm, recalibrate_batchnorm
from tfmot_mtl.budget.domain_bn import DomainBatchNorm


def _conv_bn_model(frozen_too: bool = False):
    inp = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    bn = keras.layers.BatchNormalization(name="bn")
    x = keras.layers.ReLU()(bn(conv(inp)))
    frozen = None
    if frozen_too:
        frozen = keras.layers.BatchNormalization(name="frozen")
        frozen.trainable = False
        x = frozen(x)
    return keras.Model(inp, x), conv, bn, frozen


def test_recalibrate_batchnorm_averages_the_batch_statistics():
    """Moving mean / variance become the mean of the per-batch statistics; momentum is restored,
    a frozen BN layer keeps its statistics, no weight changes."""
    keras.utils.set_random_seed(0)
    model, conv, bn, frozen = _conv_bn_model(frozen_too=True)
    frozen_stats = [w.numpy().copy() for w in frozen.non_trainable_weights]
    kernel = conv.kernel.numpy().copy()
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, (5, 6, 6, 3)).astype("float32") for _ in range(3)]
    bn.moving_mean.assign(np.full(4, 100.0, "float32"))
    assert recalibrate_batchnorm(model, batches) == 2
    acts = [keras.ops.convert_to_numpy(conv(b)) for b in batches]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([a.mean((0, 1, 2)) for a in acts], 0), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([a.var((0, 1, 2)) for a in acts], 0),
                               rtol=1e-3)
    assert bn.momentum == 0.99 and frozen.momentum == 0.99
    for w, before in zip(frozen.non_trainable_weights, frozen_stats):
        np.testing.assert_array_equal(w.numpy(), before)
    np.testing.assert_array_equal(conv.kernel.numpy(), kernel)
    assert recipes.recalibrate_batchnorm(model, [(b, None) for b in batches], batches=1) == 2  # the recipes name
    np.testing.assert_allclose(bn.moving_mean.numpy(), acts[0].mean((0, 1, 2)), rtol=1e-4)
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(model, [])
    with pytest.raises(ValueError, match="batches"):
        recalibrate_batchnorm(model, batches, batches=0)


def test_domain_batchnorm_statistics_are_re_estimated_per_domain():
    rng = np.random.default_rng(1)
    x_in, d_in = keras.Input((4, 4, 3)), keras.Input((), dtype="int32")
    layer = DomainBatchNorm(2, momentum=0.99)
    model = keras.Model([x_in, d_in], layer([x_in, d_in]))
    d = np.array([0] * 4 + [1] * 4, "int32")
    batches = []
    for _ in range(2):
        x = rng.standard_normal((8, 4, 4, 3)).astype("float32")
        x[d == 1] = x[d == 1] * 3 - 4
        batches.append(([x, d], None))
    assert recalibrate_batchnorm(model, batches) == 1
    for dom in (0, 1):
        mean = np.mean([b[0][0][d == dom].mean((0, 1, 2)) for b in batches], 0)
        np.testing.assert_allclose(layer.moving_mean.numpy()[dom], mean, rtol=1e-4, atol=1e-5)
    assert layer.momentum == 0.99


def _stale_model_and_data():
    """A model whose moving statistics are far off the data (mean -100), trained at lr 0."""
    keras.utils.set_random_seed(0)
    model, _, bn, _ = _conv_bn_model()
    bn.moving_mean.assign(np.full(4, -100.0, "float32"))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (16, 6, 6, 3)).astype("float32")
    y = np.zeros((16, 6, 6, 4), "float32")
    return model, bn, x, y


def test_the_callback_recalibrates_before_each_validation_and_at_the_end():
    model, bn, x, y = _stale_model_and_data()
    cb = RecalibrateBatchNorm([(x[:8], y[:8]), (x[8:], y[8:])], on_train_end=False)
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=[cb], verbose=0)
    assert cb.recalibrations == 2  # one per validation pass
    # lr 0: the weights never change, so the validation loss is the loss under fitting statistics
    expected = model.evaluate(x, y, batch_size=8, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"], [expected, expected], rtol=1e-5)

    stale, bn2, _, _ = _stale_model_and_data()
    plain = stale.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0)
    assert plain.history["val_loss"][0] > 10 * expected  # what it fixes

    cb_end = RecalibrateBatchNorm([(x, y)], on_train_end=True)
    stale.fit(x, y, batch_size=8, epochs=1, callbacks=[cb_end], verbose=0)  # no validation: only the end
    assert cb_end.recalibrations == 1
    stale.evaluate(x, y, verbose=0, callbacks=[cb_end])  # a standalone evaluate is left alone
    assert cb_end.recalibrations == 1
    np.testing.assert_allclose(bn2.moving_mean.numpy(), bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6)


def test_the_callback_acts_on_the_given_inner_model_and_checks_batches():
    model, bn, x, y = _stale_model_and_data()
    outer = keras.Model(model.input, model(model.input))
    outer.compile(keras.optimizers.SGD(0.0), "mse")
    cb = RecalibrateBatchNorm([(x, y)], model=model)
    outer.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    assert abs(float(bn.moving_mean.numpy().mean())) < 50
    with pytest.raises(ValueError, match="batches"):
        RecalibrateBatchNorm([(x, y)], batches=0)
