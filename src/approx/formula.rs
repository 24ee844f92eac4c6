// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Formula`]: the finite-difference stencils, in ONE coefficient table shared by every
//! estimator.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A finite-difference formula for the directional derivative `D ≈ ∇f(x)·u` from values
/// `f_k = f(x + k·h·u)` (ARCHITECTURE.md, "Formula table"; torchzero's `_FD_Formula`).
///
/// | variant | torchzero names | D | points (in order) |
/// |---|---|---|---|
/// | [`Forward`](Formula::Forward) | `forward`, `forward2` | (f₁ − f₀)/h | f₀, f₁ |
/// | [`Backward`](Formula::Backward) | `backward`, `backward2` | (f₀ − f₋₁)/h | f₀, f₋₁ |
/// | [`Central`](Formula::Central) | `central`, `central2`, `central3`, `fd_central` | (f₁ − f₋₁)/(2h) | f₁, f₋₁ |
/// | [`Forward3`](Formula::Forward3) | `forward3` | (−3f₀ + 4f₁ − f₂)/(2h) | f₀, f₁, f₂ |
/// | [`Backward3`](Formula::Backward3) | `backward3` | (f₋₂ − 4f₋₁ + 3f₀)/(2h) | f₀, f₋₁, f₋₂ |
/// | [`Central4`](Formula::Central4) | `central4` | (f₋₂ − 8f₋₁ + 8f₁ − f₂)/(12h) | f₁, f₂, f₋₁, f₋₂ |
/// | [`Forward4`](Formula::Forward4) | `forward4` | (2f₃ − 9f₂ + 18f₁ − 11f₀)/(6h) | f₀, f₁, f₂, f₃ |
/// | [`Forward5`](Formula::Forward5) | `forward5` | (−3f₄ + 16f₃ − 36f₂ + 48f₁ − 25f₀)/(12h) | f₀ … f₄ |
///
/// f₀ is evaluated once per `approximate` call and shared by all samples / elements. The
/// in-place sequence on x visits the [`offsets`](Formula::offsets) in order and returns to 0
/// (e.g. Central4: +hu, eval, +hu, eval, −3hu, eval, −hu, eval, +2hu).
///
/// `loss` (f(x) itself) is known only to formulas that evaluate f₀; `loss_approx` is f₀ for
/// those and the first perturbed value f₁ (of the last sample or element) for Central and
/// Central4, as in torchzero.
///
/// Reference: B. Fornberg, "Generation of finite difference formulas on arbitrarily spaced
/// grids", Math. Comp. 51 (1988) — the one-sided and central stencils above.
///
/// ```
/// use zograd::approx::Formula;
/// let f: Formula = "central2".parse()?;
/// assert_eq!(f, Formula::Central);
/// assert_eq!(f.offsets(), &[1, -1]);
/// // D for f(x) = x² at x = 1 with h = 0.5: (1.5² − 0.5²)/1 = 2
/// assert_eq!(f.combine(None, &[2.25, 0.25], 0.5)?, 2.0);
/// # Ok::<(), zograd::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Formula {
    /// (f₁ − f₀)/h, first order.
    Forward,
    /// (f₀ − f₋₁)/h, first order.
    Backward,
    /// (f₁ − f₋₁)/(2h), second order; torchzero's default.
    #[default]
    Central,
    /// (−3f₀ + 4f₁ − f₂)/(2h), second order, one-sided.
    Forward3,
    /// (f₋₂ − 4f₋₁ + 3f₀)/(2h), second order, one-sided.
    Backward3,
    /// (f₋₂ − 8f₋₁ + 8f₁ − f₂)/(12h), fourth order.
    Central4,
    /// (2f₃ − 9f₂ + 18f₁ − 11f₀)/(6h), third order, one-sided.
    Forward4,
    /// (−3f₄ + 16f₃ − 36f₂ + 48f₁ − 25f₀)/(12h), fourth order, one-sided.
    Forward5,
}

