"""tfmot_mtl.utils._keras_compat: the one module that touches private Keras API."""
import os
import re
import types

import keras
import numpy as np
import pytest

from tfmot_mtl.utils import _keras_compat as kc

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfmot_mtl")

# Private Keras attributes / functions the package relies on (all read in _keras_compat only).
PRIVATE_KERAS = (
    "_learning_rate", "_velocities", "_velocity_hats", "_momentums", "_get_variable_index",
    "_trainable_variables_indices", "_var_key", "_compile_loss", "_user_loss_weights",
    "_compile_metrics", "_outputs_struct", "_inputs_struct", "_nodes_by_depth", "_functional",
    "_keras_history", "_initial_epoch", "_student_loss", "_collective_all_reduce_multi_worker",
    "_maybe_symbolic_build", "_inbound_nodes", "_outbound_nodes", "_flatten_layers",
)


def dict_model():
    x = keras.Input((4,), name="features")
    h = keras.layers.Dense(3, name="trunk")(x)
    return keras.Model({"features": x}, {"a": keras.layers.Dense(2, name="a")(h),
                                         "b": keras.layers.Dense(1, name="b")(h)})


def data(n=8):
    rng = np.random.default_rng(0)
    return ({"features": rng.normal(size=(n, 4)).astype("float32")},
            {"a": rng.normal(size=(n, 2)).astype("float32"), "b": rng.normal(size=(n, 1)).astype("float32")})


def one_adam_step(**kwargs):
    var = keras.Variable(np.ones((2, 3), "float32"), name="w")
    opt = keras.optimizers.Adam(**kwargs)
    opt.build([var])
    grad = np.arange(6, dtype="float32").reshape(2, 3)
    opt.apply_gradients([(keras.ops.convert_to_tensor(grad), var)])
    return opt, var, grad


# ------------------------------------------------------------------------ optimizers


def test_learning_rate_of_a_schedule_is_evaluated_at_the_update_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    opt = keras.optimizers.Adam(schedule)
    for step in (1, 3, 6):
        assert kc.learning_rate(opt, step) == pytest.approx(float(schedule(step - 1)))
    assert kc.learning_rate(opt, 0) == pytest.approx(0.1)


def test_learning_rate_constant_and_variable():
    assert kc.learning_rate(keras.optimizers.SGD(0.03), 7) == pytest.approx(0.03)
    opt = keras.optimizers.Adam(0.01)
    opt.learning_rate = 0.002
    assert kc.learning_rate(opt, 1) == pytest.approx(0.002)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_second_moment_is_what_keras_holds(amsgrad):
    opt, var, grad = one_adam_step(learning_rate=0.1, beta_2=0.9, amsgrad=amsgrad)
    v = keras.ops.convert_to_numpy(kc.adam_second_moment(opt, var))
    held = (opt._velocity_hats if amsgrad else opt._velocities)[opt._get_variable_index(var)]
    np.testing.assert_allclose(v, keras.ops.convert_to_numpy(held))
    np.testing.assert_allclose(v, 0.1 * grad ** 2, rtol=1e-6)  # (1 - beta_2) g^2 after one step


def test_adam_second_moment_picks_the_given_variable():
    a, b = keras.Variable(np.ones(2, "float32")), keras.Variable(np.ones(3, "float32"))
    opt = keras.optimizers.Adam(beta_2=0.5)
    opt.build([a, b])
    opt.apply_gradients([(keras.ops.ones(2) * 2.0, a), (keras.ops.ones(3) * 4.0, b)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kc.adam_second_moment(opt, a)), [2.0, 2.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kc.adam_second_moment(opt, b)), [8.0] * 3)


# ---------------------------------------------------------------------------- models


def test_user_loss_weights():
    model = dict_model()
    assert kc.user_loss_weights(model) == {}  # not compiled
    model.compile("sgd", loss={"a": "mse", "b": "mse"}, loss_weights={"a": 0.25, "b": 2.0})
    weights = kc.user_loss_weights(model)
    assert type(weights) is dict and weights == {"a": 0.25, "b": 2.0}
    model.compile("sgd", loss={"a": "mse", "b": "mse"})
    assert kc.user_loss_weights(model) == {}


def test_structs_and_graph_of_a_dict_model():
    model = dict_model()
    outputs = kc.outputs_struct(model)
    assert isinstance(outputs, dict) and sorted(outputs) == ["a", "b"]
    assert [outputs[k] for k in ("a", "b")] == list(model.outputs)
    inputs = kc.inputs_struct(model)
    assert isinstance(inputs, dict) and list(inputs) == ["features"] and inputs["features"] is model.inputs[0]
    assert kc.tensor_operation(model.inputs[0]).name == "features"
    assert kc.tensor_operation(outputs["a"]) is model.get_layer("a")
    assert kc.has_functional_graph(model)
    nodes = [n for d in kc.nodes_by_depth(model).values() for n in d]
    assert {n.operation.name for n in nodes} >= {"trunk", "a", "b"}


