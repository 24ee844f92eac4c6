# SPDX-License-Identifier: MIT OR Apache-2.0
"""Writes tests/data/torchzero_optim.json: torchzero 0.4.4's optimiser modules (HeavyBall,
Backtracking, NewtonCG, WeightDecay) run step by step on small deterministic problems, for
tests/torchzero_optim.rs.

Run from the repository root with torchzero 0.4.4, torch and numpy installed:

    python tests/data/gen_torchzero_optim.py > tests/data/torchzero_optim.json

Every chain starts with torchzero's deterministic FDM (central differences), so randomness plays
no part. torchzero runs in float64: its numbers are the exact arithmetic of its rules, and the
Rust test compares zograd's float32 run with a tolerance for float32 rounding. The step sizes h
of FDM and of NewtonCG's Hessian-vector products are large (0.1 … 0.25): the rounding noise of a
finite difference of float32 losses is about 6e-8·|f|/h, so a large h keeps zograd's float32
estimate within ~1e-5 of the float64 one, while the truncation error (the same formula on both
sides) does not matter for the comparison.

The line search's decisions are discrete (a trial passes or fails), so a float32 run could take
another branch where a decision is close: the script records every trial of every search and
asserts that each comparison that decided a search holds with a relative margin of at least
1e-5, far above float32 rounding. It also asserts that the cases together exercise each of
torchzero's Backtracking rules (a success, a failure followed by the adaptive smaller start,
the return of an earlier decreasing step, a rejected non-descent direction) and NewtonCG's
negative-curvature fallback at the first CG iteration.
"""

import importlib.metadata
import json
import math
import sys

import torch
import torchzero as tz
from torchzero.modules.line_search import backtracking as bt

torch.set_default_dtype(torch.float64)

# ----------------------------------------------------------------------------------------------
# The test functions (tests/torchzero_optim.rs has the same ones in f32).


def quad(x):
    # Σ (2i + 1) x_i² + x_0 x_1: convex quadratic, Hessian diag(2, 6, 10, …) + 1 off-diagonal.
    s = sum((2 * i + 1) * x[i] * x[i] for i in range(len(x)))
    return s + x[0] * x[1]


def rosenbrock(x):
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


def saddle(x):
    # (x_0 − 3)² − 2 x_1²: indefinite Hessian diag(2, −4).
    return (x[0] - 3) ** 2 - 2 * x[1] ** 2


def shallow_saddle(x):
    # x_0² − 0.1 x_1²: positive curvature along the gradient at (1, 1), negative along x_1.
    return x[0] ** 2 - 0.1 * x[1] ** 2


def sphere(x):
    return sum(v * v for v in x)


FUNCTIONS = {
    "quad": quad,
    "rosenbrock": rosenbrock,
    "saddle": saddle,
    "shallow_saddle": shallow_saddle,
    "sphere": sphere,
}

# ----------------------------------------------------------------------------------------------
# Instrumentation of torchzero's backtracking (its code, unchanged, with every trial logged).

SEARCHES = []  # one entry per line search: init, slope, f0, trials, result
_original_search = bt.backtracking_line_search


def _logged_search(f, g_0, init=1.0, beta=0.5, c=1e-4, maxiter=10, condition="armijo"):
    trials = []

    def logged_f(a):
        v = f(a)
        if a != 0:
            trials.append((float(a), float(v)))
        return v

    result = _original_search(logged_f, g_0, init=init, beta=beta, c=c, maxiter=maxiter,
                              condition=condition)
    f0 = float(f(0))
    SEARCHES.append(dict(init=float(init), slope=float(g_0), f0=f0, c=float(c), trials=trials,
                         result=None if result is None else float(result)))
    return result


bt.backtracking_line_search = _logged_search


def check_margins(search):
    """Every comparison that decided the search holds with a relative margin ≥ 1e-5, far above
    float32 rounding of the losses (~1e-7) and of the iterates."""
    f0, d, c = search["f0"], search["slope"], search["c"]
    prev = None

    def clear(u, v):
        return abs(u - v) > 1e-5 * max(abs(u), abs(v), 1e-12)

    for a, fa in search["trials"]:
        if prev is not None:
            # "f_a > f_prev and f_prev < f_0": decided by the second comparison alone when
            # f_prev is clearly above f_0.
            assert clear(prev, f0), ("f_prev vs f_0", search)
            if prev < f0:
                assert clear(fa, prev), ("f_a vs f_prev", search)
        assert clear(fa, f0 + c * a * min(d, 0.0)), ("sufficient decrease", search)
        prev = fa


# NewtonCG's first CG iteration: record b·Ab / b·b to see the negative-curvature branch.
from torchzero.linalg import solve as _solve  # noqa: E402

CURVATURES = []
_original_cg_step = _solve.CG.step


def _logged_cg_step(self):
    if self.iter == 0:
        Ad = self.A_mv(self.d)
        CURVATURES.append(float(self.d.dot(Ad)))
    return _original_cg_step(self)


_solve.CG.step = _logged_cg_step

# ----------------------------------------------------------------------------------------------


