//! What this machine offers: cores, memory and GPUs, each overridable (for example
//! `--gpus 2` declares two fake GPUs so tests can check exclusive hand-out without any).

use std::process::Command;

use trainyard_core::Capacity;

#[derive(Debug, Clone, Default)]
pub struct CapacityOverrides {
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    pub gpus: Option<u32>,
}

pub fn detect_capacity(overrides: &CapacityOverrides) -> Capacity {
    let cpus = overrides.cpus.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0)
    });
    let memory_mb = overrides
        .memory_mb
        .unwrap_or_else(|| total_memory_mb().unwrap_or(1024));
    let gpus = match overrides.gpus {
        Some(n) => (0..n).collect(),
        None => nvidia_gpus(),
    };
    Capacity {
        cpus_milli: (cpus * 1000.0).round() as u64,
        memory_mb,
        gpus,
    }
}

fn total_memory_mb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total_mb(&meminfo)
}

fn parse_meminfo_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// GPU indices reported by `nvidia-smi`; none when it is absent or fails.
fn nvidia_gpus() -> Vec<u32> {
    let output = Command::new("nvidia-smi")
        .args(["--query-gpu=index", "--format=csv,noheader"])
        .output();
    match output {
        Ok(out) if out.status.success() => parse_gpu_indices(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

fn parse_gpu_indices(csv: &str) -> Vec<u32> {
    csv.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win() {
        let c = detect_capacity(&CapacityOverrides {
            cpus: Some(2.0),
            memory_mb: Some(512),
            gpus: Some(3),
        });
        assert_eq!(c.cpus_milli, 2000);
        assert_eq!(c.memory_mb, 512);
        assert_eq!(c.gpus, vec![0, 1, 2]);
    }

    #[test]
    fn parses_system_reports() {
        assert_eq!(
            parse_meminfo_total_mb("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24000)
        );
        assert_eq!(parse_gpu_indices("0\n1\n"), vec![0, 1]);
        assert!(parse_gpu_indices("").is_empty());
    }
}
