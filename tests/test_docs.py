"""The docs build with --strict (mkdocs + mkdocstrings, as `make docs`): every page renders and every
API reference names an object that exists, so a renamed function breaks the build, not the reader."""
import os
import shutil
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(root, out):
    # not -q: quiet mode hides the warnings that --strict turns into errors
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_docs_build_strict_with_the_api_reference(tmp_path):
    run = _build(ROOT, tmp_path / "site")
    assert run.returncode == 0, run.stdout + run.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("strip_channels", "ProximalGroupLasso", "ChannelPruningCallback", "variable_multipliers"):
        assert name in api, name


def test_a_reference_to_a_missing_function_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    os.makedirs(copy / "docs")
    shutil.copy(os.path.join(ROOT, "mkdocs.yml"), copy)
    shutil.copytree(os.path.join(ROOT, "tfmot_mtl"), copy / "tfmot_mtl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for page in os.listdir(os.path.join(ROOT, "docs")):
        (copy / "docs" / page).write_text("# page\n")
    (copy / "docs" / "api.md").write_text("# API\n\n::: tfmot_mtl.strip.strip_channelz\n")
    run = _build(copy, tmp_path / "site")
    assert run.returncode != 0
    assert "strip_channelz" in run.stdout + run.stderr