def run(name, function, x0, modules, steps):
    f = FUNCTIONS[function]
    x = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = tz.Optimizer([x], *modules)

    def closure(backward=True):
        loss = f(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    searches_before = len(SEARCHES)
    curvatures_before = len(CURVATURES)
    xs = []
    for _ in range(steps):
        opt.step(closure)
        xs.append([float(v) for v in x.detach()])
    searches = SEARCHES[searches_before:]
    for s in searches:
        check_margins(s)
    return dict(
        name=name,
        function=function,
        x0=x0,
        x=xs,
        step_sizes=[s["result"] if s["result"] is not None else 0.0 for s in searches],
        searches=searches,
        first_curvature=CURVATURES[curvatures_before:],
    )


def fdm(h=0.25):
    return tz.m.FDM(h=h, formula="central")


def cases():
    out = []
    # HeavyBall: torchzero's default starts the velocity at the first update; ema_init="zeros"
    # is zograd's EmaInit::Zeros.
    out.append(run("heavy_ball", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.HeavyBall(0.9), tz.m.LR(0.02)], 6))
    out.append(run("heavy_ball_zeros", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.HeavyBall(0.9, ema_init="zeros"), tz.m.LR(0.02)], 6))
    # Backtracking with its defaults on Rosenbrock.
    out.append(run("backtracking_rosenbrock", "rosenbrock", [-1.2, 1.0],
                   [fdm(0.1), tz.m.Backtracking()], 8))
    # Too long a first step with two trials: failures, then the adaptive smaller start
    # (init·β^maxiter after each failure), then a success that resets it.
    out.append(run("backtracking_adaptive", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.Backtracking(init=40.0, maxiter=2)], 5))
    # The same without `adaptive`: every search starts from init again.
    out.append(run("backtracking_not_adaptive", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.Backtracking(init=40.0, maxiter=2, adaptive=False), tz.m.LR(1.0)],
                   3))
    # A trial worse than the earlier one, which decreased f without passing the test: the
    # earlier step is returned (f = Σx² from 1 along 2x: a* = 0.5, init 0.6, c = 0.5).
    out.append(run("backtracking_earlier_step", "sphere", [1.0],
                   [fdm(), tz.m.Backtracking(init=0.6, c=0.5)], 1))
    # A non-descent update (weight decay against the gradient on a saddle): zograd's old
    # test f ≤ f0 − c·t·(g·u) accepted an increase; torchzero's f < f0 + c·t·min(slope, 0) fails.
    out.append(run("backtracking_ascent", "saddle", [1.0, 1.0],
                   [fdm(), tz.m.WeightDecay(5.0), tz.m.Backtracking(init=6.0, c=0.5)], 2))
    # NewtonCG solves H d = (the current update): one step to a quadratic's minimum, with the
    # forward and the central Hessian-vector product.
    out.append(run("newton_cg_quad_forward", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.NewtonCG(hvp_method="fd_forward", h=0.1)], 1))
    out.append(run("newton_cg_quad_central", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.NewtonCG(hvp_method="fd_central", h=0.1)], 1))
    # HeavyBall before NewtonCG changes what CG solves for.
    out.append(run("heavy_ball_newton_cg", "quad", [1.0, 2.0, -0.5, 0.25],
                   [fdm(), tz.m.HeavyBall(0.5), tz.m.NewtonCG(hvp_method="fd_forward", h=0.1),
                    tz.m.LR(0.5)], 3))
    # Negative curvature at the first CG iteration: b·(bᵀb/|bᵀAb|).
    out.append(run("newton_cg_negative_curvature", "saddle", [2.0, 1.0],
                   [fdm(), tz.m.NewtonCG(hvp_method="fd_forward", h=0.1), tz.m.LR(0.1)], 1))
    # Negative curvature at the second CG iteration: torchzero continues CG.
    out.append(run("newton_cg_later_negative_curvature", "shallow_saddle", [1.0, 1.0],
                   [fdm(), tz.m.NewtonCG(hvp_method="fd_forward", h=0.1), tz.m.LR(0.1)], 1))
    # Newton-CG with the line search on Rosenbrock.
    out.append(run("newton_cg_backtracking_rosenbrock", "rosenbrock", [-1.2, 1.0],
                   [fdm(0.1), tz.m.NewtonCG(hvp_method="fd_forward", h=0.1), tz.m.Backtracking()],
                   6))
    # WeightDecay is update + wd·x wherever it stands: coupled L2 before Adam, decoupled after
    # it, and not scaled by the learning rate after LR.
    for name, mods in [
        ("weight_decay_coupled", [tz.m.WeightDecay(0.5), tz.m.Adam(), tz.m.LR(0.1)]),
        ("weight_decay_decoupled", [tz.m.Adam(), tz.m.WeightDecay(0.5), tz.m.LR(0.1)]),
        ("weight_decay_after_lr", [tz.m.Adam(), tz.m.LR(0.1), tz.m.WeightDecay(0.02)]),
    ]:
        out.append(run(name, "quad", [1.0, 2.0, -0.5, 0.25], [fdm(), *mods], 5))
    return out


def main():
    all_cases = cases()
    by_name = {c["name"]: c for c in all_cases}
    # Coverage of the rules the Rust test is about.
    s = by_name["backtracking_adaptive"]["searches"]
    assert s[0]["result"] is None and s[1]["init"] == s[0]["init"] * 0.5 ** 2, s[:2]
    assert any(x["result"] is not None for x in s), s
    e = by_name["backtracking_earlier_step"]["searches"][0]
    assert e["result"] == e["trials"][0][0] and len(e["trials"]) == 2, e
    a = by_name["backtracking_ascent"]["searches"][0]
    assert a["slope"] > 0 and a["result"] is None, a
    assert by_name["newton_cg_negative_curvature"]["first_curvature"][0] < 0
    assert by_name["backtracking_rosenbrock"]["step_sizes"][0] == 0.0
    assert by_name["newton_cg_later_negative_curvature"]["first_curvature"][0] > 0
    json.dump(
        dict(
            source=f"torchzero {importlib.metadata.version('torchzero')}, torch "
            f"{torch.__version__}, float64 CPU; tests/data/gen_torchzero_optim.py",
            cases=all_cases,
        ),
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
