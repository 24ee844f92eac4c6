// SPDX-License-Identifier: MIT OR Apache-2.0
//! The quickstart's least-squares problem with MeZO S = 16, its 32 loss evaluations per step
//! split across MPI ranks by [`zograd::dist::Split`]: each rank evaluates its share, one
//! all-gather of the loss values per step gives every rank every value, and every rank applies
//! the same update, so the parameters stay bit-identical on every rank without ever sending
//! them.
//!
//! ```text
//! cargo build --release --features mpi --example distributed
//! mpirun -np 2 target/release/examples/distributed
//! ```
//! (as root in a container: `mpirun --allow-run-as-root --oversubscribe -np 2 …`)
//!
//! Each rank prints its evaluation count and the bytes it exchanged per step; the last line of
//! every rank is `rank R of P: parameters HEX`, HEX the FNV-1a 64-bit hash of the little-endian
//! bytes of all parameter buffers after the fixed number of steps: the same on every rank and
//! for every P, 1 included.

use zograd::approx::MeZo;
use zograd::dist::{self, mpi::traits::*, Split};
use zograd::optim::{Lr, Optimizer};
use zograd::{Binding, Gpu, Params, ShaderObjective};

const M: usize = 4096; // samples
const D: usize = 128; // features
const WG: u32 = 256;
const SAMPLES: u32 = 16;
const STEPS: u32 = 50;

/// The quickstart's loss shader: (1/m)·Σ_j (a_j·w + c − b_j)², one thread per sample, a
/// workgroup tree sum, then one workgroup adds the partial sums.
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

fn least_squares(gpu: &Gpu, a: &[f32], b: &[f32], x: &Params) -> zograd::Result<ShaderObjective> {
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
    let partial = ShaderObjective::loss_buffer(gpu, 1 + u64::from(groups));
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

fn main() -> zograd::Result<()> {
    let universe = dist::mpi::initialize().expect("MPI is initialised once");
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    // Adapter (local rank mod count) on a node with several, unless WGPU_ADAPTER_NAME is set.
    let gpu = dist::gpu_for_rank(&world)?;
    if rank == 0 {
        let info = gpu.adapter_info();
        println!(
            "{size} rank(s); rank 0 on {} ({:?})",
            info.name, info.backend
        );
    }

    // The quickstart's synthetic data, generated identically on every rank.
    let z =
        |seed, i| zograd::rng::perturbation(zograd::Distribution::Uniform, seed, 0, 0, i as u64);
    let a: Vec<f32> = (0..M * D).map(|i| z(1, i)).collect();
    let w_true: Vec<f32> = (0..D).map(|i| 0.5 * z(2, i)).collect();
    let b: Vec<f32> = (0..M)
        .map(|j| (0..D).map(|k| a[j * D + k] * w_true[k]).sum::<f32>() + 0.3 + 0.1 * z(3, j))
        .collect();

    let mut x = Params::from_slices(&gpu, &[&vec![0.0f32; D][..], &[0.0f32][..]])?;
    // Identical replicas from the start (here they are already: the copy costs 4·n bytes once).
    dist::broadcast(&world, &mut x, 0)?;
    let mut loss = Split::new(least_squares(&gpu, &a, &b, &x)?, &world);

    // The seed must be the same on every rank: it is what makes the directions agree.
    let mezo = MeZo::new().n_samples(SAMPLES).seed(42);
    let mut opt = Optimizer::new(&gpu, &x, mezo)?.then(Lr::new(0.01));
    let first = loss.inner_mut().evaluate()?;
    let mut evaluations = 0u64;
    for _ in 0..STEPS {
        evaluations += u64::from(opt.step(&mut x, &mut loss)?.evaluations);
    }
    // Every rank compares its replica with rank 0's (an error here names the ranks that differ).
    dist::check_replicas(&world, &x)?;
    let hash = dist::params_hash(&x)?;
    if rank == 0 {
        println!(
            "loss {first:.6} -> {:.6} after {STEPS} steps of MeZO S = {SAMPLES} ({evaluations} \
             evaluations in all)",
            loss.inner_mut().evaluate()?
        );
    }
    println!(
        "rank {rank}: {} loss evaluations ({} per step), {} bytes exchanged per step",
        loss.evaluations(),
        loss.evaluations() / u64::from(STEPS),
        loss.bytes_exchanged() / u64::from(STEPS)
    );
    println!("rank {rank} of {size}: parameters {hash:016x}");
    Ok(())
}
