"""Budget-aware multi-domain pruning (dos Santos et al. 2023): switches, penalties, masks, stripping."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl import ChannelGraph, budget
from tfmot_mtl.budget import losses

DOMAINS = [("a", 3), ("b", 4)]


def tiny_backbone(channels=(6, 8)):
    image = keras.Input((8, 8, 3), name="image")
    x = image
    for i, c in enumerate(channels):
        x = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(x)
    return keras.Model({"image": image}, x, name="tiny")


def random_latents(model, seed=0):
    rng = np.random.default_rng(seed)
    for sw in budget.switch_layers(model):
        sw.latent.assign(rng.uniform(-1, 1, sw.latent.shape).astype("float32"))


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.random((n, 8, 8, 3)).astype("float32"),
            "domain": (np.arange(n) % 2).astype("int32")}


def tiny_data(n=64, seed=0):
    """Domain a: which colour channel is brightest; domain b: brightness quartile."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype("float32") * 0.5
    dom = (np.arange(n) % 2).astype("int32")
    y = np.zeros(n, "int32")
    for i in range(n):
        if dom[i] == 0:
            y[i] = rng.integers(0, 3)
            x[i, :, :, y[i]] += 0.5
        else:
            y[i] = rng.integers(0, 4)
            x[i] += 0.12 * y[i]
    ds = tf.data.Dataset.from_tensor_slices(({"image": x, "domain": dom}, {"label": y})).batch(16)
    return ds


# ----------------------------------------------------------------------------- switch


def test_ste_forward_is_binary_and_gradient_reaches_latent():
    sw = budget.DomainSwitch(2)
    feats = np.ones((3, 2, 2, 3), "float32")
    dom = np.array([0, 1, 0], "int32")
    sw([feats, dom])
    sw.latent.assign(np.array([[0.3, -0.2, 0.0], [-0.5, 0.7, 0.01]], "float32"))
    with tf.GradientTape() as tape:
        out = sw([feats * 2, dom])
        loss = tf.reduce_sum(out)
    np.testing.assert_array_equal(out.numpy()[:, 0, 0], [[2, 0, 0], [0, 2, 2], [2, 0, 0]])
    grad = tape.gradient(loss, sw.latent).numpy()
    # d loss / d latent[d, c] = sum of the features of domain d's examples in channel c (2 * 4 px)
    np.testing.assert_allclose(grad, [[16, 16, 16], [8, 8, 8]])
    onehot = np.eye(2, dtype="float32")[dom]
    np.testing.assert_array_equal(sw([feats, onehot]).numpy(), sw([feats, dom]).numpy())


def test_graph_reads_switch_as_pass_through():
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    graph = ChannelGraph.from_model(model)
    assert {g.id for g in graph.prunable_groups} == {"c0", "c1"}
    assert {s.layer for s in graph.groups["c1"].slices} >= {"c1_switch", "c1", "bn1"}
    assert [sw.name for sw in budget.switch_layers(model)] == ["c0_switch", "c1_switch"]
    out = model(batch())
    assert set(out) == {"a", "b"} and out["a"].shape == (6, 3) and out["b"].shape == (6, 4)


# ------------------------------------------------------------------------------ budget


def test_budget_penalty_zero_within_budget_and_grows_over():
    lam = np.array([2.0, 3.0])
    assert losses.budget_penalty(np.array([0.4, 0.5]), 0.5, lam) == 0.0
    assert losses.budget_penalty(np.array([0.4, 0.6]), 0.5, lam) == pytest.approx(0.3)
    assert losses.budget_penalty(np.array([0.4, 0.8]), 0.5, lam) == pytest.approx(0.9)
    s = [np.ones((2, 4))]
    g = losses.budget_grads(np.array([0.4, 0.8]), 0.5, lam, s, [np.ones(4)], [[0, 1]])
    np.testing.assert_allclose(g[0], [[0, 0, 0, 0], [0.75, 0.75, 0.75, 0.75]])


