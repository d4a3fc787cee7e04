// Experiment: like reference_matmul.wgsl, but each invocation owns 8 contiguous rows and
// columns and reads them from workgroup memory as vec4s.
struct Dims { n: u32, unused0: u32, unused1: u32, unused2: u32 }
@group(0) @binding(0) var<uniform> d: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, 512>; // [16][128 / 4]
var<workgroup> b_tile: array<vec4<f32>, 512>; // [16][128 / 4]

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * 128u;
    let n0 = wg.x * 128u;
    let tm = lid / 16u;
    let tn = lid % 16u;
    var acc: array<vec4<f32>, 16>; // [8 rows][2 vec4 columns]
    for (var k0 = 0u; k0 < d.n; k0 += 16u) {
        for (var i = 0u; i < 2u; i++) {
            let e = lid + i * 256u;       // 512 vec4 per tile
            let kk = e % 16u;
            let mq = e / 16u;             // which 4 rows
            let row = (m0 + mq * 4u) * d.n + k0 + kk;
            a_tile[kk * 32u + mq] = vec4<f32>(a[row], a[row + d.n], a[row + 2u * d.n], a[row + 3u * d.n]);
            let nq = e % 32u;
            let kb = e / 32u;
            let at = (k0 + kb) * d.n + n0 + nq * 4u;
            b_tile[kb * 32u + nq] = vec4<f32>(b[at], b[at + 1u], b[at + 2u], b[at + 3u]);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let a0 = a_tile[kk * 32u + tm * 2u];
            let a1 = a_tile[kk * 32u + tm * 2u + 1u];
            let b0 = b_tile[kk * 32u + tn * 2u];
            let b1 = b_tile[kk * 32u + tn * 2u + 1u];
            let av = array<f32, 8>(a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w);
            for (var i = 0u; i < 8u; i++) {
                acc[i * 2u] = fma(vec4<f32>(av[i]), b0, acc[i * 2u]);
                acc[i * 2u + 1u] = fma(vec4<f32>(av[i]), b1, acc[i * 2u + 1u]);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let at = (m0 + tm * 8u + i) * d.n + n0 + tn * 8u;
        let v0 = acc[i * 2u];
        let v1 = acc[i * 2u + 1u];
        c[at] = v0.x; c[at + 1u] = v0.y; c[at + 2u] = v0.z; c[at + 3u] = v0.w;
        c[at + 4u] = v1.x; c[at + 5u] = v1.y; c[at + 6u] = v1.z; c[at + 7u] = v1.w;
    }
}
