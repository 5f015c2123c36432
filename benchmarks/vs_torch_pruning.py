"""Side by side with Torch-Pruning 1.6.1: one multi-task network, pruned to the same MAC target.

The same small multi-task ResNet is defined twice from one spec (`SPEC`: widths and strides),
in Keras (functional, dict input ``{"image"}``, dict outputs named by task) and in PyTorch
(`TorchNet`). Three dense tasks of `tfmot_mtl.datasets.synthetic_scenes` at 32x32:
segmentation (8 classes), depth, surface normals. Trunk: stem 3x3 conv + BN + ReLU, then one
basic residual block per stage (widths 16 / 32 / 64, stride 2 at the starts of stages 2 and
3, a 1x1 conv + BN projection shortcut where the shape changes). Each head: 3x3 conv (32) + BN
+ ReLU, a 1x1 conv to the task's channels, bilinear upsampling to the input size.

Per seed:
  1. the PyTorch model is built (seeded Kaiming-normal convs, as the package's he_normal)
     and its initial weights are copied into the Keras model (kernels OIHW -> HWIO, BN gamma,
     beta, moving mean and variance), so both start identical;
  2. both train E dense epochs on the same batches in the same order (one seeded permutation
     per epoch, images generated once as numpy), Adam(lr, betas (0.9, 0.999), epsilon 1e-8)
     on the package's task losses (masked softmax CE, masked L1 on depth > 0, masked
     1 - cosine on non-zero normals, summed with weight 1), replicated in PyTorch;
  3. for each criterion and MAC level, each framework prunes a copy of ITS OWN dense model
     one-shot to the level (a share of the dense MACs) and fine-tunes it F epochs (a fresh
     Adam, same lr, the same batch order for both):
       - Torch-Pruning: `tp.pruner.MetaPruner` (in 1.6 an alias of `BasePruner`) with
         `GroupMagnitudeImportance`, `GroupTaylorImportance` or `LAMPImportance` at their
         defaults, `global_pruning=True`, `ignored_layers` = the final 1x1 conv of each head;
         the `pruning_ratio` that lands the MAC target is found by bisection on fresh copies
         of the dense model (within 2% of the target, else the closest of `SEARCH_STEPS`
         tries); Taylor gets `loss.backward()` on `SCORE_BATCHES` batches (model in eval mode);
       - tfmot_mtl: `ChannelPruningCallback(Magnitude() | Taylor() | LAMP(), one-event schedule,
         target_macs=level)` with its defaults (groups="all") and the layer floor of a quarter of
         each group (`min_fraction=0.25`, the setting these numbers were measured at;
         `--default-floor`: the library's default under a cost target), Taylor scored on the same `SCORE_BATCHES` batches, `prune_to`, then
         `strip_channels`;
  4. every model is scored by the package's metric code (`tfmot_mtl.tasks.evaluate`; PyTorch
     outputs converted to NHWC numpy) on the same test images, BatchNorm in inference mode
     (moving statistics, no re-estimation), and Δm is taken against the framework's OWN dense
     model after its E epochs (`tfmot_mtl.tasks.delta_m`).

Counting. `tfmot_mtl.profile` counts the multiply-accumulates of convolutions and Dense layers
only; `tp.utils.count_ops_and_params` also adds conv bias adds, 2 ops per BatchNorm element and
ReLU / upsampling modules (functional ones, as here, are not seen). Both frameworks' models are
therefore counted by the same code: "MACs" is `torch_macs` (the package's convention, checked
equal to `tfmot_mtl.profile.count_macs` on the dense models and on every stripped model), the
MAC target is in that convention for both, and "TP ops" is `count_ops_and_params` of the
PyTorch model at the kept widths (a stripped Keras model is rebuilt in PyTorch at its widths).
"params" are trainable parameters (PyTorch's `parameters()`; Keras also stores BN moving
statistics, not counted). Times: "build" is the graph analysis (Torch-Pruning's
DependencyGraph inside the pruner's constructor; our `ChannelGraph` and cost model in the
callback's set-up), "prune" the scoring and pruning at the target (Taylor: with its gradient
passes; ours: + `strip_channels`), "search" Torch-Pruning's whole bisection over
`pruning_ratio` (the gradient passes, then every try: copy, build, prune, count).

What still differs between the two copies:
  - stride-2 3x3 convs: Keras 'same' pads 0 before and 1 after an even input; `TorchNet`
    pads the same way explicitly (`F.pad`), so the outputs match;
  - bilinear upsampling: `tf.image.resize` vs `F.interpolate(align_corners=False)`, both
    half-pixel centred (the test checks the two models' outputs agree to 1e-4);
  - BatchNorm moving variance: PyTorch updates it with the unbiased batch variance, Keras
    with the biased one (relative difference 1/(N*H*W - 1) per step);
  - Adam's epsilon (1e-8 on both): Keras adds it to sqrt(v_t), PyTorch to the bias-corrected
    sqrt(v_t / (1 - beta2^t)), so the effective epsilons differ by sqrt(1 - beta2^t) in the
    first steps;
  - float reductions (oneDNN vs ATen kernels) make the two training runs drift apart
    slowly; the printed "Dense models, PyTorch vs Keras copy" Δm compares the two dense models
    (Keras as the reference) on every seed;
  - the criteria are each library's own, at their defaults (each row's JSON records the
    criterion's settings, "criterion_config"). Ours: Magnitude = L1 norm of a channel's
    kernel slices in the group's producers and its readers' input rows, summed over layers,
    divided by the group mean; Taylor = (sum of w dL/dw over a layer's slices of the channel)^2,
    averaged over the batches, summed over the producers, raw; LAMP on the squared L2 norms of
    the same slices as Magnitude; ranked globally per MAC saved (`cost_exponent=1`, the default;
    `--cost-exponent 0` ranks by the criterion alone, as Torch-Pruning's global ranking), with the
    layer floor.
    Torch-Pruning: sum of squared weights per layer (BN gamma included), |w dL/dw| summed per
    layer (gradients summed over the batches), or the same squares LAMP-normalised; averaged
    over the group's layers, divided by the group's mean (magnitude, Taylor); ranked globally
    by channel count (`pruning_ratio`), no floor beyond never emptying a group.

Budget (default): 768 training and 256 test images, batch 32 (24 steps per epoch), E = 12 dense
epochs, F = 8 fine-tuning epochs, lr 2e-3 for every phase of both frameworks; Δm is reported
against each framework's own dense model after its E epochs and, as a second column, after
E + F epochs (the dense model trained on F more epochs with a fresh Adam on the fine-tuning
batches: the same number of steps as a pruned model). The "dense" rows give both. Estimated
16-20 minutes on 2 CPU cores for 3 seeds x 2 levels x 3 criteria x 2 frameworks.
`--threads N` sets both frameworks' CPU threads (PyTorch's default, all cores, is slow when
another process holds a core: pass 1 on a busy machine).

    pip install -e '.[bench]'        # torch==2.13.0 (CPU) and torch-pruning==1.6.1
    python benchmarks/vs_torch_pruning.py                   # 3 seeds x 2 levels x 3 criteria
    python benchmarks/vs_torch_pruning.py --seeds 0 1 2 --levels 0.5 0.33 --criteria magnitude taylor lamp
    python benchmarks/vs_torch_pruning.py --quick           # tiny sizes, 1 seed: a smoke run
    # prints a markdown table, writes benchmarks/results/vs_torch_pruning.json (--out)
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SPEC = {"stem": 16, "stages": ((16, 1, 1), (32, 2, 1), (64, 2, 1)), "head": 32}
QUICK_SPEC = {"stem": 8, "stages": ((8, 1, 1), (16, 2, 1)), "head": 8}
SETTINGS = {
    "default": dict(spec=SPEC, resolution=32, n_train=768, n_test=256, batch_size=32, dense_epochs=12,
                    finetune_epochs=8, seeds=(0, 1, 2)),
    "quick": dict(spec=QUICK_SPEC, resolution=32, n_train=32, n_test=16, batch_size=16, dense_epochs=1,
                  finetune_epochs=1, seeds=(0,)),
}
LEVELS = (0.5, 0.33)
CRITERIA = ("magnitude", "taylor", "lamp")
LR, BETAS, EPSILON = 2e-3, (0.9, 0.999), 1e-8
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5  # Keras convention; PyTorch momentum = 1 - 0.9
SCORE_BATCHES = 4
TOLERANCE = 0.02  # relative distance to the MAC target that ends Torch-Pruning's search
SEARCH_STEPS = 16
OUT = os.path.join(HERE, "results", "vs_torch_pruning.json")
FRAMEWORKS = ("torch-pruning", "tfmot_mtl")
NO_TIMES = {"build_s": 0.0, "search_s": 0.0, "prune_s": 0.0}


# ------------------------------------------------------------------ architecture (shared)


def blocks(spec: dict) -> list[tuple[str, int, int, bool]]:
    """``(name, width, stride, projected)`` of every residual block of ``spec``."""
    out, width_in = [], spec["stem"]
    for i, (width, stride, count) in enumerate(spec["stages"]):
        for j in range(count):
            s = stride if j == 0 else 1
            out.append((f"stage{i + 1}_block{j + 1}", width, s, s != 1 or width_in != width))
            width_in = width
    return out


def unit_widths(spec: dict, tasks: Sequence) -> dict[str, int]:
    """Output channels of every conv unit (conv + BN, or a head's final conv) of the dense model."""
    widths = {"stem": spec["stem"]}
    for name, width, _, projected in blocks(spec):
        widths.update({f"{name}_1": width, f"{name}_2": width})
        if projected:
            widths[f"{name}_shortcut"] = width
    for task in tasks:
        widths[f"{task.name}_head"] = spec["head"]
        widths[f"{task.name}_logits"] = task.output_channels
    return widths


# ------------------------------------------------------------------ Keras copy


def build_keras(spec: dict, tasks: Sequence, resolution: int = 32, widths: dict | None = None):
    """The Keras copy: functional, dict input ``{"image"}``, dict outputs named by task."""
    import keras

    w = {**unit_widths(spec, tasks), **(widths or {})}
    image = keras.Input((resolution, resolution, 3), name="image")
    x = _keras_unit(image, "stem", w["stem"], 3, 1)
    for name, _, stride, projected in blocks(spec):
        shortcut = _keras_unit(x, f"{name}_shortcut", w[f"{name}_shortcut"], 1, stride, relu=False) \
            if projected else x
        y = _keras_unit(x, f"{name}_1", w[f"{name}_1"], 3, stride)
        y = _keras_unit(y, f"{name}_2", w[f"{name}_2"], 3, 1, relu=False)
        x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))
    outputs = {}
    for task in tasks:
        h = _keras_unit(x, f"{task.name}_head", w[f"{task.name}_head"], 3, 1)
        h = keras.layers.Conv2D(task.output_channels, 1, name=f"{task.name}_logits")(h)
        factor = resolution // h.shape[1]
        outputs[task.name] = keras.layers.UpSampling2D(factor, interpolation="bilinear", name=task.name)(h)
    return keras.Model({"image": image}, outputs, name="vs_torch_pruning")


