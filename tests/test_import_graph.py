"""The package layering: no import cycles between modules, lazy imports included."""
import import_graph

import tfmot_mtl as tm


def test_no_import_cycles():
    assert import_graph.cycles(import_graph.graph()) == []


def test_cycle_finder_sees_lazy_and_from_imports(tmp_path):
    pkg = tmp_path / "tfmot_mtl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from tfmot_mtl.sub import a\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from tfmot_mtl.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from tfmot_mtl.sub import a\nimport tfmot_mtl.c\n")
    (pkg / "c.py").write_text("from tfmot_mtl.sub.a import f\n")
    edges = import_graph.graph(str(pkg))
    assert edges["tfmot_mtl.sub.b"] == {"tfmot_mtl.c"}  # the TYPE_CHECKING import never runs
    assert import_graph.cycles(edges) == [["tfmot_mtl.c", "tfmot_mtl.sub.a", "tfmot_mtl.sub.b"]]


def test_public_names_of_the_lite_and_tasks_packages():
    for name in ("convert", "LiteModel", "parity", "benchmark", "runtime_compat", "save_bundle", "load_bundle",
                 "inspect_tflite", "named_outputs", "split_inputs", "QUANTIZATIONS"):
        assert hasattr(tm.lite, name), name
    for name in ("Task", "delta_m", "evaluate", "segmentation", "depth", "normals", "classification", "binary",
                 "MaskedL1", "make_accumulator", "KIND_METRICS", "compile_args", "print_results"):
        assert hasattr(tm.tasks, name), name
