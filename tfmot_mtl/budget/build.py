"""Building a multi-domain model with per-domain channel switches, and feeding it data.

`add_domain_switches` rebuilds a functional backbone (or a multi-domain model that already
has one output per domain) with a new int32 input "domain" and one `DomainSwitch` per
prunable channel group of the backbone. A group's switch is called after every producer of
the group (after the producer's BatchNormalization when that is its only consumer), so a
switched-off channel is exactly zero everywhere in the group for that domain: the domain
never needs to compute it. Residual streams joined by Add are one group and get one switch.

Mixed-domain batches: the model has one output per domain. `domain_targets` turns the
`multi_domain` batches `({"image", "domain"}, {"label"})` into per-output targets and
per-output sample weights (1 for the examples of that domain, 0 otherwise; other domains'
labels are replaced by 0 so sparse cross-entropy never sees an out-of-range class). With
Keras' default "sum_over_batch_size" reduction the summed loss is the mean over the batch
of each example's loss on its own head.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import tree

from tfmot_mtl.utils import _keras_compat
from tfmot_mtl.budget.domain_bn import from_batch_norm, is_channel_bn, tile_weights
from tfmot_mtl.budget.switch import DomainSwitch
from tfmot_mtl.graph import ChannelGraph
from tfmot_mtl.selection import Selection, check_protect, check_selection, select_groups
from tfmot_mtl.graph.walk import as_functional, output_names

HeadFn = Callable[[Any, str, int], Any]


def _domain_pairs(domains) -> list[tuple[str, int]]:
    from tfmot_mtl.models import check_domains

    return check_domains(domains)


def _default_heads(features, domains: list[tuple[str, int]]) -> dict:
    if len(features.shape) == 4:
        from tfmot_mtl.models.mdl_resnet26 import domain_classifiers

        return domain_classifiers(features, domains)
    if len(features.shape) != 2:
        raise ValueError(f"add_domain_switches: backbone output has shape {features.shape}; pass `heads`.")
    return {name: keras.layers.Dense(k, name=name)(features) for name, k in domains}


def _plain_model(model: keras.Model, domains: list[tuple[str, int]], heads: HeadFn | None) -> keras.Model:
    """The multi-domain model without switches (sharing layers with `model`)."""
    names = [n for n, _ in domains]
    outs = output_names(model)
    if sorted(outs) == sorted(names):
        return model
    if len(model.outputs) != 1:
        raise ValueError(f"add_domain_switches: the model's outputs {outs} must be the domain names "
                         f"{names} (a model with heads) or a single feature tensor (a backbone).")
    features = model.outputs[0]
    if heads is None:
        outputs = _default_heads(features, domains)
    else:
        outputs = {name: heads(features, name, k) for name, k in domains}
    return keras.Model(model.input, outputs, name=model.name)


def _switch_sites(graph: ChannelGraph, groups, domain_names: list[str]) -> dict[str, tuple[str, list[int]]]:
    """Tensor key -> (group id, served domain indices) where a switch goes."""
    flat = graph.flat
    consumers = flat.consumers()
    sites = {}
    for g in groups:
        served = sorted(domain_names.index(t) for t in g.tasks if t in domain_names)
        if not served:
            continue
        for node in flat.nodes:
            if node.name not in g.producers or not node.outputs:
                continue
            key = node.outputs[0]
            after = consumers.get(key, [])
            if len(after) == 1 and isinstance(after[0].layer, keras.layers.BatchNormalization):
                key = after[0].outputs[0]
            sites[key] = (g.id, served)
    return sites


def add_domain_switches(backbone_or_model: keras.Model, domains: Sequence, heads: HeadFn | None = None,
                        switch_groups: str = "prunable", init: float = 0.05,
                        name: str | None = None, bn_momentum: float | None = None, *,
                        groups: Selection | None = None, protect=(), domain_bn: bool = False) -> keras.Model:
    """A multi-domain model with one `DomainSwitch` per selected prunable channel group.

    Args:
        backbone_or_model: a functional model with an "image" input and either one feature
            output (a backbone: heads are added) or one output per domain named by domain.
        domains: (name, num_classes) pairs (or classification Tasks), in domain-index order.
        heads: ``heads(features, name, num_classes) -> logits`` building one domain's head
            (its last layer should be named `name`); default GlobalAveragePooling2D + Dense.
        switch_groups: the older spelling of ``groups``: "prunable" (every prunable group,
            ``groups="all"``, the default) or "shared" (``groups="shared"``: prunable groups
            that feed more than one domain).
        init: initial latent of every switch (> 0: every channel starts on).
        name: model name (default: the input model's name + "_switched").
        bn_momentum: if given, the momentum of every BatchNormalization of the new model
            (Keras' 0.99 leaves the moving statistics near their initial values after a few
            hundred steps, which makes short runs evaluate at chance level).
        groups: which groups get a switch, in the selection vocabulary shared by the three
            methods (:func:`tfmot_mtl.selection.select_groups`): "all", "shared", a list of
            group ids / producer layer names or a callable ``ChannelGroup -> bool``.
            Default: as ``switch_groups`` says.
        protect: domain names (their own heads) or layer names whose groups get no switch.
        domain_bn: replace every channels-last BatchNormalization by a `DomainBatchNorm`
            (per-domain statistics and affine parameters, as in the paper), initialised from
            it for every domain. `strip_domain_model` exports it as stock layers.

    Returns:
        A new functional model, inputs {"image", "domain" (int32, shape ())}, dict outputs
        keyed by domain name. Its layers are copies: the input model is not modified.
    """
    if bn_momentum is not None and not 0 <= bn_momentum < 1:
        raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum!r}")
    if switch_groups not in ("prunable", "shared"):
        raise ValueError(f"switch_groups must be 'prunable' or 'shared', got {switch_groups!r} (for the "
                         "selection vocabulary of tfmot_mtl.selection pass groups=... instead)")
    if groups is not None and switch_groups != "prunable":
        raise ValueError("add_domain_switches: pass groups= or its older spelling switch_groups=, not both")
    selection = check_selection({"prunable": "all"}.get(switch_groups, switch_groups) if groups is None
                                else groups, "groups")
    protect = check_protect(protect)
    pairs = _domain_pairs(domains)
    names = [n for n, _ in pairs]
    plain = _plain_model(as_functional(backbone_or_model), pairs, heads)
    graph = ChannelGraph.of(plain)
    flat = graph.flat
    if "domain" in flat.inputs:
        raise ValueError("add_domain_switches: the model already has a 'domain' input.")
    chosen = select_groups(graph, selection, protect, on_empty="raise",
                           context="add_domain_switches: no prunable channel group to switch")
    sites = _switch_sites(graph, chosen, names)
    if not sites:
        raise ValueError("add_domain_switches: the backbone has no prunable channel group to switch; "
                         "check `ChannelGraph.from_model(model).summary()`.")
    return _rebuild(flat, sites, names, init, name or f"{plain.name}_switched", bn_momentum, domain_bn)


def _clone(layer, bn_momentum: float | None = None):
    if not isinstance(layer, keras.layers.Layer):
        try:
            return type(layer).from_config(layer.get_config())
        except Exception:  # noqa: BLE001 - stateless ops can be called again as they are
            return layer
    config = layer.get_config()
    if bn_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
        config["momentum"] = float(bn_momentum)
    return type(layer).from_config(config)


def _rebuild(flat, sites: dict, domain_names: list[str], init: float, name: str,
             bn_momentum: float | None = None, domain_bn: bool = False) -> keras.Model:
    num_domains = len(domain_names)
    values, inputs = {}, {}
    for in_name, key in flat.inputs.items():
        t = flat.tensors[key]
        values[key] = inputs[in_name] = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=in_name)
    domain = inputs["domain"] = keras.Input(shape=(), dtype="int32", name="domain")
    # A rank-2 one-hot keeps the channel graph able to read DomainSwitch (rank-1 inputs have no channels).
    onehot = keras.layers.CategoryEncoding(num_domains, output_mode="one_hot", name="domain_onehot")(domain)
    switches: dict[str, DomainSwitch] = {}
    created: dict[str, Any] = {}
    for node in flat.nodes:
        new = created.get(node.name)
        fresh = new is None
        per_domain = (domain_bn and isinstance(node.layer, keras.layers.BatchNormalization)
                      and is_channel_bn(node.layer, len(flat.tensors[node.inputs[0]].shape)))
        if fresh:
            new = created[node.name] = (from_batch_norm(node.layer, num_domains, bn_momentum) if per_domain
                                        else _clone(node.layer, bn_momentum))
        outs = [new([values[node.inputs[0]], onehot])] if per_domain else node.call(values, layer=new)
        if fresh and isinstance(new, keras.layers.Layer) and node.layer.weights:
            new.set_weights(tile_weights(node.layer, num_domains) if per_domain else node.layer.get_weights())
        for key, val in zip(node.outputs, outs):
            if key in sites:
                gid, served = sites[key]
                if gid not in switches:
                    switches[gid] = DomainSwitch(num_domains, init=init, domains=served,
                                                   domain_names=domain_names, name=f"{gid}_switch")
                val = switches[gid]([val, onehot])
            values[key] = val
    outputs = tree.pack_sequence_as(_keras_compat.outputs_struct(flat.model),
                                    [values[k] for k in flat.outputs.values()])
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------- data


def domain_targets(dataset, domain_names: Sequence[str]):
    """Maps mixed batches ``(x, {"label": y})`` to ``(x, {name: y_or_0}, {name: weight})``.

    The weight of output `name` is 1.0 on the examples whose ``x["domain"]`` is that
    domain's index and 0.0 elsewhere, so each example trains only its own head.
    """
    import tensorflow as tf

    names = list(domain_names)

    def split(x, y):
        label, domain = tf.cast(y["label"], tf.int32), tf.cast(x["domain"], tf.int32)
        targets, weights = {}, {}
        for i, n in enumerate(names):
            own = tf.equal(domain, i)
            targets[n] = tf.where(own, label, tf.zeros_like(label))
            weights[n] = tf.cast(own, tf.float32)
        return x, targets, weights

    return dataset.map(split)


def compile_domain_model(model: keras.Model, optimizer: Any = "adam", jit_compile: Any = False,
                         run_eagerly: bool = False) -> keras.Model:
    """Compiles with sparse cross-entropy (from logits) and weighted accuracy per domain output.

    `jit_compile` defaults to False: XLA compilation of a ResNet takes longer than a short run.
    `run_eagerly` skips graph tracing (faster for a handful of steps, slower for more).
    """
    names = output_names(model)
    model.compile(
        optimizer=optimizer,
        loss={n: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for n in names},
        weighted_metrics={n: ["accuracy"] for n in names},
        jit_compile=jit_compile,
        run_eagerly=run_eagerly,
    )
    return model


def predict_own_domain(model: keras.Model, dataset, domain_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per domain: (predicted class, true label) pairs of its own examples, over a mixed dataset."""
    names = list(domain_names)
    pred = {n: [] for n in names}
    true = {n: [] for n in names}
    for x, y in dataset:
        out = model(x, training=False)
        dom = np.asarray(x["domain"]).reshape(-1)
        label = np.asarray(y["label"]).reshape(-1)
        for i, n in enumerate(names):
            sel = dom == i
            if sel.any():
                pred[n].append(np.argmax(np.asarray(out[n])[sel], -1))
                true[n].append(label[sel])
    return {n: (np.concatenate(pred[n]) if pred[n] else np.zeros(0, int),
                np.concatenate(true[n]) if true[n] else np.zeros(0, int)) for n in names}


def domain_accuracy(model: keras.Model, dataset, domain_names: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy of each domain on its own examples of a mixed dataset."""
    pairs = predict_own_domain(model, dataset, domain_names)
    return {n: float(np.mean(p == t)) if len(t) else float("nan") for n, (p, t) in pairs.items()}
