// SPDX-License-Identifier: MIT OR Apache-2.0
//! Standard scalable test functions on the GPU, for benchmarking the estimators at sizes CPU
//! libraries do not reach: each as a [`BatchObjective`] (one dispatch evaluates a whole batch of
//! perturbed points `x + scale·z`, regenerating z from Philox, never writing x) and as a
//! [`ShaderObjective`] (f at x), with a CPU f64 twin ([`Problem::value_f64`]), the known
//! minimiser and minimum, an optional shift, coordinate permutation and block rotation, and a
//! noise wrapper
//! ([`Noisy`]).
//!
//! # Definitions
//! With z the transformed point (below) and n the dimension, i = 0 … n−1:
//!
//! | [`Function`] | g(z) | minimiser z* (every coordinate) | minimum |
//! |---|---|---|---|
//! | `Sphere` | Σ zᵢ² | 0 | 0 |
//! | `Ellipsoid` | Σ 10^{6·i/(n−1)} zᵢ² (condition 10⁶) | 0 | 0 |
//! | `Rosenbrock` | Σ_{i<n−1} 100 (zᵢ² − zᵢ₊₁)² + (zᵢ − 1)² | 1 | 0 |
//! | `Rastrigin` | 10n + Σ zᵢ² − 10 cos 2πzᵢ | 0 | 0 |
//! | `Ackley` | −20 exp(−0.2 √(Σzᵢ²/n)) − exp(Σ cos(2πzᵢ)/n) + 20 + e | 0 | 0 |
//! | `StyblinskiTang` | ½ Σ zᵢ⁴ − 16zᵢ² + 5zᵢ | −2.903534… | −39.16616570… · n |
//! | `DifferentPowers` | √(Σ \|zᵢ\|^{2+4·i/(n−1)}) | 0 | 0 |
//! | `Levy` | sin²(πw₀) + Σ_{i<n−1} (wᵢ−1)² (1 + 10 sin²(πwᵢ+1)) + (w_{n−1}−1)² (1 + sin²(2πw_{n−1})), wᵢ = 1 + (zᵢ−1)/4 | 1 | 0 |
//!
//! (for n = 1 the exponents i/(n−1) are taken as 0). Sources: Hansen, Finck, Ros, Auger,
//! "Real-parameter black-box optimization benchmarking 2009: noiseless functions definitions",
//! INRIA RR-6829 (COCO/BBOB): f1 Sphere, f2/f10 Ellipsoidal, f8 Rosenbrock, f3/f15 Rastrigin,
//! f14 Different Powers — used here without BBOB's oscillation (T_osz) and asymmetry (T_asy)
//! transformations, penalties and full rotations; Surjanovic & Bingham, "Virtual Library of
//! Simulation Experiments: Test Functions and Datasets" (sfu.ca/~ssurjano): Ackley (a = 20,
//! b = 0.2, c = 2π), Styblinski–Tang, Levy, and Rosenbrock, Rastrigin and Sphere in the same
//! form.
//!
//! # Shift, permutation and block rotation
//! A [`Problem`] evaluates f(x) = g(z), z = z*·1 + B·y, y_k = (x − c)_{π(k)}. Without a shift the
//! centre c is z*·1, so f is the textbook g (f(x) = g(x)); [`Problem::shifted`] draws
//! c = x_opt uniformly in [−4, 4)ⁿ from Philox (as BBOB's x_opt), so the minimiser is not the
//! start point of the usual runs (x₀ = 0). [`Problem::permuted`] draws a permutation π from
//! Philox: separable functions are unchanged by it, but the coupled ones (Rosenbrock's chain, the
//! Ellipsoid's and Different Powers' coordinate scales) no longer follow the memory order.
//! [`Problem::rotated`] makes B block-diagonal orthogonal, as COCO's large-scale suite
//! (Varelas et al. 2018, "A comparative study of large-scale variants of CMA-ES"): blocks of
//! s = min(40, n) consecutive z coordinates (the last block may be smaller), each an orthogonal
//! matrix from Gram–Schmidt on Philox Gaussians, so separable functions are no longer separable
//! within a block. To keep the GPU data small, full blocks cycle through a pool of at most 64
//! distinct matrices (block b uses matrix b mod 64; the permutation still mixes which
//! coordinates meet), and there is one permutation instead of COCO's two. Each thread then
//! evaluates one block: s² multiply-adds for s coordinates.
//!
//! # GPU evaluation and accuracy
//! One thread sums 128 consecutive terms, a workgroup of 64 threads adds its threads' sums by a
//! tree into one partial per workgroup and point, and a finish pass adds the partials (strided,
//! then a tree) and applies the outer function (Ackley, Different Powers). Everything is f32
//! (the [`Objective`](crate::Objective) interface reads one f32 per point), so the relative
//! error is at worst about (128 + 6 + log₂ groups)·2⁻²⁴ of Σ|terms| (plus, rotated, s·2⁻²⁴ of
//! each block's ‖y‖ in every zᵢ), typically far less
//! (`tests/testfns.rs` derives its tolerances from this bound). Sines and cosines take the
//! argument reduced exactly (w − round(w)), so they stay accurate at large |z|.
//!
//! # Example
//! MeZO on a shifted, permuted, block-rotated Rosenbrock function in 10⁴ dimensions, both evaluations of a
//! step in one dispatch:
//! ```no_run
//! use zograd::approx::MeZo;
//! use zograd::optim::{Lr, Optimizer};
//! use zograd::testfns::{Function, Problem};
//! use zograd::{Gpu, Params};
//! # fn main() -> zograd::Result<()> {
//! let gpu = Gpu::new()?;
//! let problem = Problem::new(Function::Rosenbrock, 10_000)?
//!     .shifted(1)
//!     .permuted(2)
//!     .rotated(3);
//! let mut x = Params::from_slices(&gpu, &[&vec![0.0f32; 10_000][..]])?;
//! let mut loss = problem.batch_objective(&x, 2)?;
//! let f0 = problem.value_f64(&x.to_vec()?)?;
//! let mut opt = Optimizer::new(&gpu, &x, MeZo::new().h(1e-3).seed(3))?.then(Lr::new(1e-6));
//! for _ in 0..100 {
//!     opt.step(&mut x, &mut loss)?;
//! }
//! println!("f: {f0} → {} (minimum {})", problem.value_f64(&x.to_vec()?)?, problem.minimum());
//! # Ok(()) }
//! ```