def _keras_unit(x, name: str, filters: int, kernel: int, stride: int, relu: bool = True):
    import keras

    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def keras_widths(model) -> dict[str, int]:
    """Output channels of every conv unit of a (stripped) Keras copy."""
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out[layer.name.removesuffix("_conv")] = int(layer.kernel.shape[-1])
    return out


# ------------------------------------------------------------------ PyTorch copy


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras 'same' padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@functools.cache
def _torch_net_class():
    import torch.nn as nn
    import torch.nn.functional as F

    class ConvBN(nn.Module):
        """Conv (no bias, Keras 'same' padding) + BatchNorm."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int):
            super().__init__()
            self.stride, self.kernel = stride, kernel
            self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=BN_EPSILON, momentum=1.0 - BN_MOMENTUM)

        def forward(self, x):
            if self.stride > 1:
                top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
                left, right = same_padding(x.shape[-1], self.kernel, self.stride)
                if top or bottom or left or right:
                    x = F.pad(x, (left, right, top, bottom))
            return self.bn(self.conv(x))

    class TorchNet(nn.Module):
        """The PyTorch copy: the units of `unit_widths` in an `nn.ModuleDict`; returns
        ``{task: NCHW output}``."""

        def __init__(self, spec: dict, tasks: Sequence, resolution: int = 32, widths: dict | None = None):
            super().__init__()
            w = {**unit_widths(spec, tasks), **(widths or {})}
            self.blocks, self.tasks, self.resolution = blocks(spec), [t.name for t in tasks], resolution
            units = {"stem": ConvBN(3, w["stem"], 3, 1)}
            cin = w["stem"]
            for name, _, stride, projected in self.blocks:
                if projected:
                    units[f"{name}_shortcut"] = ConvBN(cin, w[f"{name}_shortcut"], 1, stride)
                units[f"{name}_1"] = ConvBN(cin, w[f"{name}_1"], 3, stride)
                units[f"{name}_2"] = ConvBN(w[f"{name}_1"], w[f"{name}_2"], 3, 1)
                cin = w[f"{name}_2"]
            for task in tasks:
                units[f"{task.name}_head"] = ConvBN(cin, w[f"{task.name}_head"], 3, 1)
                units[f"{task.name}_logits"] = nn.Conv2d(w[f"{task.name}_head"], task.output_channels, 1)
            self.units = nn.ModuleDict(units)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

        def forward(self, image):
            u = self.units
            x = F.relu(u["stem"](image))
            for name, _, _, projected in self.blocks:
                shortcut = u[f"{name}_shortcut"](x) if projected else x
                y = u[f"{name}_2"](F.relu(u[f"{name}_1"](x)))
                x = F.relu(shortcut + y)
            out = {}
            for task in self.tasks:
                h = u[f"{task}_logits"](F.relu(u[f"{task}_head"](x)))
                out[task] = F.interpolate(h, size=(self.resolution, self.resolution), mode="bilinear",
                                          align_corners=False)
            return out

    return TorchNet


def build_torch(spec: dict, tasks: Sequence, resolution: int = 32, widths: dict | None = None, seed: int = 0):
    """The PyTorch copy of `build_keras`, seeded."""
    import torch

    torch.manual_seed(seed)
    return _torch_net_class()(spec, tasks, resolution, widths)


def torch_widths(net) -> dict[str, int]:
    """Output channels of every conv unit of a (pruned) PyTorch copy."""
    return {name: int((unit.conv if hasattr(unit, "conv") else unit).out_channels) for name, unit in net.units.items()}


def copy_torch_to_keras(net, model) -> None:
    """Copies the PyTorch copy's weights into the Keras copy (same widths)."""
    for name, unit in net.units.items():
        conv = unit.conv if hasattr(unit, "conv") else unit
        kernel = conv.weight.detach().cpu().numpy().transpose(2, 3, 1, 0)
        layer = model.get_layer(f"{name}_conv" if hasattr(unit, "conv") else name)
        layer.set_weights([kernel] + ([conv.bias.detach().cpu().numpy()] if conv.bias is not None else []))
        if hasattr(unit, "bn"):
            bn = unit.bn
            model.get_layer(f"{name}_bn").set_weights(
                [t.detach().cpu().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)])