/// One row of the coefficient table.
struct Stencil {
    formula: Formula,
    names: &'static [&'static str],
    /// The multiples k of h·u evaluated, in evaluation order (0 excluded).
    offsets: &'static [i32],
    /// The weight of f_k for each offset, over `denominator`.
    weights: &'static [i32],
    /// The weight of f₀ (0: f₀ is not evaluated).
    f0_weight: i32,
    denominator: i32,
    order: u32,
    /// The root r of the automatic step h = ε^(1/r) ([`Formula::auto_h`]): order + 1.
    auto_h_root: u32,
    /// The formula of the same order whose points lie on one side of x (itself for one-sided
    /// formulas), used by `Fdm` next to a bound; mirrored (h → −h) for the other side.
    one_sided: Formula,
}

/// THE coefficient table: every estimator takes its offsets and weights from here.
const TABLE: [Stencil; 8] = [
    Stencil {
        formula: Formula::Forward,
        names: &["forward", "forward2"],
        offsets: &[1],
        weights: &[1],
        f0_weight: -1,
        denominator: 1,
        order: 1,
        auto_h_root: 2,
        one_sided: Formula::Forward,
    },
    Stencil {
        formula: Formula::Backward,
        names: &["backward", "backward2"],
        offsets: &[-1],
        weights: &[-1],
        f0_weight: 1,
        denominator: 1,
        order: 1,
        auto_h_root: 2,
        one_sided: Formula::Backward,
    },
    Stencil {
        formula: Formula::Central,
        names: &["central", "central2", "central3", "fd_central"],
        offsets: &[1, -1],
        weights: &[1, -1],
        f0_weight: 0,
        denominator: 2,
        order: 2,
        auto_h_root: 3,
        one_sided: Formula::Forward3,
    },
    Stencil {
        formula: Formula::Forward3,
        names: &["forward3"],
        offsets: &[1, 2],
        weights: &[4, -1],
        f0_weight: -3,
        denominator: 2,
        order: 2,
        auto_h_root: 3,
        one_sided: Formula::Forward3,
    },
    Stencil {
        formula: Formula::Backward3,
        names: &["backward3"],
        offsets: &[-1, -2],
        weights: &[-4, 1],
        f0_weight: 3,
        denominator: 2,
        order: 2,
        auto_h_root: 3,
        one_sided: Formula::Backward3,
    },
    Stencil {
        formula: Formula::Central4,
        names: &["central4"],
        offsets: &[1, 2, -1, -2],
        weights: &[8, -1, -8, 1],
        f0_weight: 0,
        denominator: 12,
        order: 4,
        auto_h_root: 5,
        one_sided: Formula::Forward5,
    },
    Stencil {
        formula: Formula::Forward4,
        names: &["forward4"],
        offsets: &[1, 2, 3],
        weights: &[18, -9, 2],
        f0_weight: -11,
        denominator: 6,
        order: 3,
        auto_h_root: 4,
        one_sided: Formula::Forward4,
    },
    Stencil {
        formula: Formula::Forward5,
        names: &["forward5"],
        offsets: &[1, 2, 3, 4],
        weights: &[48, -36, 16, -3],
        f0_weight: -25,
        denominator: 12,
        order: 4,
        auto_h_root: 5,
        one_sided: Formula::Forward5,
    },
];

impl Formula {
    /// Every variant, in table order.
    pub const ALL: [Formula; 8] = [
        Formula::Forward,
        Formula::Backward,
        Formula::Central,
        Formula::Forward3,
        Formula::Backward3,
        Formula::Central4,
        Formula::Forward4,
        Formula::Forward5,
    ];

