use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::InvalidField;

/// What a job asks for. CPUs may be fractional (`0.5`); memory is reserved only when given.
/// With `workers > 1` the job is a gang: that many processes, each with these CPUs, memory
/// and GPUs, started all at once or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "one_cpu")]
    #[schema(exclusive_minimum = 0.0, maximum = 100000.0)]
    pub cpus: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub gpus: u32,
    /// Processes of a gang-scheduled job (torchrun-style: each sees `RANK`, `WORLD_SIZE`,
    /// `MASTER_ADDR`, …). One by default.
    #[serde(default = "one_worker", skip_serializing_if = "is_one")]
    #[schema(minimum = 1, maximum = 256)]
    pub workers: u32,
}

/// Most workers one gang may have.
pub const MAX_WORKERS: u32 = 256;

fn one_cpu() -> f64 {
    1.0
}

fn one_worker() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpus: 1.0,
            memory_mb: None,
            gpus: 0,
            workers: 1,
        }
    }
}

impl Resources {
    /// What the whole job holds: every worker's share added up (one worker).
    pub fn total(&self) -> Resources {
        let n = self.workers.max(1);
        Resources {
            cpus: self.cpus * f64::from(n),
            memory_mb: self.memory_mb.map(|m| m.saturating_mul(u64::from(n))),
            gpus: self.gpus.saturating_mul(n),
            workers: 1,
        }
    }

    /// CPUs in thousandths, the unit the scheduler counts in (rounded up).
    pub fn cpus_milli(&self) -> u64 {
        (self.cpus * 1000.0).ceil() as u64
    }

    pub fn validate(&self) -> Result<(), InvalidField> {
        if !self.cpus.is_finite() || self.cpus <= 0.0 {
            return Err(InvalidField::new(
                "resources.cpus",
                format!("must be a positive number, got {}", self.cpus),
            ));
        }
        if self.cpus > 100_000.0 {
            return Err(InvalidField::new("resources.cpus", "is unreasonably large"));
        }
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(InvalidField::new(
                "resources.workers",
                format!("must be between 1 and {MAX_WORKERS}"),
            ));
        }
        if self.memory_mb == Some(0) {
            return Err(InvalidField::new(
                "resources.memory_mb",
                "must be at least 1 when given (omit it to reserve no memory)",
            ));
        }
        Ok(())
    }
}

/// What a machine offers to jobs. GPUs are named by index, as `CUDA_VISIBLE_DEVICES` names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub cpus_milli: u64,
    pub memory_mb: u64,
    pub gpus: Vec<u32>,
}

impl Capacity {
    /// Why `want` could never run here, even on an idle machine; `None` when it could.
    pub fn never_fits(&self, want: &Resources) -> Option<InvalidField> {
        if want.cpus_milli() > self.cpus_milli {
            return Some(InvalidField::new(
                "resources.cpus",
                format!(
                    "asks for {} CPUs but this machine has {}",
                    want.cpus,
                    self.cpus_milli as f64 / 1000.0
                ),
            ));
        }
        if let Some(mem) = want.memory_mb {
            if mem > self.memory_mb {
                return Some(InvalidField::new(
                    "resources.memory_mb",
                    format!(
                        "asks for {mem} MB but this machine has {} MB",
                        self.memory_mb
                    ),
                ));
            }
        }
        if want.gpus as usize > self.gpus.len() {
            return Some(InvalidField::new(
                "resources.gpus",
                format!(
                    "asks for {} GPUs but this machine has {}",
                    want.gpus,
                    self.gpus.len()
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Capacity {
        Capacity {
            cpus_milli: 2000,
            memory_mb: 1024,
            gpus: vec![0, 1],
        }
    }

    #[test]
    fn rejects_zero_and_negative_cpus() {
        for cpus in [0.0, -1.0, f64::NAN] {
            let r = Resources {
                cpus,
                ..Default::default()
            };
            assert_eq!(r.validate().unwrap_err().field, "resources.cpus");
        }
        let r = Resources {
            memory_mb: Some(0),
            ..Default::default()
        };
        assert_eq!(r.validate().unwrap_err().field, "resources.memory_mb");
    }

    #[test]
    fn requests_beyond_the_machine_never_fit() {
        let m = machine();
        assert!(m.never_fits(&Resources::default()).is_none());
        let too_many_gpus = Resources {
            gpus: 3,
            ..Default::default()
        };
        assert_eq!(
            m.never_fits(&too_many_gpus).unwrap().field,
            "resources.gpus"
        );
        let too_much_cpu = Resources {
            cpus: 2.5,
            ..Default::default()
        };
        assert_eq!(m.never_fits(&too_much_cpu).unwrap().field, "resources.cpus");
        let too_much_memory = Resources {
            memory_mb: Some(2048),
            ..Default::default()
        };
        assert_eq!(
            m.never_fits(&too_much_memory).unwrap().field,
            "resources.memory_mb"
        );
    }

    #[test]
    fn fractional_cpus_round_up() {
        let r = Resources {
            cpus: 0.0005,
            ..Default::default()
        };
        assert_eq!(r.cpus_milli(), 1);
    }
}
