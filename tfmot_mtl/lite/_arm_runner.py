"""Runs a .tflite once on LiteRT and saves its raw outputs; executed by the aarch64 python under qemu.

    python _arm_runner.py MODEL.tflite INPUTS.npz OUTPUTS.npz

Imports only numpy and ai_edge_litert (the emulated environment has nothing else).
"""
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main(model_path: str, inputs_path: str, outputs_path: str) -> None:
    interpreter = Interpreter(model_path=model_path, num_threads=1)
    signatures = interpreter.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    with np.load(inputs_path) as inputs:
        outputs = runner(**{name: inputs[name] for name in inputs.files})
    np.savez(outputs_path, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:4])
