//! Request extractors whose rejections are [`ApiError`]s, so malformed input always gets a
//! problem+json answer instead of axum's plain-text one.

use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::problem::{ApiError, ProblemType};

/// JSON body extractor and response; rejects with 400/413/415/422 problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let kind = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemType::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ProblemType::Validation,
        _ => ProblemType::BadRequest,
    };
    let detail = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a body with `Content-Type: application/json`".to_owned()
        }
        JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {}", source_text(rejection)),
        JsonRejection::JsonDataError(_) => format!("invalid body: {}", source_text(rejection)),
        _ if kind == ProblemType::PayloadTooLarge => "request body is too large".to_owned(),
        _ => rejection.body_text(),
    };
    ApiError::new(kind, detail)
}

/// serde's own message ("missing field `email` at line 1 column 2") without axum's preamble.
fn source_text(rejection: &JsonRejection) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(rejection);
    let mut last = rejection.body_text();
    while let Some(err) = source {
        last = err.to_string();
        source = err.source();
    }
    last
}

/// Path parameter extractor; a malformed id is a 400 problem naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(inner) => {
            ApiError::bad_request(format!("invalid path parameter: {}", inner.body_text()))
        }
        other => ApiError::Internal(anyhow::anyhow!(
            "path extraction failed: {}",
            other.body_text()
        )),
    }
}

/// Query string extractor; a malformed query is a 400 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
}
