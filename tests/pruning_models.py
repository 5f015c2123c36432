"""Tiny hand-set models and data of the pruning tests (known weights, so scores can be computed by hand)."""
import keras
import numpy as np
import tensorflow as tf

K1 = np.array([[1.0, -2.0, 0.0, 3.0],
               [0.5, 1.0, -1.0, 0.0],
               [0.0, 0.0, 2.0, -4.0]], np.float32)
B1 = np.array([0.5, -1.0, 0.0, 2.0], np.float32)
GAMMA = np.array([0.5, -2.0, 0.1, 1.0], np.float32)
BETA = np.array([0.0, 1.0, -1.0, 0.5], np.float32)


def dense_bn_model():
    """image(3) -> d1(4) -> bn1 -> relu -> {ha(3) -> a(2), b(1)}; hand-set d1 / bn1 / ha."""
    x = keras.Input((3,), name="image")
    h = keras.layers.Dense(4, name="d1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    a = keras.layers.Dense(3, name="ha")(h)
    a = keras.layers.Dense(2, name="a")(a)
    b = keras.layers.Dense(1, name="b")(h)
    model = keras.Model({"image": x}, {"a": a, "b": b})
    model.get_layer("d1").set_weights([K1, B1])
    bn = model.get_layer("bn1")
    bn.set_weights([GAMMA, BETA, np.zeros(4, np.float32), np.ones(4, np.float32)])
    ha = model.get_layer("ha")
    ha.set_weights([np.arange(12, dtype=np.float32).reshape(4, 3) - 6, np.zeros(3, np.float32)])
    return model


def linear_model(u=(1.0, 1.0), v=(1.0, -1.0)):
    """image(3) -> h(2, no bias) -> a = h.u, b = h.v (no bias): gradients by hand."""
    x = keras.Input((3,), name="image")
    h = keras.layers.Dense(2, use_bias=False, name="h")(x)
    a = keras.layers.Dense(1, use_bias=False, name="a")(h)
    b = keras.layers.Dense(1, use_bias=False, name="b")(h)
    model = keras.Model({"image": x}, {"a": a, "b": b})
    model.get_layer("h").set_weights([np.array([[1.0, 0.5], [-1.0, 2.0], [0.5, -0.5]], np.float32)])
    model.get_layer("a").set_weights([np.array(u, np.float32).reshape(2, 1)])
    model.get_layer("b").set_weights([np.array(v, np.float32).reshape(2, 1)])
    return model


def conv_model():
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    a = keras.layers.Conv2D(6, 1, activation="relu", name="ha")(h)
    a = keras.layers.Conv2D(2, 1, name="a")(a)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    b = keras.layers.Dense(6, activation="relu", name="hb")(g)
    b = keras.layers.Dense(3, name="b")(b)
    model = keras.Model({"image": x}, {"a": a, "b": b})
    model.compile(keras.optimizers.Adam(1e-2),
                  loss={"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def conv_data(n=32, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype(np.float32)
    y = {"a": rng.standard_normal((n, 8, 8, 2)).astype(np.float32),
         "b": rng.integers(0, 3, n).astype(np.int32)}
    return tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(batch)


class HalfAtTen:
    """A duck-typed schedule (the tfmot protocol without tfmot)."""

    def __call__(self, step):
        return tf.equal(step, 10), tf.constant(0.5)
