// SPDX-License-Identifier: MIT OR Apache-2.0
//! `zograd::dist` on 1, 2 and 3 MPI ranks (feature `mpi`; needs `mpirun` from Open MPI).
//!
//! The MPI program is this test binary itself: each test launches
//! `mpirun -np P <this binary> --exact mpi_child` with `ZOGRAD_MPI_CHILD=1`, every rank runs
//! [`mpi_child`] (every scenario below) and prints `ZG <rank> <key> <value>` lines, and the
//! tests compare those lines across ranks, across P and with the single-process runs. One
//! launch per P, shared by the tests. Run alone (without the variable) `mpi_child` does nothing.
#![cfg(feature = "mpi")]

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use zograd::approx::{Fdm, Formula, MeZo, RandomizedFdm, Spsa};
use zograd::dist::mpi::traits::*;
use zograd::dist::{self, RankError, Shard, Split};
use zograd::optim::{Adam, Backtracking, Lr, NewtonCg, Optimizer};
use zograd::{Distribution, Error, Gpu, Objective, Params};

const CHILD: &str = "ZOGRAD_MPI_CHILD";
const STEPS: u32 = 20;

// ---------------------------------------------------------------------------------------------
// The MPI program.

/// Deterministic data in [-1, 1) from Philox.
fn data(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| zograd::rng::perturbation(Distribution::Uniform, seed, 5, 3, i) / 1.732_050_8)
        .collect()
}

/// f(x) = Σ w_i (x_i − c_i)² + 0.1·Σ x_i⁴/n, in f64 on the host (one download per evaluation).
fn host_loss(n: usize) -> impl FnMut(&Params) -> zograd::Result<f32> {
    let c = data(1, n);
    let w: Vec<f64> = data(2, n).iter().map(|v| 1.5 + f64::from(*v)).collect();
    move |p: &Params| {
        let x = p.to_vec()?;
        let mut s = 0.0f64;
        for i in 0..n {
            let xi = f64::from(x[i]);
            s += w[i] * (xi - f64::from(c[i])).powi(2) + 0.1 * xi.powi(4) / n as f64;
        }
        Ok(s as f32)
    }
}

type MakeOptimizer = fn(&Gpu, &Params) -> Optimizer;

/// The chains checked for bit-identity: (name, n, optimiser); names ending in `_exact` wrap the
/// loss in `Split::exact_restore(true)`.
fn configs() -> Vec<(&'static str, usize, MakeOptimizer)> {
    vec![
        ("mezo4_fused", 1024, |g, x| {
            Optimizer::new(g, x, MeZo::new().n_samples(4).seed(11))
                .unwrap()
                .then(Lr::new(0.01))
        }),
        ("mezo5", 1024, |g, x| {
            Optimizer::new(g, x, MeZo::new().n_samples(5).seed(12))
                .unwrap()
                .then(Lr::new(0.01))
                .fuse(false)
        }),
        ("spsa_adam", 512, |g, x| {
            Optimizer::new(g, x, Spsa::new().n_samples(3).seed(13))
                .unwrap()
                .then(Adam::new())
                .then(Lr::new(0.01))
        }),
        ("rfdm_backtracking", 256, |g, x| {
            let est = RandomizedFdm::new()
                .n_samples(3)
                .formula(Formula::Forward)
                .distribution(Distribution::Gaussian)
                .seed(14);
            Optimizer::new(g, x, est).unwrap().then(Backtracking::new())
        }),
        ("mezo4_fused_exact", 1024, |g, x| {
            Optimizer::new(g, x, MeZo::new().n_samples(4).seed(15).exact_restore(true))
                .unwrap()
                .then(Lr::new(0.01))
        }),
        ("mezo5_inplace_split_exact", 1024, |g, x| {
            Optimizer::new(g, x, MeZo::new().n_samples(5).seed(16))
                .unwrap()
                .then(Lr::new(0.01))
                .fuse(false)
        }),
        ("fdm_newton", 12, |g, x| {
            Optimizer::new(g, x, Fdm::new())
                .unwrap()
                .then(NewtonCg::new().max_iter(3))
                .then(Backtracking::new())
        }),
    ]
}

