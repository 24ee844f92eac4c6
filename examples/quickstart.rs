// SPDX-License-Identifier: MIT OR Apache-2.0
//! zograd's quickstart: fit a least-squares model whose loss is a WGSL shader, with MeZO and a
//! learning rate, without the parameters ever leaving the GPU.
//!
//! `cargo run --release --example quickstart` (pick the backend with `WGPU_BACKEND=vulkan|gl|…`)
//!
//! The model is `y = A·w + c` with 4096 samples of 128 features, the data A, b live in GPU
//! buffers, the parameters are two buffers (w and c), and the loss
//! `(1/m)·Σ_j (a_j·w + c − b_j)²` is computed by the user's own compute shader, one f32 read
//! back per evaluation. MeZO estimates the gradient from two loss values per step; the fused
//! step restores and updates the parameters in one kernel, with no gradient buffer.

use std::time::Instant;

use zograd::approx::MeZo;
use zograd::optim::{Lr, Optimizer};
use zograd::{Binding, Gpu, Params, ShaderObjective};

pub const M: usize = 4096; // samples
pub const D: usize = 128; // features
const WG: u32 = 256;

/// The user's loss shader: one thread per sample, a workgroup tree sum, then one workgroup adds
/// the partial sums.
const LOSS_WGSL: &str = r#"
struct Dims { m: u32, d: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;      // m × d, row-major
@group(0) @binding(2) var<storage, read> b: array<f32>;      // m
@group(0) @binding(3) var<storage, read> w: array<f32>;      // d   (parameters, buffer 0)
@group(0) @binding(4) var<storage, read> c: array<f32>;      // 1   (parameters, buffer 1)
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn residuals(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
             @builtin(workgroup_id) wid: vec3<u32>) {
    var r2 = 0.0;
    let j = gid.x;
    if (j < dims.m) {
        var r = c[0] - b[j];
        for (var k = 0u; k < dims.d; k = k + 1u) {
            r = r + a[j * dims.d + k] * w[k];
        }
        r2 = r * r;
    }
    sums[lid] = r2;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { sums[lid] = sums[lid] + sums[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { partial[1u + wid.x] = sums[0]; }
}

@compute @workgroup_size(1)
fn total() {
    var t = 0.0;
    for (var g = 0u; g < (dims.m + 255u) / 256u; g = g + 1u) {
        t = t + partial[1u + g];
    }
    partial[0] = t / f32(dims.m);
}
"#;

/// The loss as a [`ShaderObjective`]: the data and the parameter buffers bound once, two passes,
/// the loss read from `partial[0]`.
pub fn least_squares(
    gpu: &Gpu,
    a: &[f32],
    b: &[f32],
    x: &Params,
) -> zograd::Result<ShaderObjective> {
    use wgpu::util::DeviceExt;
    let d = gpu.device();
    let init = |label, contents: &[u8], usage| {
        d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
    };
    let dims = init(
        "dims",
        bytemuck::cast_slice(&[M as u32, D as u32]),
        wgpu::BufferUsages::UNIFORM,
    );
    let a = init("A", bytemuck::cast_slice(a), wgpu::BufferUsages::STORAGE);
    let b = init("b", bytemuck::cast_slice(b), wgpu::BufferUsages::STORAGE);
    let groups = M.div_ceil(WG as usize) as u32;
    let partial = ShaderObjective::loss_buffer(gpu, 1 + u64::from(groups))?;
    ShaderObjective::new(
        gpu,
        LOSS_WGSL,
        &[
            Binding::Uniform(&dims),
            Binding::Read(&a),
            Binding::Read(&b),
            Binding::Read(&x.buffers()[0]),
            Binding::Read(&x.buffers()[1]),
            Binding::ReadWrite(&partial),
        ],
        &[("residuals", [groups, 1, 1]), ("total", [1, 1, 1])],
        (&partial, 0),
    )
}

/// Synthetic data from zograd's own generator: unit-variance features A (m × d, row-major), a
/// hidden model and noise, b = A·w + 0.3 + noise.
pub fn data() -> (Vec<f32>, Vec<f32>) {
    let z =
        |seed, i| zograd::rng::perturbation(zograd::Distribution::Uniform, seed, 0, 0, i as u64);
    let a: Vec<f32> = (0..M * D).map(|i| z(1, i)).collect();
    let w_true: Vec<f32> = (0..D).map(|i| 0.5 * z(2, i)).collect();
    let b: Vec<f32> = (0..M)
        .map(|j| (0..D).map(|k| a[j * D + k] * w_true[k]).sum::<f32>() + 0.3 + 0.1 * z(3, j))
        .collect();
    (a, b)
}

/// The exact least-squares optimum's loss, from the normal equations in f64 (Cholesky).
fn optimum_loss(a: &[f32], b: &[f32]) -> f64 {
    let n = D + 1; // w and c
    let row = |j: usize| (0..n).map(move |k| if k < D { f64::from(a[j * D + k]) } else { 1.0 });
    let mut ata = vec![0.0f64; n * n];
    let mut atb = vec![0.0f64; n];
    for (j, bj) in b.iter().enumerate() {
        let r: Vec<f64> = row(j).collect();
        for p in 0..n {
            atb[p] += r[p] * f64::from(*bj);
            for q in 0..n {
                ata[p * n + q] += r[p] * r[q];
            }
        }
    }
    // Cholesky: ata = L Lᵀ, then two triangular solves.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j {
                (ata[i * n + i] - s).sqrt()
            } else {
                (ata[i * n + j] - s) / l[j * n + j]
            };
        }
    }
    let mut y = vec![0.0f64; n];
    for i in 0..n {
        y[i] = (atb[i] - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut z = vec![0.0f64; n];
    for i in (0..n).rev() {
        z[i] = (y[i] - (i + 1..n).map(|k| l[k * n + i] * z[k]).sum::<f64>()) / l[i * n + i];
    }
    (0..M)
        .map(|j| {
            let p: f64 = row(j).zip(&z).map(|(a, w)| a * w).sum();
            (p - f64::from(b[j])).powi(2)
        })
        .sum::<f64>()
        / M as f64
}

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info();
    println!("adapter: {} ({:?})", info.name, info.backend);

    let (a, b) = data();

    // The parameters: weights and bias, two GPU buffers, starting at zero.
    let mut x = Params::from_slices(&gpu, &[&vec![0.0f32; D][..], &[0.0f32][..]])?;
    let mut loss = least_squares(&gpu, &a, &b, &x)?;

    // MeZO with 4 samples per step, then a learning rate: the fused step.
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().n_samples(4).seed(42))?.then(Lr::new(0.01));
    let steps = 1000;
    println!("\n| step | loss |\n|---|---|");
    println!("| 0 | {:.6} |", loss.evaluate()?);
    let start = Instant::now();
    let mut evaluations = 0u64;
    for step in 1..=steps {
        let report = opt.step(&mut x, &mut loss)?; // two loss evaluations per sample
        evaluations += u64::from(report.evaluations);
        if step % 100 == 0 {
            println!("| {step} | {:.6} |", loss.evaluate()?);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let final_loss = loss.evaluate()?;
    let best = optimum_loss(&a, &b);
    println!(
        "\nfinal loss {final_loss:.6} vs the exact least-squares optimum {best:.6} (ratio {:.3})",
        f64::from(final_loss) / best
    );
    println!(
        "{steps} steps, {evaluations} loss evaluations in {elapsed:.2} s: {:.0} steps/s, {:.0} µs per evaluation",
        f64::from(steps) / elapsed,
        elapsed / evaluations as f64 * 1e6
    );
    println!(
        "GPU memory the optimiser owns: {} bytes (fused MeZO: no gradient buffer)",
        opt.state_bytes()
    );
    Ok(())
}
