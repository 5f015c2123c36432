"""Install tfmot_mtl: multi-task / multi-domain structured compression for Keras 3."""
from setuptools import find_packages, setup

setup(
    name="tfmot_mtl",
    version="0.1.0",
    description=(
        "Structured channel pruning, group sparsity and budget-aware pruning for "
        "multi-task and multi-domain Keras 3 models, with TFLite/LiteRT deployment."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfmot_mtl", "tfmot_mtl.*"]),
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "ai-edge-litert==2.3.0",
        "tensorflow-datasets==4.9.10",
        "scikit-learn==1.9.1",
        "matplotlib==3.11.2",
        "rich==15.0.0",
        "tensorflow-model-optimization==0.8.1",
        "tf-keras==2.21.0",
    ],
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "execnet==2.1.2",
                             "hypothesis==6.170.15", "keras-hub==0.32.0",
                             # the docs: `make docs`, and tests/test_docs.py builds them with --strict
                             "mkdocs==1.6.1", "mkdocstrings==1.0.8", "mkdocstrings-python==2.0.9",
                             "griffelib==2.4.1", "mkdocs-autorefs==1.4.5", "pymdown-extensions==13.1.2"],
                    # benchmarks/vs_torch_pruning.py only; the package never imports torch
                    "bench": ["torch==2.13.0", "torch-pruning==1.6.1"]},
    entry_points={"console_scripts": ["tfmot-mtl=tfmot_mtl.app.cli:main"]},
)
