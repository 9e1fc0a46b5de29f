//! Extractors whose rejections speak the API's error format and name the field at fault.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::ApiError;
use crate::ErrorCode;

/// JSON body; malformed JSON, wrong types and missing fields become 4xx with the field named.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = text
                .split_once("target type: ")
                .map(|(_, d)| d.to_string())
                .unwrap_or(text);
            let (field, message) = split_field(&detail);
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidField,
                detail.clone(),
            )
            .with_field(
                field.unwrap_or_else(|| missing_field(&message).unwrap_or_else(|| "body".into())),
            )
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {}", e.body_text()),
        )
        .with_field("body"),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!("the body is larger than {} bytes", crate::MAX_BODY_BYTES),
            )
        }
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            other.body_text(),
        ),
    }
}

/// `resources.cpus: invalid type…` → (`resources.cpus`, `invalid type…`).
fn split_field(detail: &str) -> (Option<String>, String) {
    match detail.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && path != "." => {
            (Some(path.to_string()), rest.to_string())
        }
        Some((_, rest)) => (None, rest.to_string()),
        None => (None, detail.to_string()),
    }
}

/// serde names a missing field in backticks: "missing field `command`".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.split_once("field `")?.1;
    Some(rest.split_once('`')?.0.to_string())
}

/// Query string with the API's error format.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text
                    .split_once("query string: ")
                    .map(|(_, d)| d.to_string())
                    .unwrap_or(text);
                let (field, _) = split_field(&detail);
                let field = field
                    .or_else(|| missing_field(&detail))
                    .unwrap_or_else(|| "query".into());
                Err(
                    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, detail)
                        .with_field(field),
                )
            }
            Err(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidQuery,
                other.body_text(),
            )),
        }
    }
}

/// Path parameters; one that cannot be read (invalid UTF-8 after percent-decoding, a
/// number that does not parse) is a 400 naming the parameter, in MLflow's error shape on its
/// routes and in ours elsewhere (axum's own rejection is plain text).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                let error = path_rejection(rejection);
                // Inside a nested router `parts.uri` has lost its prefix; the original has it.
                let path = parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or(parts.uri.path(), |o| o.0.path());
                Err(if crate::mlflow::is_mlflow_path(path) {
                    crate::mlflow::MlflowError::invalid(error.message).into_response()
                } else {
                    error.into_response()
                })
            }
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        // Parameters missing from a route that declares them: the route table's mistake.
        return ApiError::internal(rejection.body_text());
    };
    let message = e.body_text();
    let field = match e.kind() {
        ErrorKind::InvalidUtf8InPathParam { key }
        | ErrorKind::ParseErrorAtKey { key, .. }
        | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
        _ => None,
    };
    let error = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message);
    match field {
        Some(key) => error.with_field(key),
        None => error.with_field("path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_serde_messages() {
        let (f, m) = split_field("resources.cpus: invalid type: string \"x\", expected f64");
        assert_eq!(f.as_deref(), Some("resources.cpus"));
        assert!(m.starts_with("invalid type"));
        assert_eq!(
            missing_field("missing field `command` at line 1"),
            Some("command".into())
        );
        let (f, _) = split_field("missing field `command`");
        assert_eq!(f, None);
    }
}
