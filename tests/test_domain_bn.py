"""Domain-specific BatchNormalization in budget-aware multi-domain models (budget.domain_bn)."""
import keras
import numpy as np
import pytest

from tfmot_mtl import ChannelGraph, budget
from tfmot_mtl.budget.domain_bn import DomainBatchNorm

from test_budget import DOMAINS, tiny_backbone  # noqa: E402  (the same two-domain fixture)


def domain_batch(n=8, seed=0):
    """Domain 1's images are brighter and more spread out than domain 0's."""
    rng = np.random.default_rng(seed)
    domain = (np.arange(n) % 2).astype("int32")
    image = rng.random((n, 8, 8, 3)).astype("float32")
    image[domain == 1] = image[domain == 1] * 3 + 2
    return {"image": image, "domain": domain}


@pytest.fixture(scope="module")
def trained():
    """A switched domain-BN model after a few steps on two domains of different statistics,
    with random switches (some channels off for one domain, some for every domain)."""
    seed = 0
    keras.utils.set_random_seed(seed)
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS, domain_bn=True, bn_momentum=0.5)
    budget.compile_domain_model(model, run_eagerly=True)
    x = domain_batch(16, seed)
    y = {"a": np.zeros(16, "int32"), "b": np.ones(16, "int32")}
    w = {"a": (x["domain"] == 0).astype("float32"), "b": (x["domain"] == 1).astype("float32")}
    model.fit(x, y, sample_weight=w, batch_size=16, epochs=4, verbose=0)
    rng = np.random.default_rng(seed)
    for sw in budget.switch_layers(model):
        sw.latent.assign(rng.uniform(-1, 1, sw.latent.shape).astype("float32"))
    return model, x


def dbn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, DomainBatchNorm)]


def tiny_mdl():
    backbone = tiny_backbone()
    pooled = keras.layers.GlobalAveragePooling2D()(backbone.output)
    outputs = {n: keras.layers.Dense(k, name=n)(pooled) for n, k in DOMAINS}
    return keras.Model(backbone.input, outputs)


def test_every_bn_becomes_per_domain_and_graph_keeps_groups():
    mdl = tiny_mdl()
    plain = budget.add_domain_switches(mdl, DOMAINS)
    model = budget.add_domain_switches(mdl, DOMAINS, domain_bn=True)
    assert [layer.name for layer in dbn_layers(model)] == ["bn0", "bn1"]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert dbn_layers(model)[0].moving_mean.shape == (2, 6)
    g_plain, g_dbn = ChannelGraph.from_model(plain), ChannelGraph.from_model(model)
    assert sorted(g.id for g in g_dbn.prunable_groups) == sorted(g.id for g in g_plain.prunable_groups)
    x = domain_batch()
    # initialised from the shared BN: same outputs before any training
    for k, v in plain(x, training=False).items():
        np.testing.assert_allclose(model(x, training=False)[k], v, rtol=1e-5, atol=1e-5)


def test_training_statistics_are_per_domain():
    layer = DomainBatchNorm(2, momentum=0.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 4, 4, 3)).astype("float32")
    d = np.array([0] * 4 + [1] * 8, "int32")
    x[d == 1] = x[d == 1] * 2 + 5
    out = np.asarray(layer([x, d], training=True))
    for dom in (0, 1):  # each domain normalised over its own examples only
        sel = x[d == dom]
        np.testing.assert_allclose(layer.moving_mean.numpy()[dom], sel.mean((0, 1, 2)), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance.numpy()[dom], sel.var((0, 1, 2)), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(out[d == dom].mean((0, 1, 2)), 0, atol=1e-4)
    # a domain absent from the batch keeps its statistics
    before = layer.moving_mean.numpy().copy()
    layer([x[d == 1], d[d == 1]], training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy()[0], before[0])


def test_trained_model_statistics_differ_per_domain(trained):
    model, _ = trained
    first, second = dbn_layers(model)
    mean, var = first.moving_mean.numpy(), first.moving_variance.numpy()
    assert np.abs(mean[0] - mean[1]).max() > 0.1 and np.abs(var[0] - var[1]).max() > 0.1
    # later layers see per-domain normalised features: closer statistics, still their own
    assert np.abs(second.moving_mean.numpy()[0] - second.moving_mean.numpy()[1]).max() > 1e-3


def test_strip_parity_per_domain_keras_round_trip_and_stock_layers(trained, tmp_path):
    model, x = trained
    small, report = budget.strip_domain_model(model)
    assert report.totals["params_after"] < report.totals["params_before"]
    assert not any(type(layer).__module__.startswith("tfmot_mtl") for layer in small.layers)
    ref = model(x, training=False)
    out = small(x, training=False)
    for dom, name in enumerate(["a", "b"]):
        sel = x["domain"] == dom
        np.testing.assert_allclose(np.asarray(out[name])[sel], np.asarray(ref[name])[sel], rtol=1e-4, atol=1e-4)
    path = tmp_path / "small.keras"
    small.save(path)
    again = keras.saving.load_model(path, safe_mode=True)  # no custom objects needed
    for k, v in again(x, training=False).items():
        np.testing.assert_allclose(v, out[k], rtol=1e-6, atol=1e-6)
    # the switched training model (custom layers) round-trips too
    model.save(tmp_path / "switched.keras")
    loaded = keras.saving.load_model(tmp_path / "switched.keras")
    assert len(dbn_layers(loaded)) == 2
    for k, v in loaded(x, training=False).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-6, atol=1e-6)


def test_costs_count_one_bn_per_domain():
    model = budget.add_domain_switches(tiny_backbone(), DOMAINS, domain_bn=True)
    plain = budget.add_domain_switches(tiny_backbone(), DOMAINS)
    base_dbn, base_plain = budget.baseline_costs(model), budget.baseline_costs(plain)
    assert base_dbn == base_plain  # ONE single-domain model has one BatchNormalization
    for sw in budget.switch_layers(model) + budget.switch_layers(plain):
        sw.latent.assign(np.ones(sw.latent.shape, "float32"))
    assert budget.domain_costs(model)["a"]["params"] == budget.domain_costs(plain)["a"]["params"]


def test_tflite_parity_per_domain(trained):
    from tfmot_mtl import lite

    model, x = trained
    small, _ = budget.strip_domain_model(model)
    lm = lite.LiteModel(lite.convert(small, verbose=False))
    got, ref = lm.predict(x), small(x, training=False)
    for dom, name in enumerate(["a", "b"]):
        sel = x["domain"] == dom
        np.testing.assert_allclose(np.asarray(got[name])[sel], np.asarray(ref[name])[sel], rtol=1e-4, atol=1e-4)


def test_bad_domain_bn_arguments():
    with pytest.raises(ValueError, match="num_domains"):
        DomainBatchNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        DomainBatchNorm(2, momentum=1.0)
