// SPDX-License-Identifier: MIT OR Apache-2.0
//! Newton-CG without derivatives, on Rosenbrock's function: the chains of torchzero's examples,
//!
//! - `Fdm → NewtonCg(hvp = "forward") → Backtracking`, and
//! - `GaussianSmoothing → NewtonCg(npc_terminate = true) → Backtracking(adaptive = false)`,
//!
//! where Hessian-vector products are finite differences of the approximator's own gradient
//! estimates (same random directions within a step) and the loss is a WGSL shader. Both reach
//! Rosenbrock's minimum (1, 1) from (−1.2, 1): f < 1e-7 after 20 and after 40 steps on
//! lavapipe.
//!
//! The second chain leaves two of torchzero's defaults, because its gradient is a noisy
//! random estimate: CG stops at negative curvature (torchzero's `npc_terminate=True`) instead of
//! going on through it to a direction along which f may not decrease, and a failed line search
//! (a bad sample more than a too-long step) does not make the next one start from smaller steps.
//! Measured after 40 steps over seeds 0 … 9: with the defaults f ends between 1.5e-3 and 3.9
//! (torchzero's own chain in float32: 1.9e-4 … 4.6); with these two settings between 1.5e-7 and
//! 5.7e-3.
//!
//! `cargo run --release --example newton_cg`

use std::time::Instant;

use zograd::approx::{Fdm, GaussianSmoothing, GradApproximator};
use zograd::optim::{Backtracking, Hvp, NewtonCg, Optimizer};
use zograd::{Binding, Gpu, Params, ShaderObjective};

/// Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)² over the parameter buffer, by one thread (n is tiny).
const ROSENBROCK_WGSL: &str = "
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1)
fn main() {
    var f = 0.0;
    for (var i = 0u; i + 1u < arrayLength(&x); i = i + 1u) {
        let d = x[i + 1u] - x[i] * x[i];
        f = f + 100.0 * d * d + (1.0 - x[i]) * (1.0 - x[i]);
    }
    out[0] = f;
}";

fn run(
    gpu: &Gpu,
    name: &str,
    approximator: impl GradApproximator + Send + 'static,
    newton: NewtonCg,
    search: Backtracking,
    steps: u32,
) -> zograd::Result<()> {
    let mut x = Params::from_slices(gpu, &[&[-1.2f32, 1.0][..]])?;
    let out = ShaderObjective::loss_buffer(gpu, 1)?;
    let mut loss = ShaderObjective::new(
        gpu,
        ROSENBROCK_WGSL,
        &[Binding::Read(&x.buffers()[0]), Binding::ReadWrite(&out)],
        &[("main", [1, 1, 1])],
        (&out, 0),
    )?;
    let mut opt = Optimizer::new(gpu, &x, approximator)?
        .then(newton)
        .then(search);
    println!("\n{name}\n\n| step | x | f(x) | evaluations |\n|---|---|---|---|");
    let start = Instant::now();
    let mut evaluations = 0;
    for step in 1..=steps {
        let r = opt.step(&mut x, &mut loss)?;
        evaluations += r.evaluations;
        if step <= 3 || step % 5 == 0 {
            let v = x.to_vec()?;
            println!(
                "| {step} | ({:.5}, {:.5}) | {:.3e} | {evaluations} |",
                v[0],
                v[1],
                loss.evaluate()?
            );
        }
    }
    println!("{steps} steps in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    println!(
        "adapter: {} ({:?})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );
    let forward = NewtonCg::new().hvp("forward".parse::<Hvp>()?);
    run(
        &gpu,
        "Fdm → NewtonCg(forward) → Backtracking",
        Fdm::new(),
        forward,
        Backtracking::new(),
        20,
    )?;
    let forward = NewtonCg::new().hvp(Hvp::Forward).npc_terminate(true);
    run(
        &gpu,
        "GaussianSmoothing → NewtonCg(forward, npc_terminate) → Backtracking(adaptive = false)",
        GaussianSmoothing::new().seed(0),
        forward,
        Backtracking::new().adaptive(false),
        40,
    )?;
    Ok(())
}
