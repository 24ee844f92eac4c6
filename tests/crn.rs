// SPDX-License-Identifier: MIT OR Apache-2.0
//! Common random numbers: the identity of every evaluation (`Objective::loss_at`,
//! `Evaluation`), the per-sample seed shared by the points of one sample, `Noisy`'s CRN mode,
//! and the variance reduction of an SPSA estimate on a noisy objective.

mod common;

use common::gpu;
use zograd::approx::{Fdm, Formula, GradApproximator, Spsa};
use zograd::kernels::Direction;
use zograd::rng::philox4x32_10;
use zograd::testfns::{Function, Noisy, Problem};
use zograd::{Coordinate, Evaluation, Objective, Params, Result};

/// Σ (x_j − 1)² computed on the host in f64 (the minimiser is 1).
fn shifted_sphere(p: &Params) -> Result<f32> {
    Ok(p.to_vec()?
        .iter()
        .map(|v| (f64::from(*v) - 1.0).powi(2))
        .sum::<f64>() as f32)
}

/// The per-sample seed as the rustdoc of `Evaluation::pair_seed` defines it, computed here
/// from the Philox generator (checked against Random123's known answers in tests/rng.rs).
fn pair_seed(seed: u64, step: u32, sample: u64) -> u64 {
    let w = philox4x32_10(
        [sample as u32, (sample >> 32) as u32, step, 0x4352_4E00],
        [seed as u32, (seed >> 32) as u32],
    );
    u64::from(w[0]) | (u64::from(w[1]) << 32)
}

/// Records every evaluation's identity; f = Σ x² of the host copy. With `batch`, it batches
/// (the estimators then call `loss_batch_at` / `loss_batch_coords_at`).
struct Recorder {
    batch: bool,
    seen: Vec<Evaluation>,
    plain: usize,
}

impl Recorder {
    fn new(batch: bool) -> Self {
        Self {
            batch,
            seen: Vec::new(),
            plain: 0,
        }
    }
}

impl Objective for Recorder {
    fn loss(&mut self, p: &Params) -> Result<f32> {
        self.plain += 1;
        Ok(p.to_vec()?.iter().map(|v| v * v).sum())
    }
    fn loss_at(&mut self, p: &Params, at: &Evaluation) -> Result<f32> {
        self.seen.push(*at);
        Ok(p.to_vec()?.iter().map(|v| v * v).sum())
    }
    fn has_batch(&self) -> bool {
        self.batch
    }
    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        assert_eq!(points.len(), at.len());
        self.seen.extend_from_slice(at);
        let x = params.to_vec()?;
        Ok(points
            .iter()
            .map(|(d, s)| {
                (0..x.len() as u64)
                    .map(|i| {
                        let z =
                            zograd::rng::perturbation(d.distribution, d.seed, d.step, d.sample, i);
                        let v = x[i as usize] + s * z;
                        v * v
                    })
                    .sum()
            })
            .collect())
    }
    fn loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        assert_eq!(points.len(), at.len());
        self.seen.extend_from_slice(at);
        let x = params.to_vec()?;
        Ok(points
            .iter()
            .map(|c| {
                x.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let v = if i as u64 == c.index { c.value } else { *v };
                        v * v
                    })
                    .sum()
            })
            .collect())
    }
}

