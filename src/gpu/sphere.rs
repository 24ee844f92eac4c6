// SPDX-License-Identifier: MIT OR Apache-2.0
//! Norms of Gaussian directions over n elements, for [`Distribution::Sphere`](crate::Distribution):
//! one reduction pass over the index range (no parameter buffer is read), cached per
//! (seed, step, sample, n).

use std::collections::HashMap;

use super::context::{lock, Gpu, TrackedBuffer};
use super::launch::{split64, Launch, Slots};
use super::pipelines::{Kernel, LayoutKind};
use crate::Result;

/// Index range one sphere dispatch covers (a multiple of 4, so every dispatch starts on a
/// Philox block).
const PIECE: u64 = 1 << 28;
/// Cached norms kept before the cache is cleared.
const CACHE_CAP: usize = 4096;

/// Cached norms and the scratch buffers of the reduction, grown on demand.
#[derive(Debug, Default)]
pub(crate) struct SphereState {
    norms: HashMap<(u64, u32, u32, u64), f64>,
    scratch: Option<Scratch>,
}

#[derive(Debug)]
struct Scratch {
    slots: Slots,
    partials: TrackedBuffer,
    group: wgpu::BindGroup,
}

impl Gpu {
    /// ‖z‖ of the Gaussian directions (seed, step, sample) over n elements, for each sample in
    /// `samples`, in one submission and one readback for the samples not already cached.
    pub(crate) fn sphere_norms(
        &self,
        seed: u64,
        step: u32,
        samples: &[u32],
        n: u64,
    ) -> Result<Vec<f64>> {
        let mut state = lock(&self.inner.sphere);
        let missing: Vec<u32> = samples
            .iter()
            .copied()
            .filter(|s| !state.norms.contains_key(&(seed, step, *s, n)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let sums = self.sphere_sumsq(&mut state, seed, step, &missing, n)?;
            if state.norms.len() + missing.len() > CACHE_CAP {
                state.norms.clear();
            }
            for (s, v) in missing.iter().zip(sums) {
                state.norms.insert((seed, step, *s, n), v.sqrt());
            }
        }
        Ok(samples
            .iter()
            .map(|s| state.norms[&(seed, step, *s, n)])
            .collect())
    }

    fn sphere_sumsq(
        &self,
        state: &mut SphereState,
        seed: u64,
        step: u32,
        samples: &[u32],
        n: u64,
    ) -> Result<Vec<f64>> {
        // One launch per (sample, piece); partial sums laid out launch after launch.
        let piece = PIECE.min(super::launch::grid_capacity(self) / 4 * 4).max(4);
        let mut launches = Vec::new();
        let mut owner = Vec::new();
        let mut offset = 0u64;
        for (k, &sample) in samples.iter().enumerate() {
            let mut start = 0;
            while start < n {
                let len = (n - start).min(piece);
                let mut l = Launch::new(self, Kernel::SphereSumsq, len, start)?;
                l.seed = split64(seed);
                l.step = step;
                l.sample = sample;
                l.out_offset = offset as u32;
                offset += u64::from(l.n_groups);
                owner.extend(std::iter::repeat_n(k, l.n_groups as usize));
                launches.push(l);
                start += len;
            }
        }
        let need_slots = launches.len();
        let need_bytes = offset * 4;
        let fits = state
            .scratch
            .as_ref()
            .is_some_and(|s| s.slots.capacity() >= need_slots && s.partials.size() >= need_bytes);
        if !fits {
            let slots = Slots::new(
                self,
                "zograd::sphere_uniforms",
                need_slots.next_power_of_two(),
            )?;
            let partials = self.create_buffer(
                "zograd::sphere_partials",
                need_bytes.next_power_of_two().max(256),
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            )?;
            let group = self.scoped(|| {
                Ok(self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("zograd::sphere"),
                    layout: self.inner.layouts.bind_group_layout(LayoutKind::One),
                    entries: &[
                        slots.entry(),
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: partials.as_entire_binding(),
                        },
                    ],
                }))
            })?;
            state.scratch = Some(Scratch {
                slots,
                partials,
                group,
            });
        }
        let scratch = state.scratch.as_ref().expect("scratch was just created");
        let items: Vec<_> = launches.iter().map(|l| (*l, &scratch.group)).collect();
        // The reduction and the readback of its partial sums: one submission.
        let encoder = scratch.slots.encode(self, Kernel::SphereSumsq, &items)?;
        let mut partial = Vec::with_capacity(offset as usize);
        self.read_f32_after(Some(encoder), &scratch.partials, 0, offset, &mut partial)?;
        let mut sums = vec![0.0f64; samples.len()];
        for (v, k) in partial.iter().zip(owner) {
            sums[k] += f64::from(*v);
        }
        Ok(sums)
    }
}
