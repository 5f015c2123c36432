"""benchmarks/vs_torch_pruning.py: the Keras copy's counts (no torch needed), the PyTorch copy's
parity with it (skipped without torch / torch_pruning) and a --quick run (slow)."""
import json

import numpy as np
import pytest

from scripts import load_script
from tfmot_mtl.datasets import synthetic_scenes
from tfmot_mtl.profile import count_macs, count_params, profile


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/vs_torch_pruning.py")


@pytest.fixture(scope="module")
def tasks():
    return synthetic_scenes.tasks()


def by_hand(spec: dict, tasks, resolution: int) -> dict:
    """MACs, trainable parameters and BatchNorm moving statistics of the spec's network, by hand."""
    total = {"macs": 0, "trainable": 0, "bn_stats": 0}

    def conv(size, cin, cout, kernel, bias=False, bn=True):
        total["macs"] += size * size * kernel * kernel * cin * cout
        total["trainable"] += kernel * kernel * cin * cout + (cout if bias else 0) + (2 * cout if bn else 0)
        total["bn_stats"] += 2 * cout if bn else 0

    size, cin = resolution, spec["stem"]
    conv(size, 3, cin, 3)
    for width, stride, count in spec["stages"]:
        for j in range(count):
            s = stride if j == 0 else 1
            size //= s
            if s != 1 or cin != width:
                conv(size, cin, width, 1)  # projection shortcut
            conv(size, cin, width, 3)
            conv(size, width, width, 3)
            cin = width
    for task in tasks:
        conv(size, cin, spec["head"], 3)
        conv(size, spec["head"], task.output_channels, 1, bias=True, bn=False)
    return total


@pytest.mark.parametrize("name", ["SPEC", "QUICK_SPEC"])
def test_keras_copy_counts_match_the_spec_by_hand(bench, tasks, name):
    spec = getattr(bench, name)
    model = bench.build_keras(spec, tasks, 32)
    expected = by_hand(spec, tasks, 32)
    assert count_macs(model) == expected["macs"]
    assert profile(model).trainable_params == expected["trainable"]
    assert count_params(model) == expected["trainable"] + expected["bn_stats"]
    assert sorted(model.output.keys() if isinstance(model.output, dict) else model.output_names) == \
        sorted(t.name for t in tasks)
    if name == "SPEC":  # widths 16 / 32 / 64, heads 32, three tasks at 32x32
        assert (expected["macs"], expected["trainable"]) == (16_064_512, 133_276)


def test_keras_same_padding_and_batch_order(bench):
    assert bench.same_padding(32, 3, 2) == (0, 1)  # 'same' at stride 2 pads after only
    assert bench.same_padding(32, 1, 2) == (0, 0) and bench.same_padding(33, 3, 2) == (1, 1)
    order = bench.batch_order(10, 4, 3, seed=0)
    assert order.shape == (6, 4)  # 2 full batches per epoch, the rest dropped
    for epoch in order.reshape(3, 8):
        assert len(set(epoch)) == 8
    assert np.array_equal(order, bench.batch_order(10, 4, 3, seed=0))


@pytest.fixture(scope="module")
def torch_pair(bench, tasks):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_pruning")
    net = bench.build_torch(bench.SPEC, tasks, 32, seed=3)
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():  # BN statistics away from their defaults, so the copy is tested
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                      (module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2)):
                tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))
    model = bench.build_keras(bench.SPEC, tasks, 32)
    bench.copy_torch_to_keras(net, model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and not slowed by a busy core
    yield net, model
    torch.set_num_threads(threads)


def test_torch_copy_has_the_same_counts_and_outputs(bench, tasks, torch_pair):
    net, model = torch_pair
    counts = bench.check_counters(net, model, 32)
    assert counts["params"] == profile(model).trainable_params == by_hand(bench.SPEC, tasks, 32)["trainable"]
    assert bench.tp_ops(net, 32) > counts["macs"]  # Torch-Pruning also counts BatchNorm and bias ops
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    keras_out = model.predict_on_batch({"image": x})
    torch_out = bench.predict_torch(net)({"image": x})
    for task in tasks:
        assert torch_out[task.name].shape == keras_out[task.name].shape == (2, 32, 32, task.output_channels)
        np.testing.assert_allclose(torch_out[task.name], keras_out[task.name], atol=1e-4, rtol=1e-4)


def test_torch_losses_are_the_package_losses(bench, tasks):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    targets = {"segmentation": rng.integers(-1, 8, (2, 8, 8)).astype(np.int32),
               "depth": rng.uniform(0, 3, (2, 8, 8, 1)).astype(np.float32) * (rng.random((2, 8, 8, 1)) > 0.3),
               "normals": rng.normal(size=(2, 8, 8, 3)).astype(np.float32) * (rng.random((2, 8, 8, 1)) > 0.3)}
    for task in tasks:
        pred = rng.normal(size=(2, 8, 8, task.output_channels)).astype(np.float32)
        keras_loss = float(task.loss(targets[task.name], pred))
        y = targets[task.name]
        torch_target = torch.from_numpy(y if y.ndim == 3 else np.ascontiguousarray(y.transpose(0, 3, 1, 2)))
        torch_pred = torch.from_numpy(np.ascontiguousarray(pred.transpose(0, 3, 1, 2)))
        assert float(bench.torch_task_loss(task, torch_pred, torch_target)) == pytest.approx(keras_loss, rel=1e-5)


def test_torch_pruning_lands_the_mac_target(bench, tasks, torch_pair):
    net, _ = torch_pair
    data = synthetic_scenes.generate(4, 32, seed=0)
    scoring = bench.numpy_batches(data, np.array([[0, 1], [2, 3]]), tasks)
    small, info = bench.tp_prune(net, "taylor", 0.5, 32, tasks, scoring)
    assert abs(info["reached_share"] - 0.5) <= bench.TOLERANCE * 0.5
    assert bench.torch_macs(small, 32) == pytest.approx(0.5 * bench.torch_macs(net, 32), rel=bench.TOLERANCE)
    assert small.units["segmentation_logits"].out_channels == 8  # the ignored output convs keep their channels


@pytest.mark.slow
def test_quick_run_writes_the_table(bench, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("torch_pruning")
    out = tmp_path / "vs_tp.json"
    result = bench.main(["--quick", "--criteria", "magnitude", "--levels", "0.5", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert {(s["framework"], s["criterion"]) for s in saved["summary"]} >= {("torch-pruning", "magnitude"),
                                                                             ("tfmot_mtl", "magnitude")}
    pruned = [s for s in saved["summary"] if s["criterion"] == "magnitude"]
    assert all(abs(s["macs_share"] - 0.5) < 0.05 for s in pruned)
    assert result["budget"] == saved["budget"]