mod noise;

pub use noise::Noisy;

use crate::gpu::shaders::{BATCH, PHILOX, TESTFNS};
use crate::rng::{perturbation, Distribution};
use crate::{BatchObjective, Binding, Error, Params, Result, ShaderObjective, Workgroups};

/// Coordinates per thread and threads per workgroup of `shaders/testfns.wgsl`.
const PER_THREAD: u64 = 128;
const WORKGROUP: u64 = 64;

/// The minimiser of Styblinski–Tang in every coordinate: the root of 4z³ − 32z + 5 = 0 in
/// (−3, −2).
const STYBLINSKI_TANG_ZSTAR: f64 = -2.903_534_027_771_178;

/// A standard test function; see the [module documentation](self) for the definitions and
/// sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// Σ zᵢ² (BBOB f1).
    Sphere,
    /// Σ 10^{6·i/(n−1)} zᵢ², condition number 10⁶ (BBOB f2 without T_osz).
    Ellipsoid,
    /// Σ 100 (zᵢ² − zᵢ₊₁)² + (zᵢ − 1)² (BBOB f8 without its scaling).
    Rosenbrock,
    /// 10n + Σ zᵢ² − 10 cos 2πzᵢ (BBOB f3 without T_osz and T_asy).
    Rastrigin,
    /// −20 exp(−0.2 √(Σzᵢ²/n)) − exp(Σ cos(2πzᵢ)/n) + 20 + e (Surjanovic & Bingham).
    Ackley,
    /// ½ Σ zᵢ⁴ − 16zᵢ² + 5zᵢ (Surjanovic & Bingham).
    StyblinskiTang,
    /// √(Σ |zᵢ|^{2+4·i/(n−1)}) (BBOB f14).
    DifferentPowers,
    /// Levy's function (Surjanovic & Bingham).
    Levy,
}