/// One data-parallel sample set: 48 rows of 8 features, shard r = rows `share(48, P, r)`.
const ROWS: usize = 48;
const FEATURES: usize = 8;

/// The mean squared residual over `rows` (f64 on the host, rounded once to f32).
fn shard_loss(rows: std::ops::Range<usize>) -> impl FnMut(&Params) -> zograd::Result<f32> {
    let a = data(21, ROWS * FEATURES);
    let b = data(22, ROWS);
    move |p: &Params| {
        let x = p.to_vec()?;
        Ok(residual_mean(&a, &b, &x, rows.clone()) as f32)
    }
}

fn residual_mean(a: &[f32], b: &[f32], x: &[f32], rows: std::ops::Range<usize>) -> f64 {
    let count = rows.len() as f64;
    rows.map(|j| {
        let r: f64 = (0..FEATURES)
            .map(|k| f64::from(a[j * FEATURES + k]) * f64::from(x[k]))
            .sum::<f64>()
            - f64::from(b[j]);
        r * r
    })
    .sum::<f64>()
        / count
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Error,
    Panic,
    NaN,
}

/// Every scenario, on this rank; prints `ZG <rank> <key> <value>` lines.
fn run_child() {
    let universe = dist::mpi::initialize().expect("MPI initialised once");
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let say = |key: &str, value: String| println!("ZG {rank} {key} {value}");
    say("size", size.to_string());
    let gpu = dist::gpu_for_rank(&world).unwrap();

    // Bit-identity of five chains, evaluation counts and bytes.
    for (name, n, make) in configs() {
        let start = data(3, n);
        let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
        let mut opt = make(&gpu, &x);
        let mut loss = Split::new(host_loss(n), &world).exact_restore(name.ends_with("_exact"));
        let mut total = 0u64;
        for _ in 0..STEPS {
            total += u64::from(opt.step(&mut x, &mut loss).unwrap().evaluations);
        }
        say(&format!("hash.{name}"), hex(&x));
        say(&format!("evals.{name}"), loss.evaluations().to_string());
        say(&format!("total.{name}"), total.to_string());
        say(&format!("bytes.{name}"), loss.bytes_exchanged().to_string());
        if size == 1 {
            // The same chain without the adapter.
            let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
            let mut opt = make(&gpu, &x);
            let mut plain = host_loss(n);
            for _ in 0..STEPS {
                opt.step(&mut x, &mut plain).unwrap();
            }
            say(&format!("plain.{name}"), hex(&x));
        }
    }

    // Common random numbers through Split and Shard: a noisy loss whose noise follows the
    // evaluations' identities (Noisy's CRN mode) gives the single process's parameters whatever
    // the world size and whichever rank evaluates a point — only if the adapters forward
    // `loss_at` / `loss_batch_at` / `loss_batch_coords_at` (the noise counter differs per rank).
    for name in ["spsa", "fdm"] {
        let n = 48;
        let start = data(3, n);
        let make = |g: &Gpu, x: &Params| match name {
            "spsa" => Optimizer::new(g, x, Spsa::new().n_samples(3).seed(41))
                .unwrap()
                .then(Lr::new(0.01)),
            _ => Optimizer::new(g, x, Fdm::new().seed(42).batch_size(7))
                .unwrap()
                .then(Lr::new(0.01)),
        };
        let noisy = || {
            zograd::testfns::Noisy::new(host_loss(n), 0.01, 0.01, 5)
                .unwrap()
                .common_random_numbers(true)
        };
        for (adapter, split) in [("split", true), ("shard", false)] {
            let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
            let mut opt = make(&gpu, &x);
            let mut loss: Box<dyn Objective> = if split {
                Box::new(Split::new(noisy(), &world))
            } else {
                Box::new(Shard::new(noisy(), &world))
            };
            for _ in 0..5 {
                opt.step(&mut x, loss.as_mut()).unwrap();
            }
            say(&format!("crn.{adapter}.{name}"), hex(&x));
        }
        if size == 1 {
            let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
            let mut opt = make(&gpu, &x);
            let mut plain = noisy();
            for _ in 0..5 {
                opt.step(&mut x, &mut plain).unwrap();
            }
            say(&format!("crn.plain.{name}"), hex(&x));
        }
    }

    // Shard: every rank its rows; against one process holding all of them.
    {
        let p = size as usize;
        let start = data(4, FEATURES);
        let make = |g: &Gpu, x: &Params| {
            // Unfused: the fused step alone folds its last restore into the update (see
            // `a_world_of_one_gives_what_the_objective_alone_gives`).
            Optimizer::new(g, x, MeZo::new().n_samples(4).seed(31))
                .unwrap()
                .then(Lr::new(0.05))
                .fuse(false)
        };
        let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
        let mut opt = make(&gpu, &x);
        let mut loss = Shard::new(shard_loss(dist::share(ROWS, p, rank as usize)), &world);
        for _ in 0..10 {
            opt.step(&mut x, &mut loss).unwrap();
        }
        say("shard.hash", hex(&x));
        // f32 rounding of the mean: the adapter's value against the f64 mean over all rows.
        let (a, b) = (data(21, ROWS * FEATURES), data(22, ROWS));
        let full = residual_mean(&a, &b, &x.to_vec().unwrap(), 0..ROWS);
        let got = f64::from(loss.loss(&x).unwrap());
        say("shard.reldiff", format!("{:e}", (got - full).abs() / full));
        // One process, all rows, the shard losses summed in the same (rank) order.
        let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
        let mut opt = make(&gpu, &x);
        let mut shards: Vec<_> = (0..p)
            .map(|q| shard_loss(dist::share(ROWS, p, q)))
            .collect();
        let mut concatenated = |x: &Params| -> zograd::Result<f32> {
            let mut s = 0.0f64;
            for f in &mut shards {
                s += f64::from(f(x)?);
            }
            Ok((s / p as f64) as f32)
        };
        for _ in 0..10 {
            opt.step(&mut x, &mut concatenated).unwrap();
        }
        say("shard.reference", hex(&x));
    }

    // Faults on rank 1 (rank 0 in a world of one) at its first evaluation of step 2.
    let failing = 1.min(size - 1);
    // (tag, fault, the estimator's exact_restore, the Split's exact_restore)
    for (tag, fault, exact, split_exact) in [
        ("error", Fault::Error, false, false),
        ("panic", Fault::Panic, false, false),
        ("nan", Fault::NaN, false, false),
        ("error_exact", Fault::Error, true, false),
        ("error_split_exact", Fault::Error, false, true),
        ("panic_split_exact", Fault::Panic, false, true),
    ] {
        let n = 256;
        let start = data(5, n);
        let mut x = Params::from_slices(&gpu, &[&start[..]]).unwrap();
        let est = MeZo::new().n_samples(4).seed(41).exact_restore(exact);
        let mut opt = Optimizer::new(&gpu, &x, est).unwrap().then(Lr::new(0.01));
        let mut inner = host_loss(n);
        let mut count = 0u32;
        // Step 1 makes share(8, P, failing) evaluations on the failing rank: fail at the next.
        let k = dist::share(8, size as usize, failing as usize).len() as u32 + 1;
        let faulty = move |p: &Params| -> zograd::Result<f32> {
            count += 1;
            if rank == failing && count == k {
                match fault {
                    Fault::Error => {
                        return Err(Error::Unsupported(format!("injected at evaluation {k}")))
                    }
                    Fault::Panic => panic!("injected panic at evaluation {k}"),
                    Fault::NaN => return Ok(f32::NAN),
                }
            }
            inner(p)
        };
        let mut loss = Split::new(faulty, &world).exact_restore(split_exact);
        opt.step(&mut x, &mut loss).unwrap();
        let before = x.to_vec().unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| opt.step(&mut x, &mut loss)));
        let text = match outcome {
            Ok(Ok(_)) => "succeeded".to_string(),
            Ok(Err(e)) => {
                let who = match &e {
                    Error::Objective(src) => src
                        .downcast_ref::<RankError>()
                        .map_or("?".to_string(), |r| r.rank.to_string()),
                    _ => "-".to_string(),
                };
                format!("error(rank {who}) {e}")
            }
            Err(_) => "panicked".to_string(),
        };
        say(&format!("fault.{tag}.outcome"), text.replace('\n', " "));
        // Restored: bit-exactly with exact_restore, else to the in-place drift (a few ulp).
        let after = x.to_vec().unwrap();
        let drift = before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        say(&format!("fault.{tag}.drift"), format!("{drift:e}"));
        say(&format!("fault.{tag}.failed_hash"), hex(&x));
        let next = opt.step(&mut x, &mut loss).is_ok();
        say(&format!("fault.{tag}.next"), next.to_string());
        say(&format!("fault.{tag}.hash"), hex(&x));
    }

    // Replicas: different on every rank, then broadcast from the last rank.
    {
        let root = size - 1;
        let mut x = Params::from_slices(&gpu, &[&data(100 + rank as u64, 300)[..]]).unwrap();
        let before = match dist::check_replicas(&world, &x) {
            Ok(h) => format!("same {h:016x}"),
            Err(e) => format!("differ {e}"),
        };
        say("replicas.before", before);
        dist::broadcast(&world, &mut x, root).unwrap();
        let after = dist::check_replicas(&world, &x).unwrap();
        say("replicas.after", format!("{after:016x}"));
        let root_bytes: Vec<u8> = data(100 + root as u64, 300)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        say(
            "replicas.root",
            format!("{:016x}", dist::fnv1a64(&root_bytes)),
        );
        let bad = dist::broadcast(&world, &mut x, size).unwrap_err();
        say("replicas.bad_root", bad.to_string());
    }
    say("done", "true".into());
}