/// The identities an SPSA estimator gives its points: (step, sample, point, offset) in the
/// formula's order; the per-sample seed of the rustdoc, equal within a sample and different
/// between samples and steps; f₀ with its own seed. Through `loss_at` and through
/// `loss_batch_at`, identically.
#[test]
fn spsa_points_carry_their_identity_and_share_a_seed_per_sample() {
    let gpu = gpu();
    for batch in [false, true] {
        let mut x = Params::from_slices(&gpu, &[&[0.5f32, -0.25, 1.0][..]]).unwrap();
        let mut g = x.zeros_like().unwrap();
        let seed = 0x1234_5678_9ABC_u64;
        let mut est = Spsa::new().n_samples(3).seed(seed);
        let mut obj = Recorder::new(batch);
        let mut seeds = Vec::new();
        for step in 1..=2u32 {
            est.pre_step();
            obj.seen.clear();
            est.approximate(&gpu, &mut x, &mut obj, &mut g).unwrap();
            let got: Vec<(u32, u64, u32, i32)> = obj
                .seen
                .iter()
                .map(|e| (e.step, e.sample, e.point, e.offset))
                .collect();
            let want: Vec<(u32, u64, u32, i32)> = (0..3)
                .flat_map(|s| [(step, s, 0, 1), (step, s, 1, -1)])
                .collect();
            assert_eq!(got, want, "batch {batch}, step {step}");
            for e in &obj.seen {
                assert_eq!(e.seed, seed);
                assert_eq!(e.crn_seed, pair_seed(seed, step, e.sample), "{e:?}");
                assert_eq!(*e, Evaluation::new(seed, step, e.sample, e.point, e.offset));
            }
            for pair in obj.seen.chunks(2) {
                assert_eq!(
                    pair[0].crn_seed, pair[1].crn_seed,
                    "+h and −h share the seed"
                );
                seeds.push(pair[0].crn_seed);
            }
        }
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "samples and steps get different seeds");
        assert_eq!(obj.plain, 0, "the estimator calls loss_at only");

        // A one-sided formula: f₀ (offset 0) first, with its own seed.
        obj.seen.clear();
        est = est.formula(Formula::Forward);
        est.approximate(&gpu, &mut x, &mut obj, &mut g).unwrap();
        let f0 = obj.seen[0];
        assert!(f0.is_unperturbed());
        assert_eq!(f0, Evaluation::unperturbed(seed, 2));
        assert!(obj.seen[1..]
            .iter()
            .all(|e| e.offset == 1 && e.crn_seed != f0.crn_seed));
    }
}

/// Fdm: the points of one element share the seed of (seed, step, element); the seeds change
/// with the element and with the step (pre_step), through `loss_at` and `loss_batch_coords_at`.
#[test]
fn fdm_points_of_an_element_share_a_seed() {
    let gpu = gpu();
    for batch in [false, true] {
        let mut x = Params::from_slices(&gpu, &[&[0.5f32, -0.25][..], &[2.0f32][..]]).unwrap();
        let mut g = x.zeros_like().unwrap();
        let mut fdm = Fdm::new().seed(77).batch_size(4);
        let mut obj = Recorder::new(batch);
        let mut all = Vec::new();
        for step in 1..=2u32 {
            fdm.pre_step();
            assert_eq!(fdm.current_step(), step);
            obj.seen.clear();
            fdm.approximate(&gpu, &mut x, &mut obj, &mut g).unwrap();
            assert_eq!(obj.seen.len(), 6, "batch {batch}");
            for (i, pair) in obj.seen.chunks(2).enumerate() {
                let i = i as u64;
                assert_eq!((pair[0].sample, pair[0].offset), (i, 1));
                assert_eq!((pair[1].sample, pair[1].offset), (i, -1));
                assert_eq!(pair[0].crn_seed, pair[1].crn_seed);
                assert_eq!(pair[0].crn_seed, pair_seed(77, step, i));
                all.push(pair[0].crn_seed);
            }
        }
        let mut distinct = all.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 6);
        // The gradient is still Σ x²'s: 2x.
        let g = g.to_vec().unwrap();
        for (gi, xi) in g.iter().zip([0.5f32, -0.25, 2.0]) {
            assert!((gi - 2.0 * xi).abs() < 1e-2, "{gi} vs {}", 2.0 * xi);
        }
    }
}

