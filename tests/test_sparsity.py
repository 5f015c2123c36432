"""Group sparsity (Upadhyay et al. 2024): regularizer, proximal operators and callback, report, example."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfmot_mtl.masks import masks_from_zeros
from tfmot_mtl.sparsity import (ChannelGroupLasso, ProximalGroupLasso, apply_group_sparsity,
                                evaluate_strength, prox_adam, prox_plain, solve_theta,
                                sparsity_report)
from tfmot_mtl.sparsity.prox_ops import group_sums
from tfmot_mtl.strip import strip_channels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def two_task_model(bn: bool = True):
    """Shared trunk c1 (-> bn1) -> c2, a dense head 'seg' and a pooled head hb -> 'cls'."""
    x = keras.Input((6, 6, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=not bn, name="c1")(x)
    if bn:
        h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    seg = keras.layers.Conv2D(2, 1, name="seg")(h)
    p = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    b = keras.layers.Dense(4, activation="relu", name="hb")(p)
    cls = keras.layers.Dense(3, name="cls")(b)
    return keras.Model(x, {"seg": seg, "cls": cls})


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6, 6, 3)).astype("float32")
    y = {"seg": rng.random((n, 6, 6, 2)).astype("float32"), "cls": rng.integers(0, 3, n)}
    return x, y


def zero_loss(y_true, y_pred):
    return 0.0 * keras.ops.sum(y_pred)


# ------------------------------------------------------------------ regularizer
def test_regularizer_output_axis_hand_value():
    w = np.array([[3.0, 0.0], [4.0, 1.0], [0.0, 0.0]], "float32")  # Dense (in=3, out=2)
    # output groups: columns [3,4,0] (norm 5) and [0,1,0] (norm 1); p_g = 3
    reg = ChannelGroupLasso(0.1)
    assert float(reg(w)) == pytest.approx(0.1 * np.sqrt(3) * 6.0, rel=1e-6)
    # input groups: rows (norms 3, sqrt 17, 0), p_g = 2
    reg_in = ChannelGroupLasso(0.1, axis="input")
    assert float(reg_in(w)) == pytest.approx(0.1 * np.sqrt(2) * (3 + np.sqrt(17)), rel=1e-6)


def test_regularizer_conv_axes_l2_and_scales():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 3, 4, 5)).astype("float32")  # (kh, kw, in, out)
    out_norms = np.sqrt((w ** 2).sum(axis=(0, 1, 2)))
    in_norms = np.sqrt((w ** 2).sum(axis=(0, 1, 3)))
    l2 = 0.01 * (w ** 2).sum()
    cases = [
        (ChannelGroupLasso(0.2, 0.01), 0.2 * np.sqrt(36) * out_norms.sum() + l2),
        (ChannelGroupLasso(0.2, 0.01, "input"), 0.2 * np.sqrt(45) * in_norms.sum() + l2),
        (ChannelGroupLasso(0.2, 0.0, "output", "sqrt_num_groups"), 0.2 * np.sqrt(5) * out_norms.sum()),
        (ChannelGroupLasso(0.2, 0.0, "input", "sqrt_num_groups"), 0.2 * np.sqrt(4) * in_norms.sum()),
        (ChannelGroupLasso(0.2, 0.0, "output", "none"), 0.2 * out_norms.sum()),
        (ChannelGroupLasso(0.0, 0.01), l2),
    ]
    for reg, expected in cases:
        assert float(reg(w)) == pytest.approx(expected, rel=1e-5), reg


def test_regularizer_zero_group_has_finite_gradient_and_config():
    import tensorflow as tf

    w = tf.Variable(np.array([[0.0, 1.0], [0.0, 2.0]], "float32"))
    reg = ChannelGroupLasso(0.5)
    with tf.GradientTape() as tape:
        value = reg(w)
    grad = tape.gradient(value, w).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad[:, 0], 0.0)
    np.testing.assert_allclose(grad[:, 1], 0.5 * np.sqrt(2) * np.array([1, 2]) / np.sqrt(5), rtol=1e-6)
    again = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert isinstance(again, ChannelGroupLasso) and again.get_config() == reg.get_config()
    for bad in (dict(l1=-1), dict(l1=1, axis="depth"), dict(l1=1, scale="sqrt")):
        with pytest.raises(ValueError):
            ChannelGroupLasso(**bad)


# ------------------------------------------------------------------ proximal math
def test_prox_plain_exact_zero_and_shrink_factor():
    w = np.array([3.0, 4.0, 0.1, 0.1, 0.0, 0.0], "float32")
    group = np.array([0, 0, 1, 1, 2, 2])
    tau = np.array([2.0, 0.2, 0.5])
    out = prox_plain(w, group, tau)
    np.testing.assert_allclose(out[:2], np.array([3, 4]) * (1 - 2 / 5), rtol=1e-6)
    assert (out[2:] == 0).all()  # ||(0.1, 0.1)|| = 0.141 <= 0.2: exact zero
    assert out.dtype == np.float32


def test_prox_adam_equal_metric_matches_closed_form():
    # D constant within a group: theta = ||w|| - tau / d, factor = theta / ||w||.
    w = np.array([3.0, 4.0, 1.0, 0.0])
    d = np.array([2.0, 2.0, 0.5, 0.5])
    group = np.array([0, 0, 1, 1])
    tau = np.array([4.0, 0.5])  # ||Dw||: 10 > 4 -> shrink; 0.5 <= 0.5 -> zero
    out = prox_adam(w, d, group, tau)
    np.testing.assert_allclose(out[:2], np.array([3.0, 4.0]) * (5 - 2) / 5, rtol=1e-9)
    assert (out[2:] == 0).all()


def test_prox_adam_theta_solves_equation():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(50), 7)
    w = rng.standard_normal(350)
    d = np.exp(rng.standard_normal(350))
    tau = rng.random(50) * 4
    out = prox_adam(w, d, group, tau)
    dnorm = np.sqrt(group_sums((d * w) ** 2, group, 50))
    dead = dnorm <= tau
    assert dead.any() and (~dead).any()
    theta = np.sqrt(group_sums(out ** 2, group, 50))
    assert (theta[dead] == 0).all()
    f = group_sums(w ** 2 / (theta[group] + tau[group] / d) ** 2, group, 50)
    np.testing.assert_allclose(f[~dead], 1.0, atol=1e-6)
    # the update is w * D theta / (D theta + tau) elementwise
    live = ~dead[group]
    expected = w * d * theta[group] / (d * theta[group] + tau[group])
    np.testing.assert_allclose(out[live], expected[live], rtol=1e-6)
    th = solve_theta(w[:7], tau[0] / d[:7] * 0 + 0.1, group[:7], 1)
    assert np.sum(w[:7] ** 2 / (th[0] + 0.1) ** 2) == pytest.approx(1.0, abs=1e-7)


# ------------------------------------------------------------------ callback
def _expected_plain(model, lr, lam, groups=("c1", "c2")):
    """Hand prox of the trunk channels: c1 kernel cols + bn1 gamma/beta; c2 kernel cols + bias."""
    w = {v.path: np.array(v.numpy(), np.float64) for v in model.weights}
    slices = {"c1": [("c1/kernel", -1), ("bn1/gamma", 0), ("bn1/beta", 0)],
              "c2": [("c2/kernel", -1), ("c2/bias", 0)]}
    for g in groups:
        cols = [np.moveaxis(w[p], ax, -1).reshape(-1, 8) for p, ax in slices[g]]
        block = np.concatenate(cols, axis=0)
        norm = np.sqrt((block ** 2).sum(axis=0))
        tau = lr * lam * np.sqrt(block.shape[0])
        factor = np.where(norm > tau, 1 - tau / np.where(norm > 0, norm, 1), 0.0)
        for p, ax in slices[g]:
            w[p] = w[p] * factor.reshape([-1 if i == w[p].ndim + ax or i == ax else 1
                                          for i in range(w[p].ndim)])
    return w


def test_callback_plain_step_with_learning_rate_schedule():
    model = two_task_model()
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.5, 0.25])
    model.compile(keras.optimizers.SGD(lr), loss={"seg": zero_loss, "cls": zero_loss})
    x, y = data(8)
    lam = 0.3
    head = model.get_layer("hb").kernel.numpy()
    before = _expected_plain(model, 0.5, lam)  # step 1 uses lr(0) = 0.5
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=lam, groups="shared")
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    for v in model.weights:
        if v.path in before and v.path.startswith(("c1", "bn1/gamma", "bn1/beta", "c2")):
            np.testing.assert_allclose(v.numpy(), before[v.path], rtol=1e-5, atol=1e-7)
    expected = _expected_plain(model, 0.25, lam)  # step 2 uses lr(1) = 0.25
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    for v in model.weights:
        if v.path.startswith(("c1", "bn1/gamma", "bn1/beta", "c2")):
            np.testing.assert_allclose(v.numpy(), expected[v.path], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(model.get_layer("hb").kernel.numpy(), head)  # not shared


def test_lambda_schedule_is_honoured():
    def channel_norms(m):
        return np.sqrt((m.get_layer("c2").kernel.numpy().astype(np.float64) ** 2).sum(axis=(0, 1, 2))
                       + m.get_layer("c2").bias.numpy() ** 2)

    class EveryOther:
        def __call__(self, step):
            return step % 2 == 0, 0.01

    model = two_task_model(bn=False)
    model.compile(keras.optimizers.SGD(1.0), loss={"seg": zero_loss, "cls": zero_loss})
    x, y = data(16)
    n0 = channel_norms(model)
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=EveryOther(), groups=["c2"])
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[cb], verbose=0)  # 4 steps, 2 applied
    tau = 0.01 * np.sqrt(3 * 3 * 8 + 1)
    np.testing.assert_allclose(channel_norms(model), np.maximum(n0 - 2 * tau, 0), rtol=1e-5)
    # a plain callable step -> float, times a multiplier schedule that is off
    assert evaluate_strength(lambda s: 0.1 * s, 3) == (True, pytest.approx(0.3))
    off = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=lambda s: 5.0, schedule=lambda s: (False, 1.0), groups=["c2"])
    before = model.get_weights()
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[off], verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_training_zeros_persist_masks_and_strip_parity():
    model = apply_group_sparsity(two_task_model(), groups="shared", l1=1e-3)
    model.compile(keras.optimizers.Adam(1e-2),
                  loss={"seg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    x, y = data(32)
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=2.0)  # lambda >= 1: tau exceeds an Adam step, zeros cannot revive
    hist = model.fit(x, y, batch_size=8, epochs=2, callbacks=[cb], verbose=0)
    zero1 = cb.zero_channels()
    n_dead = sum(int(z.sum()) for z in zero1.values())
    assert 0 < n_dead < 16, zero1
    assert hist.history["group_sparsity"][-1] == pytest.approx(n_dead / 16)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    zero2 = cb.zero_channels()
    for gid in zero1:
        assert (zero2[gid] >= zero1[gid]).all(), "a zeroed channel came back"
    masks = masks_from_zeros(model, min_channels=0)
    for gid, z in zero2.items():
        np.testing.assert_array_equal(~masks[gid], z)
    small, report = strip_channels(model)
    assert report.totals["params_after"] < report.totals["params_before"]
    ref, out = model.predict(x, verbose=0), small.predict(x, verbose=0)
    for k in ref:
        scale = np.abs(ref[k]).max() + 1e-12
        assert np.abs(ref[k] - out[k]).max() / scale <= 1e-4


def test_adam_mode_zeroes_and_requires_adam():
    x, y = data(16)
    for opt in (keras.optimizers.Adam(1e-2), keras.optimizers.AdamW(1e-2, weight_decay=0.1)):
        model = two_task_model()
        model.compile(opt, loss={"seg": "mse", "cls": zero_loss})
        cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=0.1, mode="adam")
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[cb], verbose=0)
        assert 0 < cb.sparsity() <= 1
        dead = cb.zero_channels()["c1"]
        assert (model.get_layer("bn1").gamma.numpy()[dead] == 0).all()
    model = two_task_model()
    model.compile(keras.optimizers.SGD(0.1), loss={"seg": "mse", "cls": zero_loss})
    with pytest.raises(ValueError, match="Adam"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=1e-3, mode="adam")])


def test_adam_preconditioner_is_bias_corrected_second_moment():
    model = two_task_model(bn=False)
    opt = keras.optimizers.Adam(1e-2, beta_2=0.9, epsilon=1e-3)
    model.compile(opt, loss={"seg": "mse", "cls": zero_loss})
    x, y = data(8)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=0.0, mode="adam", groups=["c2"]).build(model)
    ds = cb._preconditioners(opt, 3)
    kernel = model.get_layer("c2").kernel
    v = opt._velocities[opt._get_variable_index(kernel)].numpy()
    e = [i for i, e in enumerate(cb.entries) if cb.variables[e.var] is kernel][0]
    np.testing.assert_allclose(ds[e], np.sqrt(v / (1 - 0.9 ** 3)) + 1e-3, rtol=1e-6)


def test_callback_config_roundtrip_and_l1_from_regularizers():
    ramp = keras.optimizers.schedules.PolynomialDecay(0.0, 10, end_learning_rate=1.0)
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=2e-3, schedule=ramp, groups=["c1"], update_every=2)
    again = ProximalGroupLasso.from_config(cb.get_config())
    assert again.get_config() == cb.get_config()
    assert again.strength(5) == (True, pytest.approx(2e-3 * 0.5))
    with pytest.raises(ValueError):
        ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=lambda s: 1.0).get_config()
    with pytest.raises(ValueError):
        ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", mode="fista")
    model = apply_group_sparsity(two_task_model(), l1=0.25, groups=["c2"], scale="none")
    built = ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="all").build(model)
    assert [g.id for g in built.groups] == ["c2"]
    np.testing.assert_allclose(built._lambda, 0.25)
    with pytest.raises(ValueError, match="l1=None"):
        ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared").build(two_task_model())


# ------------------------------------------------------------------ apply / save
def test_apply_group_sparsity_clone_and_selection():
    model = two_task_model()
    weights = [w.copy() for w in model.get_weights()]
    reg_model = apply_group_sparsity(model, groups="shared", l1=1e-3, l2=1e-4)
    assert reg_model is not model
    assert all(getattr(l, "kernel_regularizer", None) is None for l in model.layers)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(weights, reg_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    regs = {l.name for l in reg_model.layers if isinstance(getattr(l, "kernel_regularizer", None),
                                                            ChannelGroupLasso)}
    assert regs == {"c1", "c2"}  # shared trunk only; hb feeds only 'cls'
    assert len(reg_model.losses) == 2
    every = apply_group_sparsity(model, 1e-3, groups="all")
    assert {l.name for l in every.layers if getattr(l, "kernel_regularizer", None)} == {"c1", "c2", "hb"}
    with pytest.warns(DeprecationWarning, match=r"apply_group_sparsity\(layers=...\) is deprecated: pass groups="):
        named = apply_group_sparsity(model, 1e-3, layers=["hb"], axis="input")  # any layer with a kernel
    assert named.get_layer("hb").kernel_regularizer.axis == "input"
    with pytest.warns(DeprecationWarning):
        picked = apply_group_sparsity(model, 1e-3, layers=lambda l: l.name == "seg")  # a callable of layers
    assert picked.get_layer("seg").kernel_regularizer is not None
    with pytest.raises(ValueError, match="unknown layer"), pytest.warns(DeprecationWarning):
        apply_group_sparsity(model, 1e-3, layers=["nope"])
    by_group = apply_group_sparsity(model, 1e-3, groups=lambda g: "cls" in g.tasks and len(g.tasks) == 1)
    assert {l.name for l in by_group.layers if getattr(l, "kernel_regularizer", None)} == {"hb"}
    with pytest.raises(TypeError, match="pass groups= only"):
        apply_group_sparsity(model, 1e-3, groups="shared", layers="all")


def test_single_task_model_warns_and_selects_nothing():
    x = keras.Input((4,), name="image")
    h = keras.layers.Dense(5, name="d1")(x)
    out = keras.layers.Dense(2, name="only")(h)
    model = keras.Model(x, {"only": out})
    with pytest.warns(UserWarning, match="no prunable channel group shared"):
        clone = apply_group_sparsity(model, 1e-3, groups="shared")
    assert all(getattr(l, "kernel_regularizer", None) is None for l in clone.layers)
    with pytest.warns(UserWarning):
        report = sparsity_report(model, groups="shared")
    assert report["channels"] == 0 and report["channel_sparsity"] == 0.0


def test_regularized_model_roundtrips_through_keras_file(tmp_path):
    model = apply_group_sparsity(two_task_model(), groups="shared", l1=1e-3, l2=1e-5, scale="sqrt_num_groups")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    reg = loaded.get_layer("c1").kernel_regularizer
    assert isinstance(reg, ChannelGroupLasso)
    assert reg.get_config() == {"l1": 1e-3, "l2": 1e-5, "axis": "output", "scale": "sqrt_num_groups"}
    np.testing.assert_allclose(sum(float(l) for l in loaded.losses),
                               sum(float(l) for l in model.losses), rtol=1e-6)


# ------------------------------------------------------------------ report
def test_sparsity_report_counts_and_plot(tmp_path):
    model = two_task_model(bn=False)
    c1 = model.get_layer("c1")
    k = c1.kernel.numpy()
    k[..., [1, 5]] = 0
    c1.kernel.assign(k)
    c1.bias.assign(np.where(np.isin(np.arange(8), [1, 5]), 0, 0.1).astype("float32"))
    path = tmp_path / "pattern.png"
    report = sparsity_report(model, groups="shared", plot_path=path)
    g = report["groups"]["c1"]
    assert g["dead"] == [1, 5] and g["channel_sparsity"] == 0.25
    per_channel = 3 * 3 * 3 + 1 + 3 * 3 * 8  # c1 kernel col + bias + c2 input rows
    assert g["params"] == 8 * per_channel and g["zero_params"] == 2 * per_channel
    assert report["zero_channels"] == 2 and report["channels"] == 16
    assert report["param_sparsity"] == pytest.approx(2 * per_channel / report["params"])
    assert path.exists() and path.stat().st_size > 1000


# ------------------------------------------------------------------ example
@pytest.mark.slow  # 25-70 s on 2 CPU cores (a fresh process builds and traces a ResNet)
def test_example_runs_fast(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "group_sparsity.py"),
                           "--fast", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "parity OK" in proc.stdout
    total = [l for l in proc.stdout.splitlines() if l.startswith("TOTAL ")][0]
    assert float(total.split()[2]) > 0  # some channels died
    assert (tmp_path / "sparsity_pattern.png").exists()


def test_target_sparsity_controller_steers_to_target():
    """With `target`, the gain grows until enough channels are dead, then the pattern is locked."""
    keras.utils.set_random_seed(0)
    model = two_task_model()
    model.compile(keras.optimizers.Adam(1e-2),
                  loss={"seg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    x, y = data(32)
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=1e-3, target=0.5, adapt_rate=0.1)
    hist = model.fit(x, y, batch_size=4, epochs=12, callbacks=[cb], verbose=0)
    assert cb.gain > 1.0  # lambda had to grow from 1e-3 to kill channels
    assert cb.locked is not None and 0.5 <= cb.sparsity() <= 0.75
    locked = hist.history["group_sparsity"].index(cb.sparsity())
    assert all(v == cb.sparsity() for v in hist.history["group_sparsity"][locked:])  # stays dead
    again = ProximalGroupLasso.from_config(cb.get_config())
    assert again.target == 0.5 and again.gain == cb.gain
    with pytest.raises(ValueError, match="target sparsity"):
        ProximalGroupLasso(min_channels=0, min_fraction=0.0, groups="shared", l1=0.1, target=1.0)


def test_min_fraction_keeps_strongest_channels_of_every_group():
    keras.utils.set_random_seed(0)
    model = two_task_model()
    model.compile(keras.optimizers.SGD(0.1), loss={"seg": zero_loss, "cls": zero_loss})
    x, y = data(8)
    cb = ProximalGroupLasso(min_channels=0, groups="shared", l1=1e6, min_fraction=0.25)  # kills everything that is not protected
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    for gid, zero in cb.zero_channels().items():
        assert (~zero).sum() == 2, gid  # ceil(0.25 * 8) strongest channels survive untouched
    with pytest.raises(ValueError, match="min_fraction"):
        ProximalGroupLasso(min_channels=0, groups="shared", l1=1.0, min_fraction=1.0)


def test_update_every_leaves_exact_zeros_at_every_epoch_end_validation_and_the_end():
    """With update_every=3 and 5 steps per epoch, Adam revives the zeroed channels in the
    steps between proximal steps; the callback takes a catch-up step before each validation,
    at each epoch end and at the end, so what EarlyStopping / checkpoints see is exactly sparse."""
    keras.utils.set_random_seed(0)
    model = two_task_model()
    model.compile(keras.optimizers.Adam(1e-2), loss={"seg": "mse", "cls": zero_loss})
    x, y = data(40)
    prox = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=5.0, groups=["c1", "c2"], update_every=3)
    seen = []

    class Probe(keras.callbacks.Callback):
        def _record(self, when):
            zero = np.asarray(prox.zero_channels()["c1"])  # the last proximal step's pattern
            kernel = model.get_layer("c1").kernel.numpy()
            seen.append((when, int(prox.last_step), int(model.optimizer.iterations.numpy()), zero.sum(),
                         float(np.abs(kernel[..., zero]).max()) if zero.any() else 0.0))

        def on_test_begin(self, logs=None):
            self._record("validation")

        def on_epoch_end(self, epoch, logs=None):
            self._record("epoch end")

    model.fit(x, y, batch_size=8, epochs=3, validation_data=(x[:8], {k: v[:8] for k, v in y.items()}),
              callbacks=[prox, Probe()], verbose=0)
    assert [s[0] for s in seen] == ["validation", "epoch end"] * 3
    for when, last, step, dead, revived in seen:
        assert last == step, (when, last, step)  # a step was just taken for the updates since the last one
        assert revived == 0.0, when
    assert seen[-1][3] > 0  # channels died
    zero = np.asarray(prox.zero_channels()["c1"])
    assert np.all(model.get_layer("c1").kernel.numpy()[..., zero] == 0)
    model.evaluate(x, y, verbose=0, callbacks=[prox])  # outside fit the step stays off
    assert int(prox.last_step) == int(model.optimizer.iterations.numpy())


def test_relative_thresholds_compare_channels_within_their_layer():
    """With ``relative=True`` a channel dies when it is weak against its own layer: scaling one
    layer's weights by 1000 (free under BatchNorm) changes nothing about which of its channels
    die, where one absolute threshold kills the whole small-scale layer and spares the other."""
    def killed(relative: bool) -> dict:
        keras.utils.set_random_seed(0)
        model = two_task_model(bn=False)
        norms = np.arange(1.0, 9.0)  # channel k of c1 and c2 has norm proportional to k + 1
        for name, scale in (("c1", 1.0), ("c2", 1000.0)):
            layer = model.get_layer(name)
            k = np.ones(layer.kernel.shape, np.float32)
            k *= (scale * norms / np.sqrt(k[..., 0].size))[None, None, None, :]
            layer.kernel.assign(k)
            layer.bias.assign(np.zeros(8, np.float32))
        model.compile(keras.optimizers.SGD(1e-9), loss={"seg": zero_loss, "cls": zero_loss})
        lam = (0.6 if relative else 3.5) / 1e-9  # threshold: 0.6 x the layer's mean norm, or 3.5
        cb = ProximalGroupLasso(l1=lam, groups=["c1", "c2"], scale="none", relative=relative,
                                min_channels=0, min_fraction=0.0)
        model.fit(*data(8), batch_size=8, epochs=1, callbacks=[cb], verbose=0)
        return {gid: np.flatnonzero(zero).tolist() for gid, zero in cb.zero_channels().items()}

    # mean norm 4.5: channels with norm <= 0.6 * 4.5 = 2.7 die in each layer, whatever its scale
    assert killed(relative=True) == {"c1": [0, 1], "c2": [0, 1]}
    assert killed(relative=False) == {"c1": [0, 1, 2], "c2": []}
    assert ProximalGroupLasso(l1=0.1, relative=True).get_config()["relative"] is True