def test_multiplier_grows_while_violated_and_penalty_lowers_latents():
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    cb = budget.BudgetCallback(budget=0.5, multiplier_lr=0.1, lr=0.01)
    cb.attach(model)
    before = [sw.latent.numpy().copy() for sw in budget.switch_layers(model)]
    lams = []
    for _ in range(3):
        cb.step()
        lams.append(cb.lambdas.copy())
    np.testing.assert_allclose(lams, [[0.05, 0.05], [0.1, 0.1], [0.15, 0.15]])  # usage 1 > 0.5
    after = [sw.latent.numpy() for sw in budget.switch_layers(model)]
    assert all((a < b).all() for a, b in zip(after, before))
    within = budget.BudgetCallback(budget=1.0)
    within.attach(model)
    within.step()
    np.testing.assert_array_equal(within.lambdas, [0, 0])


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, "half", None, True])
def test_bad_budget_raises(bad):
    with pytest.raises(ValueError, match="budget"):
        budget.BudgetCallback(budget=bad)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sharing"):
        budget.BudgetCallback(0.5, sharing="dice")
    with pytest.raises(ValueError, match="measure"):
        budget.BudgetCallback(0.5, measure="flops")
    with pytest.raises(ValueError, match="switch_groups"):
        budget.add_domain_switches(tiny_backbone(), DOMAINS, switch_groups="all")


# ----------------------------------------------------------------------------- sharing


def test_sharing_losses_match_hand_computation():
    s = [np.array([[1, 1, 0, 0], [1, 0, 1, 0]], float)]  # |∩| = 1, |∪| = 3, mean |s_d| = 2, N = 4
    assert losses.sharing_loss(s, "intersection") == pytest.approx((2 - 1) / 4)
    assert losses.sharing_loss(s, "union") == pytest.approx(3 / 4)
    assert losses.sharing_loss(s, "jaccard") == pytest.approx(1 - 1 / 3)
    g = losses.sharing_grads(s, "union")[0]
    np.testing.assert_allclose(g, [[0, 1 / 4, 0, 1 / 4], [0, 0, 1 / 4, 1 / 4]])
    g = losses.sharing_grads(s, "intersection")[0]
    np.testing.assert_allclose(g, [[-1 / 8, 1 / 8, -1 / 8, 1 / 8], [-1 / 8, -1 / 8, 1 / 8, 1 / 8]])
    g = losses.sharing_grads(s, "jaccard")[0]  # -(dI * U - I * dU) / U^2
    np.testing.assert_allclose(g[0], [-3 / 9, 1 / 9, -3 / 9, 1 / 9])
    # cost-weighted, two switches, one serving a single domain (ignored by sharing)
    s2 = s + [np.array([[1, 1], [0, 0]], float)]
    w = [np.array([1, 2, 3, 4.0]), np.ones(2)]
    served = [[0, 1], [0]]
    assert losses.sharing_loss(s2, "jaccard", w, served) == pytest.approx(1 - 1 / 6)
    assert losses.sharing_loss(s2, "union", w, served) == pytest.approx(6 / 10)
    assert losses.sharing_loss(s2, "intersection", w, served) == pytest.approx(((3 + 4) / 2 - 1) / 10)
    identical = [np.array([[1, 0, 1], [1, 0, 1]], float)]
    assert losses.sharing_loss(identical, "jaccard") == 0.0
    assert losses.sharing_loss(identical, "intersection") == 0.0


def test_usage_and_projection():
    lat = [np.array([[0.3, 0.2, -0.1, 0.5], [0.1, 0.2, 0.3, 0.4]]), np.array([[0.1, 0.2], [-0.1, -0.2]])]
    costs = [np.ones(4), np.ones(2)]
    served = [[0, 1], [0, 1]]
    u = losses.usage([(x > 0).astype(float) for x in lat], costs, served, 2)
    np.testing.assert_allclose(u, [5 / 6, 4 / 6])
    proj = losses.project_to_budget(lat, costs, served, 0.5)
    u = losses.usage([(x > 0).astype(float) for x in proj], costs, served, 2)
    assert (u <= 0.5).all()
    # domain 1 (4 of 6 on) loses its lowest latent only; switch 1 stays off, never re-enabled
    np.testing.assert_array_equal(proj[0][1] > 0, [False, True, True, True])
    np.testing.assert_array_equal(proj[1][1] > 0, [False, False])
    assert (proj[1][0] > 0).sum() >= 1  # never a whole switch off by the projection


def test_aligned_projection_uses_one_common_order():
    # domain 0 prefers channels 0, 1; domain 1 prefers 2, 3; summed latents rank 2 > 0 > 1 > 3
    lat = [np.array([[0.5, 0.4, 0.1, 0.05], [0.05, 0.1, 0.6, 0.2]])]
    costs, served = [np.ones(4)], [[0, 1]]
    own = losses.project_to_budget(lat, costs, served, 0.5)
    np.testing.assert_array_equal(own[0] > 0, [[1, 1, 0, 0], [0, 0, 1, 1]])  # union: all 4 channels
    np.testing.assert_allclose(losses.shared_scores(lat, served)[0], [0.55, 0.5, 0.7, 0.25])
    aligned = losses.project_to_budget(lat, costs, served, 0.5, align=True)
    np.testing.assert_array_equal(aligned[0] > 0, [[1, 0, 1, 0], [1, 0, 1, 0]])  # union: 2 channels
    np.testing.assert_allclose(aligned[0][:, [0, 2]], lat[0][:, [0, 2]])  # kept latents untouched
    np.testing.assert_allclose(aligned[0][:, [1, 3]], -1e-3)
    # a switch a domain already has off is never turned back on
    lat[0][1, 0] = -0.2
    aligned = losses.project_to_budget(lat, costs, served, 0.5, align=True)
    np.testing.assert_array_equal(aligned[0] > 0, [[0, 1, 1, 0], [0, 1, 1, 0]])


