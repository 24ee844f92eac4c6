// SPDX-License-Identifier: MIT OR Apache-2.0
//! The elementwise modules: learning rate, momentum, Adam, sign, weight decay, norm clipping.

use serde_json::json;

use super::checkpoint::check_module;
use super::{ensure_like, Context, Fusion, Schedule, Transform};
use crate::checkpoint::{flat, unflat, State};
use crate::kernels::{adam, axpy, copy, heavy_ball, norm, scale, sign};
use crate::{Error, Gpu, Params, Result};

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

/// The learning rate: `update ← lr · update` (torchzero's `LR`); the rate may follow a
/// [`Schedule`] of the optimiser's step ([`Lr::scheduled`]) with a linear warm-up
/// ([`Lr::warm_up`]), also on the fused MeZO path (a scalar per step, no buffer). The schedule's
/// position is the optimiser's step counter, so a checkpoint resumes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lr {
    lr: f32,
    schedule: Option<Schedule>,
    warm_up: u64,
}

impl Lr {
    /// A learning rate; it must be finite and positive (checked at each step).
    #[must_use]
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            schedule: None,
            warm_up: 0,
        }
    }

    /// A learning rate that follows `schedule` (checked at each step).
    #[must_use]
    pub fn scheduled(schedule: Schedule) -> Self {
        Self {
            lr: 1.0,
            schedule: Some(schedule),
            warm_up: 0,
        }
    }

    /// A linear warm-up over the first `steps` steps: step k ≤ `steps` uses
    /// `k/(steps + 1)` times the rate (default 0: none).
    #[must_use]
    pub fn warm_up(mut self, steps: u64) -> Self {
        self.warm_up = steps;
        self
    }

    /// The rate of step `step` (from 1), warm-up included.
    #[must_use]
    pub fn value(&self, step: u64) -> f32 {
        let base = self.schedule.map_or(f64::from(self.lr), |s| s.value(step));
        let k = step.max(1);
        let w = if k <= self.warm_up {
            k as f64 / (self.warm_up + 1) as f64
        } else {
            1.0
        };
        (base * w) as f32
    }

    fn config(&self) -> serde_json::Value {
        match self.schedule {
            None if self.warm_up == 0 => json!({ "lr": self.lr }),
            s => json!({ "lr": self.lr, "schedule": format!("{s:?}"), "warm_up": self.warm_up }),
        }
    }
}

impl Transform for Lr {
    fn save_state(&self) -> Result<Option<State>> {
        Ok(Some(State::new("Lr", self.config())))
    }
    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        check_module("Lr", &self.config(), state)
    }
    fn name(&self) -> &'static str {
        "Lr"
    }
    fn validate(&self) -> Result<()> {
        match self.schedule {
            Some(s) => s.validate(),
            None => check("lr", self.lr, self.lr > 0.0, "finite and positive"),
        }
    }
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        scale(ctx.update, self.value(ctx.step))
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Scale(self.lr))
    }
    fn fusion_at(&self, step: u64) -> Option<Fusion> {
        Some(Fusion::Scale(self.value(step)))
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

impl HeavyBall {
    fn config(&self) -> serde_json::Value {
        json!({ "momentum": self.momentum, "ema_init": format!("{:?}", self.init) })
    }
}

impl Default for HeavyBall {
    fn default() -> Self {
        Self::new(0.9)
    }
}

impl Transform for HeavyBall {
    /// The momentum and the velocity (tensor `velocity`, absent before the first step).
    fn save_state(&self) -> Result<Option<State>> {
        let mut st = State::new("HeavyBall", self.config());
        if let Some(v) = flat(&self.velocity)? {
            st.tensors.push(("velocity".into(), v));
        }
        Ok(Some(st))
    }
    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        check_module("HeavyBall", &self.config(), state)?;
        let velocity = state
            .tensor("velocity")
            .map(|v| unflat(gpu, shape, v, "velocity"))
            .transpose()?;
        self.velocity = velocity;
        self.saved = Saved::Nothing;
        Ok(())
    }
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

impl Adam {
    fn config(&self) -> serde_json::Value {
        json!({ "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps })
    }
}

impl Default for Adam {
    fn default() -> Self {
        Self::new()
    }
}

impl Transform for Adam {
    /// β₁, β₂, ε, the step count t and the moments (tensors `m`, `v`).
    fn save_state(&self) -> Result<Option<State>> {
        let mut st = State::new("Adam", self.config());
        st.counters = json!({ "t": self.t });
        if let (Some(m), Some(v)) = (flat(&self.m)?, flat(&self.v)?) {
            st.tensors.push(("m".into(), m));
            st.tensors.push(("v".into(), v));
        }
        Ok(Some(st))
    }
    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        check_module("Adam", &self.config(), state)?;
        let t = state.counter_u64("t")?;
        let m = state
            .tensor("m")
            .map(|d| unflat(gpu, shape, d, "m"))
            .transpose()?;
        let v = state
            .tensor("v")
            .map(|d| unflat(gpu, shape, d, "v"))
            .transpose()?;
        if m.is_some() != v.is_some() {
            return Err(Error::invalid(
                "checkpoint: Adam has one of its moments `m`, `v` without the other",
            ));
        }
        self.t = t;
        self.m = m;
        self.v = v;
        self.saved = (Saved::Nothing, Saved::Nothing, 0);
        Ok(())
    }
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
    fn save_state(&self) -> Result<Option<State>> {
        Ok(Some(State::new("Sign", json!({}))))
    }
    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        check_module("Sign", &json!({}), state)
    }
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
    fn save_state(&self) -> Result<Option<State>> {
        Ok(Some(State::new(
            "WeightDecay",
            json!({ "weight_decay": self.wd }),
        )))
    }
    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        check_module("WeightDecay", &json!({ "weight_decay": self.wd }), state)
    }
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
    fn save_state(&self) -> Result<Option<State>> {
        Ok(Some(State::new(
            "ClipNorm",
            json!({ "max_norm": self.max }),
        )))
    }
    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        check_module("ClipNorm", &json!({ "max_norm": self.max }), state)
    }
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
