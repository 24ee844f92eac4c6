// SPDX-License-Identifier: MIT OR Apache-2.0
//! Newton-CG without derivatives, on Rosenbrock's function: the chains of torchzero's examples,
//!
//! - `Fdm → NewtonCg(hvp = "forward") → Backtracking`, and
//! - `GaussianSmoothing → NewtonCg → Backtracking`,
//!
//! where Hessian-vector products are finite differences of the approximator's own gradient
//! estimates (same random directions within a step) and the loss is a WGSL shader.
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
        .then(NewtonCg::new().hvp("forward".parse::<Hvp>()?))
        .then(Backtracking::new());
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
    run(
        &gpu,
        "Fdm → NewtonCg(forward) → Backtracking",
        Fdm::new(),
        20,
    )?;
    run(
        &gpu,
        "GaussianSmoothing → NewtonCg(forward) → Backtracking",
        GaussianSmoothing::new().seed(0),
        40,
    )?;
    Ok(())
}