    fn stencil(self) -> &'static Stencil {
        let s = &TABLE[self as usize];
        debug_assert_eq!(s.formula, self);
        s
    }

    /// torchzero's canonical name (`forward`, `backward`, `central`, `forward3`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        self.stencil().names[0]
    }

    /// Every name [`FromStr`] accepts for this variant (torchzero's names and aliases).
    #[must_use]
    pub fn names(self) -> &'static [&'static str] {
        self.stencil().names
    }

    /// The multiples k of `h·u` at which f is evaluated, in evaluation order (f₀ excluded).
    #[must_use]
    pub fn offsets(self) -> &'static [i32] {
        self.stencil().offsets
    }

    /// The integer weight of each f_k in [`offsets`](Formula::offsets) order; D is
    /// `(f0_weight·f₀ + Σ weight_k·f_k) / (denominator·h)`.
    #[must_use]
    pub fn weights(self) -> &'static [i32] {
        self.stencil().weights
    }

    /// The integer weight of f₀ (0 for Central and Central4, which never evaluate f₀).
    #[must_use]
    pub fn f0_weight(self) -> i32 {
        self.stencil().f0_weight
    }

    /// The integer denominator multiplying h.
    #[must_use]
    pub fn denominator(self) -> i32 {
        self.stencil().denominator
    }

    /// The order of accuracy p: the truncation error is O(hᵖ).
    #[must_use]
    pub fn order(self) -> u32 {
        self.stencil().order
    }

    /// The automatic finite-difference step of this formula for f32 arithmetic,
    /// h* = ε^(1/(p+1)) with ε = [`f32::EPSILON`] = 2⁻²³ and p the [`order`](Formula::order)
    /// (the root p + 1 is a column of the formula table):
    ///
    /// | formulas | p | h* |
    /// |---|---|---|
    /// | Forward, Backward | 1 | √ε ≈ 3.45e-4 |
    /// | Central, Forward3, Backward3 | 2 | ∛ε ≈ 4.92e-3 |
    /// | Forward4 | 3 | ε^(1/4) ≈ 1.86e-2 |
    /// | Central4, Forward5 | 4 | ε^(1/5) ≈ 4.12e-2 |
    ///
    /// Why: the estimate's error is the truncation C·hᵖ (C ∝ |f⁽ᵖ⁺¹⁾|) plus the rounding of the
    /// loss values, ≈ ε·|f|/h; their sum is smallest where the two balance, at
    /// h* ∝ (ε·|f|/|f⁽ᵖ⁺¹⁾|)^(1/(p+1)), i.e. ε^(1/(p+1)) for a function whose value and derivatives
    /// are of the size of x's scale (Nocedal & Wright §8.1; scipy's `approx_derivative` uses the
    /// same exponents with f64's ε). Meant together with relative steps
    /// (`Fdm::relative_step`), which supply the scale max(1, |xᵢ|).
    #[must_use]
    pub fn auto_h(self) -> f32 {
        f64::from(f32::EPSILON).powf(1.0 / f64::from(self.stencil().auto_h_root)) as f32
    }

    /// The root r of [`auto_h`](Formula::auto_h) = ε^(1/r) (r = order + 1).
    #[must_use]
    pub fn auto_h_root(self) -> u32 {
        self.stencil().auto_h_root
    }

    /// The formula of the same order whose points all lie on one side of x, forward (offsets
    /// ≥ 0): Central → Forward3, Central4 → Forward5, a one-sided formula itself. `Fdm` uses it
    /// next to a bound, mirrored (every offset and h negated) for the backward side.
    #[must_use]
    pub fn one_sided(self) -> Formula {
        self.stencil().one_sided
    }

    /// Whether the formula evaluates f₀ = f(x) (then `loss` is known).
    #[must_use]
    pub fn uses_f0(self) -> bool {
        self.stencil().f0_weight != 0
    }

    /// Evaluations for `directions` directional derivatives (elements for Fdm, samples for the
    /// random estimators) when f₀ is not known beforehand: `points·directions (+ 1 for f₀)`,
    /// saturating at `u32::MAX`.
    #[must_use]
    pub fn evaluations(self, directions: u64) -> u32 {
        let m = self.offsets().len() as u64;
        let total = m.saturating_mul(directions) + u64::from(self.uses_f0());
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// D from f₀ (ignored unless [`uses_f0`](Formula::uses_f0)) and the values at
    /// [`offsets`](Formula::offsets), in f64: `(f0_weight·f₀ + Σ weight_k·f_k) / (denominator·h)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `values` when it does not hold one value per offset,
    /// or `f0` when the formula uses f₀ and it is `None`, or `h` when it is not finite and
    /// positive.
    pub fn combine(self, f0: Option<f64>, values: &[f64], h: f64) -> Result<f64, Error> {
        if !(h.is_finite() && h > 0.0) {
            return Err(Error::invalid(format!(
                "h: must be finite and positive, got {h}"
            )));
        }
        let s = self.stencil();
        if values.len() != s.offsets.len() {
            return Err(Error::invalid(format!(
                "values: {} needs one value per offset ({}), got {}",
                self.name(),
                s.offsets.len(),
                values.len()
            )));
        }
        let mut num: f64 = s
            .weights
            .iter()
            .zip(values)
            .map(|(w, f)| f64::from(*w) * f)
            .sum();
        if s.f0_weight != 0 {
            let Some(f0) = f0 else {
                return Err(Error::invalid(format!(
                    "f0: {} uses f(x), got None",
                    self.name()
                )));
            };
            num += f64::from(s.f0_weight) * f0;
        }
        Ok(num / (f64::from(s.denominator) * h))
    }

    /// The index into the offsets whose value is `loss_approx` when f₀ is not evaluated (the
    /// first point, f₁).
    pub(crate) fn approx_point(self) -> usize {
        0
    }
}

