//! Domain types shared by every layer of Trainyard: ids, jobs, resources and the
//! validation rules for what a user may submit. No I/O lives here.

pub mod access;
pub mod audit;
pub mod dataset;
pub mod error;
pub mod id;
pub mod job;
pub mod resources;
pub mod time;

pub use access::{Member, Need, Principal, Role, TokenInfo, TokenRequest, UserInfo};
pub use audit::{AuditEvent, AuditOutcome};
pub use error::InvalidField;
pub use id::new_id;
pub use job::{BuiltinTask, ExitReason, Job, JobState, JobSubmission, JobTracking, TaskKind};
pub use resources::{Capacity, Resources};

/// The workspace every row belongs to until multi-tenancy arrives.
pub const DEFAULT_WORKSPACE: &str = "default";
