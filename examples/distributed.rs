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

// The quickstart's problem (its data, loss shader and `ShaderObjective`), shared with it.
#[allow(dead_code)]
#[path = "quickstart.rs"]
mod quickstart;

use quickstart::{data, least_squares};
use zograd::approx::MeZo;
use zograd::dist::{self, mpi::traits::*, Split};
use zograd::optim::{Lr, Optimizer};
use zograd::Params;

const SAMPLES: u32 = 16;
const STEPS: u32 = 50;

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
    let (a, b) = data();

    let mut x = Params::from_slices(&gpu, &[&vec![0.0f32; quickstart::D][..], &[0.0f32][..]])?;
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
