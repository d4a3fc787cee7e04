//! Facts about this process and machine that runs and benchmarks report.

/// Peak resident memory of this process in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// The CPU model and core count, for naming the machine next to figures.
pub fn machine_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// This machine's physical memory in bytes (Linux /proc/meminfo; None elsewhere).
pub fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The memory this process may use: the physical memory, or less under an address-space limit
/// (`ulimit -v`, `prlimit --as`). None where neither is known.
pub fn usable_memory_bytes() -> Option<u64> {
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Max address space"))?;
        line.trim_start_matches("Max address space").split_whitespace().next()?.parse::<u64>().ok()
    });
    match (total_memory_bytes(), limit) {
        (Some(t), Some(l)) => Some(t.min(l)),
        (t, l) => t.or(l),
    }
}