def test_sequential_functional():
    seq = keras.Sequential([keras.layers.Dense(2)])
    assert kc.sequential_functional(seq) is None and not kc.has_functional_graph(seq)
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert kc.has_functional_graph(kc.sequential_functional(seq))
    assert not kc.has_functional_graph(keras.layers.Dense(2))


def test_set_initial_epoch_makes_fit_continue_from_it():
    model = dict_model()
    model.compile("sgd", loss={"a": "mse", "b": "mse"})
    kc.set_initial_epoch(model, 2)
    history = model.fit(*data(), epochs=3, verbose=0)
    assert history.epoch == [2]


def test_untrack_student_loss_gives_a_plain_dict():
    teacher, student = dict_model(), dict_model()
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=2.0))
    distiller.compile("sgd", loss={"a": "mse", "b": "mse"})
    before = distiller._student_loss
    kc.untrack_student_loss(distiller)
    after = distiller._student_loss
    assert type(after) is dict and sorted(after) == ["a", "b"]
    assert all(after[k] is before[k] for k in ("a", "b"))


def test_keras_version_constant():
    assert re.fullmatch(r"3\.\d+", kc.KERAS_TESTED)
    assert kc.keras_is_tested_version() == (keras.__version__.split(".")[:2] == kc.KERAS_TESTED.split("."))


# ------------------------------------------------------------------ missing attributes


@pytest.mark.parametrize("call, attribute", [
    (lambda: kc.learning_rate(object(), 1), "_learning_rate"),
    (lambda: kc.adam_second_moment(types.SimpleNamespace(amsgrad=False), None), "_velocities"),
    (lambda: kc.adam_second_moment(types.SimpleNamespace(amsgrad=True), None), "_velocity_hats"),
    (lambda: kc.adam_second_moment(types.SimpleNamespace(amsgrad=False, _velocities=[]), None),
     "_get_variable_index"),
    (lambda: kc.user_loss_weights(object()), "_compile_loss"),
    (lambda: kc.user_loss_weights(types.SimpleNamespace(_compile_loss=object())), "_user_loss_weights"),
    (lambda: kc.outputs_struct(object()), "_outputs_struct"),
    (lambda: kc.inputs_struct(object()), "_inputs_struct"),
    (lambda: kc.nodes_by_depth(object()), "_nodes_by_depth"),
    (lambda: kc.sequential_functional(object()), "_functional"),
    (lambda: kc.tensor_operation(object()), "_keras_history"),
    (lambda: kc.set_initial_epoch(object(), 1), "_initial_epoch"),
    (lambda: kc.untrack_student_loss(object()), "_student_loss"),
    (lambda: kc.sublayers(object()), "_flatten_layers"),
])
def test_missing_private_attribute_is_a_clear_error(call, attribute):
    with pytest.raises(kc.KerasCompatError) as err:
        call()
    assert isinstance(err.value, RuntimeError)
    message = str(err.value)
    assert f".{attribute}`" in message
    assert keras.__version__ in message and f"Keras {kc.KERAS_TESTED}" in message


def test_multi_worker_patch_names_a_missing_private_function(monkeypatch):
    from keras.src.backend.tensorflow import trainer

    monkeypatch.delattr(trainer, "_tfmot_mtl_multi_worker_patch", raising=False)
    monkeypatch.delattr(trainer, "_collective_all_reduce_multi_worker")
    reduce_per_replica = trainer.reduce_per_replica
    assert not kc.multi_worker_fit_patched()
    with pytest.raises(kc.KerasCompatError, match="_collective_all_reduce_multi_worker"):
        kc.patch_multi_worker_fit()
    assert trainer.reduce_per_replica is reduce_per_replica and not kc.multi_worker_fit_patched()


# ---------------------------------------------------------------- one module only


def test_no_private_keras_access_outside_keras_compat():
    pattern = re.compile(r"(\.|['\"])(" + "|".join(PRIVATE_KERAS) + r")\b|\bkeras\.src\b")
    found = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, PACKAGE)
            if not name.endswith(".py") or rel == os.path.join("utils", "_keras_compat.py"):
                continue
            with open(path) as f:
                for i, line in enumerate(f, 1):
                    if pattern.search(line.split("#")[0]):
                        found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "private Keras API outside tfmot_mtl/utils/_keras_compat.py:\n" + "\n".join(found)