/// The step counter and seed of Fdm are in its checkpoint: a resumed Fdm names its points as
/// the uninterrupted one does.
#[test]
fn fdm_identities_survive_a_checkpoint() {
    let gpu = gpu();
    let mut x = Params::from_slices(&gpu, &[&[0.5f32, -0.25][..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut a = Fdm::new().seed(5);
    a.pre_step();
    a.pre_step();
    let state = a.save_state().unwrap().unwrap();
    let mut b = Fdm::new();
    b.load_state(&gpu, &[2], &state).unwrap();
    assert_eq!(b.current_step(), 2);
    let (mut ra, mut rb) = (Recorder::new(false), Recorder::new(false));
    a.approximate(&gpu, &mut x, &mut ra, &mut g).unwrap();
    b.approximate(&gpu, &mut x, &mut rb, &mut g).unwrap();
    assert_eq!(ra.seen, rb.seen);
}

/// Noisy's CRN mode: the noise of a point is a function of its evaluation's `crn_seed` —
/// ξ₁, ξ₂ = Gaussian elements 0 and 1 of the stream (noise seed, crn lo, crn hi) — so the two
/// points of a sample get the same noise; plain `loss` keeps the counter stream.
#[test]
fn noisy_crn_noise_follows_the_seed() {
    let gpu = gpu();
    let x = Params::from_slices(&gpu, &[&[1.5f32, 1.0][..]]).unwrap();
    let (sa, sm) = (0.3, 0.1);
    let mut noisy = Noisy::new(shifted_sphere, sa, sm, 9)
        .unwrap()
        .common_random_numbers(true);
    let f = 0.25f64;
    let plus = Evaluation::new(3, 4, 5, 0, 1);
    let minus = Evaluation::new(3, 4, 5, 1, -1);
    let other = Evaluation::new(3, 4, 6, 0, 1);
    let a = noisy.loss_at(&x, &plus).unwrap();
    let b = noisy.loss_at(&x, &minus).unwrap();
    let c = noisy.loss_at(&x, &other).unwrap();
    assert_eq!(a.to_bits(), b.to_bits(), "same sample, same noise");
    assert_ne!(a, c, "another sample, other noise");
    let xi = |e: u64| {
        f64::from(zograd::rng::perturbation(
            zograd::Distribution::Gaussian,
            9,
            plus.crn_seed as u32,
            (plus.crn_seed >> 32) as u32,
            e,
        ))
    };
    let want = f * (1.0 + sm * xi(0)) + sa * xi(1);
    assert!((f64::from(a) - want).abs() < 1e-6, "{a} vs {want}");
    // Plain loss: the counter stream (evaluation 3, after the three above).
    let d = noisy.loss(&x).unwrap();
    assert_eq!(d.to_bits(), noisy.apply(3, 0.25).to_bits());
    // Without CRN, loss_at draws from the counter too.
    let mut plain = Noisy::new(shifted_sphere, sa, sm, 9).unwrap();
    let e0 = plain.loss_at(&x, &plus).unwrap();
    assert_eq!(e0.to_bits(), plain.apply(0, 0.25).to_bits());
}

/// Mean and unbiased variance of each coordinate over the rows.
fn moments(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows[0].len();
    let k = rows.len() as f64;
    let mut mean = vec![0.0; n];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += f64::from(*v) / k;
        }
    }
    let mut var = vec![0.0; n];
    for r in rows {
        for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2) / (k - 1.0);
        }
    }
    (mean, var)
}

/// SPSA estimates (central, Rademacher, h; estimator seeds 0 … runs − 1) of `objective` at x.
fn spsa_estimates(x0: &[f32], h: f32, runs: u64, objective: &mut dyn Objective) -> Vec<Vec<f32>> {
    let gpu = gpu();
    let mut x = Params::from_slices(&gpu, &[x0]).unwrap();
    let mut g = x.zeros_like().unwrap();
    (0..runs)
        .map(|seed| {
            let mut est = Spsa::new().h(h).seed(seed).exact_restore(true);
            est.pre_step();
            est.approximate(&gpu, &mut x, objective, &mut g).unwrap();
            g.to_vec().unwrap()
        })
        .collect()
}

/// Checks the two estimates' statistics against the textbook and against each other, and
/// returns the variance ratio (without CRN / with CRN).
///
/// For f = Σ(x_j − 1)² and Rademacher u, the central difference is exact, so without noise
/// g_i = (∇f·u)·u_i with mean ∇f_i and variance Σ_{j≠i} (∇f_j)². Additive noise N(0, σ²) at each
/// point adds (ε₊ − ε₋)/(2h)·u_i: variance 2σ²/(4h²) per coordinate without CRN, 0 with CRN.
fn check_reduction(with: &[Vec<f32>], without: &[Vec<f32>], grad: f64, sigma: f64, h: f64) -> f64 {
    let n = with[0].len() as f64;
    let runs = with.len() as f64;
    let (m1, v1) = moments(with);
    let (m0, v0) = moments(without);
    let (t1, t0) = (v1.iter().sum::<f64>(), v0.iter().sum::<f64>());
    let direction = n * (n - 1.0) * grad * grad;
    let noise = n * sigma * sigma / (2.0 * h * h);
    // Regression-free textbook bounds: the sample variances within 25 % (their relative
    // standard error is about √(2/runs) ≈ 8 % here).
    assert!(
        (t1 / direction - 1.0).abs() < 0.25,
        "with CRN: total variance {t1}, textbook {direction}"
    );
    assert!(
        (t0 / (direction + noise) - 1.0).abs() < 0.25,
        "without CRN: total variance {t0}, textbook {}",
        direction + noise
    );
    for i in 0..with[0].len() {
        let (se1, se0) = ((v1[i] / runs).sqrt(), (v0[i] / runs).sqrt());
        assert!(
            (m1[i] - grad).abs() < 5.0 * se1,
            "with CRN: mean {} vs ∇f {grad} (SE {se1})",
            m1[i]
        );
        assert!(
            (m0[i] - grad).abs() < 5.0 * se0,
            "without CRN: mean {} vs ∇f {grad} (SE {se0})",
            m0[i]
        );
        let se = (se1 * se1 + se0 * se0).sqrt();
        assert!(
            (m1[i] - m0[i]).abs() < 5.0 * se,
            "means differ: {} vs {} (SE {se})",
            m1[i],
            m0[i]
        );
    }
    t0 / t1
}

