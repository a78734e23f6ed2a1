//! WGSL for the built-in kernels. Each one mirrors its CPU reference in
//! `cpu.rs` operation for operation, so the results are identical.

/// Invocations per workgroup of the checksum kernel.
pub(crate) const CRC_WG: u32 = 64;
/// Invocations per workgroup of the reduction kernel.
pub(crate) const REDUCE_WG: u32 = 256;
/// Values each reduction invocation sums before the tree step, at least.
pub(crate) const REDUCE_PER_THREAD: u32 = 64;
/// Most reduction workgroups per dispatch: each one pays for eight
/// barriers, which a software rasteriser runs as coroutine switches, so
/// fewer, longer workgroups are faster there and still fill a real GPU.
pub(crate) const REDUCE_MAX_WGS: u32 = 256;
/// Invocations per workgroup of the saxpy kernel.
pub(crate) const SAXPY_WG: u32 = 256;

/// One invocation per block; the first four slicing tables (4 KiB) are
/// binding 1.
/// params: byte length, block size, block count.
pub(crate) const CRC32C: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> data: array<u32>;
@group(0) @binding(3) var<storage, read_write> sums: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let byte_len = params[0];
    let block = params[1];
    let blocks = params[2];
    let stride = nwg.x * 64u;
    for (var b = gid.x; b < blocks; b += stride) {
        let start = b * block;
        let end = min(start + block, byte_len);
        var crc = 0xffffffffu;
        var i = start;
        // Slicing-by-4: four independent lookups per word.
        for (; i + 4u <= end; i += 4u) {
            let c = crc ^ data[i >> 2u];
            crc = table[768u + (c & 0xffu)] ^ table[512u + ((c >> 8u) & 0xffu)]
                ^ table[256u + ((c >> 16u) & 0xffu)] ^ table[c >> 24u];
        }
        if (i < end) {
            let w = data[i >> 2u];
            for (var k = 0u; i + k < end; k += 1u) {
                crc = table[(crc ^ (w >> (8u * k))) & 0xffu] ^ (crc >> 8u);
            }
        }
        sums[b] = crc ^ 0xffffffffu;
    }
}
";

/// Grid-stride partial sums (64-bit as two words with carry), minimum and
/// maximum per invocation, then a tree per workgroup; one partial of four
/// words (sum low, sum high, min, max) per workgroup. params: count.
pub(crate) const REDUCE: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> partials: array<u32>;

var<workgroup> s_lo: array<u32, 256>;
var<workgroup> s_hi: array<u32, 256>;
var<workgroup> s_min: array<u32, 256>;
var<workgroup> s_max: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = params[0];
    let stride = nwg.x * 256u;
    var lo = 0u;
    var hi = 0u;
    var mn = 0xffffffffu;
    var mx = 0u;
    for (var i = wg.x * 256u + li; i < n; i += stride) {
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
    for (var step = 128u; step > 0u; step >>= 1u) {
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

/// `out = a * x + y`, grid-stride. params: count, bits of `a`.
pub(crate) const SAXPY: &str = r"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = params[0];
    let a = bitcast<f32>(params[1]);
    let stride = nwg.x * 256u;
    for (var i = gid.x; i < n; i += stride) {
        let p = a * x[i];
        out[i] = p + y[i];
    }
}
";
