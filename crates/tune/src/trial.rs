//! A trial as the samplers and rules see it: its configuration, its state and the values it
//! reported.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::space::Params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Suggested and not yet finished (its job queued or running).
    Running,
    /// Finished a rung of successive halving and waits to be promoted or left there.
    Paused,
    /// Finished with a value.
    Complete,
    /// Stopped early by the study's rule; its last reported value is kept.
    Pruned,
    /// Ended without a value (the job failed, or the client said so).
    Failed,
}

impl TrialState {
    pub const ALL: [TrialState; 5] = [
        TrialState::Running,
        TrialState::Paused,
        TrialState::Complete,
        TrialState::Pruned,
        TrialState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Running => "running",
            TrialState::Paused => "paused",
            TrialState::Complete => "complete",
            TrialState::Pruned => "pruned",
            TrialState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the trial will never change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TrialState::Complete | TrialState::Pruned | TrialState::Failed
        )
    }
}

/// What samplers and rules read of a trial. `value` is as reported (the study's direction is
/// applied by whoever reads it); `intermediate` is `(step, value)` ordered by step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub number: u64,
    pub params: Params,
    pub state: TrialState,
    pub value: Option<f64>,
    /// The constraint metric: the trial is feasible when it is at most 0.
    pub constraint: Option<f64>,
    pub intermediate: Vec<(u64, f64)>,
    /// The successive-halving rung the trial last finished or runs (0 without ASHA).
    pub rung: u32,
}

impl TrialRecord {
    pub fn new(number: u64, params: Params) -> Self {
        TrialRecord {
            number,
            params,
            state: TrialState::Running,
            value: None,
            constraint: None,
            intermediate: Vec::new(),
            rung: 0,
        }
    }

    pub fn is_feasible(&self) -> bool {
        self.constraint.is_none_or(|c| c <= 0.0)
    }
}
