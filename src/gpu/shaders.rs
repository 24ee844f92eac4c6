// SPDX-License-Identifier: MIT OR Apache-2.0
//! The only place that knows the shader files: each kernel family's WGSL source, with the shared
//! Philox code prepended where the family draws random numbers.

/// `shaders/philox.wgsl`: Philox4x32-10 and the distributions.
pub(crate) const PHILOX: &str = include_str!("../../shaders/philox.wgsl");
/// `shaders/common.wgsl`: the launch uniform and grid helpers every kernel uses.
pub(crate) const COMMON: &str = include_str!("../../shaders/common.wgsl");
/// `shaders/directions.wgsl`: the sparse-mask helpers of the direction kernels (after `COMMON`).
pub(crate) const DIRECTIONS: &str = include_str!("../../shaders/directions.wgsl");
/// `shaders/perturb.wgsl`: x += scale · z.
pub(crate) const PERTURB: &str = include_str!("../../shaders/perturb.wgsl");
/// `shaders/accumulate.wgsl`: g += Σ coeff · z over many samples in one pass.
pub(crate) const ACCUMULATE: &str = include_str!("../../shaders/accumulate.wgsl");
/// `shaders/elementwise.wgsl`: copy, axpy, scale.
pub(crate) const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
/// `shaders/optim.wgsl`: optimiser modules with state buffers (heavy ball, Adam).
pub(crate) const OPTIM: &str = include_str!("../../shaders/optim.wgsl");
/// `shaders/reduce.wgsl`: partial sums of squares (sphere norms, norms, dot products).
pub(crate) const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// `shaders/bounds.wgsl`: the projection onto box bounds.
pub(crate) const BOUNDS: &str = include_str!("../../shaders/bounds.wgsl");
/// `shaders/batch.wgsl`: the batch interface (bind group 1) of a `BatchObjective`'s shader.
pub(crate) const BATCH: &str = include_str!("../../shaders/batch.wgsl");
/// `shaders/testfns.wgsl`: the passes of `zograd::testfns` (after `PHILOX` and `BATCH`).
pub(crate) const TESTFNS: &str = include_str!("../../shaders/testfns.wgsl");
/// `shaders/mask.wgsl`: the magnitude mask (histogram of |x| per buffer, and the bits).
pub(crate) const MASK: &str = include_str!("../../shaders/mask.wgsl");

/// A kernel family: one shader module, several entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Perturb,
    Accumulate,
    Elementwise,
    Optim,
    Reduce,
    /// The magnitude mask of sparse directions: histogram and bits.
    Mask,
    /// Box bounds: the projection x ← clamp(x, lo, hi).
    Bounds,
}

impl Family {
    /// Every family, for validation tests.
    #[cfg(test)]
    pub(crate) const ALL: [Family; 7] = [
        Family::Perturb,
        Family::Accumulate,
        Family::Elementwise,
        Family::Optim,
        Family::Reduce,
        Family::Mask,
        Family::Bounds,
    ];

    /// The complete WGSL source of the family's module.
    pub(crate) fn source(self) -> String {
        let (needs_philox, body) = match self {
            Family::Perturb => (true, PERTURB),
            Family::Accumulate => (true, ACCUMULATE),
            Family::Elementwise => (false, ELEMENTWISE),
            Family::Optim => (false, OPTIM),
            Family::Reduce => (true, REDUCE),
            Family::Mask => (false, MASK),
            Family::Bounds => (false, BOUNDS),
        };
        let mut src =
            String::with_capacity(PHILOX.len() + COMMON.len() + DIRECTIONS.len() + body.len() + 3);
        if needs_philox {
            src.push_str(PHILOX);
            src.push('\n');
        }
        src.push_str(COMMON);
        src.push('\n');
        if matches!(self, Family::Perturb | Family::Accumulate) {
            src.push_str(DIRECTIONS);
            src.push('\n');
        }
        src.push_str(body);
        src
    }

    /// The label of the family's shader module.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Family::Perturb => "zograd::perturb",
            Family::Accumulate => "zograd::accumulate",
            Family::Elementwise => "zograd::elementwise",
            Family::Optim => "zograd::optim",
            Family::Reduce => "zograd::reduce",
            Family::Mask => "zograd::mask",
            Family::Bounds => "zograd::bounds",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Family;

    /// Every shader module parses and validates with naga, without a GPU.
    #[test]
    fn every_shader_validates_with_naga() {
        for family in Family::ALL {
            let src = family.source();
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{}: {}", family.label(), e.emit_to_string(&src)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::default(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", family.label(), e.emit_to_string(&src)));
        }
    }

    /// The exported Philox source validates on its own, as a user's shader would include it.
    #[test]
    fn exported_philox_validates() {
        let src = format!(
            "{}\n@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
             @compute @workgroup_size(1) fn main() {{ out[0] = zograd_z(1u, vec2<u32>(1u, 2u), 3u, 4u, vec2<u32>(5u, 0u)); }}",
            super::PHILOX
        );
        let module = naga::front::wgsl::parse_str(&src).expect("parse");
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .expect("validate");
    }
}
