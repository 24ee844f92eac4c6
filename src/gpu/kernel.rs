// SPDX-License-Identifier: MIT OR Apache-2.0
//! The kernels zograd launches and their facts — shader family, entry point, binding layout,
//! pipeline constants, workgroup shape — in ONE table, [`KERNELS`].
//!
//! This file depends on nothing but [`Family`], so that `tests/translate.rs` can include it and
//! translate exactly the kernels listed here.

use super::shaders::Family;

/// Every compute kernel zograd launches; [`Kernel::spec`] gives its row of [`KERNELS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    PerturbRademacher,
    PerturbQuad,
    AccumulateRademacher,
    AccumulateQuad,
    /// `x ← a·x + Σ c z`: the accumulate entry points built with `ZOGRAD_SCALED = true`.
    ScaleAccumulateRademacher,
    ScaleAccumulateQuad,
    Copy,
    Axpy,
    Scale,
    Fill,
    Sign,
    HeavyBall,
    Adam,
    SphereSumsq,
    Dot,
    /// `y ← y + w·(x − y)`: the running mean of iterate averaging.
    Lerp,
    /// The kernels that move parameters with per-element scales (`Params::set_scales`): the
    /// scales at the last storage binding, bound over the same range as the destination.
    PerturbRademacherScaled,
    PerturbQuadScaled,
    AccumulateRademacherScaled,
    AccumulateQuadScaled,
    AxpyScaled,
    /// Sparse directions (`kernels::Mask` with a density below 1): the direction kernels above
    /// built with `ZOGRAD_MASKED = true`, in the same order.
    PerturbRademacherMasked,
    PerturbQuadMasked,
    AccumulateRademacherMasked,
    AccumulateQuadMasked,
    ScaleAccumulateRademacherMasked,
    ScaleAccumulateQuadMasked,
    PerturbRademacherScaledMasked,
    PerturbQuadScaledMasked,
    AccumulateRademacherScaledMasked,
    AccumulateQuadScaledMasked,
    /// The magnitude mask (`shaders/mask.wgsl`): the histogram of |x| per buffer, and the bits.
    MagnitudeHistogram,
    MagnitudeBits,
    /// Magnitude-masked directions: the mask's bits bound entire after the other bindings
    /// (built with `ZOGRAD_MASKED = true`, so a sparse density applies too).
    PerturbRademacherBits,
    PerturbQuadBits,
    AccumulateRademacherBits,
    AccumulateQuadBits,
    ScaleAccumulateRademacherBits,
    ScaleAccumulateQuadBits,
    /// `x ← clamp(x, lo, hi)`: the box bounds of `Params::set_bounds`.
    Project,
}

/// The binding shapes: a dynamic-offset uniform at binding 0, then one read-write storage
/// buffer and zero, one or two more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LayoutKind {
    /// uniform, rw
    One,
    /// uniform, rw, ro
    Two,
    /// uniform, rw, ro, ro
    Three,
    /// uniform, rw, rw
    TwoRw,
    /// uniform, rw, rw, rw
    ThreeRw,
}

impl LayoutKind {
    /// Every layout, in the order of the device's layout arrays.
    pub(crate) const ALL: [LayoutKind; 5] = [
        LayoutKind::One,
        LayoutKind::Two,
        LayoutKind::Three,
        LayoutKind::TwoRw,
        LayoutKind::ThreeRw,
    ];

    /// Whether the bindings after binding 1 are read-only.
    pub(crate) fn read_only(self) -> bool {
        !matches!(self, LayoutKind::TwoRw | LayoutKind::ThreeRw)
    }

    /// The number of storage bindings after binding 1.
    pub(crate) fn extra(self) -> usize {
        match self {
            LayoutKind::One => 0,
            LayoutKind::Two | LayoutKind::TwoRw => 1,
            LayoutKind::Three | LayoutKind::ThreeRw => 2,
        }
    }

    /// The position of the layout in [`LayoutKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The facts of one kernel.
#[derive(Debug)]
pub(crate) struct KernelSpec {
    /// The kernel this row describes (the row's index is `kernel as usize`).
    pub kernel: Kernel,
    /// The shader module the entry point lives in.
    pub family: Family,
    /// The WGSL entry point.
    pub entry: &'static str,
    /// The bind-group layout.
    pub layout: LayoutKind,
    /// The pipeline-overridable constants the kernel is built with.
    pub constants: &'static [(&'static str, f64)],
    /// Elements one workgroup covers, which fixes the grid.
    pub per_group: u64,
    /// The threads own aligned Philox words or blocks of this many elements: a launch starts at
    /// the boundary before its chunk (1: elementwise, no lead).
    pub align: u64,
}

