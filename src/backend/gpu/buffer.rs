//! Storage buffers with a lifetime the backend can trust. Each buffer has an id, unique for the
//! backend's life, that keys the recorder's bind-group cache; dropping the buffer retires its id,
//! and the recorder then drops every cached bind group (and uniform) that binds it. A cache
//! entry therefore never outlives the buffers it binds, and a long-lived process gets its device
//! memory back when it drops a model or a data set.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What buffers report back to their backend: bytes alive, and ids dropped since the recorder
/// last looked. Shared (Arc) between the backend and every buffer it made.
#[derive(Default)]
pub(super) struct BufferRegistry {
    next_id: AtomicU64,
    live_bytes: AtomicU64,
    retired: Mutex<Vec<u64>>,
}

impl BufferRegistry {
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Bytes of storage buffers alive now.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// The ids dropped since the last call.
    pub fn take_retired(&self) -> Vec<u64> {
        std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// True when some id was dropped and not yet taken (a cheap check before taking).
    pub fn has_retired(&self) -> bool {
        !self.retired.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

/// An array of `T` (f32 or u32) in a GPU storage buffer, bound whole by the kernels.
pub struct GpuBuffer<T> {
    buffer: wgpu::Buffer,
    len: usize,
    id: u64,
    registry: Arc<BufferRegistry>,
    _elements: PhantomData<T>,
}

/// An f32 array on the GPU (activations, weights, gradients).
pub type GpuTensor = GpuBuffer<f32>;
/// A u32 array on the GPU (batch indices, labels, max-pool argmax, packed image bytes).
pub type GpuIndices = GpuBuffer<u32>;

impl<T> GpuBuffer<T> {
    /// Wraps a freshly created storage buffer of `len` elements; counts its bytes as alive.
    pub(super) fn new(buffer: wgpu::Buffer, len: usize, registry: &Arc<BufferRegistry>) -> Self {
        registry.live_bytes.fetch_add(buffer.size(), Ordering::Relaxed);
        GpuBuffer { buffer, len, id: registry.new_id(), registry: registry.clone(), _elements: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub(super) fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// This buffer bound at `binding` of a dispatch.
    pub(super) fn at(&self, binding: u32) -> Bound<'_> {
        Bound { binding, buffer: &self.buffer, id: self.id }
    }
}

impl<T> Drop for GpuBuffer<T> {
    fn drop(&mut self) {
        self.registry.live_bytes.fetch_sub(self.buffer.size(), Ordering::Relaxed);
        self.registry.retired.lock().unwrap_or_else(|p| p.into_inner()).push(self.id);
        // Cached bind groups still hold the wgpu buffer; the recorder drops them (and with
        // them the last reference) before it records the next dispatch or reports its size.
    }
}

/// A buffer bound at `binding` of one dispatch (binding 0 is the recorder's parameter uniform).
pub struct Bound<'a> {
    pub binding: u32,
    pub buffer: &'a wgpu::Buffer,
    /// Unique per buffer for the backend's lifetime: the bind-group cache key.
    pub id: u64,
}