impl Function {
    /// Every function, in the order of the module's table.
    pub const ALL: [Function; 8] = [
        Function::Sphere,
        Function::Ellipsoid,
        Function::Rosenbrock,
        Function::Rastrigin,
        Function::Ackley,
        Function::StyblinskiTang,
        Function::DifferentPowers,
        Function::Levy,
    ];

    /// The lower-case name: `sphere`, `ellipsoid`, `rosenbrock`, `rastrigin`, `ackley`,
    /// `styblinski_tang`, `different_powers`, `levy`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Function::Sphere => "sphere",
            Function::Ellipsoid => "ellipsoid",
            Function::Rosenbrock => "rosenbrock",
            Function::Rastrigin => "rastrigin",
            Function::Ackley => "ackley",
            Function::StyblinskiTang => "styblinski_tang",
            Function::DifferentPowers => "different_powers",
            Function::Levy => "levy",
        }
    }

    /// The function called `name` ([`Function::name`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `name` for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "name: unknown test function {name:?} (one of {})",
                    Self::ALL.map(Function::name).join(", ")
                ))
            })
    }

    /// The minimiser z* of the textbook function, the same in every coordinate.
    #[must_use]
    pub fn minimiser_coordinate(self) -> f64 {
        match self {
            Function::Rosenbrock | Function::Levy => 1.0,
            Function::StyblinskiTang => STYBLINSKI_TANG_ZSTAR,
            _ => 0.0,
        }
    }

    /// The minimum value in dimension `n`.
    #[must_use]
    pub fn minimum(self, n: u64) -> f64 {
        match self {
            Function::StyblinskiTang => {
                let z = STYBLINSKI_TANG_ZSTAR;
                n as f64 * 0.5 * (z.powi(4) - 16.0 * z * z + 5.0 * z)
            }
            _ => 0.0,
        }
    }

    /// The textbook function g at `z`, in f64 (the module's table). An empty `z` gives the
    /// minimum of dimension 0 (0).
    #[must_use]
    pub fn value(self, z: &[f64]) -> f64 {
        let n = z.len();
        if n == 0 {
            return 0.0;
        }
        let ratio = |i: usize| {
            if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            }
        };
        let two_pi = 2.0 * std::f64::consts::PI;
        match self {
            Function::Sphere => z.iter().map(|v| v * v).sum(),
            Function::Ellipsoid => z
                .iter()
                .enumerate()
                .map(|(i, v)| 10f64.powf(6.0 * ratio(i)) * v * v)
                .sum(),
            Function::Rosenbrock => z
                .windows(2)
                .map(|w| 100.0 * (w[0] * w[0] - w[1]).powi(2) + (w[0] - 1.0).powi(2))
                .sum(),
            Function::Rastrigin => {
                10.0 * n as f64
                    + z.iter()
                        .map(|v| v * v - 10.0 * (two_pi * v).cos())
                        .sum::<f64>()
            }
            Function::Ackley => {
                let nf = n as f64;
                let sq: f64 = z.iter().map(|v| v * v).sum();
                let cs: f64 = z.iter().map(|v| (two_pi * v).cos()).sum();
                -20.0 * (-0.2 * (sq / nf).sqrt()).exp() - (cs / nf).exp()
                    + 20.0
                    + std::f64::consts::E
            }
            Function::StyblinskiTang => z
                .iter()
                .map(|v| 0.5 * (v.powi(4) - 16.0 * v * v + 5.0 * v))
                .sum(),
            Function::DifferentPowers => z
                .iter()
                .enumerate()
                .map(|(i, v)| v.abs().powf(2.0 + 4.0 * ratio(i)))
                .sum::<f64>()
                .sqrt(),
            Function::Levy => {
                let pi = std::f64::consts::PI;
                let w = |v: f64| 1.0 + (v - 1.0) / 4.0;
                let first = (pi * w(z[0])).sin().powi(2);
                let middle: f64 = z[..n - 1]
                    .iter()
                    .map(|&v| {
                        let wi = w(v);
                        (wi - 1.0).powi(2) * (1.0 + 10.0 * (pi * wi + 1.0).sin().powi(2))
                    })
                    .sum();
                let wl = w(z[n - 1]);
                first + middle + (wl - 1.0).powi(2) * (1.0 + (two_pi * wl).sin().powi(2))
            }
        }
    }

    /// The function's code in `shaders/testfns.wgsl`.
    fn code(self) -> u32 {
        Self::ALL
            .iter()
            .position(|f| *f == self)
            .expect("every function is in ALL") as u32
    }
}