const SCALED: &[(&str, f64)] = &[("ZOGRAD_SCALED", 1.0)];
const MASKED: &[(&str, f64)] = &[("ZOGRAD_MASKED", 1.0)];
const SCALED_MASKED: &[(&str, f64)] = &[("ZOGRAD_SCALED", 1.0), ("ZOGRAD_MASKED", 1.0)];

const fn row(
    kernel: Kernel,
    family: Family,
    entry: &'static str,
    layout: LayoutKind,
    per_group: u64,
    align: u64,
) -> KernelSpec {
    KernelSpec {
        kernel,
        family,
        entry,
        layout,
        constants: &[],
        per_group,
        align,
    }
}

/// The table, one row per [`Kernel`] in declaration order. Workgroups: the Rademacher perturb
/// owns a tile of 32768 elements (256 threads × one Philox block of 128), the Rademacher
/// accumulate 256 threads of 64 elements (two Philox words each), the dot product 256 threads of 64 elements
/// (`DOT_PER_THREAD` in `shaders/reduce.wgsl`), quad kernels 256 blocks of 4, elementwise
/// kernels and the sphere norms 1024 elements. The masked rows (sparse directions) and `_bits` rows
/// (magnitude mask) share the shapes of the rows they mask; the magnitude histogram covers 256
/// elements per workgroup, the mask bits 8192 (256 threads × one 32-bit word); the projection
/// onto the bounds 1024 elements.
pub(crate) const KERNELS: [KernelSpec; 40] = {
    use Family as F;
    use Kernel as K;
    use LayoutKind as L;
    [
        row(
            K::PerturbRademacher,
            F::Perturb,
            "perturb_rademacher",
            L::One,
            32768,
            128,
        ),
        row(K::PerturbQuad, F::Perturb, "perturb_quad", L::One, 1024, 4),
        row(
            K::AccumulateRademacher,
            F::Accumulate,
            "accumulate_rademacher",
            L::Two,
            16384,
            64,
        ),
        row(
            K::AccumulateQuad,
            F::Accumulate,
            "accumulate_quad",
            L::Two,
            1024,
            4,
        ),
        KernelSpec {
            constants: SCALED,
            ..row(
                K::ScaleAccumulateRademacher,
                F::Accumulate,
                "accumulate_rademacher",
                L::Two,
                16384,
                64,
            )
        },
        KernelSpec {
            constants: SCALED,
            ..row(
                K::ScaleAccumulateQuad,
                F::Accumulate,
                "accumulate_quad",
                L::Two,
                1024,
                4,
            )
        },
        row(K::Copy, F::Elementwise, "copy", L::Two, 1024, 1),
        row(K::Axpy, F::Elementwise, "axpy", L::Two, 1024, 1),
        row(K::Scale, F::Elementwise, "scale", L::One, 1024, 1),
        row(K::Fill, F::Elementwise, "fill", L::One, 1024, 1),
        row(K::Sign, F::Elementwise, "sign_update", L::One, 1024, 1),
        row(K::HeavyBall, F::Optim, "heavy_ball", L::TwoRw, 1024, 1),
        row(K::Adam, F::Optim, "adam", L::ThreeRw, 1024, 1),
        row(K::SphereSumsq, F::Reduce, "sphere_sumsq", L::One, 1024, 4),
        row(K::Dot, F::Reduce, "dot_product", L::Three, 16384, 1),
        row(K::Lerp, F::Elementwise, "lerp", L::Two, 1024, 1),
        row(
            K::PerturbRademacherScaled,
            F::Perturb,
            "perturb_rademacher_scaled",
            L::Two,
            32768,
            128,
        ),
        row(
            K::PerturbQuadScaled,
            F::Perturb,
            "perturb_quad_scaled",
            L::Two,
            1024,
            4,
        ),
        row(
            K::AccumulateRademacherScaled,
            F::Accumulate,
            "accumulate_rademacher_scaled",
            L::Three,
            16384,
            64,
        ),
        row(
            K::AccumulateQuadScaled,
            F::Accumulate,
            "accumulate_quad_scaled",
            L::Three,
            1024,
            4,
        ),
        row(
            K::AxpyScaled,
            F::Elementwise,
            "axpy_scaled",
            L::Three,
            1024,
            1,
        ),
        KernelSpec {
            constants: MASKED,
            ..row(
                K::PerturbRademacherMasked,
                F::Perturb,
                "perturb_rademacher",
                L::One,
                32768,
                128,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::PerturbQuadMasked,
                F::Perturb,
                "perturb_quad",
                L::One,
                1024,
                4,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::AccumulateRademacherMasked,
                F::Accumulate,
                "accumulate_rademacher",
                L::Two,
                16384,
                64,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::AccumulateQuadMasked,
                F::Accumulate,
                "accumulate_quad",
                L::Two,
                1024,
                4,
            )
        },
        KernelSpec {
            constants: SCALED_MASKED,
            ..row(
                K::ScaleAccumulateRademacherMasked,
                F::Accumulate,
                "accumulate_rademacher",
                L::Two,
                16384,
                64,
            )
        },
        KernelSpec {
            constants: SCALED_MASKED,
            ..row(
                K::ScaleAccumulateQuadMasked,
                F::Accumulate,
                "accumulate_quad",
                L::Two,
                1024,
                4,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::PerturbRademacherScaledMasked,
                F::Perturb,
                "perturb_rademacher_scaled",
                L::Two,
                32768,
                128,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::PerturbQuadScaledMasked,
                F::Perturb,
                "perturb_quad_scaled",
                L::Two,
                1024,
                4,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::AccumulateRademacherScaledMasked,
                F::Accumulate,
                "accumulate_rademacher_scaled",
                L::Three,
                16384,
                64,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::AccumulateQuadScaledMasked,
                F::Accumulate,
                "accumulate_quad_scaled",
                L::Three,
                1024,
                4,
            )
        },
        row(
            K::MagnitudeHistogram,
            F::Mask,
            "magnitude_histogram",
            L::TwoRw,
            256,
            1,
        ),
        row(
            K::MagnitudeBits,
            F::Mask,
            "magnitude_bits",
            L::TwoRw,
            8192,
            32,
        ),
        KernelSpec {
            constants: MASKED,
            ..row(
                K::PerturbRademacherBits,
                F::Perturb,
                "perturb_rademacher_bits",
                L::Two,
                32768,
                128,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::PerturbQuadBits,
                F::Perturb,
                "perturb_quad_bits",
                L::Two,
                1024,
                4,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::AccumulateRademacherBits,
                F::Accumulate,
                "accumulate_rademacher_bits",
                L::Three,
                16384,
                64,
            )
        },
        KernelSpec {
            constants: MASKED,
            ..row(
                K::AccumulateQuadBits,
                F::Accumulate,
                "accumulate_quad_bits",
                L::Three,
                1024,
                4,
            )
        },
        KernelSpec {
            constants: SCALED_MASKED,
            ..row(
                K::ScaleAccumulateRademacherBits,
                F::Accumulate,
                "accumulate_rademacher_bits",
                L::Three,
                16384,
                64,
            )
        },
        KernelSpec {
            constants: SCALED_MASKED,
            ..row(
                K::ScaleAccumulateQuadBits,
                F::Accumulate,
                "accumulate_quad_bits",
                L::Three,
                1024,
                4,
            )
        },
        row(K::Project, F::Bounds, "project", L::Three, 1024, 1),
    ]
};

