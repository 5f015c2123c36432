"""A .tflite model on LiteRT's ARM64 build, the kernels Android phones run, checked under qemu.

The x86-64 LiteRT wheel and the aarch64 one share the converter's model but not the kernels
(XNNPACK's NEON, dot-product and i8mm paths, ruy): a model can be right on x86 and differ on a
phone. :func:`check_arm` runs the real ``ai-edge-litert`` aarch64 wheel under qemu user-mode
emulation, one run per emulated CPU model, and compares every output with x86 LiteRT (and
Keras, when given).

The aarch64 environment is a Debian bookworm root with python3.11 (``mmdebstrap``) and the
aarch64 wheels of ``ai-edge-litert`` and ``numpy`` in ``/opt/site``, built once under the user
cache (:func:`cache_folder`), keyed on both versions, in a temporary folder renamed when
complete; nothing is installed into the host system. Each CPU model gets a view of that root
whose ``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` describe that CPU: LiteRT's CPU
detection crashes on the host's x86 files, creates no XNNPACK delegate without the ``/sys``
topology, and picks kernels by the part number in ``/proc/cpuinfo`` (a Cortex-A76 part on an
emulated Cortex-A53 selects dot-product kernels the A53 lacks: SIGILL).

qemu 7.2's default ``-cpu max`` advertises SME and gives wrong int8 and dynamic-range results,
so a CPU model is always explicit and plain ``max`` is refused (``max,sme=off`` has i8mm).
Emulation is 100-300x slower than a phone: this checks outputs, never speed.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tfmot_mtl.lite.model import LiteModel, dequantize, read_tflite_bytes

DEFAULT_CPUS = ("cortex-a53", "cortex-a76", "max,sme=off")
SUITE = "bookworm"
PYTHON = "/usr/bin/python3.11"
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
DELEGATE_LINE = "Created TensorFlow Lite XNNPACK delegate"
_RUNNER = Path(__file__).with_name("_arm_runner.py")
_COMPLETE = ".complete"

# MIDR fields (implementer, variant, part, revision) of the cores qemu emulates; LiteRT's
# cpuinfo reads them from /proc/cpuinfo. "max" is qemu's own core: an unknown part, so the
# kernels are chosen from the hardware capabilities alone.
MIDR = {
    "cortex-a35": (0x41, 0x0, 0xd04, 1), "cortex-a53": (0x41, 0x0, 0xd03, 4),
    "cortex-a57": (0x41, 0x1, 0xd07, 0), "cortex-a72": (0x41, 0x0, 0xd08, 2),
    "cortex-a76": (0x41, 0x4, 0xd0b, 1), "neoverse-n1": (0x41, 0x4, 0xd0c, 1),
    "a64fx": (0x46, 0x1, 0x001, 0), "max": (0x51, 0x0, 0x051, 0),
}
# Linux arm64 AT_HWCAP / AT_HWCAP2 bits, in order (arch/arm64/include/uapi/asm/hwcap.h).
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
               "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca "
               "pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm "
                "svef64mm svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 "
                "sme_i8i32 sme_f16f32 sme_b16f32 sme_f32f32 sme_fa64").split()
CPUS_IN_VIEW = 4


class ArmSetupError(RuntimeError):
    """The aarch64 environment cannot be prepared or run; the message says what is missing."""


def cache_folder() -> Path:
    """Where prepared environments live: ``$TFMOT_MTL_CACHE``, else ``$XDG_CACHE_HOME/tfmot_mtl``,
    else ``~/.cache/tfmot_mtl``."""
    if os.environ.get("TFMOT_MTL_CACHE"):
        return Path(os.environ["TFMOT_MTL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfmot_mtl"


def features(hwcap: int, hwcap2: int = 0) -> list[str]:
    """The ``Features`` names of a ``/proc/cpuinfo`` line for the given AT_HWCAP / AT_HWCAP2 words."""
    names = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    return names + [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]


def cpu_family(cpu: str) -> str:
    """The qemu CPU model without its properties: ``"max,sme=off"`` -> ``"max"``."""
    return cpu.split(",", 1)[0].strip()


def cpuinfo_text(cpu: str, hwcap: int, hwcap2: int = 0, count: int = CPUS_IN_VIEW) -> str:
    """A ``/proc/cpuinfo`` of ``count`` identical cores of qemu CPU model ``cpu``."""
    family = cpu_family(cpu)
    if family not in MIDR:
        raise ValueError(f"no part number known for CPU model {family!r}; known: {sorted(MIDR)}")
    implementer, variant, part, revision = MIDR[family]
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(features(hwcap, hwcap2))}\n"
             f"CPU implementer\t: {implementer:#04x}\nCPU architecture: 8\nCPU variant\t: {variant:#x}\n"
             f"CPU part\t: {part:#05x}\nCPU revision\t: {revision}\n")
    return "\n".join(f"processor\t: {i}\n{block}" for i in range(count))


def write_cpu_files(root: str | os.PathLike, cpu: str, hwcap: int, hwcap2: int = 0,
                    count: int = CPUS_IN_VIEW) -> None:
    """Writes ``proc/cpuinfo`` and the ``sys/devices/system/cpu`` topology under ``root``."""
    root = Path(root)
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo_text(cpu, hwcap, hwcap2, count))
    cpus = root / "sys" / "devices" / "system" / "cpu"
    cpus.mkdir(parents=True, exist_ok=True)
    span = f"0-{count - 1}\n"
    for name in ("possible", "present", "online"):
        (cpus / name).write_text(span)
    for i in range(count):
        topology = cpus / f"cpu{i}" / "topology"
        topology.mkdir(parents=True, exist_ok=True)
        for name, value in (("physical_package_id", "0"), ("core_id", str(i)), ("thread_siblings_list", str(i)),
                            ("core_siblings_list", span.strip()), ("cluster_cpus_list", span.strip())):
            (topology / name).write_text(value + "\n")


def check_cpu(cpu: Any, known: Sequence[str]) -> str:
    """Validates one qemu ``-cpu`` value (a model, optionally with ``,property=value`` items)."""
    if not isinstance(cpu, str) or not cpu.strip():
        raise ValueError(f"a CPU model must be a non-empty string such as 'cortex-a76', got {cpu!r}")
    cpu = cpu.strip()
    family = cpu_family(cpu)
    if family not in known:
        raise ValueError(f"qemu does not know CPU model {family!r}; it knows {', '.join(sorted(known))}")
    if family not in MIDR:
        raise ValueError(f"CPU model {family!r} has no part number here; use one of {', '.join(sorted(MIDR))}")
    if family == "max" and "sme=off" not in cpu.replace(" ", "").split(","):
        raise ValueError("plain 'max' advertises SME, which qemu 7.2 emulates wrongly for LiteRT's int8 kernels; "
                         "use 'max,sme=off' (i8mm and dot-product) or a named core such as 'cortex-a76'")
    return cpu


# --------------------------------------------------------------------------- environment
@dataclasses.dataclass(frozen=True)
class ArmEnvironment:
    """A prepared aarch64 root: ``root`` holds python3.11 and ``opt/site`` the LiteRT wheels."""

    root: Path
    qemu: str
    litert_version: str
    numpy_version: str

    def known_cpus(self) -> list[str]:
        """The CPU models this qemu emulates (``qemu-aarch64-static -cpu help``)."""
        out = subprocess.run([self.qemu, "-cpu", "help"], capture_output=True, text=True, check=False).stdout
        return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]

    def command(self, cpu: str, view: Path, *args: str) -> list[str]:
        return [self.qemu, "-cpu", cpu, "-L", str(view), str(view) + PYTHON, *args]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH="/opt/site", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
        return env

    def hwcaps(self, cpu: str) -> tuple[int, int]:
        """AT_HWCAP and AT_HWCAP2 as qemu reports them to a program on ``cpu``."""
        code = ("import ctypes; c = ctypes.CDLL(None); c.getauxval.restype = ctypes.c_ulong; "
                "print(c.getauxval(16), c.getauxval(26))")
        done = subprocess.run(self.command(cpu, self.root, "-c", code), capture_output=True, text=True,
                              env=self._env(), check=False)
        if done.returncode != 0:
            raise ArmSetupError(f"the aarch64 python did not start under qemu -cpu {cpu}: "
                                f"{_last_line(done.stderr)}")
        hwcap, hwcap2 = done.stdout.split()
        return int(hwcap), int(hwcap2)

    def view(self, cpu: str) -> Path:
        """A root for ``cpu``: links to the shared root, with its own ``/proc/cpuinfo`` and ``/sys``."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", cpu)
        final = self.root.parent / "views" / name
        if (final / _COMPLETE).exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
        for entry in self.root.iterdir():
            if entry.name not in ("proc", "sys"):
                (tmp / entry.name).symlink_to(entry)
        write_cpu_files(tmp, cpu, *self.hwcaps(cpu))
        (tmp / _COMPLETE).write_text(cpu + "\n")
        _publish(tmp, final)
        return final

    def run(self, cpu: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Runs the aarch64 python with ``args`` on an emulated ``cpu``."""
        return subprocess.run(self.command(cpu, self.view(cpu), *args), capture_output=True, text=True,
                              env=self._env(), timeout=timeout, check=False)


def find_tools() -> dict[str, str]:
    """Paths of ``qemu-aarch64-static`` and ``mmdebstrap``; ArmSetupError naming the install command."""
    found = {tool: shutil.which(tool) for tool in ("qemu-aarch64-static", "mmdebstrap")}
    missing = [tool for tool, path in found.items() if not path]
    if missing:
        packages = " ".join("qemu-user-static" if m.startswith("qemu") else m for m in missing)
        raise ArmSetupError(f"{' and '.join(missing)} not found: install with `apt-get install {packages}` "
                            "(Debian/Ubuntu, as root), or call prepare(install_tools=True) as root")
    return found  # type: ignore[return-value]


def install_tools() -> None:
    """Installs qemu-user-static and mmdebstrap with apt-get (needs root and the package index)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise ArmSetupError("installing qemu-user-static and mmdebstrap needs root: run "
                            "`sudo apt-get install qemu-user-static mmdebstrap`")
    if not shutil.which("apt-get"):
        raise ArmSetupError("no apt-get here: install qemu-user-static (qemu-aarch64-static) and mmdebstrap "
                            "with this system's package manager")
    done = subprocess.run(["apt-get", "install", "-y", "-q", "qemu-user-static", "mmdebstrap"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ArmSetupError(f"apt-get could not install qemu-user-static mmdebstrap: {_last_line(done.stderr)}")


def versions() -> tuple[str, str]:
    """The host's ai-edge-litert and numpy versions (the aarch64 environment gets the same)."""
    from importlib.metadata import version

    return version("ai-edge-litert"), np.__version__


def prepare(cache: str | os.PathLike | None = None, litert_version: str | None = None,
            numpy_version: str | None = None, install: bool = False, verbose: bool = True) -> ArmEnvironment:
    """The aarch64 LiteRT environment, built on first use (~1 minute) and reused after.

    Args:
        cache: folder of prepared environments (default :func:`cache_folder`).
        litert_version, numpy_version: wheels to install (default: the host's versions).
        install: install qemu-user-static and mmdebstrap with apt-get when missing (root only).
        verbose: print what is being built.

    Raises:
        ArmSetupError: a missing tool, no root for mmdebstrap, an unwritable cache, or the
            package index unreachable; the message names what to provide.
    """
    if install:
        try:
            find_tools()
        except ArmSetupError:
            install_tools()
    tools = find_tools()
    host_litert, host_numpy = versions()
    litert_version, numpy_version = litert_version or host_litert, numpy_version or host_numpy
    folder = Path(cache) if cache is not None else cache_folder()
    final = folder / f"arm64-{SUITE}-py311-litert{litert_version}-numpy{numpy_version}"
    env = ArmEnvironment(final / "root", tools["qemu-aarch64-static"], litert_version, numpy_version)
    if (final / _COMPLETE).exists():
        return env
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder))
    except OSError as exc:
        raise ArmSetupError(f"cache folder {str(folder)!r} is not writable ({exc.strerror}): pass cache= "
                            "or set TFMOT_MTL_CACHE to a writable folder") from exc
    try:
        say = print if verbose else (lambda *a, **k: None)
        say(f"[arm] building an aarch64 root ({SUITE}, python3.11) in {tmp} ...", flush=True)
        _debootstrap(tools["mmdebstrap"], tmp / "root")
        say(f"[arm] installing ai-edge-litert=={litert_version} numpy=={numpy_version} (aarch64 wheels) ...",
            flush=True)
        _install_wheels(tmp / "root" / "opt" / "site", litert_version, numpy_version)
        (tmp / _COMPLETE).write_text(f"ai-edge-litert=={litert_version}\nnumpy=={numpy_version}\n")
        _publish(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return env


def _debootstrap(mmdebstrap: str, root: Path) -> None:
    done = subprocess.run([mmdebstrap, "--arch=arm64", "--variant=extract", "--quiet",
                           "--include=python3.11-minimal,libpython3.11-stdlib,libstdc++6", SUITE, str(root)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        hint = "" if os.geteuid() == 0 else " (run as root, or enable unprivileged user namespaces)"
        raise ArmSetupError(f"mmdebstrap could not build the aarch64 root{hint}: {_last_line(done.stderr)}")


def _install_wheels(site: Path, litert_version: str, numpy_version: str) -> None:
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation",
                           "cp", "--abi", "cp311", "--target", str(site), f"ai-edge-litert=={litert_version}",
                           f"numpy=={numpy_version}"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ArmSetupError(f"could not get the aarch64 wheels of ai-edge-litert=={litert_version} and "
                            f"numpy=={numpy_version} (is the package index reachable?): {_last_line(done.stderr)}")


def _publish(tmp: Path, final: Path) -> None:
    """Renames a complete ``tmp`` to ``final``; another process that got there first wins."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / _COMPLETE).exists():
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


# --------------------------------------------------------------------------- checking
@dataclasses.dataclass
class ArmReport:
    """Per CPU model: the XNNPACK delegate, and each output compared with x86 LiteRT and Keras."""

    quantization: str
    rows: list[dict]

    def table(self) -> str:
        lines = [f"{'cpu':<14} {'output':<12} {'delegate':>8} {'vs x86 max abs':>15} {'differ':>8} "
                 f"{'steps':>6} {'vs Keras max abs':>17}"]
        for r in self.rows:
            steps = "" if r["max_steps"] is None else str(r["max_steps"])
            keras_err = "" if r["keras_max_abs"] is None else f"{r['keras_max_abs']:.3g}"
            lines.append(f"{r['cpu']:<14} {r['output']:<12} {str(r['delegate']):>8} {r['max_abs']:>15.3g} "
                         f"{r['differ_share']:>7.2%} {steps:>6} {keras_err:>17}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"quantization": self.quantization, "rows": self.rows}

    @property
    def ok(self) -> bool:
        """Every CPU created the delegate and no int output is more than one quantization step off."""
        return all(r["delegate"] and (r["max_steps"] is None or r["max_steps"] <= 1) for r in self.rows)


def compare(actual: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Max abs / rel error and share of differing elements; for integer tensors the max difference
    in quantization steps."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs {e.shape}")
    diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    scale = np.maximum(np.abs(e.astype(np.float64)), 1e-12)
    return {"max_abs": float(diff.max(initial=0.0)), "max_rel": float((diff / scale).max(initial=0.0)),
            "differ_share": float(np.mean(diff > 0)) if diff.size else 0.0,
            "max_steps": int(diff.max(initial=0)) if np.issubdtype(a.dtype, np.integer) else None}


def run_on_arm(tflite: Any, inputs: Any, cpus: Sequence[str] = DEFAULT_CPUS, env: ArmEnvironment | None = None,
               timeout: float = 1800) -> dict[str, dict]:
    """Runs a .tflite on aarch64 LiteRT under emulation, once per CPU model.

    Returns ``{cpu: {"outputs": {name: raw array}, "delegate": bool}}``; raw arrays are the
    tensors' own dtypes (int8 outputs stay int8). ``inputs`` are real values, quantized with the
    model's input parameters on the host.
    """
    content = read_tflite_bytes(tflite)
    env = env or prepare()
    known = env.known_cpus()
    cpus = [check_cpu(cpu, known) for cpu in cpus]
    feed = LiteModel(content).feed(inputs)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tfmot_mtl_arm-") as work:
        model_path, feed_path = Path(work) / "model.tflite", Path(work) / "inputs.npz"
        model_path.write_bytes(content)
        np.savez(feed_path, **feed)
        for cpu in cpus:
            out_path = Path(work) / f"out-{re.sub(r'[^A-Za-z0-9]', '_', cpu)}.npz"
            done = env.run(cpu, str(_RUNNER), str(model_path), str(feed_path), str(out_path), timeout=timeout)
            if done.returncode != 0 or not out_path.exists():
                raise ArmSetupError(f"LiteRT on emulated {cpu} failed (exit {done.returncode}): "
                                    f"{_last_line(done.stderr)}")
            with np.load(out_path) as raw:
                results[cpu] = {"outputs": {k: raw[k] for k in raw.files}, "delegate": DELEGATE_LINE in done.stderr}
    return results


def check_arm(tflite: Any, inputs: Any, cpus: Sequence[str] = DEFAULT_CPUS, keras_model: Any = None,
              env: ArmEnvironment | None = None) -> ArmReport:
    """Compares a .tflite on emulated ARM64 CPUs with x86 LiteRT (raw tensors) and Keras (real values).

    Args:
        tflite: a .tflite path or its bytes.
        inputs: real-valued inputs with a batch dimension (a dict by input name, or one array).
        cpus: qemu CPU models (e.g. ``"cortex-a53"``, ``"cortex-a76"``, ``"max,sme=off"``).
        keras_model: the Keras model the file was converted from, to also compare with it.
        env: a prepared environment (default: :func:`prepare` with the host's versions).
    """
    host = LiteModel(tflite)
    feed = host.feed(inputs)
    x86 = host.run_raw(feed)
    arm = run_on_arm(host.model_content, inputs, cpus, env)
    reference = None
    if keras_model is not None:
        from tfmot_mtl.lite.io import named_outputs, structure_inputs

        reference = named_outputs(keras_model, keras_model.predict(structure_inputs(keras_model, inputs)
                                                                   if isinstance(inputs, Mapping) else inputs,
                                                                   verbose=0))
    details = host.output_details
    rows = []
    for cpu, result in arm.items():
        for name in details:
            got = result["outputs"][name]
            row = {"cpu": cpu, "output": name, "delegate": result["delegate"], **compare(got, x86[name])}
            row["keras_max_abs"] = None if reference is None else float(np.max(np.abs(
                dequantize(got, details[name]) - np.asarray(reference[name], np.float64))))
            rows.append(row)
    return ArmReport(host.quantization or "float32", rows)
