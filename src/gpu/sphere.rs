// SPDX-License-Identifier: MIT OR Apache-2.0
//! Norms of Gaussian directions over n elements, for [`Distribution::Sphere`](crate::Distribution):
//! one reduction pass over the index range (no parameter buffer is read), cached per
//! (seed, step, sample, n).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::ops::Range;

use super::context::{lock, Gpu, TrackedBuffer};
use super::kernel::{Kernel, LayoutKind};
use super::launch::{split64, Launch, Slots};
use crate::Result;

/// Index range one sphere dispatch covers (a multiple of 4, so every dispatch starts on a
/// Philox block).
const PIECE: u64 = 1 << 28;
/// Norms the cache holds at most, whatever the number of estimators sharing the device: past
/// it, the oldest entries not needed by the current call are evicted first.
const CACHE_CAP: usize = 4096;

/// The cache key: (seed, step, sample, n).
type Key = (u64, u32, u32, u64);

/// Cached norms and the scratch buffers of the reduction, grown on demand.
#[derive(Debug, Default)]
pub(crate) struct SphereState {
    norms: HashMap<Key, f64>,
    /// Keys of `norms`, oldest first.
    order: VecDeque<Key>,
    scratch: Option<Scratch>,
}

impl SphereState {
    /// Adds `fresh` norms, then evicts the oldest entries down to [`CACHE_CAP`], never one of
    /// `needed` (the keys of the current call, which the caller is about to use).
    fn insert(&mut self, fresh: impl IntoIterator<Item = (Key, f64)>, needed: &[Key]) {
        for (key, norm) in fresh {
            if self.norms.insert(key, norm).is_none() {
                self.order.push_back(key);
            }
        }
        // Each needed key is moved to the back at most once, so this ends.
        let mut kept = 0;
        while self.norms.len() > CACHE_CAP && kept < self.order.len() {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if needed.contains(&key) {
                self.order.push_back(key);
                kept += 1;
            } else {
                self.norms.remove(&key);
            }
        }
    }
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
        self.sphere_norms_over(seed, step, samples, std::slice::from_ref(&(0..n)))
    }

    /// ‖z‖ of the Gaussian directions (seed, step, sample) over the elements of `ranges`
    /// (global indices; the unfrozen buffers of a `kernels::Mask`), as
    /// [`sphere_norms`](Gpu::sphere_norms). The cache key's last word is n for the single range
    /// 0..n and a fingerprint of the ranges with bit 63 set otherwise.
    pub(crate) fn sphere_norms_over(
        &self,
        seed: u64,
        step: u32,
        samples: &[u32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<f64>> {
        let n = match ranges {
            [r] if r.start == 0 => r.end,
            _ => {
                let mut h = DefaultHasher::new();
                ranges.hash(&mut h);
                h.finish() | (1 << 63)
            }
        };
        let mut state = lock(&self.inner.sphere);
        let key = |s: u32| (seed, step, s, n);
        let missing: Vec<u32> = samples
            .iter()
            .copied()
            .filter(|s| !state.norms.contains_key(&key(*s)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut fresh = HashMap::with_capacity(missing.len());
        if !missing.is_empty() {
            let sums = self.sphere_sumsq(&mut state, seed, step, &missing, ranges)?;
            fresh.extend(
                missing
                    .iter()
                    .map(|s| key(*s))
                    .zip(sums.iter().map(|v| v.sqrt())),
            );
        }
        // The answer is taken before anything is evicted.
        let norms: Vec<f64> = samples
            .iter()
            .map(|s| {
                let k = key(*s);
                fresh
                    .get(&k)
                    .or_else(|| state.norms.get(&k))
                    .copied()
                    .expect("every sample was cached or has just been computed")
            })
            .collect();
        let needed: Vec<Key> = samples.iter().map(|s| key(*s)).collect();
        state.insert(fresh, &needed);
        Ok(norms)
    }

    fn sphere_sumsq(
        &self,
        state: &mut SphereState,
        seed: u64,
        step: u32,
        samples: &[u32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<f64>> {
        // One launch per (sample, range, piece); partial sums laid out launch after launch.
        let piece = PIECE.min(super::launch::grid_capacity(self) / 4 * 4).max(4);
        let mut launches = Vec::new();
        let mut owner = Vec::new();
        let mut offset = 0u64;
        for (k, &sample) in samples.iter().enumerate() {
            for range in ranges {
                let (mut start, n) = (range.start, range.end);
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
        }
        let need_slots = launches.len();
        let need_bytes = offset * 4;
        let fits = state
            .scratch
            .as_ref()
            .is_some_and(|s| s.slots.capacity() >= need_slots && s.partials.size() >= need_bytes);
        if !fits {
            let slots = Slots::for_launches(
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
                        slots.entry(0),
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
        self.read_into_after(Some(encoder), &scratch.partials, 0, offset, &mut partial)?;
        let mut sums = vec![0.0f64; samples.len()];
        for (v, k) in partial.iter().zip(owner) {
            sums[k] += f64::from(*v);
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full cache evicts its oldest entries first and keeps the keys the call needs, however
    /// old.
    #[test]
    fn eviction_is_oldest_first_and_spares_the_needed_keys() {
        let mut state = SphereState::default();
        let key = |step: u32| (0u64, step, 0u32, 8u64);
        state.insert((0..CACHE_CAP as u32).map(|s| (key(s), 1.0)), &[]);
        assert_eq!(state.norms.len(), CACHE_CAP);
        state.insert([(key(9999), 2.0), (key(10_000), 3.0)], &[key(0), key(9999)]);
        assert_eq!(state.norms.len(), CACHE_CAP);
        assert!(
            state.norms.contains_key(&key(0)),
            "a needed key was evicted"
        );
        assert!(!state.norms.contains_key(&key(1)) && !state.norms.contains_key(&key(2)));
        assert!(state.norms.contains_key(&key(3)));
        assert_eq!(state.order.len(), state.norms.len());
    }
}