impl Kernel {
    /// The kernel's row of [`KERNELS`].
    pub(crate) fn spec(self) -> &'static KernelSpec {
        let spec = &KERNELS[self as usize];
        debug_assert_eq!(spec.kernel, self, "KERNELS is in declaration order");
        spec
    }

    pub(crate) fn family(self) -> Family {
        self.spec().family
    }

    pub(crate) fn entry(self) -> &'static str {
        self.spec().entry
    }

    pub(crate) fn constants(self) -> &'static [(&'static str, f64)] {
        self.spec().constants
    }

    pub(crate) fn layout(self) -> LayoutKind {
        self.spec().layout
    }

    pub(crate) fn elements_per_group(self) -> u64 {
        self.spec().per_group
    }

    /// How many elements before the chunk's start the kernel's first thread begins, given the
    /// chunk's global start.
    pub(crate) fn lead(self, gbase: u64) -> u64 {
        gbase % self.spec().align
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row k of the table describes the kernel whose discriminant is k, and each layout sits at
    /// its own index.
    #[test]
    fn the_table_is_in_declaration_order() {
        for (k, spec) in KERNELS.iter().enumerate() {
            assert_eq!(spec.kernel as usize, k, "{:?}", spec.kernel);
        }
        for (k, layout) in LayoutKind::ALL.iter().enumerate() {
            assert_eq!(layout.index(), k);
        }
    }
}