def test_balanced_projection_prunes_every_switch_by_the_same_share():
    # the stem's latents are all lower than the wide layer's: a global order empties the stem
    stem = np.array([[0.01, 0.02, 0.03, 0.04]])
    wide = np.array([[0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]])
    costs, served = [np.ones(4), np.ones(8)], [[0], [0]]
    plain = losses.project_to_budget([stem, wide], costs, served, 0.5)
    assert (plain[0] > 0).sum() == 1 and (plain[1] > 0).sum() == 5
    balanced = losses.project_to_budget([stem, wide], costs, served, 0.5, balance=True)
    np.testing.assert_array_equal(balanced[0] > 0, [[0, 0, 1, 1]])  # the layer's own lowest go
    np.testing.assert_array_equal(balanced[1] > 0, [[0, 0, 0, 0, 1, 1, 1, 1]])
    np.testing.assert_allclose(losses.within_switch_ranks([np.array([[3.0, 1.0, 2.0]])])[0], [[2 / 3, 0, 1 / 3]])
    # aligned and balanced: one common order inside each switch, nested subsets across domains
    lat = [np.array([[0.5, 0.4, 0.1, 0.05], [0.05, 0.1, 0.6, 0.2]]), np.array([[0.01, 0.02], [0.03, 0.01]])]
    both = losses.project_to_budget(lat, [np.ones(4), np.ones(2)], [[0, 1], [0, 1]], 0.5, align=True, balance=True)
    np.testing.assert_array_equal(both[0] > 0, [[1, 0, 1, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(both[1] > 0, [[1, 0], [1, 0]])
    cb = budget.BudgetCallback(0.5, balance=True)
    assert budget.BudgetCallback.from_config(cb.get_config()).balance is True


def test_annealed_budget_and_alignment_default():
    cb = budget.BudgetCallback(0.25, sharing="jaccard", anneal=True)
    cb.params = {"epochs": 3}
    assert [cb.annealed_budget(e) for e in range(3)] == pytest.approx([0.75, 0.5, 0.25])
    assert cb.align and not budget.BudgetCallback(0.25).align
    assert not budget.BudgetCallback(0.25, sharing="union", align=False).align
    cfg = cb.get_config()
    assert (cfg["anneal"], cfg["align"]) == (True, True)


def test_bn_momentum_option():
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS, bn_momentum=0.9)
    assert {l.momentum for l in model.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}
    with pytest.raises(ValueError, match="bn_momentum"):
        budget.add_domain_switches(tiny_backbone(), DOMAINS, bn_momentum=1.0)


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("sharing", [None, "jaccard"])
def test_training_respects_budget(sharing):
    keras.utils.set_random_seed(0)
    model = budget.add_domain_switches(tiny_backbone((8, 8)), DOMAINS)
    budget.compile_domain_model(model, keras.optimizers.Adam(0.01))
    cb = budget.BudgetCallback(budget=0.5, sharing=sharing, multiplier_lr=0.2, project=False)
    model.fit(budget.domain_targets(tiny_data(), ["a", "b"]), epochs=12, verbose=0, callbacks=[cb])
    n_channels, n_switches = 16, 2
    assert (cb.usage() <= 0.5 + n_switches / n_channels + 1e-9).all(), cb.history[-1]
    assert cb.lambdas.max() > 0
    cb.enforce()
    assert (cb.usage() <= 0.5 + 1e-9).all()
    for mask in budget.domain_masks(model).values():
        assert sum(int(m.sum()) for m in mask.values()) <= 8


# --------------------------------------------------------------------- masks and strip


def test_union_mask_removes_exactly_unused_channels():
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    sw0, sw1 = budget.switch_layers(model)
    sw0.latent.assign(np.array([[1, -1, -1, 1, -1, -1], [1, 1, -1, -1, -1, -1]], "float32"))
    sw1.latent.assign(np.array([[-1] * 8, [-1, 1, -1, -1, -1, -1, -1, 1]], "float32"))
    union = budget.union_masks(model)
    np.testing.assert_array_equal(union["c0"], [1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(union["c1"], [0, 1, 0, 0, 0, 0, 0, 1])
    dm = budget.domain_masks(model)
    np.testing.assert_array_equal(dm["a"]["c0"], [1, 0, 0, 1, 0, 0])
    assert dm["a"]["c1"].sum() == 0
    small, report = budget.strip_domain_model(model, export=False)
    widths = {l.name: l.filters for l in small.layers if isinstance(l, keras.layers.Conv2D)}
    assert widths == {"c0": 3, "c1": 2}
    assert report.groups["c0"] == {"kept": 3, "size": 6}


@pytest.mark.parametrize("export", [False, True])
def test_stripped_model_matches_gated_model_per_domain(export, tmp_path):
    model = budget.add_domain_switches(tiny_backbone(), [("a", 3), ("b", 4), ("c", 2)])
    random_latents(model, seed=3)
    x = batch(9)
    x["domain"] = (np.arange(9) % 3).astype("int32")
    ref = model(x)
    small, report = budget.strip_domain_model(model, export=export)
    assert report.totals["params_after"] < report.totals["params_before"]
    got = small(x)
    for d in ref:
        r, g = np.asarray(ref[d]), np.asarray(got[d])
        assert np.abs(r - g).max() <= 1e-4 * max(1.0, np.abs(r).max())
    if export:
        assert not any(isinstance(l, budget.DomainSwitch) for l in small.layers)
        path = str(tmp_path / "stripped.keras")
        small.save(path)
        with keras.saving.custom_object_scope({}):
            loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(np.asarray(loaded(x)["b"]), np.asarray(got["b"]), atol=1e-6)


def test_gated_model_keras_round_trip(tmp_path):
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    random_latents(model)
    path = str(tmp_path / "gated.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = batch()
    for d in ("a", "b"):
        np.testing.assert_allclose(np.asarray(loaded(x)[d]), np.asarray(model(x)[d]), atol=1e-6)
    assert [s.domain_names for s in budget.switch_layers(loaded)] == [["a", "b"]] * 2
    cb = budget.BudgetCallback.from_config(budget.BudgetCallback(0.25, "union").get_config())
    assert (cb.budget, cb.sharing) == (0.25, "union")


def test_domain_costs_by_hand():
    model = budget.add_domain_switches(tiny_backbone((4, 4)), DOMAINS)
    sw0, sw1 = budget.switch_layers(model)
    sw0.latent.assign(np.array([[1, 1, -1, -1], [1, 1, 1, 1]], "float32"))
    sw1.latent.assign(np.array([[1, -1, -1, -1], [1, 1, 1, 1]], "float32"))
    costs = budget.domain_costs(model)
    # domain a: c0 kernel 3*3*3*2, bn0 4 vectors * 2, c1 kernel 3*3*2*1, bn1 4 * 1,
    # head Dense (1 * 3 + 3), the domain's gates of its kept channels 2 + 1
    assert costs["a"]["params"] == 54 + 8 + 18 + 4 + 6 + 3
    assert costs["a"]["macs"] == 64 * 54 + 64 * 18 + 3
    assert costs["a"]["channels"] == 3 and costs["b"]["channels"] == 8
    base = budget.baseline_costs(model)
    assert base["a"]["params"] == 108 + 16 + 144 + 16 + 4 * 3 + 3


def test_decathlon_score_by_hand():
    score = budget.decathlon_score({"a": 0.1, "b": 0.5, "c": 0.0}, {"a": 0.1, "b": 0.2, "c": 0.0})
    assert score["a"] == pytest.approx(1000 * 0.2 ** -2 * 0.1 ** 2)  # 250
    assert score["b"] == 0.0 and score["c"] == 1000.0
    assert score["total"] == pytest.approx(1250)


@pytest.mark.slow
def test_exported_model_converts_to_tflite():
    from tfmot_mtl import lite

    model = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    random_latents(model)
    small, _ = budget.strip_domain_model(model)
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    x = batch()
    got, ref = lm.predict(x), small(x)
    for d in ("a", "b"):
        np.testing.assert_allclose(got[d], np.asarray(ref[d]), atol=1e-4)


@pytest.mark.slow  # ~25 s; the budget tests above cover the method
def test_example_runs_fast():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "budget_multi_domain.py"), "--fast"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stripped" in out.stdout and "of ONE single-domain model" in out.stdout


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.2"])
def test_cli_bad_budget_exits_non_zero(bad, capsys):
    from tfmot_mtl.app.cli import main

    with pytest.raises(SystemExit) as err:
        main(["budget", "--budget", bad])
    assert err.value.code != 0 and "--budget" in str(err.value.code)


def test_aligned_training_keeps_union_at_budget_on_tiny_problem():
    """With a sharing loss the annealed, aligned projection puts both domains on the same channels."""
    keras.utils.set_random_seed(0)
    model = budget.add_domain_switches(tiny_backbone((8, 8)), DOMAINS)
    budget.compile_domain_model(model, keras.optimizers.Adam(0.01))
    cb = budget.BudgetCallback(budget=0.5, sharing="jaccard", anneal=True, multiplier_lr=0.0)
    model.fit(budget.domain_targets(tiny_data(32), ["a", "b"]), epochs=2, verbose=0, callbacks=[cb])
    assert [h["usage"] for h in cb.history] == [[0.75, 0.75], [0.5, 0.5]]  # annealed 1 -> 0.75 -> 0.5
    assert (cb.usage() <= 0.5 + 1e-9).all()
    assert sum(int(m.sum()) for m in budget.union_masks(model).values()) == 8  # 4 + 4 of 16 channels
    masks = budget.domain_masks(model)
    for gid in ("c0", "c1"):
        np.testing.assert_array_equal(masks["a"][gid], masks["b"][gid])


def test_annealed_penalty_aims_at_the_epochs_budget_not_the_final_one():
    """Annealing 1 -> 0.25 over 3 epochs: the multipliers grow only by the violation of each
    epoch's own budget (0.75, 0.5, 0.25); against the final 0.25 from the first batch they
    grew by ~0.75 per batch and, under Adam, switched every channel off at once."""
    keras.utils.set_random_seed(0)
    model = budget.add_domain_switches(tiny_backbone((8, 8)), DOMAINS)
    budget.compile_domain_model(model, keras.optimizers.Adam(0.01))
    cb = budget.BudgetCallback(budget=0.25, anneal=True, multiplier_lr=0.1)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(cb._terms.target.numpy()))

    data = budget.domain_targets(tiny_data(32), ["a", "b"])
    model.fit(data, epochs=3, verbose=0, callbacks=[cb, Probe()])
    batches = len(seen) // 3
    assert seen == pytest.approx([0.75] * batches + [0.5] * batches + [0.25] * batches)
    assert [cb.epoch_budget(e) for e in range(3)] == pytest.approx([0.75, 0.5, 0.25])
    # usage starts at 1 and is projected to each epoch's budget at its end: the violation is
    # at most 1 - 0.75 = 0.25 per batch
    assert cb.lambdas.max() <= 0.1 * 0.25 * 3 * batches + 1e-9
    assert (cb.usage() <= 0.25 + 1e-9).all() and (cb.usage() > 0).all()
    assert budget.BudgetCallback(0.25).epoch_budget(0) == 0.25  # no annealing: beta throughout


@pytest.mark.slow
def test_cli_budget_tiny(tmp_path):
    from tfmot_mtl.app.cli import main

    out = tmp_path / "budget"
    rc = main(["budget", "--budget", "0.5", "--sharing", "jaccard", "--epochs", "1", "--budget-epochs", "1",
               "--finetune", "0", "--width", "0.125", "--resolution", "16", "--n-train", "8",
               "--out", str(out)])
    assert rc == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert all(u <= 0.5 + 1e-9 for u in report["usage"])
    assert set(report["accuracy"]) == {"digits", "shapes", "textures", "scenes"}
    assert report["summary"]["params_vs_one"] < 1 and report["summary"]["macs_vs_one"] < 1
    masks = json.loads((out / "masks.json").read_text())
    assert set(masks["domains"]) == set(report["accuracy"])
    loaded = keras.saving.load_model(str(out / "budget_stripped.keras"))
    assert sorted(loaded.output_names) == sorted(report["accuracy"])


def test_package_exports_the_user_api_not_the_gradient_internals():
    for name in ("add_domain_switches", "compile_domain_model", "domain_targets", "BudgetCallback", "DomainSwitch",
                 "switch_layers", "domain_masks", "union_masks", "strip_domain_model", "gates_to_stock",
                 "finetune_stripped", "domain_report", "decathlon_score", "pipeline"):
        assert name in budget.__all__ and hasattr(budget, name), name
    for name in ("budget_grads", "sharing_grads", "budget_penalty", "sharing_loss", "project_to_budget",
                 "shared_scores", "usage", "binarize_ste", "DomainSwitchRule"):
        assert name not in budget.__all__, name
    assert callable(losses.sharing_grads) and callable(budget.pipeline.run)  # internals: from their modules