def torch_macs(net, resolution: int) -> int:
    """Convolution MACs per example: output pixels x kernel size, the convention of
    `tfmot_mtl.profile` (no bias, BatchNorm, activation or resize ops)."""
    import torch

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += int(output.shape[-2] * output.shape[-1] * module.weight.numel())

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return total


def torch_params(net) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def tp_ops(net, resolution: int) -> int:
    """Torch-Pruning's own count (`count_ops_and_params`): MACs + bias + BatchNorm ops."""
    import torch
    import torch_pruning as tp

    ops, _ = tp.utils.count_ops_and_params(net, (torch.zeros(1, 3, resolution, resolution),))
    return int(ops)


# ------------------------------------------------------------------ data, losses, training


def make_data(n_train: int, n_test: int, resolution: int) -> tuple[dict, dict]:
    """Train and test arrays of `synthetic_scenes` (generated once, no download)."""
    from tfmot_mtl.datasets import synthetic_scenes

    return (synthetic_scenes.generate(n_train, resolution, seed=0),
            synthetic_scenes.generate(n_test, resolution, seed=1))


def batch_order(n: int, batch_size: int, epochs: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` example indices: one seeded permutation per epoch (a last
    incomplete batch is dropped)."""
    rng = np.random.default_rng(seed)
    usable = n - n % batch_size
    if not usable:
        raise ValueError(f"{n} training examples make no batch of {batch_size}")
    return np.concatenate([rng.permutation(n)[:usable].reshape(-1, batch_size) for _ in range(epochs)])


def numpy_batches(data: dict, order: np.ndarray, tasks: Sequence) -> list[tuple[dict, dict]]:
    return [({"image": data["image"][rows]}, {t.name: data[t.name][rows] for t in tasks}) for rows in order]


def eval_batches(data: dict, tasks: Sequence, batch_size: int) -> list[tuple[dict, dict]]:
    n = len(data["image"])
    return numpy_batches(data, [np.arange(i, min(n, i + batch_size)) for i in range(0, n, batch_size)], tasks)


def torch_batch(x: dict, y: dict | None = None):
    """NHWC numpy batch -> NCHW tensors (targets: labels (B, H, W), maps (B, C, H, W))."""
    import torch

    image = torch.from_numpy(np.ascontiguousarray(x["image"].transpose(0, 3, 1, 2)))
    if y is None:
        return image
    targets = {k: torch.from_numpy(np.ascontiguousarray(v if v.ndim == 3 else v.transpose(0, 3, 1, 2)))
               for k, v in y.items()}
    return image, targets


def torch_task_loss(task, pred, target):
    """The package's masked task losses (`tfmot_mtl.tasks.losses`) on NCHW tensors."""
    import torch
    import torch.nn.functional as F

    if task.kind == "segmentation":
        labels = target.long()
        valid = labels != task.ignore_index
        values = F.cross_entropy(pred.float(), labels.clamp_min(0), reduction="none")
    elif task.kind == "depth":
        valid = target > 0
        values = (pred - torch.where(valid, target, torch.zeros_like(target))).abs()
    elif task.kind == "normals":
        valid = (target ** 2).sum(1) > 0

        def unit(v):
            return v * torch.rsqrt(torch.clamp((v ** 2).sum(1, keepdim=True), min=1e-12))

        values = 1.0 - (unit(pred) * unit(target)).sum(1)
    else:
        raise ValueError(f"no PyTorch loss for task kind {task.kind!r}")
    valid = valid.float()
    return (values * valid).sum() / torch.clamp(valid.sum(), min=1.0)


def torch_loss(net, x: dict, y: dict, tasks: Sequence):
    image, targets = torch_batch(x, y)
    out = net(image)
    return sum(torch_task_loss(t, out[t.name], targets[t.name]) for t in tasks)


def train_torch(net, data: dict, order: np.ndarray, tasks: Sequence, lr: float = LR) -> float:
    """Trains in place, one Adam step per row of ``order``; returns seconds."""
    import torch

    start = time.perf_counter()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=BETAS, eps=EPSILON)
    net.train()
    for x, y in numpy_batches(data, order, tasks):
        optimizer.zero_grad(set_to_none=True)
        torch_loss(net, x, y, tasks).backward()
        optimizer.step()
    net.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def train_keras(model, data: dict, order: np.ndarray, tasks: Sequence, lr: float = LR) -> float:
    """Compiles a fresh Adam and trains one step per row of ``order``; returns seconds."""
    import keras
    import tensorflow as tf

    from tfmot_mtl.tasks import compile_args

    start = time.perf_counter()
    model.compile(keras.optimizers.Adam(lr, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPSILON),
                  jit_compile=False, **compile_args(tasks))
    arrays = {k: tf.constant(data[k]) for k in ["image"] + [t.name for t in tasks]}

    def gather(rows):
        return ({"image": tf.gather(arrays["image"], rows)}, {t.name: tf.gather(arrays[t.name], rows) for t in tasks})

    model.fit(tf.data.Dataset.from_tensor_slices(order).map(gather), epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def predict_torch(net):
    """``inputs -> {task: NHWC numpy}`` for `tfmot_mtl.tasks.evaluate` (eval mode)."""
    import torch

    def predict(x):
        net.eval()
        with torch.no_grad():
            return {k: v.permute(0, 2, 3, 1).numpy() for k, v in net(torch_batch(x)).items()}

    return predict


def delta_m(results: dict, baseline: dict, tasks: Sequence) -> float:
    """`tfmot_mtl.tasks.delta_m` in %, NaN where it is undefined (a baseline metric of 0, e.g.
    depth delta1 after the one-step training of --quick)."""
    from tfmot_mtl.tasks import delta_m as tm_delta_m

    try:
        return tm_delta_m(results, baseline, tasks)
    except ValueError:
        return float("nan")


def evaluate(model_or_net, batches: list, tasks: Sequence) -> dict:
    """The package's metrics for a Keras model or a PyTorch copy, on the same batches."""
    from tfmot_mtl.tasks import evaluate as tm_evaluate

    predict = model_or_net if hasattr(model_or_net, "predict_on_batch") else predict_torch(model_or_net)
    return tm_evaluate(predict, batches, tasks)


# ------------------------------------------------------------------ pruning


def tp_importance(criterion: str):
    import torch_pruning as tp

    return {"magnitude": tp.importance.GroupMagnitudeImportance, "taylor": tp.importance.GroupTaylorImportance,
            "lamp": tp.importance.LAMPImportance}[criterion]()


def taylor_gradients(net, batches: list, tasks: Sequence) -> list:
    """Gradients of the total loss summed over ``batches`` (eval mode), per parameter."""
    net.eval()
    net.zero_grad(set_to_none=True)
    for x, y in batches:
        torch_loss(net, x, y, tasks).backward()
    grads = [p.grad.detach().clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return grads


def tp_prune_once(dense, criterion: str, ratio: float, resolution: int, tasks: Sequence,
                  grads: list | None = None) -> tuple[Any, float, float]:
    """A copy of ``dense`` pruned by Torch-Pruning at ``pruning_ratio``; ``(net, build s, prune s)``."""
    import torch
    import torch_pruning as tp

    net = copy.deepcopy(dense)
    if grads is not None:
        for p, g in zip(net.parameters(), grads):
            p.grad = g.clone()
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(net, {"image": torch.zeros(1, 3, resolution, resolution)}, tp_importance(criterion),
                                  global_pruning=True, pruning_ratio=ratio,
                                  ignored_layers=[net.units[f"{t.name}_logits"] for t in tasks])
    built = time.perf_counter()
    pruner.step()
    net.zero_grad(set_to_none=True)
    return net, built - start, time.perf_counter() - built


def tp_prune(dense, criterion: str, level: float, resolution: int, tasks: Sequence, scoring: list) -> tuple[Any, dict]:
    """Bisects `pruning_ratio` until the pruned copy's MACs are within `TOLERANCE` of
    ``level`` x the dense MACs; returns the pruned copy and its search record."""
    start = time.perf_counter()
    grads_s = 0.0
    grads = None
    if criterion == "taylor":
        grads = taylor_gradients(dense, scoring, tasks)
        grads_s = time.perf_counter() - start
    dense_macs = torch_macs(dense, resolution)
    lo, hi, best = 0.0, 1.0, None
    for step in range(SEARCH_STEPS):
        ratio = (lo + hi) / 2
        net, build_s, prune_s = tp_prune_once(dense, criterion, ratio, resolution, tasks, grads)
        share = torch_macs(net, resolution) / dense_macs
        if best is None or abs(share - level) < abs(best[1] - level):
            best = (net, share, ratio, build_s, prune_s)
        if abs(share - level) <= TOLERANCE * level:
            break
        lo, hi = (ratio, hi) if share > level else (lo, ratio)
    net, share, ratio, build_s, prune_s = best
    imp = tp_importance(criterion)
    config = {k: getattr(imp, k, None) for k in ("p", "group_reduction", "normalizer", "bias")}
    return net, {"pruning_ratio": ratio, "tries": step + 1, "build_s": build_s, "prune_s": grads_s + prune_s,
                 "search_s": time.perf_counter() - start, "reached_share": share,
                 "criterion_config": f"{type(imp).__name__}({config})"}


def ours_criterion(criterion: str, tasks: Sequence, taylor: dict | None = None):
    """Ours by name; ``taylor``: more Taylor arguments (``normalize``, ``include_consumers``)."""
    from tfmot_mtl.pruning import LAMP, Magnitude, Taylor

    if criterion == "taylor":
        return Taylor(losses={t.name: t.loss for t in tasks}, **(taylor or {}))
    return {"magnitude": Magnitude, "lamp": LAMP}[criterion]()


def ours_prune(dense, criterion: str, level: float, tasks: Sequence, scoring: list,
               options: dict | None = None) -> tuple[Any, dict]:
    """A stripped copy of the Keras dense model pruned one-shot to ``level`` of its MACs;
    ``options``: more ChannelPruningCallback arguments (e.g. ``cost_exponent``)."""
    from tfmot_mtl.pruning import ChannelPruningCallback, IterativeSchedule
    from tfmot_mtl.selection import MIN_FRACTION
    from tfmot_mtl.strip import strip_channels

    model = clone_keras(dense)
    schedule = IterativeSchedule(target=0.5, frequency=1, step=0.5)  # one event: the target at once
    start = time.perf_counter()
    options = dict(options or {})
    importance = ours_criterion(criterion, tasks, options.pop("taylor", None))
    options.setdefault("min_fraction", MIN_FRACTION)
    pruner = ChannelPruningCallback(importance, schedule, target_macs=level, data=scoring,
                                    score_batches=len(scoring), verbose=0, **options)
    pruner.setup(model)
    built = time.perf_counter()
    pruner.prune_to(schedule.target, 0)
    small, _ = strip_channels(model, pruner.masks)
    done = time.perf_counter()
    return small, {"build_s": built - start, "prune_s": done - built, "search_s": 0.0,
                   "reached_share": pruner.reached()["macs_share"], "criterion_config": repr(pruner.importance),
                   "cost_exponent": pruner.cost_exponent}


# ------------------------------------------------------------------ one seed


def check_counters(net, model, resolution: int) -> dict:
    """The two copies' parameter and MAC counts agree (else the comparison is void)."""
    from tfmot_mtl.profile import count_macs, profile

    keras_macs, keras_params = count_macs(model), profile(model).trainable_params
    counts = {"macs": torch_macs(net, resolution), "keras_macs": keras_macs, "params": torch_params(net),
              "keras_trainable_params": keras_params}
    if counts["macs"] != keras_macs or counts["params"] != keras_params:
        raise RuntimeError(f"the Keras and PyTorch copies differ: {counts}")
    return counts


def cost_row(net, resolution: int, dense: dict) -> dict:
    """MACs (package convention), Torch-Pruning's ops and parameters of a PyTorch copy, and their
    shares of the dense model's."""
    macs, ops, params = torch_macs(net, resolution), tp_ops(net, resolution), torch_params(net)
    return {"macs": macs, "macs_share": macs / dense["macs"], "tp_ops": ops, "tp_ops_share": ops / dense["tp_ops"],
            "params": params, "params_share": params / dense["params"]}


def keras_cost(model, spec: dict, tasks: Sequence, resolution: int, dense: dict) -> dict:
    """`cost_row` of a (stripped) Keras copy, counted on its PyTorch rebuild at the same widths,
    which must count as `tfmot_mtl.profile` counts the Keras model."""
    from tfmot_mtl.profile import count_macs, profile

    rebuilt = build_torch(spec, tasks, resolution, widths=keras_widths(model))
    macs, params = count_macs(model), profile(model).trainable_params
    if macs != torch_macs(rebuilt, resolution) or params != torch_params(rebuilt):
        raise RuntimeError(f"Keras model and its PyTorch rebuild differ: {macs} MACs, {params} params")
    return {**cost_row(rebuilt, resolution, dense), "keras_profile_macs": macs}


def clone_keras(model):
    import keras

    copy_ = keras.models.clone_model(model)
    copy_.set_weights(model.get_weights())
    return copy_


def run_seed(seed: int, cfg: dict, data: tuple, levels: Sequence[float], criteria: Sequence[str],
             options: dict | None = None) -> dict:
    """Dense training, then every (criterion, level) for both frameworks, for one seed."""
    from tfmot_mtl.datasets import synthetic_scenes

    tasks, spec, res, batch = synthetic_scenes.tasks(), cfg["spec"], cfg["resolution"], cfg["batch_size"]
    train, test = data
    n, tests = len(train["image"]), eval_batches(test, tasks, batch)
    net, model = build_torch(spec, tasks, res, seed=seed), build_keras(spec, tasks, res)
    copy_torch_to_keras(net, model)
    counts = check_counters(net, model, res)
    dense_cost = {"macs": counts["macs"], "tp_ops": tp_ops(net, res), "params": counts["params"]}
    order, finetune = batch_order(n, batch, cfg["dense_epochs"], seed), batch_order(n, batch, cfg["finetune_epochs"],
                                                                                     seed + 1000)
    seconds = {"torch": train_torch(net, train, order, tasks), "keras": train_keras(model, train, order, tasks)}
    longer = {"torch-pruning": copy.deepcopy(net), "tfmot_mtl": clone_keras(model)}
    long_s = {"torch-pruning": train_torch(longer["torch-pruning"], train, finetune, tasks),
              "tfmot_mtl": train_keras(longer["tfmot_mtl"], train, finetune, tasks)}
    parents = {"torch-pruning": net, "tfmot_mtl": model}
    refs = {fw: {"parent": evaluate(parents[fw], tests, tasks), "same_budget": evaluate(longer[fw], tests, tasks)}
            for fw in FRAMEWORKS}
    print(f"seed {seed}: dense trained (torch {seconds['torch']:.1f} s, keras {seconds['keras']:.1f} s), PyTorch vs "
          f"Keras dense Δm {delta_m(refs['torch-pruning']['parent'], refs['tfmot_mtl']['parent'], tasks):+.2f}%",
          flush=True)
    costs = {"torch-pruning": cost_row(net, res, dense_cost), "tfmot_mtl": keras_cost(model, spec, tasks, res, dense_cost)}
    rows = []
    for fw in FRAMEWORKS:
        for name, m, t in (("dense", parents[fw], 0.0), ("dense, same budget", longer[fw], long_s[fw])):
            rows.append(_row(fw, name, 1.0, seed, m, dict(NO_TIMES, finetune_s=t), tests, tasks, refs[fw], costs[fw]))
    scoring = numpy_batches(train, batch_order(n, batch, 1, seed + 2000)[:SCORE_BATCHES], tasks)
    for criterion in criteria:
        for level in levels:
            small, info = tp_prune(net, criterion, level, res, tasks, scoring)
            info["finetune_s"] = train_torch(small, train, finetune, tasks)
            rows.append(_row("torch-pruning", criterion, level, seed, small, info, tests, tasks, refs["torch-pruning"],
                             dict(cost_row(small, res, dense_cost), widths=torch_widths(small))))
            small, info = ours_prune(model, criterion, level, tasks, scoring, options)
            info["finetune_s"] = train_keras(small, train, finetune, tasks)
            rows.append(_row("tfmot_mtl", criterion, level, seed, small, info, tests, tasks, refs["tfmot_mtl"],
                             dict(keras_cost(small, spec, tasks, res, dense_cost), widths=keras_widths(small))))
    return {"seed": seed, "dense": refs, "dense_seconds": seconds, "counts": {**counts, **dense_cost},
            "delta_m_torch_vs_keras_dense": delta_m(refs["torch-pruning"]["parent"], refs["tfmot_mtl"]["parent"], tasks),
            "runs": rows}


def _row(framework, criterion, level, seed, model, info, tests, tasks, refs, cost) -> dict:
    metrics = evaluate(model, tests, tasks)
    row = {"framework": framework, "criterion": criterion, "level": level, "seed": seed, **cost,
           "delta_m": delta_m(metrics, refs["parent"], tasks),
           "delta_m_same_budget": delta_m(metrics, refs["same_budget"], tasks), "metrics": metrics, **info}
    print(f"  {framework:13s} {criterion:18s} {level:.2f}: MACs {row['macs_share']:.3f}, Δm {row['delta_m']:+.2f}% "
          f"({row['delta_m_same_budget']:+.2f}% vs same budget), build {info['build_s']:.2f} s, "
          f"prune {info['prune_s']:.2f} s, search {info['search_s']:.2f} s", flush=True)
    return row


# ------------------------------------------------------------------ summary

MEANS = ("macs", "macs_share", "tp_ops", "tp_ops_share", "params", "params_share", "build_s", "search_s", "prune_s",
         "finetune_s")


def summarise(rows: list[dict]) -> list[dict]:
    """Means per framework, criterion and level; Δm as mean and std over seeds (population)."""
    keys = list(dict.fromkeys((r["framework"], r["criterion"], r["level"]) for r in rows))
    out = []
    for key in keys:
        group = [r for r in rows if (r["framework"], r["criterion"], r["level"]) == key]
        entry = dict(zip(("framework", "criterion", "level"), key), seeds=len(group))
        entry.update({k: float(np.mean([r[k] for r in group])) for k in MEANS})
        for k in ("delta_m", "delta_m_same_budget"):
            values = [r[k] for r in group]
            entry.update({f"{k}_mean": float(np.mean(values)), f"{k}_std": float(np.std(values))})
        out.append(entry)
    order = ("dense", "dense, same budget") + CRITERIA
    return sorted(out, key=lambda e: (order.index(e["criterion"]), -e["level"], FRAMEWORKS.index(e["framework"])))


def table(summary: list[dict], budget: dict) -> str:
    """The summary as a markdown table."""
    e, f = budget["dense_epochs"], budget["finetune_epochs"]
    lines = [f"| framework | model | MAC target | MACs (share) | TP ops (share) | params (share) "
             f"| Δm vs own dense, {e} ep. (%) | Δm vs own dense, {e + f} ep. (%) | build (s) | search (s) "
             "| prune+strip (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        model = {"dense": f"dense, {e} ep.", "dense, same budget": f"dense, {e + f} ep."}.get(
            s["criterion"], f"{s['criterion']} + {f} ep.")
        target = "—" if s["level"] >= 1 else f"{s['level']:.2f}"
        times = "| | |" if s["level"] >= 1 else f"| {s['build_s']:.2f} | {s['search_s']:.2f} | {s['prune_s']:.2f} |"
        lines.append(
            f"| {s['framework']} | {model} | {target} | {s['macs'] / 1e6:.2f} M ({s['macs_share']:.3f}) "
            f"| {s['tp_ops'] / 1e6:.2f} M ({s['tp_ops_share']:.3f}) | {s['params']:,.0f} ({s['params_share']:.3f}) "
            f"| {s['delta_m_mean']:+.2f} ± {s['delta_m_std']:.2f} "
            f"| {s['delta_m_same_budget_mean']:+.2f} ± {s['delta_m_same_budget_std']:.2f} {times}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 seed: a smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--quick: 0)")
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="MAC targets, shares of dense")
    parser.add_argument("--criteria", nargs="+", choices=CRITERIA, default=list(CRITERIA))
    parser.add_argument("--threads", type=int, help="CPU threads of both frameworks (default: their own)")
    parser.add_argument("--out", default=OUT, help="the JSON file to write")
    parser.add_argument("--cost-exponent", type=float,
                        help="ours: rank per MAC saved to this power (default: the library's, 1; 0: the criterion "
                             "alone ranks, as Torch-Pruning's global ranking by channel count)")
    parser.add_argument("--taylor-normalize", choices=["mean", "max"],
                        help="ours: Taylor(normalize=...) (default: raw, as Molchanov et al. 2019 rank it)")
    parser.add_argument("--taylor-consumers", action="store_true",
                        help="ours: Taylor(include_consumers=True), the readers' rows counted as Torch-Pruning does")
    parser.add_argument("--default-floor", action="store_true",
                        help="ours: the library's layer floor under a cost target (0.75 of the share that, kept in "
                             "every group alike, meets it) instead of a quarter of each group")
    parser.add_argument("--taylor-per-weight", action="store_true",
                        help="ours: Taylor(per_weight=True), sum of |w dL/dw| as Torch-Pruning scores it")
    args = parser.parse_args(argv)
    if any(not 0 < v < 1 for v in args.levels):
        parser.error(f"--levels must be in (0, 1), got {args.levels}")
    quiet_and_threads(args.threads)
    from tfmot_mtl.recipes.experiment import write_json

    cfg = dict(SETTINGS["quick" if args.quick else "default"])
    seeds = tuple(args.seeds) if args.seeds else cfg["seeds"]
    start = time.perf_counter()
    data = make_data(cfg["n_train"], cfg["n_test"], cfg["resolution"])
    options = {} if args.cost_exponent is None else {"cost_exponent": args.cost_exponent}
    if args.default_floor:
        options["min_fraction"] = None
    taylor = {k: v for k, v in (("normalize", args.taylor_normalize),
                                ("include_consumers", args.taylor_consumers or None),
                                ("per_weight", args.taylor_per_weight or None)) if v}
    if taylor:
        options["taylor"] = taylor
    per_seed = [run_seed(seed, cfg, data, args.levels, args.criteria, options) for seed in seeds]
    rows = [r for s in per_seed for r in s["runs"]]
    summary = summarise(rows)
    dm_dense = [s["delta_m_torch_vs_keras_dense"] for s in per_seed]
    budget = budget_of(cfg)
    text = table(summary, budget)
    print(f"\nBudget, the same for both frameworks: dense {budget['dense_epochs']} epochs, then one-shot pruning and "
          f"{budget['finetune_epochs']} fine-tuning epochs ({budget['steps_per_epoch']} steps each); Adam lr {LR:g}, "
          f"eps {EPSILON:g}; batch {budget['batch_size']}; {budget['n_train']} train / {budget['n_test']} test images "
          f"at {budget['resolution']}x{budget['resolution']}; seeds {list(seeds)}. Δm: vs each framework's own "
          f"dense model after {budget['dense_epochs']} epochs, and after {budget['dense_epochs']} + "
          f"{budget['finetune_epochs']} (the same budget); mean ± std over seeds.")
    print(f"Dense models, PyTorch vs Keras copy: Δm {np.mean(dm_dense):+.2f} ± {np.std(dm_dense):.2f}%.\n")
    print(text)
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s in all")
    result = {"settings": {**cfg, "seeds": list(seeds), "levels": list(args.levels), "criteria": list(args.criteria),
                           "ours": options,
                           "tolerance": TOLERANCE, "search_steps": SEARCH_STEPS},
              "budget": budget, "dense_counts": per_seed[0]["counts"], "delta_m_torch_vs_keras_dense": dm_dense,
              "per_seed": [{k: v for k, v in s.items() if k != "runs"} for s in per_seed],
              "runs": rows, "summary": summary, "table": text, "seconds": seconds,
              "versions": _versions()}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def budget_of(cfg: dict) -> dict:
    return {"dense_epochs": cfg["dense_epochs"], "finetune_epochs": cfg["finetune_epochs"], "lr": LR, "betas": list(BETAS),
            "epsilon": EPSILON, "batch_size": cfg["batch_size"], "n_train": cfg["n_train"], "n_test": cfg["n_test"],
            "resolution": cfg["resolution"], "score_batches": SCORE_BATCHES,
            "steps_per_epoch": cfg["n_train"] // cfg["batch_size"]}


def quiet_and_threads(threads: int | None) -> None:
    """Silences TensorFlow's retracing warnings; with ``threads``, both frameworks use that many
    CPU threads (TensorFlow's setting holds only before its runtime starts)."""
    import tensorflow as tf
    import torch

    tf.get_logger().setLevel("ERROR")
    if threads:
        torch.set_num_threads(threads)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass


def _versions() -> dict:
    import keras
    import tensorflow as tf
    import torch
    from importlib.metadata import version

    return {"torch": torch.__version__, "torch_pruning": version("torch-pruning"), "keras": keras.__version__,
            "tensorflow": tf.__version__}


if __name__ == "__main__":
    main()
