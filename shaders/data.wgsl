// Batch gather from a u8 data set kept on the GPU, packed four bytes to a u32 (WGSL has no u8).
// The set may be split into chunks of whole images (one storage binding is often limited to
// 128 MiB); one dispatch per chunk fills the batch rows whose image lies in that chunk.
// Training batches may be augmented on the way: each row has a packed transform, one word
// (flip, shift: p.augmented == 1) or AFFINE_WORDS (affine + contrast + brightness: 2).

struct GatherParams {
    n: u32, image_len: u32, first_image: u32, chunk_images: u32,
    total_images: u32, augmented: u32, height: u32, width: u32,
    channels: u32, unused0: u32, unused1: u32, unused2: u32,
}

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> chunk: array<u32>;
@group(0) @binding(3) var<storage, read> labels_packed: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> labels_out: array<u32>;
// One transform per row (src/augment.rs SampleTransform::pack, or AFFINE_WORDS from
// src/augment/affine.rs AffineTransform::pack); read only when p.augmented > 0.
@group(0) @binding(6) var<storage, read> transforms: array<u32>;

const AFFINE_WORDS: u32 = 12u;

fn byte_at(word: u32, byte: u32) -> u32 {
    return (word >> (8u * byte)) & 0xffu;
}

// v / 255 correctly rounded, as the CPU's `v as f32 / 255.0`. A GPU's division may be a few
// ulps off, so the bits are built exactly: in binary v/255 = 0.vvvvvvvv... (the byte repeated
// forever). Take 24 significant bits and round; the infinite tail is never a tie.
fn byte_over_255(v: u32) -> f32 {
    if (v == 0u) { return 0.0; }
    if (v == 255u) { return 1.0; }
    let repeated = v * 0x01010101u;        // the first 32 bits after the binary point
    let lz = countLeadingZeros(repeated);  // < 8 as v > 0
    var normalized = repeated << lz;
    if (lz > 0u) {
        normalized = normalized | (v >> (8u - lz)); // the next bits: v again
    }
    // The tail after the round bit is non-zero (the pattern repeats), so a set round bit rounds
    // up; the mantissa cannot overflow as only v = 255 is all ones.
    let mantissa = (normalized >> 8u) + ((normalized >> 7u) & 1u);
    let exponent = 126u - lz;              // value = 1.m * 2^(-1 - lz)
    return bitcast<f32>((exponent << 23u) | (mantissa & 0x7fffffu));
}

// The byte offset within its image that element j of an augmented row reads, or -1 for zero
// fill. Element j is (y, x, c) of the output; it takes source (y + dy, x' + dx, c) where
// x' = W-1-x when flipped (src/augment.rs SampleTransform::source).
fn transformed_offset(j: u32, code: u32) -> i32 {
    let c = j % p.channels;
    let pixel = j / p.channels;
    let y = i32(pixel / p.width);
    var x = i32(pixel % p.width);
    if ((code & 1u) == 1u) {
        x = i32(p.width) - 1 - x;
    }
    let dy = bitcast<i32>(code << 16u) >> 24u; // bits 8..16 as a signed byte
    let dx = bitcast<i32>(code << 8u) >> 24u;  // bits 16..24 as a signed byte
    let sy = y + dy;
    let sx = x + dx;
    if (sy < 0 || sx < 0 || sy >= i32(p.height) || sx >= i32(p.width)) {
        return -1;
    }
    return (sy * i32(p.width) + sx) * i32(p.channels) + i32(c);
}

// Source byte (yy, xx, c) of the image starting at byte `base` of the chunk, times `weight`;
// 0 outside the image (zero fill).
fn weighted_byte(base: u32, yy: i32, xx: i32, c: u32, weight: u32) -> u32 {
    if (yy < 0 || xx < 0 || yy >= i32(p.height) || xx >= i32(p.width)) {
        return 0u;
    }
    let at = base + (u32(yy) * p.width + u32(xx)) * p.channels + c;
    return byte_at(chunk[at / 4u], at % 4u) * weight;
}

// Element j of row `row` under its affine transform, as AffineTransform::sample in
// src/augment/affine.rs: the same integer geometry (16.16 matrix, position rounded to 1/256,
// 8-bit bilinear weights; the weighted sum < 2^24 is exact), then the same float operations in
// the same order, none a multiply feeding an add (so nothing can be fused into an FMA).
fn affine_sample(row: u32, j: u32, base: u32) -> f32 {
    let t = row * AFFINE_WORDS;
    let c = j % p.channels;
    let pixel = j / p.channels;
    let y = i32(pixel / p.width);
    let x = i32(pixel % p.width);
    let sx = bitcast<i32>(transforms[t]) * x + bitcast<i32>(transforms[t + 1u]) * y + bitcast<i32>(transforms[t + 2u]);
    let sy = bitcast<i32>(transforms[t + 3u]) * x + bitcast<i32>(transforms[t + 4u]) * y + bitcast<i32>(transforms[t + 5u]);
    let sx8 = (sx + 128) >> 8u; // 16 fraction bits -> 8, rounded
    let sy8 = (sy + 128) >> 8u;
    let x0 = sx8 >> 8u;         // floor
    let y0 = sy8 >> 8u;
    let fx = u32(sx8 & 255);
    let fy = u32(sy8 & 255);
    let sum = weighted_byte(base, y0, x0, c, (256u - fy) * (256u - fx))
        + weighted_byte(base, y0, x0 + 1, c, (256u - fy) * fx)
        + weighted_byte(base, y0 + 1, x0, c, fy * (256u - fx))
        + weighted_byte(base, y0 + 1, x0 + 1, c, fy * fx);
    let scale = bitcast<f32>(transforms[t + 6u]);
    let brightness = bitcast<f32>(transforms[t + 7u]);
    let offset = bitcast<f32>(transforms[t + 8u + c]);
    let v = min(max((f32(sum) + offset) * scale, 0.0), 1.0);
    return min(max(v + brightness, 0.0), 1.0);
}

// idx (n) -> x (n, image_len) = images[idx] / 255 (moved by the row's transform when
// augmented), labels_out (n) = labels[idx], for the rows whose image is in
// [first_image, first_image + chunk_images). One invocation per element of x.
@compute @workgroup_size(LINEAR_GROUP)
fn gather_batch(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    if (id >= p.n * p.image_len) { return; }
    let row = id / p.image_len;
    let j = id % p.image_len;
    let image = idx[row];
    if (image < p.first_image || image >= p.first_image + p.chunk_images || image >= p.total_images) {
        return;
    }
    var offset = i32(j);
    if (p.augmented == 1u) {
        offset = transformed_offset(j, transforms[row]);
    }
    if (p.augmented == 2u) {
        x[id] = affine_sample(row, j, (image - p.first_image) * p.image_len);
    } else if (offset < 0) {
        x[id] = 0.0;
    } else {
        let at = (image - p.first_image) * p.image_len + u32(offset);
        x[id] = byte_over_255(byte_at(chunk[at / 4u], at % 4u));
    }
    if (j == 0u) {
        labels_out[row] = byte_at(labels_packed[image / 4u], image % 4u);
    }
}
