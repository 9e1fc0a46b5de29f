pub mod datasets;
pub mod inference;
pub mod jobs;
pub mod run;
pub mod status;
pub mod tracking;
pub mod train;
