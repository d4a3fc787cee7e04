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

/// The wgpu buffer behind one or more `GpuBuffer`s (a whole buffer, or an arena and its views):
/// its bytes count as alive until the last of them is dropped.
struct Storage {
    buffer: wgpu::Buffer,
    registry: Arc<BufferRegistry>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.registry.live_bytes.fetch_sub(self.buffer.size(), Ordering::Relaxed);
    }
}

/// An array of `T` (f32 or u32) in a GPU storage buffer: a whole buffer, or a view of `len`
/// elements of an arena's buffer (`view`) starting at an offset the adapter lets a storage
/// binding start at. Kernels bind exactly the array (a view at its offset, with its size).
pub struct GpuBuffer<T> {
    storage: Arc<Storage>,
    /// Start in the buffer, in bytes (0 unless a view).
    offset: u64,
    len: usize,
    is_view: bool,
    id: u64,
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
        let storage = Arc::new(Storage { buffer, registry: registry.clone() });
        GpuBuffer { storage, offset: 0, len, is_view: false, id: registry.new_id(), _elements: PhantomData }
    }

    /// `len` elements of this buffer from element `start` on, as an array of their own with an
    /// id of its own (so the bind-group cache tells two views of one buffer apart). The memory
    /// lives while either does. `start` * 4 must be a multiple of the adapter's
    /// `min_storage_buffer_offset_alignment`; the caller (`GpuBackend::tensor_arena`) sees to it.
    pub(super) fn view(&self, start: usize, len: usize) -> Self {
        assert!(!self.is_view, "a view of a view");
        assert!(start.checked_add(len.max(1)).is_some_and(|end| end <= self.len), "view {start}+{len} outside a buffer of {}", self.len);
        let registry = &self.storage.registry;
        GpuBuffer { storage: self.storage.clone(), offset: 4 * start as u64, len, is_view: true, id: registry.new_id(), _elements: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The whole wgpu buffer (for a view: the arena's); copies start at `byte_offset`.
    pub(super) fn raw(&self) -> &wgpu::Buffer {
        &self.storage.buffer
    }
    pub(super) fn byte_offset(&self) -> u64 {
        self.offset
    }
    /// Bytes of this array in its buffer (a whole buffer's full size, at least 4).
    pub(super) fn byte_len(&self) -> u64 {
        if self.is_view {
            4 * self.len.max(1) as u64
        } else {
            self.storage.buffer.size()
        }
    }
    /// This buffer bound at `binding` of a dispatch.
    pub(super) fn at(&self, binding: u32) -> Bound<'_> {
        let range = self.is_view.then_some((self.offset, self.byte_len()));
        Bound { binding, buffer: &self.storage.buffer, id: self.id, range }
    }
}

impl<T> Drop for GpuBuffer<T> {
    fn drop(&mut self) {
        self.storage.registry.retired.lock().unwrap_or_else(|p| p.into_inner()).push(self.id);
        // Cached bind groups still hold the wgpu buffer; the recorder drops them (and with
        // them the last reference) before it records the next dispatch or reports its size.
    }
}

/// A buffer bound at `binding` of one dispatch (binding 0 is the recorder's parameter uniform).
pub struct Bound<'a> {
    pub binding: u32,
    pub buffer: &'a wgpu::Buffer,
    /// Unique per buffer or view for the backend's lifetime: the bind-group cache key.
    pub id: u64,
    /// (offset, size) in bytes for a view; None binds the whole buffer.
    pub range: Option<(u64, u64)>,
}

impl Bound<'_> {
    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        match self.range {
            None => self.buffer.as_entire_binding(),
            Some((offset, size)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: self.buffer, offset, size: wgpu::BufferSize::new(size) }),
        }
    }
}
