"""Per-step method work inside the compiled train step (tfmot_mtl.training.ingraph; tests/prox_graph.py, flat graph ops, is an oracle).

The graph prox must equal the numpy oracle (sparsity.prox_ops) eagerly and under XLA; the
in-graph mask hook must keep pruned channels exactly zero under jit_compile=True.
"""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from scripts import load_script
from test_budget import DOMAINS, tiny_backbone, tiny_data
from pruning_models import conv_data, conv_model
from test_sparsity import data, two_task_model, zero_loss
from tensorflow.python.framework import kernels

from tfmot_mtl import budget, nonzero_in_removed
from tfmot_mtl.training import ingraph
from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule, Magnitude
import prox_graph
from tfmot_mtl.sparsity import ProximalGroupLasso, prox_adam, prox_plain


def _random_groups(seed, n=40, size=400):
    rng = np.random.default_rng(seed)
    group = np.sort(rng.integers(0, n, size))
    group[:n] = np.arange(n)  # every group non-empty
    group = np.sort(group)
    w = (rng.standard_normal(size) * rng.random(n)[group]).astype("float32")
    w[group == 3] = 0.0  # an all-zero group
    tau = (rng.random(n) * 2.0).astype("float64")
    tau[5] = 0.0  # a protected group (threshold 0)
    d = (rng.random(size) * 3 + 0.05).astype("float32")
    return w, d, group.astype(np.int32), tau


@pytest.mark.parametrize("jit", [False, True])
def test_graph_prox_equals_numpy_oracle(jit):
    fn_plain = tf.function(prox_graph.prox_plain, jit_compile=jit)
    fn_adam = tf.function(lambda w, d, g, t: prox_graph.prox_adam(w, d, g, t), jit_compile=jit)
    for seed in range(3):
        w, d, group, tau = _random_groups(seed)
        ref = prox_plain(w, group, tau)
        out = fn_plain(tf.constant(w), tf.constant(group), tf.constant(tau)).numpy()
        assert (ref == 0).any() and (ref != 0).any()
        np.testing.assert_allclose(out, ref, atol=1e-6, rtol=1e-6)
        np.testing.assert_array_equal(out == 0, ref == 0)  # the same groups die
        ref = prox_adam(w, d, group, tau)
        out = fn_adam(tf.constant(w), tf.constant(d), tf.constant(group), tf.constant(tau)).numpy()
        assert (ref == 0).any() and (ref != 0).any()
        np.testing.assert_allclose(out, ref, atol=1e-6, rtol=1e-6)
        np.testing.assert_array_equal(out == 0, ref == 0)


def _numpy_step(cb, model, optimizer, step, mode):
    """The callback's proximal step on copies of the weights, with the numpy oracle."""
    values = [np.array(v.numpy()) for v in cb.variables]
    blocks = [np.moveaxis(values[e.var], e.axis, 0)[e.positions] for e in cb.entries]
    flat = np.concatenate([b.reshape(-1) for b in blocks])
    group = np.concatenate([e.elements for e in cb.entries])
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    tau = lr * cb.l1 * cb._lambda * cb._scale
    if mode == "adam":
        d = np.concatenate([cb._gather(m, e).reshape(-1)
                            for m, e in zip(cb._preconditioners(optimizer, step), cb.entries)])
        new = prox_adam(flat, d, group, tau)
    else:
        new = prox_plain(flat, group, tau)
    start, out = 0, {id(v): val for v, val in zip(cb.variables, values)}
    for e, block in zip(cb.entries, blocks):
        part = new[start:start + block.size].reshape(block.shape)
        start += block.size
        np.moveaxis(out[id(cb.variables[e.var])], e.axis, 0)[e.positions] = part
    return out


@pytest.mark.parametrize("mode,jit", [("plain", True), pytest.param("adam", False, marks=pytest.mark.slow),
                                      ("adam", True)])