fn hex(x: &Params) -> String {
    format!("{:016x}", dist::params_hash(x).unwrap())
}

/// The MPI program: does nothing unless launched by [`launch`].
#[test]
fn mpi_child() {
    if std::env::var_os(CHILD).is_some() {
        run_child();
    }
}

// ---------------------------------------------------------------------------------------------
// The launcher and the checks.

/// The `ZG` lines of one launch on `np` ranks: key → value per rank.
struct Run {
    np: usize,
    values: Vec<HashMap<String, String>>,
}

impl Run {
    fn get(&self, rank: usize, key: &str) -> &str {
        self.values[rank]
            .get(key)
            .unwrap_or_else(|| panic!("rank {rank} of {} printed no {key}", self.np))
    }

    /// The value of `key`, asserted equal on every rank.
    fn same(&self, key: &str) -> &str {
        let v = self.get(0, key);
        for r in 1..self.np {
            assert_eq!(
                self.get(r, key),
                v,
                "{key} on rank {r} vs rank 0, np = {}",
                self.np
            );
        }
        v
    }
}

fn launch(np: usize) -> Arc<Run> {
    type Cell = Arc<OnceLock<Arc<Run>>>;
    static RUNS: OnceLock<Mutex<HashMap<usize, Cell>>> = OnceLock::new();
    let cell = {
        let mut map = RUNS.get_or_init(Default::default).lock().unwrap();
        Arc::clone(map.entry(np).or_default())
    };
    Arc::clone(cell.get_or_init(|| Arc::new(run_mpi(np))))
}

