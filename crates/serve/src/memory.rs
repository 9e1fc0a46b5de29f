//! Memory as the operating system sees it: what loading a model really cost is the growth of
//! the resident set while it loaded, and the budget is checked against those measurements.

use crate::ServeError;

/// Resident set size of this process, in bytes (0 where `/proc` is missing).
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(4096) as u64
}

/// Bytes the allocator has handed out and not got back (heap in use + mmapped blocks).
/// Unlike the resident set, it grows when a load reuses memory an unloaded model freed, so
/// the difference across a load is what the model holds. `None` off glibc.
pub fn allocated_bytes() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// Caps glibc's malloc arenas at two (unless `MALLOC_ARENA_MAX` says otherwise). By default
/// every thread that allocates may get its own arena, and memory an unloaded model freed in
/// one arena stays resident while the next model grows another: measured on the eviction
/// test, the resident set ran 11-81 MiB over the budget with per-thread arenas and stayed
/// within it with two. Call before any threads start.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no threads exist yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Gives freed heap memory back to the OS, so an unloaded model's pages leave the resident
/// set (glibc keeps them otherwise).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Samples the resident set on a thread while something runs, to learn its peak: a model's
/// load briefly needs more than the loaded model holds (parsed graph, copies of weights).
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakSampler {
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = resident_bytes();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
                peak = peak.max(resident_bytes());
            }
            peak.max(resident_bytes())
        });
        Self { stop, thread }
    }

    /// The highest resident set seen.
    pub fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `2GiB`, `512MiB`, `1.5G`, `300M`, `1000000` (bytes).
pub fn parse_size(text: &str) -> Result<u64, ServeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| ServeError::invalid(format!("'{text}' is not a size like 2GiB or 512MiB")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        _ => {
            return Err(ServeError::invalid(format!(
                "'{text}': unknown unit '{unit}' (use B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB)"
            )))
        }
    };
    if !n.is_finite() || n <= 0.0 {
        return Err(ServeError::invalid(format!("'{text}' must be more than 0")));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(resident_bytes() > 0);
    }
}
