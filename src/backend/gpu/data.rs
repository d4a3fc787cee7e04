//! The data set on the GPU (u8 packed four to a u32, in chunks that each fit one storage
//! binding) and the gather kernel that builds a batch from it (shaders/data.wgsl).

use super::buffer::GpuBuffer;
use super::params::{u32_of, GatherParams};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuIndices, GpuTensor};
use crate::augment::TransformLayout;
use crate::backend::GatherAugment;
use anyhow::{ensure, Result};

/// A run of whole images in one buffer, their bytes packed four to a u32.
struct ImageChunk {
    words: GpuBuffer<u32>,
    first_image: usize,
    images: usize,
}

/// A u8 data set on the GPU; dropping it frees its buffers (and the bind groups using them).
pub struct GpuImages {
    chunks: Vec<ImageChunk>,
    labels: GpuBuffer<u32>,
    image_len: usize,
    count: usize,
}

impl GpuImages {
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

/// Bytes as little-endian u32 words, the tail padded with zeros.
fn pack_words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &b)| w | (b as u32) << (8 * i))).collect()
}

impl GpuBackend {
    /// Puts a data set on the GPU in chunks of at most `max_chunk_bytes` (a whole number of
    /// images each). `upload_images` passes the adapter's binding limit; tests pass less.
    pub fn upload_images_in_chunks(&self, images: &[u8], labels: &[u8], image_len: usize, max_chunk_bytes: u64) -> Result<GpuImages> {
        ensure!(images.len() == labels.len() * image_len, "image bytes do not match the label count");
        ensure!(image_len > 0, "empty images");
        ensure!(labels.len() < u32::MAX as usize, "{} images: more than a u32 index can address", labels.len());
        let per_chunk = ((max_chunk_bytes.saturating_sub(3)) / image_len as u64) as usize;
        ensure!(per_chunk > 0, "one image of {image_len} bytes does not fit a storage binding of {max_chunk_bytes} bytes");
        let mut chunks = Vec::new();
        for (i, part) in images.chunks(per_chunk * image_len).enumerate() {
            let packed = pack_words(part);
            let words = self.storage("image chunk", packed.len())?;
            self.write(&words, bytemuck::cast_slice(&packed));
            chunks.push(ImageChunk { words, first_image: i * per_chunk, images: part.len() / image_len });
        }
        let packed = pack_words(labels);
        let label_words = self.storage("labels", packed.len())?;
        self.write(&label_words, bytemuck::cast_slice(&packed));
        Ok(GpuImages { chunks, labels: label_words, image_len, count: labels.len() })
    }

    // idx (n) -> x (n, image_len) = images[idx] / 255, labels (n) = labels[idx]; with
    // `augment`, each row moved by its transform. One dispatch per chunk; each fills the rows
    // whose image lies in it (a transform only moves pixels within one image).
    pub(super) fn record_gather_batch(
        &self,
        data: &GpuImages,
        idx: &GpuIndices,
        n: usize,
        x: &mut GpuTensor,
        labels: &mut GpuIndices,
        augment: Option<GatherAugment<'_, GpuIndices>>,
    ) {
        let groups = linear_grid(n * data.image_len, self.max_per_dim());
        let ((h, w, c), transforms, mode, words) = match &augment {
            Some(a) => {
                assert_eq!(a.shape.0 * a.shape.1 * a.shape.2, data.image_len, "augment shape does not match the image length");
                let words = a.layout.words();
                assert!(a.transforms.len() >= n * words, "{} transform words for a batch of {n}", a.transforms.len());
                // The kernel's modes: 1 flip/shift (one word a row), 2 affine.
                let mode = match a.layout {
                    TransformLayout::Shift => 1,
                    TransformLayout::Affine => 2,
                };
                (a.shape, a.transforms, mode, words)
            }
            // The binding must hold some buffer; the kernel does not read it.
            None => ((0, 0, 0), idx, 0, 0),
        };
        for chunk in &data.chunks {
            let params = GatherParams {
                n: u32_of(n),
                image_len: u32_of(data.image_len),
                first_image: u32_of(chunk.first_image),
                chunk_images: u32_of(chunk.images),
                total_images: u32_of(data.count),
                augmented: mode,
                height: u32_of(h),
                width: u32_of(w),
                channels: u32_of(c),
                ..Default::default()
            };
            let bound = [idx.at(1), chunk.words.at(2), data.labels.at(3), x.at(4), labels.at(5), transforms.at(6)];
            self.dispatch(&self.pipelines.gather_batch, &params, &bound, groups);
        }
        // Indices (and transforms), the images' bytes and labels; the rows and labels written.
        // (An affine row reads up to 4 source bytes per element; counted once, as a plain one.)
        let transforms_read = 4 * n * words;
        self.recorder.count_traffic(4 * n + transforms_read + n * data.image_len + n, 4 * n * data.image_len + 4 * n);
    }
}