def test_in_graph_step_matches_oracle_on_groups_spanning_variables(mode, jit):
    """c1's channels span the conv kernel columns, its bias and BN gamma/beta; run the graph
    step once (XLA-compiled) and compare with the numpy step on the same weights."""
    model = two_task_model()
    opt = keras.optimizers.Adam(1e-2)
    model.compile(opt, loss={"seg": "mse", "cls": zero_loss})
    x, y = data(8)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # non-trivial Adam moments
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=0.3, mode=mode, groups="all")
    cb.set_model(model)
    cb.build(model)
    cb._attach(opt)
    cb._last_step = int(opt.iterations.numpy())  # elapsed = 1
    kinds = {cb.variables[e.var].path.split("/")[-1] for e in cb.entries}
    assert {"kernel", "bias", "gamma", "beta"} <= kinds
    step = int(opt.iterations.numpy()) + 1
    expected = _numpy_step(cb, model, opt, step, mode)
    tf.function(cb._step_graph, jit_compile=jit)()
    # Newton stops at |f - 1| <= 1e-7 in both; where f is flat in theta that leaves theta
    # (hence the shrink factor) uncertain to ~1e-4 relative, in the oracle itself.
    rtol = 1e-6 if mode == "plain" else 1e-4
    for var in cb.variables:
        np.testing.assert_allclose(var.numpy(), expected[id(var)], atol=1e-6, rtol=rtol)
    assert any((expected[id(v)] == 0).any() for v in cb.variables)


@pytest.mark.parametrize("jit", [False, True])
def test_adam_step_with_dying_and_solved_pieces_matches_oracle(jit):
    """c2's channels die (tiny weights), and hb's (no gradient from the zero cls loss, so Adam's
    d is ~eps): their kernels take the scale-only branch, while c1 needs a Newton solve; the
    vector piece (c2/hb biases, bn1 gamma/beta) mixes both. Called alone the step runs as its
    own XLA function; jit=True inlines it into an outer compiled one."""
    model = two_task_model()
    opt = keras.optimizers.Adam(1e-2)
    model.compile(opt, loss={"seg": "mse", "cls": zero_loss})
    x, y = data(8)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    c2 = model.get_layer("c2")
    c2.kernel.assign(np.full(c2.kernel.shape, 1e-9, "float32"))
    c2.bias.assign(np.full(c2.bias.shape, -1e-9, "float32"))
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=0.3, mode="adam", groups="all")
    cb.set_model(model)
    cb.build(model)
    cb._attach(opt)
    cb._last_step = int(opt.iterations.numpy())
    step = int(opt.iterations.numpy()) + 1
    expected = _numpy_step(cb, model, opt, step, "adam")
    assert not expected[id(c2.kernel)].any() and not expected[id(model.get_layer("hb").kernel)].any()
    c1 = model.get_layer("c1").kernel
    assert (np.abs(expected[id(c1)]).sum(axis=(0, 1, 2)) > 0).sum() >= 4  # solved channels, kept
    assert np.abs(expected[id(c1)]).sum() < 0.5 * np.abs(c1.numpy()).sum()
    tf.function(cb._step_graph, jit_compile=jit)()
    for var in cb.variables:
        np.testing.assert_allclose(var.numpy(), expected[id(var)], atol=1e-6, rtol=1e-4)
        np.testing.assert_array_equal(var.numpy() == 0, expected[id(var)] == 0)


