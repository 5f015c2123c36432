"""One group-selection vocabulary (tfmot_mtl.selection) for the three methods; one rounding routine."""
import math
import warnings

import keras
import numpy as np
import pytest

from tfmot_mtl import budget
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.masks import ChannelMasks
from tfmot_mtl.pruning import ChannelPruningCallback, Magnitude, Random
from tfmot_mtl.selection import check_selection, producer_layers, select_groups
from tfmot_mtl.sparsity import ProximalGroupLasso, apply_group_sparsity, sparsity_report
from tfmot_mtl.masks import check_round_to, round_masks

L = keras.layers


def mtl_model():
    """stem (+ res_conv, joined by an Add: one group) -> trunk; heads head_a -> 'a', head_b -> 'b'."""
    x = keras.Input((8, 8, 3), name="image")
    stem = L.Conv2D(8, 3, padding="same", name="stem")(x)
    r = L.Conv2D(8, 3, padding="same", name="res_conv")(L.ReLU(name="r0")(stem))
    h = L.ReLU(name="r1")(L.Add(name="add")([stem, r]))
    t = L.Conv2D(8, 3, padding="same", activation="relu", name="trunk")(h)
    a = L.Conv2D(2, 1, name="a")(L.Conv2D(4, 1, activation="relu", name="head_a")(t))
    b = L.Dense(3, name="b")(L.Dense(6, activation="relu", name="head_b")(L.GlobalAveragePooling2D(name="gap")(t)))
    model = keras.Model({"image": x}, {"a": a, "b": b})
    model.compile("adam", loss={"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


@pytest.fixture(scope="module")
def graph():
    return ChannelGraph.from_model(mtl_model())


def ids(groups):
    return [g.id for g in groups]


class Never:
    def __call__(self, step):
        return False, 0.0


# ------------------------------------------------------------------ vocabulary
def test_vocabulary(graph):
    assert graph.groups["stem"].producers == ("stem", "res_conv")  # the residual Add couples them

    def sel(*args, **kwargs):
        picked = ids(select_groups(graph, *args, **kwargs))
        assert picked == [g for g in graph.groups if g in picked]  # always in graph order
        return set(picked)

    assert sel("shared") == {"stem", "trunk"}
    assert sel() == sel("all")  # default: every prunable group
    assert sel("all") == {"stem", "trunk", "head_a", "head_b"}
    # names: any producer of a group selects it (group ids are first-producer names)
    assert sel(["res_conv"]) == {"stem"}
    assert sel(("head_b", "stem")) == {"stem", "head_b"}
    assert sel(lambda g: g.size == 6) == {"head_b"}
    assert sel(lambda lay: lay.name.startswith("head"), callable_of="layer") == {"head_a", "head_b"}
    # protect: a task protects its own head, a layer every group with a slice in it
    assert sel("all", protect="a") == {"stem", "trunk", "head_b"}
    assert sel("all", protect=("a", "b")) == {"stem", "trunk"}
    assert sel("all", protect=["trunk"]) == {"head_a", "head_b"}  # the trunk layer keeps its shape
    assert sel("shared", protect="res_conv") == {"trunk"}
    assert producer_layers(graph, select_groups(graph, "shared")) == ["stem", "res_conv", "trunk"]


@pytest.mark.parametrize("groups, needle", [
    ("shard", "groups must be 'all', 'shared', a callable ChannelGroup -> bool or a list of group ids, "
              "got 'shard' (did you mean 'shared'?)"),
    ("stem", "to select one layer, pass a list: ['stem']"),
    (5, "got int 5"),
    (["stem", 3], "non-string items [3]"),
    (["stme"], "groups names unknown layer(s) ['stme'] (close matches: {'stme': ['stem'"),
    (["r1"], "groups names ['r1'], which produce no prunable channel group ('r1': it has no weights of its "
             "own (it passes channels through): name the layer producing them"),
    (["add"], "'add': it has no weights of its own"),
    (["a"], "'a': frozen: "),
])
def test_selection_errors(graph, groups, needle):
    with pytest.raises(ValueError) as err:
        select_groups(graph, groups)
    assert needle in str(err.value)


def test_protect_and_empty_errors(graph):
    with pytest.raises(ValueError, match=r"protect names 'heda_a', which is neither a task .* close matches: "
                                         r"\['head_a'"):
        select_groups(graph, "all", protect="heda_a")
    with pytest.raises(ValueError, match="protect must hold task or layer names"):
        select_groups(graph, "all", protect=[1])
    with pytest.raises(ValueError, match="protect= removes every selected group"):
        select_groups(graph, "shared", protect="trunk")
    x = keras.Input((4,), name="image")
    single = ChannelGraph.from_model(keras.Model(x, {"only": L.Dense(2, name="only")(L.Dense(5, name="d1")(x))}))
    with pytest.raises(ValueError, match="groups='shared' selects no prunable channel group: model .* has no "
                                         "prunable channel group shared by more than one task; pass groups='all'"):
        select_groups(single, "shared")
    with pytest.warns(UserWarning, match="layers='all' to act on task-specific"):
        assert select_groups(single, "shared", on_empty="warn", argument="layers") == []
    assert select_groups(single, "shared", on_empty="ignore") == []
    assert ids(select_groups(single, "all")) == ["d1"]
    with pytest.raises(ValueError, match="on_empty"):
        select_groups(single, "all", on_empty="quiet")
    assert check_selection(iter(["a", "b"])) == ["a", "b"]


# ------------------------------------------------------ the three methods agree
def _pruned(model, groups, protect):
    cb = ChannelPruningCallback(Random(seed=0), Never(), groups=groups, protect=protect, verbose=0)
    cb.setup(model)
    return ids(cb.selected)


def _sparse(model, groups, protect):
    return ids(ProximalGroupLasso(l1=1.0, groups=groups, protect=protect).build(model).groups)


def _reported(model, groups, protect):
    return list(sparsity_report(model, groups=groups, protect=protect)["groups"])


def _switched(model, groups, protect):
    mdl = budget.add_domain_switches(model, [("a", 2), ("b", 3)], groups=groups, protect=protect)
    gids = {s.name[:-len("_switch")] for s in budget.switch_layers(mdl)}
    return [g for g in ids(ChannelGraph.from_model(model).groups.values()) if g in gids]


@pytest.mark.parametrize("groups, protect", [
    ("shared", ()), ("all", ()), ("all", ("a",)), ("all", ("trunk",)), (["res_conv", "head_b"], ()),
    ("shared", ("res_conv",)),
])
def test_three_methods_select_the_same_groups(graph, groups, protect):
    model = mtl_model()
    want = ids(select_groups(graph, groups, protect))
    assert _pruned(model, groups, protect) == want
    assert _sparse(model, groups, protect) == want
    assert _reported(model, groups, protect) == want
    assert _switched(model, groups, protect) == want
    if isinstance(groups, str):  # the regularizer goes on the selected groups' producers
        reg = apply_group_sparsity(model, 1e-3, groups=groups, protect=protect)
        got = [lay.name for lay in reg.layers if getattr(lay, "kernel_regularizer", None) is not None]
        assert sorted(got) == sorted(producer_layers(graph, select_groups(graph, groups, protect)))


def test_group_callable_and_older_spellings(graph):
    model = mtl_model()
    pick = lambda g: "head_b" in g.producers or g.id == "trunk"  # noqa: E731
    want = ids(select_groups(graph, pick))
    assert set(want) == {"trunk", "head_b"}
    assert _pruned(model, pick, ()) == _switched(model, pick, ()) == want
    assert _sparse(model, pick, ()) == _reported(model, pick, ()) == want  # groups=: a ChannelGroup predicate
    layer_pick = lambda lay: lay.name in ("trunk", "head_b")  # noqa: E731  the older layers=: a layer predicate
    with pytest.warns(DeprecationWarning, match="pass groups="):
        assert ids(ProximalGroupLasso(l1=1.0, layers=layer_pick).build(model).groups) == want
    with pytest.warns(DeprecationWarning, match="pass groups="):
        assert list(sparsity_report(model, layers=layer_pick)["groups"]) == want
    # budget's older switch_groups: "prunable" == groups="all", "shared" == groups="shared"
    for old, new in (("prunable", "all"), ("shared", "shared")):
        mdl = budget.add_domain_switches(model, [("a", 2), ("b", 3)], switch_groups=old)
        assert sorted(s.name for s in budget.switch_layers(mdl)) == \
            sorted(f"{g}_switch" for g in ids(select_groups(graph, new)))
    with pytest.raises(ValueError, match="not both"):
        budget.add_domain_switches(model, [("a", 2), ("b", 3)], switch_groups="shared", groups="all")
    with pytest.raises(ValueError, match="groups must be 'all', 'shared'"):
        budget.add_domain_switches(model, [("a", 2), ("b", 3)], groups="shard")
    with pytest.raises(ValueError, match="groups must be 'all', 'shared', a callable ChannelGroup -> bool or a "
                                         "list of group ids, got 'every'"):
        ProximalGroupLasso(groups="every")
    with pytest.raises(ValueError, match="layers must be 'all', 'shared', a callable layer -> bool or a list "
                                         "of layer names, got 'every'"), pytest.warns(DeprecationWarning):
        ProximalGroupLasso(layers="every")
    cfg = ProximalGroupLasso(l1=1.0, groups=["trunk"], protect="a").get_config()
    assert cfg["groups"] == ["trunk"] and cfg["protect"] == ["a"]
    assert ProximalGroupLasso.from_config(cfg).protect == ("a",)
    old = {**{k: v for k, v in cfg.items() if k != "groups"}, "layers": ["trunk"]}  # a config written before
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert ProximalGroupLasso.from_config(old).group_spec == ["trunk"]


# ------------------------------------------------------------------ rounding
def _old_callback_round(before, mask, scores, r, min_keep):
    """The rounding ChannelPruningCallback did on its own before it used round_masks."""
    mask = mask.copy()
    kept = int(mask.sum())
    if kept == int(before.sum()) or kept % r == 0 or kept == len(mask):
        return mask
    down, up = (kept // r) * r, min(int(before.sum()), -(-kept // r) * r)
    target = up if (up - kept <= kept - down or down < min_keep) else down
    s = np.where(np.isfinite(scores), scores, np.inf)
    if target > kept:
        newly = np.flatnonzero(before & ~mask)
        mask[newly[np.argsort(-s[newly], kind="stable")[:target - kept]]] = True
    else:
        alive = np.flatnonzero(mask)
        mask[alive[np.argsort(s[alive], kind="stable")[:kept - target]]] = False
    return mask


def test_round_masks_with_previous_equals_the_callbacks_former_rounding(graph):
    rng = np.random.default_rng(0)
    for trial in range(400):
        size, r, min_channels = int(rng.integers(3, 20)), int(rng.integers(2, 6)), int(rng.integers(1, 4))
        min_keep = min(size, math.ceil(min_channels / r) * r)
        before = np.ones(size, bool)
        if trial % 2:  # an earlier pruning step left a multiple of r (or the whole group)
            n = min(size, max(min_keep, r * int(rng.integers(1, size // r + 2))))
            before[rng.permutation(size)[:size - n]] = False
        alive = np.flatnonzero(before)
        kept = int(rng.integers(min(min_keep, len(alive)), len(alive) + 1))
        mask = before.copy()
        mask[rng.permutation(alive)[:len(alive) - kept]] = False
        scores = rng.random(size)
        scores[rng.random(size) < 0.1] = np.nan
        want = _old_callback_round(before, mask, scores, r, min_keep)
        got = round_masks(graph, ChannelMasks({"g": mask}, min_channels), r, mode="nearest",
                          scores={"g": scores}, previous=ChannelMasks({"g": before}, 0))["g"]
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_callback_rounded_masks_equal_round_masks():
    keras.utils.set_random_seed(1)
    dense = mtl_model()
    rounded = ChannelPruningCallback(Magnitude(), Never(), round_to=4, verbose=0)
    rounded.setup(dense)
    plain = ChannelPruningCallback(Magnitude(), Never(), min_channels=4, verbose=0)  # same capacity (4 per group)
    twin = keras.models.clone_model(dense)
    twin.set_weights(dense.get_weights())
    plain.setup(twin)
    scores = Magnitude()(dense, rounded.graph)
    before = rounded.masks
    got, unrounded = rounded.prune_to(0.3, step=0), plain.prune_to(0.3, step=0)
    assert any(unrounded[g.id].sum() % 4 for g in plain.selected)  # there was something to round
    want = round_masks(rounded.graph, ChannelMasks({g.id: unrounded[g.id] for g in plain.selected}), 4,
                       mode="nearest", scores=scores, previous=before)
    for g in rounded.selected:
        np.testing.assert_array_equal(got[g.id], want[g.id], err_msg=g.id)
        assert got[g.id].sum() % 4 == 0 or got[g.id].sum() == g.size


def test_round_masks_total_keeps_the_overall_count_where_nearest_moves_it(graph):
    """18 groups of 128 at 70%: each group's nearest multiple of 16 is 32 (75% removed);
    "total" rounds some groups up to 48 so that the overall count stays at 30%."""
    rng = np.random.default_rng(0)
    masks = {f"g{i}": rng.permutation(np.arange(128) < 38) for i in range(18)}  # 38.4 kept on average
    scores = {gid: rng.random(128) for gid in masks}
    nearest = round_masks(graph, ChannelMasks(masks), 16, mode="nearest", scores=scores)
    total = round_masks(graph, ChannelMasks(masks), 16, mode="total", scores=scores)
    assert sum(int(m.sum()) for m in nearest.values()) == 18 * 32
    kept = [int(m.sum()) for m in total.values()]
    assert set(kept) == {32, 48} and abs(sum(kept) - 18 * 38) <= 8, kept
    for gid, m in total.items():  # rounding down drops the weakest, up adds the strongest
        before, s = masks[gid], scores[gid]
        if m.sum() < before.sum():
            assert m[before].sum() == m.sum() and s[m].min() >= s[before & ~m].max()
        else:
            assert m[before].all() and s[m & ~before].min() >= s[~m].max()


def test_round_masks_total_property(graph):
    """Every group at one of its two nearest allowed counts, the total within half a multiple of
    the unrounded one, and the groups rounded up those with the largest remainders."""
    rng = np.random.default_rng(1)
    for trial in range(200):
        r = int(rng.integers(2, 9))
        n = int(rng.integers(1, 12))
        sizes = rng.integers(r + 1, 6 * r, n)
        masks, scores = {}, {}
        for i, size in enumerate(sizes):
            kept = int(rng.integers(r, size))  # at least one multiple: no group is forced up
            masks[f"g{i}"] = rng.permutation(np.arange(size) < kept)
            scores[f"g{i}"] = rng.random(size)
        out = round_masks(graph, ChannelMasks(masks), r, mode="total", scores=scores)
        before = {g: int(m.sum()) for g, m in masks.items()}
        after = {g: int(m.sum()) for g, m in out.items()}
        for g in masks:
            size = len(masks[g])
            assert after[g] in (before[g] // r * r, min(size, -(-before[g] // r) * r)), (trial, g)
        steps = {min(len(masks[g]), -(-before[g] // r) * r) - before[g] // r * r for g in masks if before[g] % r}
        if steps == {r}:  # no group capped at its size: the largest-remainder guarantees hold
            assert abs(sum(after.values()) - sum(before.values())) <= r / 2, trial
            up = [before[g] % r for g in masks if after[g] > before[g]]
            down = [before[g] % r for g in masks if before[g] % r and after[g] < before[g]]
            assert not up or not down or min(up) >= max(down), trial


def test_pruning_callback_round_mode_total_keeps_the_scheduled_sparsity():
    keras.utils.set_random_seed(1)
    dense = mtl_model()
    counts = {}
    for mode in ("nearest", "total"):
        model = keras.models.clone_model(dense)
        model.set_weights(dense.get_weights())
        cb = ChannelPruningCallback(Magnitude(), Never(), scope="layer", round_to=4, round_mode=mode, verbose=0)
        cb.setup(model)
        masks = cb.prune_to(0.3, step=0)
        counts[mode] = sum(int((~masks[g.id]).sum()) for g in cb.selected)
        assert all(masks[g.id].sum() % 4 == 0 or masks[g.id].sum() == g.size for g in cb.selected)
    want = sum(math.floor(0.3 * g.size) for g in cb.selected)  # 2 of every 8: 6 channels of 3 groups
    assert counts["nearest"] == 0 and abs(counts["total"] - want) <= 2, (counts, want)
    with pytest.raises(ValueError, match="round_mode must be 'nearest' or 'total'"):
        ChannelPruningCallback(Magnitude(), Never(), round_to=4, round_mode="up")


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True])
def test_one_round_to_check(bad):
    needle = "round_to must be None or a positive integer (kept channels per group become a multiple of it)"
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_round_to(bad)
    with pytest.raises(ValueError, match="round_to must be None or a positive integer"):
        ChannelPruningCallback(Magnitude(), Never(), round_to=bad)
    with pytest.raises(ValueError, match="round_to must be a positive integer"):
        round_masks(None, ChannelMasks({}), bad)
    assert check_round_to(None) is None and check_round_to(np.int64(8)) == 8


def test_cli_round_to_uses_the_same_check():
    from tfmot_mtl.app.cli import main

    with pytest.raises(SystemExit) as err:
        main(["strip", "missing.keras", "--round-to", "2.5"])
    assert err.value.code == 2
