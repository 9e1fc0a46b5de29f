//! Studies and trials as the API shows them, and their rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trainyard_store::{StudyRow, TrialRow};
use trainyard_tune::space::Params;
use trainyard_tune::{Direction, StudySpec, TrialRecord, TrialState};
use utoipa::ToSchema;

use crate::ComputeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StudyState {
    /// Asking for trials (or, without a template, taking them through the API).
    Running,
    /// Asked to stop: its running trials are being cancelled.
    Stopping,
    /// Its budget is spent (or its space exhausted) and every trial has finished.
    Done,
    /// Stopped by a user.
    Stopped,
    /// Stopped by its `max_failed_trials`.
    Failed,
}

impl StudyState {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Running => "running",
            StudyState::Stopping => "stopping",
            StudyState::Done => "done",
            StudyState::Stopped => "stopped",
            StudyState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            StudyState::Running,
            StudyState::Stopping,
            StudyState::Done,
            StudyState::Stopped,
            StudyState::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Study {
    pub id: String,
    pub name: String,
    pub workspace: String,
    pub state: StudyState,
    /// Why it stopped, when it did not simply finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The specification, its sampler's seed filled in.
    pub spec: StudySpec,
    /// Trials per state.
    pub counts: BTreeMap<String, i64>,
    /// The best finished trial so far (absent with several objectives: see `pareto_front`).
    pub best: Option<Trial>,
    /// With several objectives (a study kept for an Optuna client created with
    /// `directions`): their directions, in order. Absent with one (`spec.objective`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directions: Option<Vec<Direction>>,
    /// With several objectives: the numbers of the finished trials no other finished trial
    /// beats on every objective (Optuna's `best_trials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pareto_front: Option<Vec<u64>>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trial {
    pub number: u64,
    #[schema(value_type = Object)]
    pub params: Params,
    pub state: TrialState,
    /// Its objective's value (the first objective's, with several).
    pub value: Option<f64>,
    /// With several objectives: every objective's value, in order (absent when one of them
    /// is not finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
    /// The constraint metric's value (feasible at or below 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<f64>,
    /// `[step, value]` pairs.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub intermediate: Vec<(u64, f64)>,
    /// Its successive-halving rung (0 without promotions).
    pub rung: u32,
    /// Resource used over all its rungs.
    pub resource: u64,
    /// The job (and run) of its current or last rung.
    pub job_id: Option<String>,
    /// Its run (for a job's trial, the job's id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The job of its previous rung, whose checkpoint this rung resumed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Store(trainyard_store::StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

impl Trial {
    pub fn new(number: u64, params: Params, job_id: Option<String>, now_ms: i64) -> Self {
        Trial {
            number,
            params,
            state: TrialState::Running,
            value: None,
            values: None,
            constraint: None,
            intermediate: Vec::new(),
            rung: 0,
            resource: 0,
            run_id: job_id.clone(),
            job_id,
            resume_from: None,
            message: None,
            started_at_ms: now_ms,
            finished_at_ms: None,
        }
    }

    pub fn from_row(row: &TrialRow) -> Result<Self, ComputeError> {
        let what = || format!("trial {} of study {}", row.number, row.study_id);
        Ok(Trial {
            number: row.number as u64,
            params: serde_json::from_str(&row.params).map_err(|e| corrupt(&what(), e))?,
            state: TrialState::parse(&row.state)
                .ok_or_else(|| corrupt(&what(), format!("state `{}`", row.state)))?,
            value: row.value,
            values: None,
            constraint: row.constraint_value,
            intermediate: serde_json::from_str(&row.intermediate)
                .map_err(|e| corrupt(&what(), e))?,
            rung: row.rung as u32,
            resource: row.resource as u64,
            run_id: row.job_id.clone(),
            job_id: row.job_id.clone(),
            resume_from: row.resume_from.clone(),
            message: row.message.clone(),
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
        })
    }

    pub fn to_row(&self, study_id: &str) -> TrialRow {
        TrialRow {
            study_id: study_id.to_string(),
            number: self.number as i64,
            params: serde_json::to_string(&self.params).expect("JSON values serialise"),
            state: self.state.as_str().to_string(),
            value: self.value,
            constraint_value: self.constraint,
            intermediate: serde_json::to_string(&self.intermediate).expect("numbers serialise"),
            rung: self.rung as i64,
            resource: self.resource as i64,
            job_id: self.job_id.clone(),
            resume_from: self.resume_from.clone(),
            message: self.message.clone(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
        }
    }

    /// What samplers and rules read.
    pub fn record(&self) -> TrialRecord {
        TrialRecord {
            number: self.number,
            params: self.params.clone(),
            state: self.state,
            value: self.value,
            constraint: self.constraint,
            intermediate: self.intermediate.clone(),
            rung: self.rung,
        }
    }

    pub fn finish(&mut self, state: TrialState, message: Option<String>, now_ms: i64) {
        self.state = state;
        if message.is_some() {
            self.message = message;
        }
        self.finished_at_ms = Some(now_ms);
    }
}

impl Study {
    pub fn spec_of(row: &StudyRow) -> Result<StudySpec, ComputeError> {
        serde_json::from_str(&row.spec).map_err(|e| corrupt(&format!("study {}", row.name), e))
    }

    pub fn state_of(row: &StudyRow) -> Result<StudyState, ComputeError> {
        StudyState::parse(&row.state).ok_or_else(|| {
            corrupt(
                &format!("study {}", row.name),
                format!("state `{}`", row.state),
            )
        })
    }
}