@pytest.mark.parametrize("jit", [False, True])
def test_protected_channels_are_the_strongest_with_ties_to_lower_index(jit):
    """min_fraction keeps the strongest ceil(f * size) channels of each group out of the
    shrinkage; the graph ranks them without a sort and must pick what a stable sort picks."""
    model = two_task_model()
    opt = keras.optimizers.Adam(1e-2)
    model.compile(opt, loss={"seg": "mse", "cls": zero_loss})
    cb = ProximalGroupLasso(min_channels=0, l1=0.3, groups="all", min_fraction=0.4)
    cb.set_model(model)
    cb.build(model)
    opt.build(model.trainable_variables)
    cb._attach(opt)
    step = cb._step_graph
    assert step.protect
    rng = np.random.default_rng(0)
    sq = rng.integers(0, 3, step.n).astype(np.float64)  # many ties
    expected = np.zeros(step.n, bool)
    for idx, k in step.protect:
        idx = idx.numpy()
        expected[idx[np.argsort(-sq[idx], kind="stable")[:k]]] = True
    got = tf.function(step._protected, jit_compile=jit)(tf.constant(sq)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_in_graph_prox_depthwise_slices_match_oracle():
    inp = keras.Input((6, 6, 3), name="image")
    h = keras.layers.Conv2D(4, 1, name="pw")(inp)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    a = keras.layers.Conv2D(2, 1, name="a")(h)
    b = keras.layers.Dense(3, name="b")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, {"a": a, "b": b})
    opt = keras.optimizers.SGD(0.5)
    model.compile(opt, loss={"a": "mse", "b": "mse"})
    cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=0.4, groups="all")
    cb.set_model(model)
    cb.build(model)
    opt.build(model.trainable_variables)
    cb._attach(opt)
    assert any(cb.variables[e.var].path.startswith("dw/") for e in cb.entries)
    expected = _numpy_step(cb, model, opt, 1, "plain")
    tf.function(cb._step_graph, jit_compile=True)()
    for var in cb.variables:
        np.testing.assert_allclose(var.numpy(), expected[id(var)], atol=1e-6, rtol=1e-6)


def test_pruned_channels_stay_exactly_zero_under_jit():
    model = conv_model()
    model.compile(keras.optimizers.Adam(5e-2), jit_compile=True,
                  loss={"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.5, frequency=1, step=0.5, end_step=1),
                                verbose=0)
    model.fit(conv_data(n=64, batch=4), epochs=2, verbose=0, callbacks=[cb])  # 32 Adam steps
    assert cb.pruned_channels() > 0 and int(model.optimizer.iterations.numpy()) == 32
    assert nonzero_in_removed(cb.graph, cb.masks) == 0


def _ops_without_gpu_kernel(model, batch) -> tuple[list, set]:
    """Op types of the traced train step (nested and XLA-compiled functions included) that have
    no GPU kernel: on a GPU they would run on the host, with a copy every step."""
    graph_def = tf.function(model.train_step).get_concrete_function(batch).graph.as_graph_def()
    library = graph_def.library.function
    ops = {n.op for n in graph_def.node} | {n.op for f in library for n in f.node_def}
    ops -= {f.signature.name for f in library}  # calls of the functions listed
    host = [op for op in sorted(ops) if not {k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel}
            & {"GPU", "DEFAULT"}]
    return host, ops


@pytest.mark.parametrize("method", ["prox_plain", "prox_adam", "pruning", "budget"])
def test_every_op_of_each_methods_train_step_has_a_gpu_kernel(method):
    """No host-only op (py_function, numpy) in the compiled step of any method: the GPU target's
    "no host transfer per step", checked from the kernel registry without a GPU."""
    if method.startswith("prox"):
        model = two_task_model()
        model.compile(keras.optimizers.Adam(1e-2), loss={"seg": "mse", "cls": zero_loss})
        x, y = data(8)
        cb = ProximalGroupLasso(min_channels=0, min_fraction=0.0, l1=0.3, mode=method.split("_")[1], groups="all")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[cb])
        batch = (tf.constant(x[:4]), {k: tf.constant(v[:4]) for k, v in y.items()})
    elif method == "pruning":
        model = conv_model()
        model.compile(keras.optimizers.Adam(1e-2),
                      loss={"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
        train = conv_data(n=16, batch=4)
        cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(0.5, 1, step=0.5, end_step=1), verbose=0)
        model.fit(train, epochs=1, verbose=0, callbacks=[cb])
        batch = next(iter(train))
    else:
        model = budget.add_domain_switches(tiny_backbone((8, 8)), DOMAINS)
        budget.compile_domain_model(model, keras.optimizers.Adam(0.01))
        train = budget.domain_targets(tiny_data(n=32), ["a", "b"])
        model.fit(train, epochs=1, verbose=0, callbacks=[budget.BudgetCallback(0.5, sharing="jaccard")])
        batch = next(iter(train))
    host, ops = _ops_without_gpu_kernel(model, batch)
    assert not host, f"host-only ops in the {method} train step: {host}"
    hook_op = {"prox_plain": "UnsortedSegmentSum", "prox_adam": "DivNoNan", "pruning": "Mul", "budget": "Maximum"}
    assert len(ops) > 20 and hook_op[method] in ops


def test_hook_runs_once_per_step_and_is_removable():
    x = keras.Input((3,))
    dense = keras.layers.Dense(2)
    model = keras.Model(x, dense(x))
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    calls = ingraph.new_variable(model, 0, "int64", "calls")
    assert ingraph.add_post_update_hook(dense.kernel, "count", lambda: calls.assign_add(1))
    assert not ingraph.add_post_update_hook(dense.kernel, "count", lambda: calls.assign_add(1))
    model.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=2, verbose=0)
    assert int(calls.numpy()) == 4
    ingraph.remove_post_update_hook(dense.kernel, "count")
    assert dense.kernel.constraint is None
    ingraph.refresh_train_function(model)
    model.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=2, verbose=0)
    assert int(calls.numpy()) == 4


