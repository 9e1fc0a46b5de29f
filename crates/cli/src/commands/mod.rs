pub mod jobs;
pub mod run;
