"""Inference speed of the numpy policy's Nature CNN (`[model] preset =
"nature"`) on stacks of four 84x84 frames, on one core: observations per
second of `Policy.forward` (logits and values) at a few batch sizes.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=python python3 python/benches/nature_cnn.py [--batches 1 8 32]

Set the BLAS thread count to 1 as above (the actors run one policy per
process); the weights are random, which does not change the time.
"""

import argparse
import time

import numpy as np

from flotilla.policy import ModelSpec, Policy
from flotilla.spaces import Discrete

SHAPE = (4, 84, 84)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per batch size [default: %(default)s]")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    spec = ModelSpec.nature()
    params = {n: rng.normal(0, 0.05, s).astype(np.float32) for n, s in spec.parameter_shapes(SHAPE, Discrete(6))}
    policy = Policy(spec, SHAPE, Discrete(6), params)
    print("| batch | ms per forward | obs/s |\n| ---: | ---: | ---: |")
    for batch in args.batches:
        obs = rng.integers(0, 256, (batch, np.prod(SHAPE))).astype(np.float32)
        policy.forward(obs, with_value=True)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            policy.forward(obs, with_value=True)
            calls += 1
        per_call = (time.perf_counter() - start) / calls
        print(f"| {batch} | {per_call * 1e3:.2f} | {batch / per_call:,.0f} |")


if __name__ == "__main__":
    main()