/// The acceptance test of common random numbers: with noise drawn from the evaluation's seed,
/// the SPSA estimate's variance over many seeds is ≥ 10× lower than with independent noise at
/// the two points, and both means are the true gradient (5 SE). One point at a time (a closure
/// objective), and batched (a `BatchObjective` from the test functions, one dispatch per
/// estimate).
#[test]
fn crn_cuts_the_variance_of_spsa_tenfold_with_the_same_mean() {
    let gpu = gpu();
    let (n, h, sigma, runs) = (16usize, 0.01f32, 0.05f64, 300u64);
    // x_j − 1 = 0.1: ∇f_j = 0.2 for every j.
    let x0 = vec![1.1f32; n];
    let grad = 2.0 * (f64::from(1.1f32) - 1.0);
    // One noise stream per mode: with CRN the noise follows each estimate's seeds, without it
    // every evaluation draws the next values of the stream.
    let noisy = |crn: bool, seed: u64| {
        Noisy::new(shifted_sphere, sigma, 0.0, seed)
            .unwrap()
            .common_random_numbers(crn)
    };
    let with = spsa_estimates(&x0, h, runs, &mut noisy(true, 1_000));
    let without = spsa_estimates(&x0, h, runs, &mut noisy(false, 1_001));
    let ratio = check_reduction(&with, &without, grad, sigma, f64::from(h));
    eprintln!(
        "CRN variance ratio (one point at a time, n = {n}, σ = {sigma}, h = {h}): {ratio:.1}"
    );
    assert!(ratio >= 10.0, "variance ratio {ratio}");

    // Batched: the test functions' Sphere shifted to 1 (a BatchObjective: loss_batch_at).
    let problem = Problem::new(Function::Sphere, n as u64).unwrap();
    let shift: Vec<f32> = problem.minimiser().to_vec();
    let xs: Vec<f32> = shift.iter().map(|c| c + 0.1).collect();
    let x = Params::from_slices(&gpu, &[&xs[..]]).unwrap();
    let batched = |crn: bool, seed: u64| {
        Noisy::new(problem.batch_objective(&x, 4).unwrap(), sigma, 0.0, seed)
            .unwrap()
            .common_random_numbers(crn)
    };
    let with = spsa_estimates(&xs, h, runs, &mut batched(true, 5_000));
    let without = spsa_estimates(&xs, h, runs, &mut batched(false, 5_001));
    let ratio = check_reduction(&with, &without, grad, sigma, f64::from(h));
    eprintln!("CRN variance ratio (BatchObjective, n = {n}, σ = {sigma}, h = {h}): {ratio:.1}");
    assert!(ratio >= 10.0, "variance ratio {ratio}");
}

/// Passes `loss_batch_at` on to a `BatchObjective` and records the identities.
struct RecordBatch {
    inner: zograd::BatchObjective,
    seen: Vec<Evaluation>,
}

impl Objective for RecordBatch {
    fn loss(&mut self, p: &Params) -> Result<f32> {
        self.inner.loss(p)
    }
    fn has_batch(&self) -> bool {
        true
    }
    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.seen.extend_from_slice(at);
        self.inner.loss_batch_at(params, points, at)
    }
}

