"""Tests of tfmot_mtl.pruning's ChannelPruningCallback (zeros that stay zero, protect, floor,
rounding, global ranking, TensorBoard, config) and reinitialize."""
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmot_mtl.pruning import (ChannelPruningCallback, CosPrune, IterativeSchedule, Magnitude, Random, Taylor,
                               reinitialize)
from tfmot_mtl.strip import strip_channels

from pruning_models import HalfAtTen, conv_data, conv_model

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ callback


def _pruned_slices_are_zero(model, cb):
    graph = cb.graph
    for gid, mask in cb.masks.items():
        for s in graph.groups[gid].slices:
            if s.role != "out" or not s.zeroed:
                continue
            w = np.moveaxis(graph.layer(s.layer).weights[s.weight].numpy(), s.axis, 0)
            dropped = s.positions[~mask[s.channels]]
            assert np.all(w[dropped] == 0.0), (gid, s.layer, s.weight_name)


def test_callback_prunes_and_channels_stay_exactly_zero():
    model = conv_model()
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.5, frequency=2, step=0.25),
                                verbose=0)
    hist = model.fit(conv_data(), epochs=3, callbacks=[cb], verbose=0)  # 12 steps, last prune at 2
    total = sum(g.size for g in cb.selected)
    assert cb.pruned_channels() == total // 2
    assert hist.history["channel_sparsity"][-1] == pytest.approx(cb.sparsity())
    assert [h["step"] for h in cb.history][:2] == [0, 2]
    _pruned_slices_are_zero(model, cb)  # after 9+ optimizer (Adam) steps since the last prune
    model.fit(conv_data(), epochs=1, callbacks=[cb], verbose=0)
    _pruned_slices_are_zero(model, cb)
    # the masked model and the stripped one agree
    small, report = strip_channels(model, cb.masks)
    x = np.random.default_rng(5).random((4, 8, 8, 3)).astype(np.float32)
    ref, got = model.predict({"image": x}, verbose=0), small.predict({"image": x}, verbose=0)
    for task in ("a", "b"):
        err = np.abs(ref[task] - got[task]).max() / (np.abs(ref[task]).max() + 1e-12)
        assert err <= 1e-4, (task, err)
    assert report.totals["params_after"] < report.totals["params_before"]


@pytest.mark.parametrize("criterion", [CosPrune(), Taylor()], ids=["cosprune", "taylor"])
def test_callback_with_gradient_criteria(criterion):
    model = conv_model()
    cb = ChannelPruningCallback(criterion, IterativeSchedule(target=0.3, frequency=3, count=4),
                                groups="shared", data=conv_data(batch=4).repeat(), score_batches=2,
                                accumulate_every=1, verbose=0)
    model.fit(conv_data(), epochs=2, callbacks=[cb], verbose=0)
    assert {g.id for g in cb.selected} == {"c1", "c2"}
    assert cb.schedule.total_channels == 16
    assert cb.pruned_channels() == 4  # floor(0.3 * 16)
    assert all(cb.masks[g].all() for g in ("ha", "hb"))
    _pruned_slices_are_zero(model, cb)
    with pytest.raises(ValueError, match="data="):
        ChannelPruningCallback(Taylor(), IterativeSchedule(target=0.3, frequency=3, count=4))


def test_protect_layer_and_task():
    model = conv_model()
    cb = ChannelPruningCallback(Random(seed=0), HalfAtTen(), protect=("c2",), verbose=0)
    cb.setup(model)
    assert cb.model is model
    # c2 consumes group c1 and produces group c2: both untouched
    assert {g.id for g in cb.selected} == {"ha", "hb"}
    cb = ChannelPruningCallback(Random(seed=0), HalfAtTen(), protect="a", verbose=0)
    cb.setup(model)
    assert {g.id for g in cb.selected} == {"c1", "c2", "hb"}  # only a's head is protected
    cb.prune_to(0.5, step=0)
    assert cb.masks["ha"].all() and cb.pruned_channels() == 11  # floor(0.5 * (8 + 8 + 6))
    with pytest.raises(ValueError, match="neither a task"):
        ChannelPruningCallback(Random(), HalfAtTen(), protect=("nope",)).setup(model)


def test_min_channels_and_round_to():
    model = conv_model()
    cb = ChannelPruningCallback(Magnitude(), HalfAtTen(), scope="layer", min_channels=3, verbose=0)
    cb.setup(model)
    cb.prune_to(0.9, step=0)
    for g in cb.selected:
        assert cb.masks[g.id].sum() == 3, g.id
    glob = ChannelPruningCallback(Magnitude(), HalfAtTen(), min_channels=2, verbose=0)
    glob.setup(conv_model())
    glob.prune_to(0.95, step=0)
    assert all(glob.masks[g.id].sum() >= 2 for g in glob.selected)
    rounded = ChannelPruningCallback(Magnitude(), HalfAtTen(), round_to=4, verbose=0)
    rounded.setup(conv_model())
    rounded.prune_to(0.4, step=0)
    assert all(rounded.masks[g.id].sum() % 4 == 0 for g in rounded.selected)
    assert rounded.pruned_channels() > 0


