//! Extractors whose rejections speak the API's error format and name the field at fault.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
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
