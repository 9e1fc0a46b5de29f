use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Trainyard REST API", version = "1",
         description = "Jobs on local CPUs and GPUs. Every route but health needs `Authorization: Bearer TOKEN`."),
    paths(crate::jobs::submit, crate::jobs::list, crate::jobs::get, crate::jobs::cancel,
          crate::jobs::logs, crate::jobs::resources, crate::health::healthz, crate::health::readyz),
    components(schemas(trainyard_core::JobSubmission, trainyard_core::Job, trainyard_core::Resources,
                       trainyard_core::JobState, trainyard_core::ExitReason,
                       crate::jobs::JobPage, crate::ErrorBody, crate::ErrorDetail,
                       trainyard_compute::Usage, trainyard_compute::Amounts)),
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