fn run_mpi(np: usize) -> Run {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("timeout")
        .arg("300")
        .arg("mpirun")
        .args(["-np", &np.to_string(), "--oversubscribe"])
        .arg(&exe)
        .args(["--exact", "mpi_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (Open MPI) must be installed: apt-get install openmpi-bin libopenmpi-dev");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mpirun -np {np} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("ZG 0 done true"),
        "mpirun -np {np}: rank 0 did not finish:\n{stdout}\n{stderr}"
    );
    let mut values = vec![HashMap::new(); np];
    for line in stdout.lines() {
        // libtest prints "test mpi_child ... " before the first line on the same line.
        let Some(at) = line.find("ZG ") else {
            continue;
        };
        let mut parts = line[at..].splitn(4, ' ');
        if parts.next() != Some("ZG") {
            continue;
        }
        let (Some(r), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        values[r.parse::<usize>().unwrap()].insert(k.to_string(), v.to_string());
    }
    let run = Run { np, values };
    for r in 0..np {
        assert_eq!(run.get(r, "size"), np.to_string());
        assert_eq!(
            run.get(r, "done"),
            "true",
            "rank {r} did not finish:\n{stderr}"
        );
    }
    run
}

const NAMES: [&str; 7] = [
    "mezo4_fused",
    "mezo5",
    "spsa_adam",
    "rfdm_backtracking",
    "mezo4_fused_exact",
    "mezo5_inplace_split_exact",
    "fdm_newton",
];

#[test]
fn parameters_are_bit_identical_on_every_rank_and_for_every_world_size() {
    let one = launch(1);
    for np in [2, 3] {
        let run = launch(np);
        for name in NAMES {
            let key = format!("hash.{name}");
            assert_eq!(run.same(&key), one.same(&key), "{name}: {np} ranks vs 1");
        }
    }
}

#[test]
fn a_world_of_one_gives_what_the_objective_alone_gives() {
    let one = launch(1);
    // Every chain but the fused MeZO step with in-place restoration, whose batched path
    // restores before the update where the objective alone folds the restore into it (see the
    // module documentation), and the in-place estimator through an exact-restoring Split.
    for name in [
        "mezo5",
        "spsa_adam",
        "rfdm_backtracking",
        "mezo4_fused_exact",
        "fdm_newton",
    ] {
        assert_eq!(
            one.same(&format!("hash.{name}")),
            one.same(&format!("plain.{name}")),
            "{name}"
        );
    }
}

#[test]
fn common_random_numbers_pass_through_split_and_shard() {
    let one = launch(1);
    for np in [1, 2, 3] {
        let run = launch(np);
        for name in ["spsa", "fdm"] {
            for adapter in ["split", "shard"] {
                assert_eq!(
                    run.same(&format!("crn.{adapter}.{name}")),
                    one.same(&format!("crn.plain.{name}")),
                    "{adapter} {name} on {np} ranks vs the objective alone"
                );
            }
        }
    }
}

#[test]
fn every_rank_evaluates_its_share() {
    for np in [1, 2, 3] {
        let run = launch(np);
        // Points per step: MeZO 2·4 and 2·5, SPSA 2·3 (central differences, no f(x)).
        for (name, points) in [
            ("mezo4_fused", 8),
            ("mezo5", 10),
            ("spsa_adam", 6),
            ("mezo4_fused_exact", 8),
            ("mezo5_inplace_split_exact", 10),
        ] {
            for r in 0..np {
                let expected = STEPS as usize * dist::share(points, np, r).len();
                assert_eq!(
                    run.get(r, &format!("evals.{name}")),
                    expected.to_string(),
                    "{name}, rank {r} of {np}"
                );
            }
            let total = run.same(&format!("total.{name}"));
            assert_eq!(total, (STEPS as usize * points).to_string(), "{name}");
        }
        // With f(x) and line-search trials (rank 0) the ranks' evaluations add up to the
        // estimators' count.
        for name in ["rfdm_backtracking", "fdm_newton"] {
            let total: u64 = run.same(&format!("total.{name}")).parse().unwrap();
            let sum: u64 = (0..np)
                .map(|r| run.get(r, &format!("evals.{name}")).parse::<u64>().unwrap())
                .sum();
            assert_eq!(sum, total, "{name} on {np} ranks");
        }
    }
}

#[test]
fn bytes_per_step_are_a_few_scalars() {
    for np in [2, 3] {
        let run = launch(np);
        // MeZO S = 4: one all-gather of 8 values and one status word per rank per step.
        let bytes: u64 = run.same("bytes.mezo4_fused").parse().unwrap();
        assert_eq!(bytes, u64::from(STEPS) * 4 * (8 + np as u64), "{np} ranks");
        assert!(bytes / u64::from(STEPS) <= 8 * 4 + 64);
    }
}

#[test]
fn shard_equals_one_process_with_the_concatenated_data() {
    for np in [1, 2, 3] {
        let run = launch(np);
        assert_eq!(
            run.same("shard.hash"),
            run.same("shard.reference"),
            "{np} ranks"
        );
        let rel: f64 = run.same("shard.reldiff").parse().unwrap();
        // The shard means are rounded to f32 once each, their mean once more.
        assert!(rel <= 2.5e-7, "{np} ranks: {rel:e}");
    }
}

#[test]
fn a_failure_on_rank_1_reaches_every_rank_and_the_next_step_succeeds() {
    for np in [2, 3] {
        let run = launch(np);
        let error = run.same("fault.error.outcome");
        assert!(
            error.starts_with("error(rank 1)") && error.contains("injected at evaluation"),
            "{np} ranks: {error}"
        );
        // The panicking rank re-raises its panic; the others return the error.
        assert_eq!(run.get(1, "fault.panic.outcome"), "panicked");
        for r in (0..np).filter(|r| *r != 1) {
            let text = run.get(r, "fault.panic.outcome");
            assert!(
                text.starts_with("error(rank 1)") && text.contains("rank 1 panicked: injected"),
                "rank {r} of {np}: {text}"
            );
        }
        // A NaN is a value: every rank's estimator reports the same non-finite loss.
        let nan = run.same("fault.nan.outcome");
        assert!(
            nan.starts_with("error(rank -)") && nan.contains("non-finite loss NaN"),
            "{nan}"
        );
        assert!(run
            .same("fault.error_exact.outcome")
            .starts_with("error(rank 1)"));
        for tag in [
            "error",
            "panic",
            "nan",
            "error_exact",
            "error_split_exact",
            "panic_split_exact",
        ] {
            // Restored: in place, to a few ulp of |x| < 2 (2.4e-7 each); by copy, exactly (the
            // Split's copy also on the rank that panicked).
            let drift: f32 = run.same(&format!("fault.{tag}.drift")).parse().unwrap();
            let bound = if tag.ends_with("exact") { 0.0 } else { 2e-6 };
            assert!(drift <= bound, "{tag} on {np} ranks: drift {drift:e}");
            // The replicas stay identical through the failed step and the next one.
            run.same(&format!("fault.{tag}.failed_hash"));
            assert_eq!(run.same(&format!("fault.{tag}.next")), "true", "{tag}");
            run.same(&format!("fault.{tag}.hash"));
        }
    }
}

#[test]
fn broadcast_makes_replicas_identical_and_check_replicas_names_the_others() {
    for np in [1, 2, 3] {
        let run = launch(np);
        let before = run.same("replicas.before");
        if np == 1 {
            assert!(before.starts_with("same"), "{before}");
        } else {
            let others: Vec<String> = (1..np).map(|r| format!("rank {r}: ")).collect();
            assert!(before.contains("params: the replicas differ"), "{before}");
            for o in others {
                assert!(before.contains(&o), "{before} names {o}");
            }
        }
        assert_eq!(run.same("replicas.after"), run.same("replicas.root"));
        assert!(run
            .same("replicas.bad_root")
            .contains("root: must be a rank"));
    }
}

/// Also runs without MPI: the share of every rank for the counts the tests use.
#[test]
fn shares_of_the_test_counts() {
    assert_eq!(dist::share(10, 3, 0), 0..4);
    assert_eq!(dist::share(10, 3, 2), 7..10);
    assert_eq!(dist::share(8, 3, 2), 6..8);
}
