// SPDX-License-Identifier: MIT OR Apache-2.0
//! The elementwise modules: learning rate, momentum, Adam, sign, weight decay, norm clipping.

use super::{ensure_like, Context, Fusion, Transform};
use crate::kernels::{adam, axpy, copy, heavy_ball, norm, scale, sign};
use crate::{Error, Params, Result};

fn check(name: &str, value: f32, ok: bool, range: &str) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{name}: must be {range}, got {value}"
        )))
    }
}

/// Bytes of an optional state buffer.
fn bytes(p: &Option<Params>) -> u64 {
    p.as_ref().map_or(0, Params::owned_bytes)
}

/// What a [`Transform::checkpoint`] of one state buffer saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Saved {
    /// No checkpoint pending.
    #[default]
    Nothing,
    /// The state did not exist yet (first step): a rollback drops it.
    Absent,
    /// The state was copied into the backup buffer.
    Copied,
}

/// Copies `state` into `backup` (created on first use) and says what was saved.
fn save(state: &Option<Params>, backup: &mut Option<Params>) -> Result<Saved> {
    match state {
        None => Ok(Saved::Absent),
        Some(s) => {
            let b = ensure_like(backup, s)?;
            copy(b, s)?;
            Ok(Saved::Copied)
        }
    }
}

/// Puts `state` back as `saved` says.
fn restore(saved: Saved, state: &mut Option<Params>, backup: &Option<Params>) -> Result<()> {
    match (saved, state.as_mut(), backup) {
        (Saved::Absent, _, _) => {
            *state = None;
            Ok(())
        }
        (Saved::Copied, Some(s), Some(b)) => copy(s, b),
        _ => Ok(()),
    }
}

/// The learning rate: `update ← lr · update` (torchzero's `LR`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lr {
    lr: f32,
}

impl Lr {
    /// A learning rate; it must be finite and positive (checked at each step).
    #[must_use]
    pub fn new(lr: f32) -> Self {
        Self { lr }
    }
}

impl Transform for Lr {
    fn name(&self) -> &'static str {
        "Lr"
    }
    fn validate(&self) -> Result<()> {
        check("lr", self.lr, self.lr > 0.0, "finite and positive")
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        scale(ctx.update, self.lr)
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Scale(self.lr))
    }
}

/// How [`HeavyBall`] starts its velocity (torchzero's `ema_init`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EmaInit {
    /// v₀ = u₁, so the first update is v₁ = (1 + m)·u₁ (torchzero's default, `ema_init="update"`).
    #[default]
    Update,
    /// v₀ = 0, so the first update is u₁ itself (`ema_init="zeros"`; what earlier zograd
    /// versions did).
    Zeros,
}

/// Heavy-ball momentum (Polyak; torchzero's `HeavyBall`): `v ← m·v + update; update ← v`, with
/// the velocity started at the first update (v₁ = (1 + m)·u₁, torchzero's default
/// `ema_init="update"`) or at zero ([`EmaInit::Zeros`]). One n-sized state buffer (two when a
/// later module evaluates the objective: the checkpoint of
/// [`Optimizer::checkpoints`](super::Optimizer::checkpoints)).
///
/// torchzero's `dampening`, `debias` and `lerp` options (all off by default) are not offered.
#[derive(Debug)]
pub struct HeavyBall {
    momentum: f32,
    init: EmaInit,
    velocity: Option<Params>,
    backup: Option<Params>,
    saved: Saved,
}

impl HeavyBall {
    /// Momentum `m` in [0, 1) (torchzero's default is 0.9), the velocity started at the first
    /// update ([`EmaInit::Update`]).
    #[must_use]
    pub fn new(momentum: f32) -> Self {
        Self {
            momentum,
            init: EmaInit::Update,
            velocity: None,
            backup: None,
            saved: Saved::Nothing,
        }
    }

    /// How the velocity starts (default [`EmaInit::Update`], as torchzero).
    #[must_use]
    pub fn ema_init(mut self, init: EmaInit) -> Self {
        self.init = init;
        self
    }
}

impl Default for HeavyBall {
    fn default() -> Self {
        Self::new(0.9)
    }
}

impl Transform for HeavyBall {
    fn name(&self) -> &'static str {
        "HeavyBall"
    }
    fn validate(&self) -> Result<()> {
        let m = self.momentum;
        check("momentum", m, (0.0..1.0).contains(&m), "in [0, 1)")
    }
    fn checkpoint(&mut self) -> Result<()> {
        self.saved = save(&self.velocity, &mut self.backup)?;
        Ok(())
    }
    fn rollback(&mut self) -> Result<()> {
        restore(
            std::mem::take(&mut self.saved),
            &mut self.velocity,
            &self.backup,
        )
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let fresh = self.velocity.is_none();
        let v = ensure_like(&mut self.velocity, ctx.update)?;
        if fresh && self.init == EmaInit::Update {
            copy(v, ctx.update)?;
        }
        heavy_ball(ctx.update, v, self.momentum)
    }
    fn state_bytes(&self) -> u64 {
        bytes(&self.velocity) + bytes(&self.backup)
    }
}

/// Adam (Kingma & Ba, 2015) with bias correction: `m ← β₁m + (1−β₁)u`,
/// `v ← β₂v + (1−β₂)u²`, `update ← m̂ / (√v̂ + ε)`. Follow it with [`Lr`]. Two n-sized
/// state buffers (four when a later module evaluates the objective: the checkpoints of
/// [`Optimizer::checkpoints`](super::Optimizer::checkpoints)).
///
/// Difference from torchzero's `Adam` (which is `torch.optim.Adam`'s): torchzero computes
/// `m·(√(1−β₂ᵗ)/(1−β₁ᵗ)) / (√v + ε)`, i.e. `m̂ / (√v̂ + ε/√(1−β₂ᵗ))`: its ε acts on the
/// uncorrected √v. The two agree unless √v̂ is within a few orders of magnitude of ε (updates
/// of size ~1e-8 and below). torchzero's `amsgrad` and `pow` options are not offered.
#[derive(Debug)]
pub struct Adam {
    beta1: f32,
    beta2: f32,
    eps: f32,
    t: u64,
    m: Option<Params>,
    v: Option<Params>,
    backup: [Option<Params>; 2],
    saved: (Saved, Saved, u64),
}