@pytest.mark.parametrize("kind", ["intersection", "union", "jaccard"])
def test_budget_and_sharing_gradients_match_numpy_reference(kind):
    from tfmot_mtl.budget import graph_terms, losses

    rng = np.random.default_rng(1)
    latents = [rng.standard_normal((3, 5)).astype("float32"), rng.standard_normal((3, 4)).astype("float32")]
    costs = [rng.random(5) + 0.5, np.ones(4)]
    served = [[0, 1, 2], [0, 2]]
    lam = np.array([0.7, 0.0, 1.3])
    binary = [(x > 0).astype(np.float64) for x in latents]
    u = losses.usage(binary, costs, served, 3)
    assert (u > 0.3).any() and (u <= 0.3).any()
    ref_value = losses.budget_penalty(u, 0.3, lam) + 0.5 * losses.sharing_loss(binary, kind, costs, served)
    ref = [g + 0.5 * s for g, s in zip(losses.budget_grads(u, 0.3, lam, binary, costs, served),
                                       losses.sharing_grads(binary, kind, costs, served))]
    variables = [tf.Variable(x) for x in latents]
    with tf.GradientTape() as tape:
        switches = [budget_ste(v) for v in variables]
        ug = graph_terms.usage(switches, costs, served, 3)
        value = graph_terms.budget_penalty(ug, 0.3, lam) + 0.5 * graph_terms.sharing_loss(switches, kind, costs,
                                                                                          served)
    np.testing.assert_allclose(ug.numpy(), u, rtol=1e-6)
    assert float(value) == pytest.approx(ref_value, rel=1e-5)
    for g, r in zip(tape.gradient(value, variables), ref):
        np.testing.assert_allclose(g.numpy(), r, atol=1e-6)


def budget_ste(v):
    from tfmot_mtl.budget.switch import binarize_ste

    return binarize_ste(tf.convert_to_tensor(v))


@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=pytest.mark.slow)])  # XLA: ~20 s
def test_budget_terms_are_in_the_loss_and_history(jit):
    from test_budget import DOMAINS, tiny_backbone, tiny_data
    from tfmot_mtl import budget

    keras.utils.set_random_seed(0)
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    budget.compile_domain_model(model, keras.optimizers.SGD(0.05))
    model.compile(model.optimizer, loss=model.loss, jit_compile=jit)
    cb = budget.BudgetCallback(budget=0.5, sharing="jaccard", multiplier_lr=0.5, project=False)
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
        (float(logs["budget_penalty"]), float(logs["sharing_loss"]))))
    hist = model.fit(budget.domain_targets(tiny_data(), ["a", "b"]), epochs=3, verbose=0, callbacks=[cb, record])
    assert {"budget_penalty", "sharing_loss"} <= set(hist.history)
    assert max(p for p, _ in seen) > 0 and len(set(seen)) > 1  # per-batch values, not one reference
    assert all(isinstance(v, float) for v in hist.history["budget_penalty"])
    assert cb.lambdas.max() > 0 and int(cb._terms.counter.numpy()) == cb._step
    # the reported loss includes the budget and sharing terms (N * (P + S))
    terms = cb._terms
    for sw in budget.switch_layers(model):  # every switch on: both domains over budget
        sw.latent.assign(np.abs(sw.latent.numpy()) + 0.01)
    cb.lambdas = [1.0, 2.0]
    terms.enabled.assign(True)
    extra = float(terms.loss())
    terms.enabled.assign(False)
    ref = cb.penalties()  # the numpy reference (budget.losses)
    n = sum(len(c) for c in terms.costs)
    assert ref["budget_penalty"] == pytest.approx(1.5)
    assert extra == pytest.approx(n * (ref["budget_penalty"] + ref["sharing_loss"]), rel=1e-5)
    assert float(terms.loss()) == 0.0  # switched off after fit


