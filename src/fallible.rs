//! Allocation that reports failure instead of aborting the process, for every size that comes
//! from input (a file, a checkpoint, a flag): `vec![0; n]` aborts when n cannot be had; and
//! input files read only after their size is checked.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// A vector of `len` zeros, or an error when that memory cannot be allocated. The allocator
/// hands out zeroed pages (calloc), which cost no resident memory until they are written.
pub fn zeroed_vec<T: bytemuck::Zeroable>(len: usize) -> Result<Vec<T>> {
    let too_big = || anyhow::anyhow!("cannot allocate {} values of {} bytes (out of memory)", len, std::mem::size_of::<T>());
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| too_big())?;
    if layout.size() == 0 {
        return Ok((0..len).map(|_| T::zeroed()).collect());
    }
    // SAFETY: the layout has a non-zero size; a non-null result is `len` zeroed, properly
    // aligned values of T (all-zero is a valid T: Zeroable), owned by the global allocator
    // with exactly this layout, which is what Vec::from_raw_parts requires.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            return Err(too_big());
        }
        Ok(Vec::from_raw_parts(ptr, len, len))
    }
}

/// An empty vector with room for `len` elements, or an error when that cannot be allocated.
pub fn with_capacity<T>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    if v.try_reserve_exact(len).is_err() {
        bail!("cannot allocate {} bytes (out of memory)", len.saturating_mul(std::mem::size_of::<T>()));
    }
    Ok(v)
}

/// Opens an input file for reading, refusing anything but a regular file. The check comes
/// before the open: opening a FIFO with no writer blocks forever. O_NONBLOCK keeps a FIFO
/// swapped in between the two from blocking (regular files ignore the flag).
pub fn open_regular_file(path: &Path, what: &str) -> Result<std::fs::File> {
    let cannot = || format!("{}: cannot read {what}", path.display());
    if !std::fs::metadata(path).with_context(cannot)?.is_file() {
        bail!("{}: not a regular file (cannot be {what})", path.display());
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).with_context(cannot)?;
    if !file.metadata().with_context(cannot)?.is_file() {
        bail!("{}: not a regular file (cannot be {what})", path.display());
    }
    Ok(file)
}

/// Reads a whole input file after checking it is a regular file of at most `max` bytes.
pub fn read_capped(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular_file(path, what)?;
    let info = file.metadata().with_context(|| format!("{}: cannot read {what}", path.display()))?;
    if info.len() > max {
        bail!("{}: {} bytes is larger than the limit for {what} ({max} bytes)", path.display(), info.len());
    }
    let mut bytes = with_capacity(info.len() as usize).with_context(|| format!("{}: reading {what}", path.display()))?;
    // take(): a file that grows while being read stays within the limit.
    file.take(max + 1).read_to_end(&mut bytes).with_context(|| format!("{}: cannot read {what}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{}: larger than the limit for {what} ({max} bytes)", path.display());
    }
    Ok(bytes)
}
