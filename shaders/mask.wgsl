// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — the magnitude mask of sparse directions (Sparse MeZO, Liu et al. 2024): a histogram
// of |x| per buffer, from which the host picks each buffer's threshold tau (a quantile of |x|),
// and the bit-packed mask m_i = (|x_i| < tau) that the `_bits` direction kernels read. The mask
// is computed at the start of a step and kept while x is perturbed (|x_i| changes then).

/// Bins per buffer: the top 15 bits of |x|'s bit pattern (exponent and 7 mantissa bits), so a
/// bin spans a relative width of 2^-7 of its lower edge; the bins of buffer k start at
/// launch.out_offset = k * 32768.
const ZOGRAD_BINS: u32 = 32768u;

// magnitude_histogram: the bins, bound entire.
@group(0) @binding(2) var<storage, read_write> bins: array<atomic<u32>>;
// magnitude_bits: the mask, one bit per global element (word i / 32, bit i % 32), bound entire.
@group(0) @binding(2) var<storage, read_write> bits: array<u32>;

// One element per thread: bins[out_offset + (bits(|x_i|) >> 16)] += 1.
@compute @workgroup_size(256)
fn magnitude_histogram(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wg) * WG_SIZE + lid;
    if (i >= launch.len) {
        return;
    }
    let a = bitcast<u32>(dst[zograd_shift().x + i]) & 0x7FFFFFFFu;
    atomicAdd(&bins[launch.out_offset + min(a >> 16u, ZOGRAD_BINS - 1u)], 1u);
}

// A thread owns one mask word, the 32 elements 32t - r .. 32t - r + 31 of the chunk
// (r = gbase % 32), and sets bit e where |x| < coef.x (the chunk's buffer's threshold; NaN is
// never below it). Bits of a word outside the chunk keep their value: the launch of the
// neighbouring chunk (an earlier or later dispatch) owns them.
@compute @workgroup_size(256)
fn magnitude_bits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 31u;
    let p0 = 32u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let word = ((launch.gbase.x >> 5u) | (launch.gbase.y << 27u)) + t;
    var on = 0u;
    var touched = 0u;
    for (var e = 0u; e < 32u; e = e + 1u) {
        let q = p0 + e;
        if (q >= r && q - r < launch.len) {
            touched = touched | (1u << e);
            if (abs(dst[zograd_shift().x + q - r]) < launch.coef.x) {
                on = on | (1u << e);
            }
        }
    }
    bits[word] = (bits[word] & ~touched) | on;
}
