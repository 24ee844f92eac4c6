# SPDX-License-Identifier: MIT OR Apache-2.0
"""Times torchzero MeZO and SPSA steps on f(x) = sum(x**2), the quadratic zograd's
bench_report uses, on PyTorch's CPU backend. Run by benches/compare_torchzero.sh; prints CSV
lines `n,method,seconds_per_step,evaluations_per_step` (methods: mezo, spsa1, spsa16, matching
bench_report's).

Each step is `opt.step(closure)` of `tz.Optimizer([x], <approximator>, tz.m.LR(1e-3))`, the
same chain as zograd's `Optimizer::new(.., MeZo/Spsa)?.then(Lr::new(1e-3))`. The loss is
`torch.dot(x, x)`: like zograd's `kernels::dot(x, x)` it reads x once and writes no n-sized
temporary (`(x * x).sum()` would write one). The closure counts its calls: torchzero's default
closure target evaluates f(x) once more after every central-difference estimate, so a MeZO or
SPSA step costs 3 evaluations there (2 in zograd) and an S = 16 SPSA step 33 (32 in zograd);
that extra evaluation is torchzero's real cost, and the count is reported so the comparison can
also be made per evaluation. Times are the best of up to three rounds of repeated steps, each
round at least `budget` seconds, after one warm-up step (the same rule as bench_report).
"""

import argparse
import importlib.metadata
import sys
import time

import torch
import torchzero as tz


def seconds_per_step(opt, closure, budget):
    start = time.perf_counter()
    opt.step(closure)  # warm-up
    rounds = 1 if time.perf_counter() - start > 1.0 else 3
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        calls = 0
        while calls == 0 or time.perf_counter() - start < budget:
            opt.step(closure)
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="+", type=int)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, torchzero {importlib.metadata.version('torchzero')}, "
        f"{torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    print("n,method,seconds_per_step,evaluations_per_step")
    for n in args.sizes:
        budget = 0.3 if n <= 100_000 else 0.1
        gen = torch.Generator().manual_seed(3)
        x0 = torch.rand(n, generator=gen) * 2 * 3**0.5 - 3**0.5
        for method, make in [
            ("mezo", lambda: tz.m.MeZO()),
            ("spsa1", lambda: tz.m.SPSA()),
            ("spsa16", lambda: tz.m.SPSA(n_samples=16)),
        ]:
            x = torch.nn.Parameter(x0.clone())
            opt = tz.Optimizer([x], make(), tz.m.LR(1e-3))

            calls = [0]

            def closure(backward=True):
                calls[0] += 1
                return torch.dot(x, x)

            with torch.no_grad():
                opt.step(closure)
                calls[0] = 0
                opt.step(closure)
                evaluations = calls[0]
                t = seconds_per_step(opt, closure, budget)
            print(f"{n},{method},{t:.9f},{evaluations}", flush=True)
            print(
                f"# n = {n}: torchzero {method} {t * 1e3:.3f} ms per step, {evaluations} evaluations",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
