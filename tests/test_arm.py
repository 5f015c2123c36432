"""The ARM64 LiteRT check: fake CPU files, CPU model handling and errors without qemu; the real
aarch64 LiteRT under qemu in the slow set."""
import os
import shutil

import numpy as np
import pytest

from tfmot_mtl.lite import arm

A53_HWCAP = 0x8FB  # what qemu 7.2 reports for -cpu cortex-a53
KNOWN = ["a64fx", "cortex-a53", "cortex-a72", "cortex-a76", "max", "neoverse-n1"]


def test_features_decode_the_hwcap_words():
    assert arm.features(A53_HWCAP) == ["fp", "asimd", "aes", "pmull", "sha1", "sha2", "crc32", "cpuid"]
    assert "asimddp" in arm.features(1 << 20)
    assert arm.features(0, 1 << 13) == ["i8mm"]
    assert arm.features(0, 1 << 23) == ["sme"]


def test_cpuinfo_carries_the_emulated_part_number_and_features():
    text = arm.cpuinfo_text("cortex-a53", A53_HWCAP, count=3)
    assert text.count("processor\t:") == 3
    assert "CPU part\t: 0xd03" in text and "CPU implementer\t: 0x41" in text
    assert "Features\t: fp asimd aes pmull sha1 sha2 crc32 cpuid\n" in text
    assert "asimddp" not in text  # an A53 has no dot product
    assert "CPU part\t: 0xd0b" in arm.cpuinfo_text("cortex-a76", 1 << 20)
    # properties after the comma do not change the part: max keeps qemu's own
    assert "CPU part\t: 0x051" in arm.cpuinfo_text("max,sme=off", 0)
    with pytest.raises(ValueError, match="no part number known for CPU model 'cortex-x9'"):
        arm.cpuinfo_text("cortex-x9", 0)


def test_cpu_files_give_the_topology_litert_needs(tmp_path):
    arm.write_cpu_files(tmp_path, "cortex-a76", 0x119FFB, count=2)
    cpus = tmp_path / "sys" / "devices" / "system" / "cpu"
    assert (cpus / "possible").read_text() == "0-1\n" and (cpus / "present").read_text() == "0-1\n"
    assert (cpus / "cpu1" / "topology" / "core_id").read_text() == "1\n"
    assert (cpus / "cpu0" / "topology" / "core_siblings_list").read_text() == "0-1\n"
    assert "asimddp" in (tmp_path / "proc" / "cpuinfo").read_text()


@pytest.mark.parametrize("cpu, message", [
    ("max", "plain 'max' advertises SME"),
    ("max,sve=off", "plain 'max' advertises SME"),
    ("cortex-x9", "qemu does not know CPU model 'cortex-x9'; it knows a64fx, cortex-a53"),
    ("", "non-empty string"),
    (None, "non-empty string"),
])
def test_bad_cpu_models_are_refused_with_the_reason(cpu, message):
    with pytest.raises(ValueError, match=message):
        arm.check_cpu(cpu, KNOWN)


def test_explicit_cpu_models_pass():
    assert arm.check_cpu(" max,sme=off ", KNOWN) == "max,sme=off"
    assert arm.check_cpu("cortex-a76", KNOWN) == "cortex-a76"
    assert arm.check_cpu("max,sme=off,sve=off", KNOWN) == "max,sme=off,sve=off"


def test_missing_tools_name_the_install_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(arm.ArmSetupError, match=r"apt-get install qemu-user-static mmdebstrap"):
        arm.find_tools()
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/qemu-aarch64-static" if "qemu" in tool else None)
    with pytest.raises(arm.ArmSetupError, match=r"^mmdebstrap not found: install with `apt-get install mmdebstrap`"):
        arm.find_tools()


def test_installing_tools_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(arm.ArmSetupError, match="needs root: run `sudo apt-get install"):
        arm.install_tools()


def test_unwritable_cache_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(arm, "find_tools", lambda: {"qemu-aarch64-static": "q", "mmdebstrap": "m"})
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(arm.ArmSetupError, match="is not writable .*TFMOT_MTL_CACHE"):
        arm.prepare(cache=blocker / "cache", verbose=False)