impl fmt::Display for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Formula {
    type Err = Error;

    /// Accepts torchzero's names and aliases (case-insensitive): `forward`, `forward2`,
    /// `backward`, `backward2`, `central`, `central2`, `central3`, `fd_central`, `forward3`,
    /// `backward3`, `central4`, `forward4`, `forward5`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let key = s.trim().to_ascii_lowercase();
        TABLE
            .iter()
            .find(|row| row.names.contains(&key.as_str()))
            .map(|row| row.formula)
            .ok_or_else(|| {
                let all: Vec<&str> = TABLE.iter().flat_map(|r| r.names.iter().copied()).collect();
                Error::InvalidArgument(format!(
                    "formula: unknown name {s:?} (expected one of {})",
                    all.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_in_variant_order_and_consistent() {
        for (i, f) in Formula::ALL.iter().enumerate() {
            let s = &TABLE[i];
            assert_eq!(s.formula, *f);
            assert_eq!(s.offsets.len(), s.weights.len());
            // Σ weights = 0 (exact on constants), Σ k·w = denominator (exact on linear functions).
            let sum: i32 = s.weights.iter().sum::<i32>() + s.f0_weight;
            assert_eq!(sum, 0, "{f}");
            let first: i32 = s.offsets.iter().zip(s.weights).map(|(k, w)| k * w).sum();
            assert_eq!(first, s.denominator, "{f}");
        }
    }

    #[test]
    fn auto_h_roots_and_one_sided_partners_follow_the_order() {
        for f in Formula::ALL {
            assert_eq!(f.auto_h_root(), f.order() + 1, "{f}");
            let o = f.one_sided();
            assert_eq!(o.order(), f.order(), "{f}");
            let (lo, hi) = (o.offsets().iter().min(), o.offsets().iter().max());
            assert!(
                lo.is_some_and(|k| *k >= 0) || hi.is_some_and(|k| *k <= 0),
                "{f}"
            );
        }
        // ε^(1/2), ε^(1/3), ε^(1/5) of f32 (scipy's exponents).
        assert!((Formula::Forward.auto_h() - 3.4527e-4).abs() < 1e-7);
        assert!((Formula::Central.auto_h() - 4.9216e-3).abs() < 1e-6);
        assert!((Formula::Central4.auto_h() - 4.1235e-2).abs() < 1e-5);
    }

    #[test]
    fn stencils_have_their_order_of_accuracy() {
        // Σ k^j·w = 0 for 2 ≤ j ≤ order: exact on polynomials of degree `order`.
        for f in Formula::ALL {
            let s = f.stencil();
            for j in 2..=s.order {
                let m: i64 = s
                    .offsets
                    .iter()
                    .zip(s.weights)
                    .map(|(k, w)| i64::from(*k).pow(j) * i64::from(*w))
                    .sum();
                assert_eq!(m, 0, "{f}: moment {j}");
            }
        }
    }
}
