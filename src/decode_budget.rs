//! The memory that full-size image decodes may hold at once, shared by every thread of the
//! process. A 500 KB PNG can declare 64 megapixels of 16-bit RGBA, about 13 bytes a pixel once
//! decoded and converted (~830 MB): decoding one per core at once could take all the memory a
//! machine has. Each such decode reserves its share first and waits while the budget is spent.
//! JPEGs are not counted: they decode DCT-scaled to near the model input.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// The most a decoded pixel costs: 8 bytes at 16-bit RGBA, 4 more for its 8-bit copy, and one
/// for the resize's buffers.
pub const BYTES_PER_PIXEL: u64 = 13;

struct Budget {
    total: u64,
    free: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A thread that panicked while holding the lock left the count itself consistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A quarter of the memory this process may use (1 GiB where that is unknown).
fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let total = crate::system_info::usable_memory_bytes().map_or(1 << 30, |m| m / 4);
        Budget { total, free: Mutex::new(total), freed: Condvar::new() }
    })
}

/// A share of the budget, given back when dropped.
pub struct Reservation {
    bytes: u64,
}

/// Waits until a decode of `pixels` full-size pixels fits in the budget, then holds its share.
/// One larger than the whole budget waits for all of it (it then decodes alone).
pub fn reserve(pixels: u64) -> Reservation {
    if pixels == 0 {
        return Reservation { bytes: 0 };
    }
    let b = budget();
    let bytes = pixels.saturating_mul(BYTES_PER_PIXEL).min(b.total);
    let mut free = b.lock();
    while *free < bytes {
        free = b.freed.wait(free).unwrap_or_else(|e| e.into_inner());
    }
    *free -= bytes;
    Reservation { bytes }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let b = budget();
            *b.lock() += self.bytes;
            b.freed.notify_all();
        }
    }
}
