//! WGSL for the built-in kernels. Each one mirrors its CPU reference in
//! `cpu.rs` operation for operation, so the results are identical. The
//! sources are templates: `{WG}` is the workgroup size, chosen per kernel
//! from the adapter's limits when the device opens ([`workgroup_size`]).

/// Preferred invocations per workgroup of the checksum kernel.
pub(crate) const CRC_WG: u32 = 64;
/// Preferred invocations per workgroup of the reduction kernel.
pub(crate) const REDUCE_WG: u32 = 256;
/// Values each reduction invocation sums before the tree step, at least.
pub(crate) const REDUCE_PER_THREAD: u32 = 64;
/// Most reduction workgroups per dispatch: each one pays for its barriers,
/// which a software rasteriser runs as coroutine switches, so fewer,
/// longer workgroups are faster there and still fill a real GPU.
pub(crate) const REDUCE_MAX_WGS: u32 = 256;
/// Preferred invocations per workgroup of the saxpy kernel.
pub(crate) const SAXPY_WG: u32 = 256;
/// Words of checksum parameters before the segment shift table.
pub(crate) const CRC_PARAM_WORDS: usize = 8;

/// A kernel's workgroup size: its preferred size, capped by the
/// configuration and the adapter's `max_compute_workgroup_size_x` and
/// `max_compute_invocations_per_workgroup`, rounded down to a power of two
/// (the reduction's tree halves it), at least 1.
pub(crate) fn workgroup_size(preferred: u32, cap: u32, max_x: u32, max_invocations: u32) -> u32 {
    let m = preferred.min(cap).min(max_x).min(max_invocations).max(1);
    1 << (31 - m.leading_zeros())
}

fn with_wg(template: &str, wg: u32) -> String {
    template.replace("{WG}", &wg.to_string())
}

/// The checksum kernel with `wg` invocations per workgroup.
pub(crate) fn crc32c(wg: u32) -> String {
    with_wg(CRC32C, wg)
}

/// The reduction kernel: subgroup operations inside each subgroup when
/// `subgroups`, else a tree in workgroup memory.
pub(crate) fn reduce(wg: u32, subgroups: bool) -> String {
    with_wg(if subgroups { REDUCE_SUBGROUP } else { REDUCE }, wg)
}

/// The saxpy kernel.
pub(crate) fn saxpy(wg: u32) -> String {
    with_wg(SAXPY, wg)
}

/// One invocation per segment of a block: each computes the CRC32C of its
/// segment (slicing-by-4, the first four tables from binding 1, copied into
/// workgroup memory), shifts it
/// past the bytes after it in its block by multiplying with x^(8n) mod P,
/// and XORs it into the block's sum (zeroed before the dispatch); see
/// `crc_shift.rs`. XOR is commutative, so the order of the atomics does not
/// change the bits.
///
/// params: byte length, block size, blocks, segment size, segments per
/// full block, segments in the last block, x^(8r) for the last segment of
/// a full block and of the last block, then x^(8 k segment) for each k.
const CRC32C: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> data: array<u32>;
@group(0) @binding(3) var<storage, read_write> sums: array<atomic<u32>>;

// The four slicing tables, copied into workgroup memory once per
// workgroup: every lookup then stays on the chip.
var<workgroup> t: array<u32, 1024>;

fn mulmod(a: u32, b0: u32) -> u32 {
    var b = b0;
    var p = 0u;
    for (var k = 0u; k < 32u; k += 1u) {
        if ((a & (0x80000000u >> k)) != 0u) {
            p ^= b;
        }
        b = select(b >> 1u, (b >> 1u) ^ 0x82F63B78u, (b & 1u) != 0u);
    }
    return p;
}

@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var k = li; k < 1024u; k += {WG}u) {
        t[k] = table[k];
    }
    workgroupBarrier();
    let byte_len = params[0];
    let block = params[1];
    let blocks = params[2];
    let seg = params[3];
    let segs_full = params[4];
    let segs_last = params[5];
    let total = (blocks - 1u) * segs_full + segs_last;
    let stride = nwg.x * {WG}u;
    for (var g = gid.x; g < total; g += stride) {
        let b = g / segs_full;
        let s = g % segs_full;
        let last_block = b == blocks - 1u;
        let segs = select(segs_full, segs_last, last_block);
        let start = b * block + s * seg;
        let end = min(start + seg, min(b * block + block, byte_len));
        var crc = 0xffffffffu;
        var i = start;
        for (; i + 4u <= end; i += 4u) {
            let c = crc ^ data[i >> 2u];
            crc = t[768u + (c & 0xffu)] ^ t[512u + ((c >> 8u) & 0xffu)]
                ^ t[256u + ((c >> 16u) & 0xffu)] ^ t[c >> 24u];
        }
        if (i < end) {
            let w = data[i >> 2u];
            for (var k = 0u; i + k < end; k += 1u) {
                crc = t[(crc ^ (w >> (8u * k))) & 0xffu] ^ (crc >> 8u);
            }
        }
        crc ^= 0xffffffffu;
        if (s + 1u < segs) {
            let last_shift = select(params[6], params[7], last_block);
            crc = mulmod(params[8u + segs - 2u - s], mulmod(last_shift, crc));
        }
        atomicXor(&sums[b], crc);
    }
}
";

/// Grid-stride partial sums (64-bit as two words with carry), minimum and
/// maximum per invocation, then a tree per workgroup in workgroup memory;
/// one partial of four words (sum low, sum high, min, max) per workgroup.
/// params: count.
const REDUCE: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> partials: array<u32>;

var<workgroup> s_lo: array<u32, {WG}>;
var<workgroup> s_hi: array<u32, {WG}>;
var<workgroup> s_min: array<u32, {WG}>;
var<workgroup> s_max: array<u32, {WG}>;

