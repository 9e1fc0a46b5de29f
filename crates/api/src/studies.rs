//! REST v1 hyper-parameter studies: create, list, get (with counts and the best trial),
//! best, stop; trials listed by page; and, for studies without a template, ask / tell /
//! report for a client that runs trials itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use trainyard_compute::studies::{Report, Studies, Study, Tell, Trial};
use trainyard_core::Principal;
use trainyard_tune::StudySpec;
use utoipa::{IntoParams, ToSchema};

use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiError, AppState, ErrorBody, ErrorCode};

fn studies(state: &AppState) -> &Studies {
    &state.studies
}

fn number(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid_field("number", "a trial number is a whole number ≥ 0"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StudyList {
    pub studies: Vec<Study>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrialsQuery {
    /// At most this many trials (1-1000, default 100).
    max_results: Option<i64>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// One page of a study's trials, by number.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialPage {
    pub trials: Vec<Trial>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

/// A trial's intermediate value recorded, and whether the study's rule would stop it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAnswer {
    pub trial: Trial,
    /// True when the study's stopping rule says this trial should stop here.
    pub prune: bool,
}

/// Create a study. With a `trial` template the server runs its trials as jobs; without one,
/// clients ask for trials and tell their values.
#[utoipa::path(post, path = "/api/v1/studies", tag = "studies", request_body = StudySpec,
    responses((status = 201, body = Study), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "a study of that name exists")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(spec): ApiJson<StudySpec>,
) -> Result<(StatusCode, Json<Study>), ApiError> {
    let study = studies(&state).create(&who.workspace, spec).await?;
    Ok((StatusCode::CREATED, Json(study)))
}

/// The workspace's studies, newest first.
#[utoipa::path(get, path = "/api/v1/studies", tag = "studies",
    responses((status = 200, body = StudyList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<StudyList>, ApiError> {
    let studies = studies(&state).list(&who.workspace).await?;
    Ok(Json(StudyList { studies }))
}

/// A study with its trial counts and best trial.
#[utoipa::path(get, path = "/api/v1/studies/{name}", tag = "studies",
    params(("name" = String, Path, description = "the study")),
    responses((status = 200, body = Study), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Study>, ApiError> {
    Ok(Json(studies(&state).get(&who.workspace, &name).await?))
}

/// The best finished trial (feasible first); 404 while none has finished, 409 for a study
/// with several objectives (its `pareto_front` holds its best trials).
#[utoipa::path(get, path = "/api/v1/studies/{name}/best", tag = "studies",
    params(("name" = String, Path, description = "the study")),
    responses((status = 200, body = Trial), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "several objectives")),
    security(("bearer" = [])))]
pub async fn best(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Trial>, ApiError> {
    studies(&state)
        .best(&who.workspace, &name)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::TrialNotFound,
                format!("study `{name}` has no finished trial yet"),
            )
        })
}

/// Stop a study: no new trials; a template's running trials are cancelled.
#[utoipa::path(post, path = "/api/v1/studies/{name}/stop", tag = "studies",
    params(("name" = String, Path, description = "the study")),
    responses((status = 200, body = Study), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already finished")),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Study>, ApiError> {
    Ok(Json(studies(&state).stop(&who.workspace, &name).await?))
}

/// A page of the study's trials, by number.
#[utoipa::path(get, path = "/api/v1/studies/{name}/trials", tag = "studies",
    params(("name" = String, Path, description = "the study"), TrialsQuery),
    responses((status = 200, body = TrialPage), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn trials(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<TrialsQuery>,
) -> Result<Json<TrialPage>, ApiError> {
    let limit = query.max_results.unwrap_or(100);
    if !(1..=trainyard_compute::studies::MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field("max_results", "must be 1 to 1000"));
    }
    let after = match query.page_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|_| ApiError::invalid_field("page_token", "not a token this API gave"))?,
        ),
    };
    let (trials, next) = studies(&state)
        .trials(&who.workspace, &name, after, limit)
        .await?;
    Ok(Json(TrialPage {
        trials,
        next_page_token: next.map(|n| n.to_string()),
    }))
}

/// One trial.
#[utoipa::path(get, path = "/api/v1/studies/{name}/trials/{number}", tag = "studies",
    params(("name" = String, Path, description = "the study"),
           ("number" = u64, Path, description = "the trial's number")),
    responses((status = 200, body = Trial), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn trial(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((name, n)): Path<(String, String)>,
) -> Result<Json<Trial>, ApiError> {
    let n = number(&n)?;
    Ok(Json(studies(&state).trial(&who.workspace, &name, n).await?))
}

/// Ask for a trial to run: the sampler's next configuration (studies without a template).
#[utoipa::path(post, path = "/api/v1/studies/{name}/trials", tag = "studies",
    params(("name" = String, Path, description = "the study")),
    responses((status = 201, body = Trial), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the study takes no new trials")),
    security(("bearer" = [])))]
pub async fn ask(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Trial>), ApiError> {
    let trial = studies(&state).ask(&who.workspace, &name).await?;
    Ok((StatusCode::CREATED, Json(trial)))
}

/// Tell how a trial ended: `complete` with its value, `pruned` or `failed`.
#[utoipa::path(put, path = "/api/v1/studies/{name}/trials/{number}", tag = "studies",
    params(("name" = String, Path, description = "the study"),
           ("number" = u64, Path, description = "the trial's number")),
    request_body = Tell,
    responses((status = 200, body = Trial), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the trial has already finished")),
    security(("bearer" = [])))]
pub async fn tell(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((name, n)): Path<(String, String)>,
    ApiJson(tell): ApiJson<Tell>,
) -> Result<Json<Trial>, ApiError> {
    let n = number(&n)?;
    Ok(Json(
        studies(&state).tell(&who.workspace, &name, n, tell).await?,
    ))
}

/// Report an intermediate value; the answer says whether the study's rule stops the trial.
#[utoipa::path(post, path = "/api/v1/studies/{name}/trials/{number}/report", tag = "studies",
    params(("name" = String, Path, description = "the study"),
           ("number" = u64, Path, description = "the trial's number")),
    request_body = Report,
    responses((status = 200, body = ReportAnswer), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((name, n)): Path<(String, String)>,
    ApiJson(report): ApiJson<Report>,
) -> Result<Json<ReportAnswer>, ApiError> {
    let n = number(&n)?;
    let (trial, prune) = studies(&state)
        .report(&who.workspace, &name, n, report)
        .await?;
    Ok(Json(ReportAnswer { trial, prune }))
}
