use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Trainyard REST API", version = "1",
         description = "Jobs on local CPUs and GPUs, and their tracking (experiments, runs, metrics, models). The MLflow-compatible API is at /api/2.0/mlflow. Every route but health needs `Authorization: Bearer TOKEN`; `X-Trainyard-Workspace` names the workspace a call acts on (default: the token's)."),
    paths(crate::jobs::submit, crate::jobs::list, crate::jobs::get, crate::jobs::cancel,
          crate::jobs::logs, crate::jobs::retry, crate::jobs::resources, crate::audit::list, crate::workspaces::list, crate::workspaces::set_policy, crate::workspaces::create, crate::workspaces::remove,
          crate::users::whoami, crate::users::list_tokens, crate::users::create_token, crate::users::revoke_token,
          crate::users::list_users, crate::users::create_user, crate::users::delete_user,
          crate::users::set_password, crate::users::login,
          crate::users::list_members, crate::users::set_member, crate::users::remove_member,
          crate::secrets::list, crate::secrets::put, crate::secrets::remove,
          crate::studies::create, crate::studies::list, crate::studies::get, crate::studies::best,
          crate::studies::stop, crate::studies::trials, crate::studies::trial, crate::studies::ask,
          crate::studies::tell, crate::studies::report, crate::health::healthz, crate::health::readyz,
          crate::tracking::list_experiments, crate::tracking::list_runs, crate::tracking::get_run,
          crate::tracking::metric, crate::tracking::metric_histories, crate::tracking::list_models, crate::tracking::model_graph, crate::tracking::get_model,
          crate::datasets::list, crate::datasets::versions, crate::datasets::version, crate::datasets::head,
          crate::datasets::create_version, crate::datasets::put_shard, crate::datasets::get_shard),
    components(schemas(trainyard_core::JobSubmission, trainyard_core::Job, trainyard_core::Resources,
                       trainyard_core::JobState, trainyard_core::ExitReason,
                       crate::jobs::JobPage, crate::audit::AuditPage, crate::workspaces::WorkspaceList, crate::workspaces::NewWorkspace,
                       crate::users::WhoAmI, crate::users::CreatedToken, crate::users::TokenList, crate::users::UserList,
                       crate::users::NewUser, crate::users::MemberList, crate::users::MemberRole,
                       crate::users::NewPassword, crate::users::Login,
                       crate::secrets::SecretInfo, crate::secrets::SecretList, crate::secrets::SecretValue,
                       crate::studies::StudyList, crate::studies::TrialPage, crate::studies::ReportAnswer,
                       trainyard_compute::studies::Study, trainyard_compute::studies::StudyState,
                       trainyard_compute::studies::Trial, trainyard_compute::studies::Tell,
                       trainyard_compute::studies::Report, trainyard_tune::StudySpec,
                       trainyard_tune::study::Objective, trainyard_tune::study::Budget,
                       trainyard_tune::study::TrialTemplate, trainyard_tune::Direction,
                       trainyard_tune::ParamSpec, trainyard_tune::space::ParamKind,
                       trainyard_tune::sampler::SamplerConfig, trainyard_tune::pruner::PrunerConfig,
                       trainyard_tune::TrialState,
                       trainyard_core::TokenInfo, trainyard_core::TokenRequest, trainyard_core::UserInfo,
                       trainyard_core::Member, trainyard_core::Role,
                       trainyard_compute::WorkspaceView, trainyard_compute::WorkspaceUse,
                       trainyard_compute::fair_share::WorkspacePolicy, trainyard_compute::fair_share::Quota, trainyard_core::AuditEvent,
                       trainyard_core::AuditOutcome, crate::ErrorBody, crate::ErrorDetail, crate::ErrorCode,
                       trainyard_compute::Usage, trainyard_compute::Amounts,
                       trainyard_core::JobTracking, crate::tracking::ExperimentView,
                       crate::tracking::ExperimentList, crate::tracking::RunView,
                       crate::tracking::RunList, crate::tracking::LatestMetric,
                       crate::tracking::MetricSeriesView, crate::tracking::MetricPointView,
                       crate::tracking::HistoriesRequest, crate::tracking::Histories,
                       crate::tracking::RunSeriesView, crate::datasets::DatasetHead,
                       crate::tracking::ModelView, crate::tracking::ModelVersionView,
                       crate::tracking::ModelList, trainyard_datasets::DatasetVersionInfo,
                       trainyard_datasets::DatasetInfo, crate::datasets::DatasetList,
                       crate::datasets::DatasetVersionList, crate::datasets::CreateVersion,
                       trainyard_datasets::CreatedVersion)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 description of this API.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