@compute @workgroup_size({WG})
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = params[0];
    let stride = nwg.x * {WG}u;
    var lo = 0u;
    var hi = 0u;
    var mn = 0xffffffffu;
    var mx = 0u;
    for (var i = wg.x * {WG}u + li; i < n; i += stride) {
        let v = data[i];
        let s = lo + v;
        hi += select(0u, 1u, s < lo);
        lo = s;
        mn = min(mn, v);
        mx = max(mx, v);
    }
    s_lo[li] = lo;
    s_hi[li] = hi;
    s_min[li] = mn;
    s_max[li] = mx;
    workgroupBarrier();
    for (var step = {WG}u / 2u; step > 0u; step >>= 1u) {
        if (li < step) {
            let a = s_lo[li];
            let s = a + s_lo[li + step];
            s_hi[li] = s_hi[li] + s_hi[li + step] + select(0u, 1u, s < a);
            s_lo[li] = s;
            s_min[li] = min(s_min[li], s_min[li + step]);
            s_max[li] = max(s_max[li], s_max[li + step]);
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        partials[wg.x * 4u] = s_lo[0];
        partials[wg.x * 4u + 1u] = s_hi[0];
        partials[wg.x * 4u + 2u] = s_min[0];
        partials[wg.x * 4u + 3u] = s_max[0];
    }
}
";

/// As [`REDUCE`], but each subgroup combines its invocations' partials with
/// subgroup operations (one barrier per workgroup instead of a tree). The
/// 64-bit sums are added as four 16-bit limbs, so no subgroup sum can
/// overflow (a subgroup has at most 128 invocations: 2^7 * 2^16 < 2^32),
/// and the carries are propagated afterwards: the bits stay exact.
const REDUCE_SUBGROUP: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> partials: array<u32>;

var<workgroup> s_lo: array<u32, {WG}>;
var<workgroup> s_hi: array<u32, {WG}>;
var<workgroup> s_min: array<u32, {WG}>;
var<workgroup> s_max: array<u32, {WG}>;

@compute @workgroup_size({WG})
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(num_subgroups) nsg: u32) {
    let n = params[0];
    let stride = nwg.x * {WG}u;
    var lo = 0u;
    var hi = 0u;
    var mn = 0xffffffffu;
    var mx = 0u;
    for (var i = wg.x * {WG}u + li; i < n; i += stride) {
        let v = data[i];
        let s = lo + v;
        hi += select(0u, 1u, s < lo);
        lo = s;
        mn = min(mn, v);
        mx = max(mx, v);
    }
    let t0 = subgroupAdd(lo & 0xffffu);
    let l1 = subgroupAdd(lo >> 16u);
    let l2 = subgroupAdd(hi & 0xffffu);
    let l3 = subgroupAdd(hi >> 16u);
    let smn = subgroupMin(mn);
    let smx = subgroupMax(mx);
    if (lane == 0u) {
        let t1 = l1 + (t0 >> 16u);
        let t2 = l2 + (t1 >> 16u);
        let t3 = l3 + (t2 >> 16u);
        s_lo[sg] = (t0 & 0xffffu) | (t1 << 16u);
        s_hi[sg] = (t2 & 0xffffu) | (t3 << 16u);
        s_min[sg] = smn;
        s_max[sg] = smx;
    }
    workgroupBarrier();
    if (li == 0u) {
        var a_lo = 0u;
        var a_hi = 0u;
        var a_mn = 0xffffffffu;
        var a_mx = 0u;
        for (var k = 0u; k < nsg; k += 1u) {
            let s = a_lo + s_lo[k];
            a_hi = a_hi + s_hi[k] + select(0u, 1u, s < a_lo);
            a_lo = s;
            a_mn = min(a_mn, s_min[k]);
            a_mx = max(a_mx, s_max[k]);
        }
        partials[wg.x * 4u] = a_lo;
        partials[wg.x * 4u + 1u] = a_hi;
        partials[wg.x * 4u + 2u] = a_mn;
        partials[wg.x * 4u + 3u] = a_mx;
    }
}
";

/// `out = a * x + y`, grid-stride. params: count, bits of `a`, a zero.
/// Vulkan lets a driver contract a multiply followed by an add into a
/// fused multiply-add unless the result is decorated `NoContraction`, which
/// naga does not emit; that would round once instead of twice and differ
/// from the CPU path. So the product's bits pass through an XOR with
/// params[2], which is zero but unknown to the driver's compiler: it cannot
/// see the add's operand as a product any more, and cannot fuse them. The
/// bits are unchanged (x ^ 0 = x). lavapipe does not contract either way;
/// the tests compare the bits with the CPU path on every adapter.
const SAXPY: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = params[0];
    let a = bitcast<f32>(params[1]);
    let zero = params[2];
    let stride = nwg.x * {WG}u;
    for (var i = gid.x; i < n; i += stride) {
        let p = bitcast<f32>(bitcast<u32>(a * x[i]) ^ zero);
        out[i] = p + y[i];
    }
}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workgroup_size_respects_every_limit_and_is_a_power_of_two() {
        assert_eq!(workgroup_size(256, 1024, 1024, 1024), 256);
        assert_eq!(workgroup_size(256, 1024, 128, 1024), 128);
        assert_eq!(workgroup_size(256, 1024, 1024, 96), 64);
        assert_eq!(workgroup_size(256, 48, 1024, 1024), 32);
        assert_eq!(workgroup_size(256, 0, 1024, 1024), 1);
        for s in [crc32c(64), reduce(32, false), reduce(128, true), saxpy(16)] {
            assert!(!s.contains("{WG}"));
        }
    }
}