impl Adam {
    /// Adam with β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
    #[must_use]
    pub fn new() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: None,
            v: None,
            backup: [None, None],
            saved: (Saved::Nothing, Saved::Nothing, 0),
        }
    }

    /// β₁ in [0, 1).
    #[must_use]
    pub fn beta1(mut self, beta1: f32) -> Self {
        self.beta1 = beta1;
        self
    }

    /// β₂ in [0, 1).
    #[must_use]
    pub fn beta2(mut self, beta2: f32) -> Self {
        self.beta2 = beta2;
        self
    }

    /// ε > 0.
    #[must_use]
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
}

impl Default for Adam {
    fn default() -> Self {
        Self::new()
    }
}

impl Transform for Adam {
    fn name(&self) -> &'static str {
        "Adam"
    }
    fn validate(&self) -> Result<()> {
        check(
            "beta1",
            self.beta1,
            (0.0..1.0).contains(&self.beta1),
            "in [0, 1)",
        )?;
        check(
            "beta2",
            self.beta2,
            (0.0..1.0).contains(&self.beta2),
            "in [0, 1)",
        )?;
        check("eps", self.eps, self.eps > 0.0, "finite and positive")
    }
    fn checkpoint(&mut self) -> Result<()> {
        let [bm, bv] = &mut self.backup;
        self.saved = (save(&self.m, bm)?, save(&self.v, bv)?, self.t);
        Ok(())
    }
    fn rollback(&mut self) -> Result<()> {
        let (sm, sv, t) = std::mem::replace(&mut self.saved, (Saved::Nothing, Saved::Nothing, 0));
        if sm == Saved::Nothing {
            return Ok(());
        }
        let [bm, bv] = &self.backup;
        restore(sm, &mut self.m, bm)?;
        restore(sv, &mut self.v, bv)?;
        self.t = t;
        Ok(())
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        ensure_like(&mut self.m, ctx.update)?;
        ensure_like(&mut self.v, ctx.update)?;
        let (Some(m), Some(v)) = (self.m.as_mut(), self.v.as_mut()) else {
            unreachable!("both state buffers were just created");
        };
        adam(
            ctx.update,
            m,
            v,
            (self.beta1, self.beta2, self.eps),
            self.t + 1,
        )?;
        self.t += 1;
        Ok(())
    }
    fn state_bytes(&self) -> u64 {
        bytes(&self.m) + bytes(&self.v) + self.backup.iter().map(bytes).sum::<u64>()
    }
}

/// `update ← sign(update)` (ZO-SignSGD; Liu et al., 2019). Follow it with [`Lr`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sign;

impl Sign {
    /// The sign module.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Transform for Sign {
    fn name(&self) -> &'static str {
        "Sign"
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        sign(ctx.update)
    }
}

/// Weight decay as torchzero's `WeightDecay`: `update ← update + wd·x`, the gradient of the L2
/// penalty `wd/2·‖x‖²` added to the update. What it amounts to depends on where it stands in the
/// chain, as in torchzero:
///
/// - before an adaptive module (`WeightDecay → Adam → Lr`): coupled L2 regularisation (the
///   penalty's gradient is normalised by Adam with the loss's), i.e. Adam with `weight_decay`;
/// - after it (`Adam → WeightDecay → Lr`): decoupled weight decay, AdamW (Loshchilov & Hutter,
///   2019): `x ← x − lr·(adam + wd·x)`;
/// - after [`Lr`] (`Adam → Lr → WeightDecay`): decay not scaled by the learning rate,
///   `x ← (1 − wd)·x − lr·adam` (torchzero's "fully decoupled" example, and what its
///   `DirectWeightDecay` does to the parameters).
///
/// With plain SGD (`WeightDecay → Lr` or `Lr → WeightDecay`) coupled and decoupled are the same
/// up to the scale of wd. torchzero's `ord` (L1 and higher-order penalties) is not offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightDecay {
    wd: f32,
}

impl WeightDecay {
    /// Weight decay `wd ≥ 0`.
    #[must_use]
    pub fn new(wd: f32) -> Self {
        Self { wd }
    }
}

impl Transform for WeightDecay {
    fn name(&self) -> &'static str {
        "WeightDecay"
    }
    fn validate(&self) -> Result<()> {
        check(
            "weight_decay",
            self.wd,
            self.wd >= 0.0,
            "finite and non-negative",
        )
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        axpy(ctx.update, self.wd, ctx.params)
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::AddParams(self.wd))
    }
}

/// Clips the update's global norm (over all buffers): `update ← update · min(1, max/‖update‖)`.
/// Reads one scalar back per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipNorm {
    max: f32,
}

impl ClipNorm {
    /// The largest norm, finite and positive.
    #[must_use]
    pub fn new(max: f32) -> Self {
        Self { max }
    }
}

impl Transform for ClipNorm {
    fn name(&self) -> &'static str {
        "ClipNorm"
    }
    fn validate(&self) -> Result<()> {
        check("max_norm", self.max, self.max > 0.0, "finite and positive")
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let n = norm(ctx.update)?;
        if n > f64::from(self.max) {
            scale(ctx.update, (f64::from(self.max) / n) as f32)?;
        }
        Ok(())
    }
}
