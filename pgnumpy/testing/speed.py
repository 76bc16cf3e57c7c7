"""How long assert_gradient takes on a ~10k-parameter pgnumpy MLP: a measurement, not a test.

    python -m pgnumpy.testing.speed            # directional (the default above 1024 entries)
    python -m pgnumpy.testing.speed --full     # and every coordinate, for comparison

The loss is sum(MLP(x) * R) over a batch of 64 inputs, float64, BLAS on one thread as in training.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from pgnumpy.nn import MLP  # noqa: E402
from pgnumpy.testing.gradients import assert_gradient, with_params  # noqa: E402


def main(argv=None) -> None:
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
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        check = assert_gradient(f, net.params, grad())
        times.append(time.perf_counter() - t0)
    print(f"MLP {sizes}: {net.params.size} parameters, batch {args.batch}")
    print(f"directional ({check.evaluations} evaluations of f, backward included): median "
          f"{1e3 * float(np.median(times)):.1f} ms over {args.repeats} runs "
          f"(min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f}); "
          f"relative error {check.error:.1e}")
    if args.full:
        t0 = time.perf_counter()
        check = assert_gradient(f, net.params, grad(), mode="full")
        print(f"full ({check.evaluations} evaluations of f): {time.perf_counter() - t0:.2f} s; "
              f"relative error {check.error:.1e}")


if __name__ == "__main__":
    main()