def test_a_failed_build_leaves_no_half_built_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(arm, "find_tools", lambda: {"qemu-aarch64-static": "q", "mmdebstrap": "m"})

    def fail(mmdebstrap, root):
        root.mkdir(parents=True)
        (root / "partial").write_text("")
        raise arm.ArmSetupError("mmdebstrap could not build the aarch64 root: no network")

    monkeypatch.setattr(arm, "_debootstrap", fail)
    with pytest.raises(arm.ArmSetupError, match="no network"):
        arm.prepare(cache=tmp_path, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_a_complete_cache_is_reused_without_building(monkeypatch, tmp_path):
    monkeypatch.setattr(arm, "find_tools", lambda: {"qemu-aarch64-static": "q", "mmdebstrap": "m"})
    monkeypatch.setattr(arm, "_debootstrap", lambda *a: pytest.fail("rebuilt a complete cache"))
    litert, numpy = arm.versions()
    done = tmp_path / f"arm64-{arm.SUITE}-py311-litert{litert}-numpy{numpy}"
    (done / "root").mkdir(parents=True)
    (done / ".complete").write_text("")
    env = arm.prepare(cache=tmp_path, verbose=False)
    assert env.root == done / "root" and env.litert_version == litert


def test_compare_counts_quantization_steps_for_int_outputs():
    got = np.array([[1, 5, -128]], np.int8)
    ref = np.array([[1, 3, -127]], np.int8)
    out = arm.compare(got, ref)
    assert out["max_steps"] == 2 and out["differ_share"] == pytest.approx(2 / 3)
    floats = arm.compare(np.array([1.0, 2.5], np.float32), np.array([1.0, 2.0], np.float32))
    assert floats["max_steps"] is None and floats["max_abs"] == 0.5 and floats["max_rel"] == 0.25
    with pytest.raises(ValueError, match="shapes differ"):
        arm.compare(np.zeros(2), np.zeros(3))


def test_cli_check_arm_errors_are_one_line(tmp_path, capsys):
    from tfmot_mtl.app import cli

    not_a_model = tmp_path / "x.tflite"
    not_a_model.write_bytes(b"0123456789")
    with pytest.raises(SystemExit, match=r"^error: file .* is not a TFLite model"):
        cli.main(["check-arm", str(not_a_model)])
    with pytest.raises(SystemExit, match=r"^error: no .tflite file at"):
        cli.main(["check-arm", str(tmp_path / "missing.tflite")])


def _tools_or_skip() -> None:
    try:
        arm.find_tools()
    except arm.ArmSetupError as exc:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"no ARM emulation here: {exc}")
        try:
            arm.install_tools()
        except arm.ArmSetupError as install_error:
            pytest.skip(f"cannot install qemu / mmdebstrap: {install_error}")


@pytest.mark.slow
def test_litert_arm64_matches_x86_for_every_quantization(tmp_path):
    """The real aarch64 LiteRT wheel under qemu, 4 quantizations x 2 CPU models (a few minutes from
    an empty cache, ~1 minute warm)."""
    import keras

    from tfmot_mtl import lite

    _tools_or_skip()
    try:
        env = arm.prepare(verbose=False)
    except arm.ArmSetupError as exc:
        pytest.skip(f"cannot prepare the aarch64 environment: {exc}")
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(image)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(48, 1, activation="relu")(h)
    seg = keras.layers.Conv2D(4, 1, name="seg_logits")(h)
    cls = keras.layers.Dense(3, name="cls_logits")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(image, {"seg": seg, "cls": cls})
    x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    for quantization in (None, "float16", "dynamic", "int8"):
        tflite = lite.convert(model, quantization=quantization, representative_data=[x], verbose=False)
        report = arm.check_arm(tflite, x[:2], ["cortex-a53", "max,sme=off"], keras_model=model, env=env)
        assert {r["cpu"] for r in report.rows} == {"cortex-a53", "max,sme=off"}
        assert all(r["delegate"] for r in report.rows), report.table()
        for row in report.rows:
            if row["max_steps"] is not None:
                assert row["max_steps"] <= 1, report.table()
            else:
                assert row["max_abs"] < 1e-3, report.table()
            assert row["keras_max_abs"] < (0.5 if quantization == "int8" else 0.05), report.table()


@pytest.mark.slow
def test_example_runs_fast():
    import subprocess
    import sys
    from pathlib import Path

    _tools_or_skip()
    script = Path(__file__).resolve().parents[1] / "examples" / "check_on_arm.py"
    result = subprocess.run([sys.executable, str(script), "--fast"], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "float32: ok" in result.stdout and "int8: ok" in result.stdout and "cortex-a53" in result.stdout
