"""How long assert_gradient takes on a ~10k-parameter pgnumpy MLP: a measurement, not a test.

    python -m pgnumpy.testing.speed            # directional (the default above 1024 entries)
    python -m pgnumpy.testing.speed --full     # and every coordinate, for comparison

The loss is sum(MLP(x) * R) over a batch of 64 inputs, float64, BLAS on one thread as in training.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from pgnumpy.nn import MLP
from pgnumpy.testing.gradients import assert_gradient, with_params


def main(argv=None) -> None:
    with threadpool_limits(limits=1, user_api="blas"):  # as training runs (algos/common.py)
        _main(argv)


def _main(argv) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="16,128,64,6", help="MLP layer sizes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--full", action="store_true", help="also time mode='full' once")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    net = MLP(sizes, rng=rng, dtype=np.float64)
    x, R = rng.normal(size=(args.batch, sizes[0])), rng.normal(size=(args.batch, sizes[-1]))

    def loss():
        return float(np.sum(net(x) * R))

    def grad():
        _, cache = net.forward(x)
        return net.backward(cache, R)[0]

    f = with_params(net.params, loss)
    times, cpu = [], []  # wall clock, and this process's CPU time (less hurt by a busy machine)
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        check = assert_gradient(f, net.params, grad())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"MLP {sizes}: {net.params.size} parameters, batch {args.batch}")
    print(f"directional ({check.evaluations} evaluations of f, backward included), over "
          f"{args.repeats} runs: wall median {1e3 * float(np.median(times)):.1f} ms (min "
          f"{1e3 * min(times):.1f}), CPU median {1e3 * float(np.median(cpu)):.1f} ms (min "
          f"{1e3 * min(cpu):.1f}); relative error {check.error:.1e}")
    if args.full:
        t0, c0 = time.perf_counter(), time.process_time()
        check = assert_gradient(f, net.params, grad(), mode="full")
        print(f"full ({check.evaluations} evaluations of f): wall {time.perf_counter() - t0:.2f} "
              f"s, CPU {time.process_time() - c0:.2f} s; relative error {check.error:.1e}")


if __name__ == "__main__":
    main()