/// A test function in dimension n with its transformation: f(x) = g(z),
/// zᵢ = z* + (x − c)_{π(i)} (see the [module documentation](self)). Builds the GPU objectives
/// over a [`Params`] of n elements in one buffer and evaluates the CPU twin.
#[derive(Clone, Debug)]
pub struct Problem {
    function: Function,
    n: u64,
    centre: Vec<f32>,
    shifted: bool,
    perm: Option<Vec<u32>>,
    rotation: Option<Rotation>,
}

/// Largest block of [`Problem::rotated`] and the number of distinct full-block matrices.
const ROT_BLOCK: u64 = 40;
const ROT_POOL: u64 = 64;

/// Block-diagonal orthogonal B: `pool` s×s matrices for the full blocks (block b uses matrix
/// b mod pool), then the r×r matrix of a last, smaller block; row-major, f32 (the GPU's and the
/// twin's values).
#[derive(Clone, Debug)]
struct Rotation {
    block: usize,
    pool: usize,
    matrices: Vec<f32>,
}

impl Rotation {
    fn new(n: usize, seed: u64) -> Self {
        let s = n.min(ROT_BLOCK as usize);
        let full = n / s;
        let pool = full.min(ROT_POOL as usize);
        let r = n - full * s;
        let mut matrices = Vec::with_capacity(pool * s * s + r * r);
        for q in 0..pool {
            matrices.extend(orthogonal(s, seed, q as u32));
        }
        if r > 0 {
            matrices.extend(orthogonal(r, seed, pool as u32));
        }
        Self {
            block: s,
            pool,
            matrices,
        }
    }

    /// The offset of the matrix of the block starting at coordinate a, with cnt coordinates.
    fn offset(&self, a: usize, cnt: usize) -> usize {
        let s = self.block;
        if cnt < s {
            self.pool * s * s
        } else {
            ((a / s) % self.pool) * s * s
        }
    }
}

/// A d×d orthogonal matrix (row-major, f32): modified Gram–Schmidt in f64 on the rows of a
/// Gaussian matrix drawn from Philox (key `seed`, step 2, sample `index`).
fn orthogonal(d: usize, seed: u64, index: u32) -> Vec<f32> {
    let mut m: Vec<f64> = (0..d * d)
        .map(|e| {
            f64::from(perturbation(
                Distribution::Gaussian,
                seed,
                2,
                index,
                e as u64,
            ))
        })
        .collect();
    for i in 0..d {
        for k in 0..i {
            let dot: f64 = (0..d).map(|c| m[i * d + c] * m[k * d + c]).sum();
            for c in 0..d {
                m[i * d + c] -= dot * m[k * d + c];
            }
        }
        let norm = (0..d).map(|c| m[i * d + c].powi(2)).sum::<f64>().sqrt();
        for c in 0..d {
            m[i * d + c] /= norm;
        }
    }
    m.into_iter().map(|v| v as f32).collect()
}

impl Problem {
    /// `function` in dimension `n`, neither shifted nor permuted: f = g, minimiser z*·1.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `n` for n = 0 or n ≥ 2³¹ (the shader indexes
    /// coordinates with u32).
    pub fn new(function: Function, n: u64) -> Result<Self> {
        if n == 0 || n >= 1 << 31 {
            return Err(Error::invalid(format!(
                "n: the dimension must be in 1..2^31, got {n}"
            )));
        }
        let zstar = function.minimiser_coordinate() as f32;
        Ok(Self {
            function,
            n,
            centre: vec![zstar; n as usize],
            shifted: false,
            perm: None,
            rotation: None,
        })
    }

