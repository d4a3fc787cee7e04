// Batch gather from a u8 data set kept on the GPU, packed four bytes to a u32 (WGSL has no u8).
// The set may be split into chunks of whole images (one storage binding is often limited to
// 128 MiB); one dispatch per chunk fills the batch rows whose image lies in that chunk.

struct GatherParams {
    n: u32, image_len: u32, first_image: u32, chunk_images: u32,
    total_images: u32, unused0: u32, unused1: u32, unused2: u32,
}

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> chunk: array<u32>;
@group(0) @binding(3) var<storage, read> labels_packed: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> labels_out: array<u32>;

fn byte_at(word: u32, byte: u32) -> u32 {
    return (word >> (8u * byte)) & 0xffu;
}

// idx (n) -> x (n, image_len) = images[idx] / 255, labels_out (n) = labels[idx], for the rows
// whose image is in [first_image, first_image + chunk_images). One invocation per element of x.
@compute @workgroup_size(256)
fn gather_batch(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (id >= p.n * p.image_len) { return; }
    let row = id / p.image_len;
    let j = id % p.image_len;
    let image = idx[row];
    if (image < p.first_image || image >= p.first_image + p.chunk_images || image >= p.total_images) {
        return;
    }
    let at = (image - p.first_image) * p.image_len + j;
    x[id] = f32(byte_at(chunk[at / 4u], at % 4u)) / 255.0;
    if (j == 0u) {
        labels_out[row] = byte_at(labels_packed[image / 4u], image % 4u);
    }
}