@pytest.mark.parametrize("normalize", [None, "mean"])
def test_global_ranking_uses_scores_across_groups(normalize):
    """One ranking over every selected group, of the raw scores or of each group's scores over
    its mean (the criterion's ``normalize``)."""
    from tfmot_mtl.pruning.importance import normalize_scores

    model = conv_model()
    cb = ChannelPruningCallback(Magnitude(normalize=normalize), HalfAtTen(), verbose=0, min_channels=1,
                                min_fraction=0.0)  # no floor: the ranking alone decides
    cb.setup(model)
    scores = normalize_scores(Magnitude()(model, cb.graph), normalize)
    cb.prune_to(0.25, step=0)
    pool = np.concatenate([scores[g.id] for g in cb.selected])
    pruned = np.concatenate([scores[g.id][~cb.masks[g.id]] for g in cb.selected])
    kept = np.concatenate([scores[g.id][cb.masks[g.id]] for g in cb.selected])
    assert len(pruned) == int(0.25 * len(pool)) and pruned.max() <= kept.min()


def test_tensorboard_summaries(tmp_path):
    model = conv_model()
    cb = ChannelPruningCallback(Magnitude(), IterativeSchedule(target=0.2, frequency=2, step=0.1),
                                log_dir=str(tmp_path), verbose=1)
    model.fit(conv_data(n=16), epochs=2, callbacks=[cb], verbose=0)  # prunes at steps 0, 2
    events = [p for p in tmp_path.iterdir() if p.name.startswith("events")]
    assert events
    tags = set()
    for record in tf.data.TFRecordDataset([str(p) for p in events]):
        event = tf.compat.v1.Event.FromString(record.numpy())
        tags |= {v.tag for v in event.summary.value}
    assert {"pruning/sparsity", "pruning/group/c1"} <= tags
    assert cb.history[-1]["sparsity"] == pytest.approx(0.2, abs=0.05)


# ------------------------------------------------------------------ reinit + example


def test_reinitialize_fresh_weights_same_architecture():
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, name="c", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(2, name="t")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model({"image": x}, {"t": out})
    model.get_layer("bn").set_weights([np.full(4, 3.0, np.float32)] * 4)
    fresh = reinitialize(model, seed=0)
    assert [w.shape for w in fresh.weights] == [w.shape for w in model.weights]
    assert [l.name for l in fresh.layers] == [l.name for l in model.layers]
    assert [t.name for t in fresh.inputs] == ["image"] and list(fresh.input) == ["image"]
    assert fresh.output_names == ["t"] and fresh is not model
    assert not np.allclose(fresh.get_layer("c").kernel.numpy(), model.get_layer("c").kernel.numpy())
    np.testing.assert_array_equal(fresh.get_layer("bn").gamma.numpy(), np.ones(4))
    again = reinitialize(model, seed=0)
    np.testing.assert_array_equal(again.get_layer("c").kernel.numpy(), fresh.get_layer("c").kernel.numpy())
    assert fresh.predict({"image": np.zeros((1, 8, 8, 3), np.float32)}, verbose=0)["t"].shape == (1, 2)


@pytest.mark.slow  # trains a small VGG three times: ~1-2 min on 2 CPU cores
def test_example_runs_fast():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "iterative_pruning.py"), "--fast"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "stripped" in res.stdout and "reinitialized" in res.stdout


@pytest.mark.parametrize("criterion", ["Magnitude", "BNScale", "LAMP", "FPGM", "Random", "Taylor", "CosPrune",
                                       "SecondOrder"])
def test_callback_config_round_trips_through_json(criterion):
    import json

    from tfmot_mtl import pruning

    data = [(np.zeros((1, 2), np.float32), np.zeros(1, np.float32))]
    cb = ChannelPruningCallback(getattr(pruning, criterion)(), IterativeSchedule(0.5, frequency=2, count=3),
                                groups=["stem"], round_to=8, target_macs=0.4, protect="seg", data=data, verbose=0)
    config = json.loads(json.dumps(cb.get_config()))
    back = ChannelPruningCallback.from_config(config, data=data)
    assert type(back.importance) is type(cb.importance) and back.get_config() == config
    assert back.cost_kind == "macs" and back.cost_target == 0.4 and back.round_to == 8 and back.protect == ("seg",)
    with pytest.raises(ValueError, match="callable `groups` cannot be serialized"):
        ChannelPruningCallback(pruning.Magnitude(), IterativeSchedule(0.5, frequency=2, count=3),
                               groups=lambda g: True, verbose=0).get_config()
    with pytest.raises(ValueError, match="unknown pruning criterion 'Nope'"):
        ChannelPruningCallback.from_config({**config, "importance": {"class_name": "Nope", "config": {}}})