/// A `BatchObjective`'s shader sees each point's CRN seed through `zograd_crn_seed(p)`: the
/// value the estimator hands `loss_batch_at` for that point (here the shader returns the 24
/// top bits of lo ^ hi, exact in f32).
#[test]
fn batch_shaders_see_the_crn_seed() {
    let gpu = gpu();
    let mut x = Params::from_slices(&gpu, &[&[0.5f32; 8][..]]).unwrap();
    let wgsl = "
        @group(0) @binding(0) var<storage, read> x: array<f32>;
        @compute @workgroup_size(1)
        fn main(@builtin(workgroup_id) wg: vec3<u32>) {
            let c = zograd_crn_seed(wg.z);
            zograd_set_loss(wg.z, f32((c.x ^ c.y) >> 8u) + 0.0 * x[0]);
        }";
    let inner = zograd::BatchObjective::new(
        &gpu,
        wgsl,
        &[zograd::Binding::Read(&x.buffers()[0])],
        &[("main", zograd::Workgroups::PerPoint([1, 1]))],
        16,
    )
    .unwrap();
    let mut obj = RecordBatch {
        inner,
        seen: Vec::new(),
    };
    let mut g = x.zeros_like().unwrap();
    let seed = 0xFEED_0000_0001_u64;
    let mut est = Spsa::new().n_samples(4).seed(seed);
    est.pre_step();
    est.pre_step();
    est.approximate(&gpu, &mut x, &mut obj, &mut g).unwrap();
    assert_eq!(obj.seen.len(), 8);
    let values = obj
        .inner
        .evaluate_points(
            8,
            &obj.seen
                .iter()
                .map(|e| {
                    let d = Direction {
                        distribution: zograd::Distribution::Rademacher,
                        seed,
                        step: e.step,
                        sample: e.sample as u32,
                    };
                    (d, e.offset as f32 * 1e-3)
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    for (e, v) in obj.seen.iter().zip(values) {
        let c = pair_seed(seed, 2, e.sample);
        assert_eq!(e.crn_seed, c);
        let want = ((c as u32 ^ (c >> 32) as u32) >> 8) as f32;
        assert_eq!(v, want, "{e:?}");
    }
}

/// Fdm with common random numbers: additive noise cancels in each element's central
/// difference, so the estimate of a noisy sphere's gradient is the noise-free 2x up to the f32
/// rounding of the values (|f| < 1, over 2h); without CRN the noise adds
/// about σ/(√2·h) = 3.5 per element. Point by point and batched (loss_batch_coords_at).
#[test]
fn fdm_with_crn_cancels_additive_noise() {
    let gpu = gpu();
    let xs: Vec<f32> = common::data(8, 12).iter().map(|v| v * 0.5).collect();
    let mut x = Params::from_slices(&gpu, &[&xs[..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let sphere = |p: &Params| -> Result<f32> {
        Ok(p.to_vec()?
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>() as f32)
    };
    let (h, sigma) = (0.01f32, 0.05);
    for batch in [false, true] {
        for crn in [true, false] {
            let mut fdm = Fdm::new().h(h).seed(3).batch_size(5);
            fdm.pre_step();
            let noisy = Noisy::new(sphere, sigma, 0.0, 17)
                .unwrap()
                .common_random_numbers(crn);
            if batch {
                // Noisy passes has_batch through: a batching inner objective.
                let mut wrapped = Noisy::new(Recorder::new(true), sigma, 0.0, 17)
                    .unwrap()
                    .common_random_numbers(crn);
                fdm.approximate(&gpu, &mut x, &mut wrapped, &mut g).unwrap();
                let seen = &wrapped.inner().seen;
                assert_eq!(seen.len(), 24, "loss_batch_coords_at got every point");
            } else {
                let mut noisy = noisy;
                fdm.approximate(&gpu, &mut x, &mut noisy, &mut g).unwrap();
            }
            let worst = g
                .to_vec()
                .unwrap()
                .iter()
                .zip(&xs)
                .map(|(gi, xi)| (f64::from(*gi) - 2.0 * f64::from(*xi)).abs())
                .fold(0.0, f64::max);
            if crn {
                // No truncation error for a quadratic; what is left is the f32 rounding of the
                // two values (|f| < 1; the batched Recorder sums in f32) over 2h: below 1e-4.
                assert!(worst < 1e-4, "batch {batch}: CRN error {worst}");
            } else {
                assert!(
                    worst > 0.5,
                    "batch {batch}: independent noise error {worst}"
                );
            }
        }
    }
}
