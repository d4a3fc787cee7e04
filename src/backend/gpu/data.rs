//! The data set on the GPU (u8 packed four to a u32, in chunks that each fit one storage
//! binding) and the gather kernel that builds a batch from it (shaders/data.wgsl).

use super::recorder::{linear_grid, Bound};
use super::{GpuBackend, GpuIndices, GpuTensor};
use crate::backend::GatherAugment;
use anyhow::{ensure, Result};

/// A run of whole images in one buffer.
struct ImageChunk {
    buffer: wgpu::Buffer,
    id: u64,
    first_image: usize,
    images: usize,
}

pub struct GpuImages {
    chunks: Vec<ImageChunk>,
    labels: wgpu::Buffer,
    labels_id: u64,
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
            let words = pack_words(part);
            let buffer = self.ctx.create_storage_buffer("image chunk", (words.len().max(1) * 4) as u64)?;
            self.write(&buffer, bytemuck::cast_slice(&words));
            chunks.push(ImageChunk { buffer, id: self.new_id(), first_image: i * per_chunk, images: part.len() / image_len });
        }
        let label_words = pack_words(labels);
        let labels_buffer = self.ctx.create_storage_buffer("labels", (label_words.len().max(1) * 4) as u64)?;
        self.write(&labels_buffer, bytemuck::cast_slice(&label_words));
        Ok(GpuImages { chunks, labels: labels_buffer, labels_id: self.new_id(), image_len, count: labels.len() })
    }

    // idx (n) -> x (n, image_len) = images[idx] / 255, labels (n) = labels[idx]; with
    // `augment`, each row moved by its transform. One dispatch per chunk; each fills the rows
    // whose image lies in it (a transform only moves pixels within one image).
    pub(super) fn record_gather_batch(&self, data: &GpuImages, idx: &GpuIndices, n: usize, x: &mut GpuTensor, labels: &mut GpuIndices, augment: Option<GatherAugment<'_, GpuIndices>>) {
        let groups = linear_grid(n * data.image_len, self.max_per_dim());
        let ((h, w, c), transforms) = match &augment {
            Some(a) => {
                assert_eq!(a.shape.0 * a.shape.1 * a.shape.2, data.image_len, "augment shape does not match the image length");
                assert!(a.transforms.len() >= n, "{} transforms for a batch of {n}", a.transforms.len());
                (a.shape, a.transforms)
            }
            // The binding must hold some buffer; the kernel does not read it.
            None => ((0, 0, 0), idx),
        };
        for chunk in &data.chunks {
            let params = [
                n as u32, data.image_len as u32, chunk.first_image as u32, chunk.images as u32,
                data.count as u32, augment.is_some() as u32, h as u32, w as u32,
                c as u32, 0, 0, 0,
            ];
            let bound = [
                idx.at(1),
                Bound { binding: 2, buffer: &chunk.buffer, id: chunk.id },
                Bound { binding: 3, buffer: &data.labels, id: data.labels_id },
                x.at(4),
                labels.at(5),
                transforms.at(6),
            ];
            self.recorder.dispatch(&self.ctx.device, &self.pipelines.gather_batch, &params, &bound, groups);
        }
    }
}
