// SPDX-License-Identifier: MIT OR Apache-2.0
//! Measurements of [`zograd::dist::Split`] for BENCHMARKS.md: the latency of its collectives
//! per step, the bytes exchanged per step, and the throughput with a loss that costs wall time
//! but not CPU (a 20 ms wait, like a long simulation on its own device).
//!
//! ```text
//! cargo build --release --features mpi --example distributed_bench
//! mpirun -np 2 target/release/examples/distributed_bench [wait_ms] [steps]
//! ```
//!
//! Prints, on rank 0: the mean time of one `loss_batch` exchange of S = 16 central-difference
//! values (32 points) with an objective that costs nothing (so the time is the all-gather's
//! latency plus zograd's bookkeeping), of one single-evaluation broadcast, and the evaluations
//! per second of MeZO S = 16 with the waiting loss, and the step time of MeZO S = 16 on 2^20
//! parameters with a free loss (the perturbation passes), in place and with
//! `Split::exact_restore(true)`.

use std::time::{Duration, Instant};

use zograd::approx::MeZo;
use zograd::dist::{self, mpi::traits::*, Split};
use zograd::kernels::Direction;
use zograd::optim::{Lr, Optimizer};
use zograd::{Distribution, Objective, Params};

/// An objective whose batch costs nothing and leaves the parameters alone: what remains of a
/// `Split::loss_batch` is the exchange.
struct Free;

impl Objective for Free {
    fn loss(&mut self, _: &Params) -> zograd::Result<f32> {
        Ok(1.0)
    }

    fn has_batch(&self) -> bool {
        true
    }

    fn loss_batch(
        &mut self,
        _: &mut Params,
        points: &[(Direction, f32)],
    ) -> zograd::Result<Vec<f32>> {
        Ok(points.iter().map(|(_, s)| 1.0 + s).collect())
    }
}

fn main() -> zograd::Result<()> {
    let universe = dist::mpi::initialize().expect("MPI is initialised once");
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let args: Vec<String> = std::env::args().collect();
    let wait_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let steps: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let gpu = dist::gpu_for_rank(&world)?;

    // 1. Latency of the exchange of one step (S = 16, central differences: 32 values).
    let mut x = Params::from_slices(&gpu, &[&[0.5f32; 16][..]])?;
    let points: Vec<(Direction, f32)> = (0..16u32)
        .flat_map(|s| {
            let dir = Direction {
                distribution: Distribution::Rademacher,
                seed: 1,
                step: 1,
                sample: s,
            };
            [(dir, 1e-3), (dir, -1e-3)]
        })
        .collect();
    let mut free = Split::new(Free, &world);
    let reps = 2000u32;
    for _ in 0..100 {
        free.loss_batch(&mut x, &points)?;
    }
    world.barrier();
    let t = Instant::now();
    for _ in 0..reps {
        free.loss_batch(&mut x, &points)?;
    }
    let gather_us = t.elapsed().as_secs_f64() / f64::from(reps) * 1e6;
    let bytes_before = free.bytes_exchanged();
    free.loss_batch(&mut x, &points)?;
    let gather_bytes = free.bytes_exchanged() - bytes_before;
    world.barrier();
    let t = Instant::now();
    for _ in 0..reps {
        free.loss(&x)?;
    }
    let bcast_us = t.elapsed().as_secs_f64() / f64::from(reps) * 1e6;

    // 2. Throughput: MeZO S = 16 with a loss that waits `wait_ms` per evaluation.
    let mut y = Params::from_slices(&gpu, &[&[0.25f32; 1024][..]])?;
    let wait = Duration::from_millis(wait_ms);
    let slow = move |p: &Params| -> zograd::Result<f32> {
        std::thread::sleep(wait);
        Ok(p.to_vec()?.iter().map(|v| v * v).sum())
    };
    let mut loss = Split::new(slow, &world);
    let mut opt = Optimizer::new(&gpu, &y, MeZo::new().n_samples(16).seed(3))?.then(Lr::new(1e-3));
    opt.step(&mut y, &mut loss)?; // warm-up (pipelines)
    world.barrier();
    let t = Instant::now();
    let mut evaluations = 0u64;
    for _ in 0..steps {
        evaluations += u64::from(opt.step(&mut y, &mut loss)?.evaluations);
    }
    world.barrier();
    let wall = t.elapsed().as_secs_f64();
    let hash = dist::check_replicas(&world, &y)?;

    // 3. The moves: MeZO S = 16 on n = 2^20 with a loss that costs nothing, so the step time is
    // the perturbation passes (every rank visits every sample in place; with exact_restore only
    // its own, restoring by copy).
    let mut moves_ms = [0.0f64; 2];
    for (k, exact) in [false, true].into_iter().enumerate() {
        let mut z = Params::from_slices(&gpu, &[&vec![0.25f32; 1 << 20][..]])?;
        let mut free = Split::new(|_: &Params| 1.0f32, &world).exact_restore(exact);
        let mut opt =
            Optimizer::new(&gpu, &z, MeZo::new().n_samples(16).seed(5))?.then(Lr::new(1e-3));
        opt.step(&mut z, &mut free)?;
        gpu.wait()?;
        world.barrier();
        let t = Instant::now();
        for _ in 0..steps {
            opt.step(&mut z, &mut free)?;
        }
        gpu.wait()?;
        world.barrier();
        moves_ms[k] = t.elapsed().as_secs_f64() / f64::from(steps) * 1e3;
    }
    if rank == 0 {
        println!("ranks: {size}");
        println!(
            "exchange of one step (S = 16, 32 values): {gather_us:.1} µs, {gather_bytes} bytes \
             per rank"
        );
        println!("single evaluation broadcast: {bcast_us:.1} µs");
        println!(
            "MeZO S = 16, loss waiting {wait_ms} ms: {:.1} evaluations/s ({:.0} ms per step, \
             {steps} steps)",
            evaluations as f64 / wall,
            wall / f64::from(steps) * 1e3
        );
        println!(
            "MeZO S = 16, n = 2^20, free loss: {:.1} ms per step in place, {:.1} ms with \
             Split::exact_restore",
            moves_ms[0], moves_ms[1]
        );
        println!("parameters {hash:016x}");
    }
    Ok(())
}
