// The yardstick for tests/gpu_bench.rs: a plain square matmul, c (n, n) = a (n, n) * b (n, n),
// n a multiple of 128, 128 x 128 tile per workgroup, k slab 16, 8 x 8 per invocation.
struct Dims { n: u32, unused0: u32, unused1: u32, unused2: u32 }
@group(0) @binding(0) var<uniform> d: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<f32, 2048>; // [16][128]
var<workgroup> b_tile: array<f32, 2048>; // [16][128]

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * 128u;
    let n0 = wg.x * 128u;
    let tm = lid / 16u;
    let tn = lid % 16u;
    var acc: array<f32, 64>;
    for (var k0 = 0u; k0 < d.n; k0 += 16u) {
        for (var i = 0u; i < 8u; i++) {
            let e = lid + i * 256u;
            let kk = e % 16u;
            let mm = e / 16u;
            a_tile[kk * 128u + mm] = a[(m0 + mm) * d.n + k0 + kk];
            let nn = e % 128u;
            let kb = e / 128u;
            b_tile[kb * 128u + nn] = b[(k0 + kb) * d.n + n0 + nn];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            var av: array<f32, 8>;
            var bv: array<f32, 8>;
            for (var i = 0u; i < 8u; i++) { av[i] = a_tile[kk * 128u + tm + i * 16u]; }
            for (var j = 0u; j < 8u; j++) { bv[j] = b_tile[kk * 128u + tn + j * 16u]; }
            for (var i = 0u; i < 8u; i++) {
                for (var j = 0u; j < 8u; j++) {
                    acc[i * 8u + j] = fma(av[i], bv[j], acc[i * 8u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        for (var j = 0u; j < 8u; j++) {
            c[(m0 + tm + i * 16u) * d.n + n0 + tn + j * 16u] = acc[i * 8u + j];
        }
    }
}
