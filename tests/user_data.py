"""A user's own model and data, as the CLI tests pass them (`--data user_data:two_heads`).

The model has dict outputs "seg" (per-pixel classes) and "cls" (image classes) and an input
named "pixels"; the data functions follow the `package.module:function` contract of
`tfmot_mtl.datasets.spec`: keyword arguments among input_shape / batch_size / seed, returning
`(train, test)` or `(train, test, tasks)`.
"""
import keras
import numpy as np

SEG_CLASSES = 13
CLS_CLASSES = 3
N_TRAIN, N_TEST = 32, 16


def build(input_shape=(32, 32, 3), seg_classes=SEG_CLASSES, cls_classes=CLS_CLASSES, compile=True):
    """Two shared convolutions, a 1x1 segmentation head and a pooled classification head."""
    keras.utils.set_random_seed(0)
    pixels = keras.Input(input_shape, name="pixels")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="trunk1")(pixels)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="trunk2")(h)
    seg = keras.layers.Conv2D(seg_classes, 1, name="seg_logits")(h)
    cls = keras.layers.Dense(cls_classes, name="cls_logits")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(pixels, {"seg": seg, "cls": cls}, name="user_two_heads")
    if compile:
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile("adam", loss={"seg": ce, "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def arrays(n, input_shape=(32, 32, 3), seg_classes=SEG_CLASSES, seed=0):
    """``(x, {"seg", "cls"})`` numpy arrays; every segmentation class id appears."""
    rng = np.random.default_rng(seed)
    h, w = input_shape[0], input_shape[1]
    x = rng.random((n, h, w, input_shape[2] if len(input_shape) > 2 else 3), dtype=np.float32)
    seg = rng.integers(0, seg_classes, (n, h, w)).astype(np.int32)
    seg[0, 0, :seg_classes] = np.arange(seg_classes)[:w]
    return x, {"seg": seg, "cls": rng.integers(0, CLS_CLASSES, n).astype(np.int32)}


def two_heads(input_shape=(32, 32, 3), seed=0):
    """Numpy train / test pairs with 13 segmentation classes (no task specs: they are inferred)."""
    return arrays(N_TRAIN, input_shape, seed=seed), arrays(N_TEST, input_shape, seed=seed + 1)


def square_only(seed=0):
    """32x32 numpy pairs whatever the model's input size."""
    return two_heads((32, 32, 3), seed)


def two_heads_datasets(input_shape=(32, 32, 3), batch_size=8, seed=0):
    """Batched tf.data splits plus their tasks as configs."""
    import tensorflow as tf

    def batched(n, s):
        return tf.data.Dataset.from_tensor_slices(arrays(n, input_shape, seed=s)).batch(batch_size)

    tasks = [{"name": "seg", "kind": "segmentation", "output_channels": SEG_CLASSES},
             {"name": "cls", "kind": "classification", "output_channels": CLS_CLASSES}]
    return batched(N_TRAIN, seed), batched(N_TEST, seed + 1), tasks


def build_two_inputs(input_shape=(24, 40, 3)):
    """Dict inputs "image" and "gain" (a per-image scalar), outputs "seg" and "cls"; compiled."""
    keras.utils.set_random_seed(0)
    image = keras.Input(input_shape, name="image")
    gain = keras.Input((1,), name="gain")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="trunk")(image)
    seg = keras.layers.Conv2D(SEG_CLASSES, 1, name="seg_logits")(h)
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(h), gain])
    cls = keras.layers.Dense(CLS_CLASSES, name="cls_logits")(pooled)
    model = keras.Model({"image": image, "gain": gain}, {"seg": seg, "cls": cls}, name="user_two_inputs")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss={"seg": ce, "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def two_inputs(input_shape=(24, 40, 3), seed=0):
    """Numpy pairs whose inputs are a dict {"image", "gain"} (plus an unused "id")."""
    def split(n, s):
        x, y = arrays(n, input_shape, seed=s)
        rng = np.random.default_rng(s)
        return {"image": x, "gain": rng.random((n, 1), dtype=np.float32), "id": np.arange(n)}, y

    return split(N_TRAIN, seed), split(N_TEST, seed + 1)


def calls(**kwargs):
    """Records the keyword arguments it was called with (in ``CALLS``) and returns two_heads."""
    CALLS.append(kwargs)
    return two_heads(kwargs.get("input_shape") or (32, 32, 3))


CALLS = []


def not_a_pair(input_shape=None):
    """Returns something that is not (train, test)."""
    return "train and test"


def broken(seed=0):
    """Raises, as a user's loader can."""
    raise FileNotFoundError("/data/mine/train.npz")