@pytest.mark.slow  # ~100 s: compiles the example under XLA; the jit tests above cover the in-graph steps
def test_xla_training_example():
    """examples/xla_training.py: each method does its work under jit_compile=True."""
    out = load_script("examples/xla_training.py").main(["--fast"])
    assert 0.25 < out["group_sparsity"] <= 0.75 and out["zero_channels"] > 0  # min_fraction=0.25 caps it
    assert out["pruned_channels"] > 0 and out["nonzero_in_pruned"] == 0
    assert all(0 < u <= 0.5 + 1e-6 for u in out["usage"]), out["usage"]  # under the budget, not switched off
    assert all(lam > 0 for lam in out["lambdas"]) and out["accuracy"]["a"] > 0.5


@pytest.mark.slow  # ~60-85 s each; test_sparsity checks the step against the numpy oracle
@pytest.mark.parametrize("mode", ["adam", "plain"])
def test_prox_step_benchmark_graph_and_xla_forms_write_the_same_weights(tmp_path, mode):
    out = tmp_path / "prox.json"
    result = load_script("benchmarks/prox_step.py").main(
        ["--mode", mode, "--warmup", "2", "--reps", "3", "--resolution", "16", "--width", "0.25", "--batch", "4",
         "--out", str(out)])
    assert result["changed_weights"] and result["max_abs_difference"] <= 1e-6
    assert all(t > 0 for t in result["median_ms"].values()) and set(result["median_ms"]) == {"graph", "xla"}
    assert json.loads(out.read_text())["median_ms"] == result["median_ms"]


@pytest.mark.slow
def test_train_overhead_benchmark_times_every_method(tmp_path):
    """The overhead benchmark runs each method's pair at a tiny size and writes its ratios."""
    out = tmp_path / "overhead.json"
    result = load_script("benchmarks/train_overhead.py").main(
        ["--rounds", "1", "--steps", "3", "--resolution", "16", "--width", "0.25", "--batch", "4",
         "--out", str(out)])
    names = {"plain", "plain_repeat", "group_sparsity", "group_sparsity_adam", "group_sparsity_adam_every4",
             "pruning", "plain_domains", "budget"}
    assert set(result["median_s"]) == names and set(result["ratio"]) == names == set(result["ratio_p10"])
    assert result["ratio_p10"]["plain"] == 1.0 and all(r > 0 for r in result["ratio_p10"].values())
    assert all(np.isfinite(t) and t > 0 for t in result["median_s"].values())
    assert result["ratio"]["plain"] == 1.0 and result["ratio"]["plain_domains"] == 1.0
    assert json.loads(out.read_text())["ratio"] == result["ratio"]
    for n in names:  # one median per round, the ratio the median of the per-round ratios
        assert len(result["round_medians_s"][n]) == 1
        lo, hi = result["ratio_iqr"][n]
        assert lo <= result["ratio"][n] <= hi
    only = load_script("benchmarks/train_overhead.py").main(
        ["--rounds", "1", "--steps", "3", "--resolution", "16", "--width", "0.25", "--batch", "4",
         "--variants", "budget", "--out", str(out)])
    assert set(only["ratio"]) == {"plain_domains", "budget"}  # a variant comes with its baseline