    /// Shifts the minimiser to x_opt, drawn uniformly in [−4, 4)ⁿ from Philox:
    /// x_opt,ᵢ = (4/√3)·u(seed, i), u the [`Distribution::Uniform`] perturbation of step 0,
    /// sample 0 (values on a 2⁻²¹ grid).
    #[must_use]
    pub fn shifted(mut self, seed: u64) -> Self {
        let scale = 4.0 / 3f64.sqrt();
        for (i, c) in self.centre.iter_mut().enumerate() {
            let u = f64::from(perturbation(Distribution::Uniform, seed, 0, 0, i as u64));
            *c = (u * scale) as f32;
        }
        self.shifted = true;
        self
    }

    /// Permutes the coordinates: zᵢ reads coordinate π(i), π a Fisher–Yates shuffle driven by
    /// Philox (key `seed`, step 1; the index j ≤ i is ⌊w·(i+1)/2³²⌋ of a 32-bit word w, biased
    /// by less than n/2³², irrelevant here).
    #[must_use]
    pub fn permuted(mut self, seed: u64) -> Self {
        let n = self.n as usize;
        let mut perm: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let word = crate::rng::block(seed, 1, 0, (i / 4) as u64)[i % 4];
            let j = ((u64::from(word) * (i as u64 + 1)) >> 32) as usize;
            perm.swap(i, j);
        }
        self.perm = Some(perm);
        self
    }

    /// Applies the block-diagonal rotation B (blocks of min(40, n) coordinates; see the
    /// [module documentation](self)), its matrices drawn from Philox with `seed`.
    #[must_use]
    pub fn rotated(mut self, seed: u64) -> Self {
        self.rotation = Some(Rotation::new(self.n as usize, seed));
        self
    }

    /// The block size s of the rotation, if [`rotated`](Problem::rotated).
    #[must_use]
    pub fn rotation_block(&self) -> Option<usize> {
        self.rotation.as_ref().map(|r| r.block)
    }

    /// The function.
    #[must_use]
    pub fn function(&self) -> Function {
        self.function
    }

    /// The dimension n.
    #[must_use]
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Whether [`shifted`](Problem::shifted) was applied.
    #[must_use]
    pub fn is_shifted(&self) -> bool {
        self.shifted
    }

    /// The permutation π (zᵢ reads coordinate π(i)), if [`permuted`](Problem::permuted).
    #[must_use]
    pub fn permutation(&self) -> Option<&[u32]> {
        self.perm.as_deref()
    }

    /// The minimiser: x_opt when shifted, z*·1 otherwise (f32, as the GPU reads it).
    #[must_use]
    pub fn minimiser(&self) -> &[f32] {
        &self.centre
    }

    /// The minimum value, [`Function::minimum`] of n.
    #[must_use]
    pub fn minimum(&self) -> f64 {
        self.function.minimum(self.n)
    }

    /// The transformed point z of `x`, in f64.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `x` when its length is not n.
    pub fn transform(&self, x: &[f32]) -> Result<Vec<f64>> {
        if x.len() as u64 != self.n {
            return Err(Error::invalid(format!(
                "x: the problem has n = {} coordinates, got {}",
                self.n,
                x.len()
            )));
        }
        let zstar = self.function.minimiser_coordinate();
        let d = |j: usize| f64::from(x[j]) - f64::from(self.centre[j]);
        let y: Vec<f64> = match &self.perm {
            Some(p) => p.iter().map(|&j| d(j as usize)).collect(),
            None => (0..x.len()).map(d).collect(),
        };
        let Some(rot) = &self.rotation else {
            return Ok(y.into_iter().map(|v| zstar + v).collect());
        };
        let n = y.len();
        let mut z = Vec::with_capacity(n);
        for a in (0..n).step_by(rot.block) {
            let cnt = rot.block.min(n - a);
            let m = &rot.matrices[rot.offset(a, cnt)..];
            for i in 0..cnt {
                let row = &m[i * cnt..(i + 1) * cnt];
                let dot: f64 = row
                    .iter()
                    .zip(&y[a..a + cnt])
                    .map(|(b, v)| f64::from(*b) * v)
                    .sum();
                z.push(zstar + dot);
            }
        }
        Ok(z)
    }

    /// The CPU twin: f(x) in f64 (x read as f32, as on the GPU).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `x` when its length is not n.
    pub fn value_f64(&self, x: &[f32]) -> Result<f64> {
        Ok(self.function.value(&self.transform(x)?))
    }

    /// Coordinates per thread: 128, or the rotation's block.
    fn per_thread(&self) -> u64 {
        self.rotation
            .as_ref()
            .map_or(PER_THREAD, |r| r.block as u64)
    }

    /// Workgroups of the partials pass (per point).
    fn groups(&self) -> u32 {
        self.n.div_ceil(self.per_thread() * WORKGROUP) as u32
    }

    /// The GPU data and scratch of one objective: ([dims, centre, permutation], rotation,
    /// partials, first plain slot).
    fn buffers(
        &self,
        x: &Params,
        max_points: u32,
    ) -> Result<([wgpu::Buffer; 3], wgpu::Buffer, wgpu::Buffer, u32)> {
        if x.buffers().len() != 1 || x.len() != self.n {
            return Err(Error::invalid(format!(
                "params: the test functions read one buffer of n = {} elements, got {} buffer(s) \
                 of {} elements in all",
                self.n,
                x.buffers().len(),
                x.len()
            )));
        }
        let gpu = x.gpu();
        let binding = gpu.limits().max_storage_buffer_binding_size;
        if 4 * self.n > binding {
            return Err(Error::TooLarge(format!(
                "params: n = {} f32 exceed the adapter's max_storage_buffer_binding_size of \
                 {binding} bytes (the test functions bind x whole)",
                self.n
            )));
        }
        let groups = self.groups();
        let max_groups = gpu.limits().max_compute_workgroups_per_dimension;
        if groups > max_groups {
            return Err(Error::invalid(format!(
                "params: n = {} needs {groups} workgroups per point, more than the adapter's {}",
                self.n, max_groups
            )));
        }
        let plain_base = 2 * u64::from(max_points) * u64::from(groups);
        let slots = plain_base + 2 * u64::from(groups) + 1;
        if plain_base >= 1 << 32 || slots * 4 > gpu.limits().max_storage_buffer_binding_size {
            return Err(Error::invalid(format!(
                "max_points: {max_points} points × {groups} workgroups of partial sums do not \
                 fit in one storage binding"
            )));
        }
        let dims = [
            self.n as u32,
            self.function.code(),
            groups,
            u32::from(self.perm.is_some()),
            plain_base as u32,
            (self.function.minimiser_coordinate() as f32).to_bits(),
            self.per_thread() as u32,
            self.rotation.as_ref().map_or(0, |r| r.block as u32),
            self.rotation.as_ref().map_or(1, |r| r.pool as u32),
            self.rotation
                .as_ref()
                .map_or(0, |r| (r.pool * r.block * r.block) as u32),
        ];
        let dims = gpu.create_user_data("zograd::testfns dims", &dims)?;
        let centre: Vec<u32> = self.centre.iter().map(|c| c.to_bits()).collect();
        let centre = gpu.create_user_data("zograd::testfns centre", &centre)?;
        let perm = gpu.create_user_data(
            "zograd::testfns permutation",
            self.perm.as_deref().unwrap_or(&[0]),
        )?;
        let rot: Vec<u32> = self.rotation.as_ref().map_or(vec![0], |r| {
            r.matrices.iter().map(|v| v.to_bits()).collect()
        });
        let rot = gpu.create_user_data("zograd::testfns rotation", &rot)?;
        let partial = ShaderObjective::loss_buffer(gpu, slots)?;
        Ok(([dims, centre, perm], rot, partial, plain_base as u32))
    }

    /// The [`BatchObjective`] over `x` (one buffer of n elements; bound, never written): each
    /// dispatch evaluates up to `max_points` points `x + scale·z` in two passes (partials per
    /// workgroup and point, then one workgroup per point), regenerating z from Philox (sparse
    /// directions included: [`BatchObjective::handles_sparse_directions`] is on).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `params` when `x` is not one buffer of n elements or
    /// n is too large for the adapter's grid, naming `max_points` when it is 0, above the
    /// adapter's workgroups per dimension, or its partial sums do not fit in one binding;
    /// [`Error::TooLarge`] when x exceeds one storage binding; device errors.
    pub fn batch_objective(&self, x: &Params, max_points: u32) -> Result<BatchObjective> {
        if max_points == 0 {
            return Err(Error::invalid(
                "max_points: must be at least 1, got 0".to_string(),
            ));
        }
        let ([dims, centre, perm], rot, partial, _) = self.buffers(x, max_points)?;
        BatchObjective::new(
            x.gpu(),
            TESTFNS,
            &[
                Binding::Read(&dims),
                Binding::Read(&x.buffers()[0]),
                Binding::Read(&centre),
                Binding::Read(&perm),
                Binding::ReadWrite(&partial),
                Binding::Read(&rot),
            ],
            &[
                (
                    "tf_batch_partials",
                    Workgroups::PerPoint([self.groups(), 1]),
                ),
                ("tf_batch_finish", Workgroups::PerPoint([1, 1])),
            ],
            max_points,
        )
        .map(|b| b.handles_sparse_directions(true))
    }

    /// The [`ShaderObjective`] over `x` (one buffer of n elements): f at x as it is (the
    /// estimators perturb x in place around it), two passes, one readback.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `params` when `x` is not one buffer of n elements or
    /// n is too large for the adapter's grid; [`Error::TooLarge`] when x exceeds one storage
    /// binding; device errors.
    pub fn shader_objective(&self, x: &Params) -> Result<ShaderObjective> {
        let ([dims, centre, perm], rot, partial, plain_base) = self.buffers(x, 0)?;
        let source = format!("{PHILOX}\n{BATCH}\n{TESTFNS}");
        ShaderObjective::new(
            x.gpu(),
            &source,
            &[
                Binding::Read(&dims),
                Binding::Read(&x.buffers()[0]),
                Binding::Read(&centre),
                Binding::Read(&perm),
                Binding::ReadWrite(&partial),
                Binding::Read(&rot),
            ],
            &[
                ("tf_plain_partials", [self.groups(), 1, 1]),
                ("tf_plain_finish", [1, 1, 1]),
            ],
            (
                &partial,
                4 * (u64::from(plain_base) + 2 * u64::from(self.groups())),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test-function passes validate with naga after the Philox and batch sources.
    #[test]
    fn testfns_wgsl_validates() {
        let src = format!("{PHILOX}\n{BATCH}\n{TESTFNS}");
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
    }

    #[test]
    fn codes_follow_the_shader_constants() {
        for (k, f) in Function::ALL.iter().enumerate() {
            assert_eq!(f.code(), k as u32);
            assert_eq!(Function::from_name(f.name()).unwrap(), *f);
        }
        assert!(TESTFNS.contains("const TF_LEVY: u32 = 7u;"));
    }

    #[test]
    fn rotation_blocks_are_orthogonal() {
        for (n, s, last) in [
            (1usize, 1usize, 0usize),
            (7, 7, 0),
            (100, 40, 20),
            (4000, 40, 0),
        ] {
            let r = Rotation::new(n, 5);
            assert_eq!(r.block, s);
            assert_eq!(r.pool, (n / s).min(64));
            assert_eq!(r.matrices.len(), r.pool * s * s + last * last);
            for (d, off) in [(s, 0), (s, (r.pool - 1) * s * s), (last, r.pool * s * s)] {
                let m = &r.matrices[off..off + d * d];
                for i in 0..d {
                    for k in 0..d {
                        let dot: f64 = (0..d)
                            .map(|c| f64::from(m[i * d + c]) * f64::from(m[k * d + c]))
                            .sum();
                        let want = if i == k { 1.0 } else { 0.0 };
                        assert!((dot - want).abs() < 1e-6, "n {n}: B·Bᵀ[{i},{k}] = {dot}");
                    }
                }
            }
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let p = Problem::new(Function::Sphere, 1000).unwrap().permuted(3);
        let mut v = p.permutation().unwrap().to_vec();
        assert_ne!(v, (0..1000).collect::<Vec<u32>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<u32>>());
    }
}
