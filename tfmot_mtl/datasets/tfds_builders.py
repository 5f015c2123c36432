"""tensorflow-datasets builders for the embedded datasets (no downloads).

Importing `tfmot_mtl.datasets` registers them, after which
`tfds.load("synthetic_scenes", data_dir=...)`, `"multi_digits"` and `"multi_domain"`
work like any catalogue dataset; `"<name>/tiny"` is a config for quick tests. The
examples of a split are exactly what the module's `load(split, n, resolution, seed)`
yields before shuffling. `as_supervised=True` gives this package's `(inputs, targets)`
dict structure.
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import tensorflow_datasets as tfds

from tfmot_mtl.datasets import multi_digits, multi_domain, synthetic_scenes
from tfmot_mtl.datasets._common import split_seed

_VERSION = tfds.core.Version("1.0.0")
_NOTES = {"1.0.0": "Initial release."}


@dataclasses.dataclass
class EmbeddedConfig(tfds.core.BuilderConfig):
    """Sizes and resolution of an embedded dataset (sizes are per domain for multi_domain)."""

    n_train: int = 2000
    n_test: int = 500
    resolution: int = 64
    seed: int = 0


def _configs(n_train: int, n_test: int) -> list[EmbeddedConfig]:
    return [EmbeddedConfig(name="default", description=f"{n_train} train / {n_test} test, 64x64.",
                           n_train=n_train, n_test=n_test),
            EmbeddedConfig(name="tiny", description="16 train / 8 test, 32x32, for tests.",
                           n_train=16, n_test=8, resolution=32)]


def _tensor(shape, dtype):
    return tfds.features.Tensor(shape=shape, dtype=dtype)


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared split logic: every split is generated locally from the config."""

    VERSION = _VERSION
    RELEASE_NOTES = _NOTES

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # tfds' default probes `importlib_resources` (an optional backport) for builders
        # that live outside its own package; the source file is all it needs.
        from etils import epath

        return epath.Path(inspect.getfile(cls))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.n_train),
                "test": self._generate_examples("test", cfg.n_test)}

    def _arrays(self, split: str, n: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _generate_examples(self, split: str, n: int):
        data = self._arrays(split, n)
        for i in range(len(data["image"])):
            yield i, {k: v[i] for k, v in data.items()}


class SyntheticScenes(_EmbeddedBuilder):
    """Ray-cast indoor scenes with segmentation, depth and normals (see `synthetic_scenes`)."""

    BUILDER_CONFIGS = _configs(*synthetic_scenes.DEFAULT_SIZES.values())

    def _info(self):
        r = self.builder_config.resolution
        return self.dataset_info_from_configs(
            description=synthetic_scenes.__doc__,
            features=tfds.features.FeaturesDict({
                "image": _tensor((r, r, 3), np.float32),
                "segmentation": _tensor((r, r), np.int32),
                "depth": _tensor((r, r, 1), np.float32),
                "normals": _tensor((r, r, 3), np.float32)}),
            supervised_keys=({"image": "image"}, {k: k for k in synthetic_scenes.TASK_NAMES}))

    def _arrays(self, split, n):
        cfg = self.builder_config
        return synthetic_scenes.generate(n, cfg.resolution, split_seed(cfg.seed, split))


class MultiDigits(_EmbeddedBuilder):
    """Two or three real handwritten digits per canvas (see `multi_digits`)."""

    BUILDER_CONFIGS = _configs(*multi_digits.DEFAULT_SIZES.values())

    def _info(self):
        r = self.builder_config.resolution
        return self.dataset_info_from_configs(
            description=multi_digits.__doc__,
            features=tfds.features.FeaturesDict({
                "image": _tensor((r, r, 3), np.float32),
                "segmentation": _tensor((r, r), np.int32),
                "left": _tensor((), np.int32), "right": _tensor((), np.int32),
                "sources": _tensor((multi_digits.MAX_DIGITS,), np.int64)}),
            supervised_keys=({"image": "image"}, {k: k for k in multi_digits.TASK_NAMES}))

    def _arrays(self, split, n):
        cfg = self.builder_config
        return multi_digits.generate(n, cfg.resolution, split_seed(cfg.seed, split), split)


class MultiDomain(_EmbeddedBuilder):
    """All `multi_domain.DOMAINS`, `n_train` / `n_test` images each, domain-ordered."""

    BUILDER_CONFIGS = _configs(*multi_domain.DEFAULT_SIZES.values())

    def _info(self):
        r = self.builder_config.resolution
        return self.dataset_info_from_configs(
            description=multi_domain.__doc__,
            features=tfds.features.FeaturesDict({
                "image": _tensor((r, r, 3), np.float32),
                "domain": _tensor((), np.int32), "label": _tensor((), np.int32)}),
            supervised_keys=({"image": "image", "domain": "domain"}, {"label": "label"}))

    def _arrays(self, split, n):
        cfg = self.builder_config
        parts = [multi_domain.generate(name, n, split, cfg.seed, cfg.resolution)
                 for name, _ in multi_domain.DOMAINS]
        return {"image": np.concatenate([p["image"] for p in parts]),
                "label": np.concatenate([p["label"] for p in parts]).astype(np.int32),
                "domain": np.repeat(np.arange(len(parts), dtype=np.int32), n)}
