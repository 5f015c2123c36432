"""Compress a multi-task model, then recover it by distillation from its dense parent.

    python examples/distill_finetune.py                    # 32x32 scenes, several minutes on a CPU
    python examples/distill_finetune.py --method sparsity  # group lasso instead of Taylor pruning
    python examples/distill_finetune.py --anneal           # teacher annealing: distillation fades to 0
    python examples/distill_finetune.py --fast             # tiny sizes (seconds)

1. train a small dense multi-task ResNet (segmentation, depth, normals) on synthetic scenes;
2. `recipes.find_channels`: remove `--target` of the shared trunk's channels (iterative Taylor
   pruning, or group sparsity with the proximal step), starting from the dense weights;
3. `strip_channels`: a smaller plain Keras model with the same outputs;
4. `recipes.finetune(small, data, epochs, teacher=dense, weighting="uncertainty")`: a
   keras.distillation Distiller with one distillation loss per task and learned
   (homoscedastic-uncertainty) task weights; with `--anneal` the distillation terms fade from
   full weight to 0 over the epochs (teacher annealing), so the student ends on its labels;
5. dense vs compressed metrics side by side, and the student saved as .keras.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfmot_mtl.recipes import experiment as ex  # noqa: E402
from tfmot_mtl import recipes  # noqa: E402
from tfmot_mtl.strip import strip_channels  # noqa: E402
from tfmot_mtl.tasks import print_results  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="prune", choices=recipes.METHODS)
    p.add_argument("--target", type=float, default=0.6, help="fraction of the shared channels to remove")
    p.add_argument("--anneal", action="store_true", help="teacher annealing (distillation fades out)")
    p.add_argument("--fast", action="store_true", help="tiny model and data")
    p.add_argument("--out", default="saved_models/distill_finetune/student.keras")
    args = p.parse_args(argv)
    fast = args.fast
    budget = recipes.Epochs(dense=1, find=1, finetune=1) if fast else recipes.Epochs(dense=8, find=4, finetune=4)
    data = ex.load_data("synthetic_scenes", n_train=32 if fast else 800, n_test=16 if fast else 200,
                        batch_size=16, resolution=16 if fast else 32)
    dense = ex.build_model("mtl_resnet", data.tasks, data.input_shape, width=0.25 if fast else 0.5,
                           stages=(1, 1) if fast else (1, 1, 1), head_channels=8 if fast else 16)
    recipes.train_dense(dense, data, budget.dense, lr=2e-3)
    dense_results = ex.evaluate(dense, data)

    found, masks, info = recipes.find_channels(dense, data, args.method, args.target, budget.find, lr=1e-3,
                                               options={"l1": 2.0} if args.method == "sparsity" else None)
    small, report = strip_channels(found, masks)
    print(f"{args.method}: {100 * info['sparsity']:.0f}% of the shared channels removed; params "
          f"{report.totals['params_before']:,} -> {report.totals['params_after']:,}, MACs x{report.mac_ratio:.2f}")
    stripped_results = ex.evaluate(small, data)

    history = recipes.finetune(small, data, budget.finetune, teacher=dense, lr=1e-3, weighting="uncertainty",
                               temperature=2.0, student_loss_weight=0.5, teacher_annealing=args.anneal)
    weights = {t.name: round(float(history.history[f"{t.name}_weight"][-1]), 3) for t in data.tasks}
    annealed = f", distillation weight fading to 0 (last epoch's mean {history.history['distill_scale'][-1]:.2f})" \
        if args.anneal else ""
    print(f"fine-tuned {budget.finetune} epochs distilled from the dense parent{annealed}; "
          f"learned task weights {weights}")
    results = ex.evaluate(small, data)
    print_results(stripped_results, title="stripped, before fine-tuning (baseline: dense)",
                  baseline=dense_results, tasks=data.tasks)
    print_results(results, title="stripped + distilled fine-tuning (baseline: dense)",
                  baseline=dense_results, tasks=data.tasks)
    print(f"training budget (epochs): dense {budget.dense}, find {budget.find}, fine-tune {budget.finetune}")
    print(f"saved the student to {ex.save_model(small, args.out)}")


if __name__ == "__main__":
    main()
