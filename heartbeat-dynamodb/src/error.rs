//! Errors: [`DynamoError`] for configuration and table setup, and the translation of
//! SDK errors into [`StoreError`]s that say what to do.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use heartbeat_core::StoreError;

/// The backend name used in [`StoreError`]s and logs.
pub const BACKEND: &str = "dynamodb";

/// Errors of configuration, connection and table setup (store operations return
/// [`StoreError`]).
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// A `dynamodb://` URL could not be parsed.
    #[error(
        "invalid DynamoDB URL: {reason}; expected dynamodb://<table>?region=<region>&endpoint=<url>"
    )]
    InvalidUrl {
        /// What is wrong (never contains credentials).
        reason: String,
    },
    /// The table name is not a valid DynamoDB table name.
    #[error(
        "invalid DynamoDB table name {name:?}: {reason}; use 3 to 255 characters from a-z, A-Z, 0-9, '_', '-' and '.'"
    )]
    InvalidTable {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// No region is configured anywhere.
    #[error(
        "no AWS region configured for DynamoDB table {table:?}; add ?region=<region> to the URL or set AWS_REGION"
    )]
    NoRegion {
        /// The table.
        table: String,
    },
    /// The table does not exist.
    #[error(
        "DynamoDB table {table:?} does not exist ({location}); create it with `heartbeat init-store dynamodb://{table}` \
         or heartbeat_dynamodb::create_table (partition key `pk` of type String, TTL on attribute `ttl`)"
    )]
    TableMissing {
        /// The table.
        table: String,
        /// Region and endpoint, for the message.
        location: String,
    },
    /// The table exists but cannot be used as a heartbeat table.
    #[error("DynamoDB table {table:?} is not set up for heartbeat: {reason}")]
    TableMisconfigured {
        /// The table.
        table: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The table did not become active in time.
    #[error(
        "DynamoDB table {table:?} is still {status} after {waited:?}; check it in the AWS console and retry"
    )]
    TableNotActive {
        /// The table.
        table: String,
        /// Its last status.
        status: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A DynamoDB call failed.
    #[error("DynamoDB {operation} on table {table:?} failed: {message}")]
    Aws {
        /// The operation (`CreateTable`, `DescribeTable`, ...).
        operation: &'static str,
        /// The table.
        table: String,
        /// What happened, with advice when we have some.
        message: String,
        /// The SDK error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl DynamoError {
    /// Wraps an SDK error of a setup call.
    pub(crate) fn aws<E>(operation: &'static str, table: &str, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let message = match service_code(&err) {
            Some(code) if is_auth_code(code) => format!(
                "{} ({code}); check the AWS credentials and the IAM permissions for this table",
                DisplayErrorContext(&err)
            ),
            _ => DisplayErrorContext(&err).to_string(),
        };
        Self::Aws {
            operation,
            table: table.to_owned(),
            message,
            source: Some(Box::new(err)),
        }
    }
}

/// The service error code (`ConditionalCheckFailedException`, ...), if the service
/// answered with one.
pub(crate) fn service_code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

fn is_auth_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
    )
}

fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException"
            | "TransactionConflictException"
            | "LimitExceededException"
    )
}

/// What a store operation needs to explain a failure.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    pub table: String,
    pub location: String,
    pub attempt_timeout: Duration,
}

impl ErrorContext {
    /// The message for a missing table.
    pub fn table_missing(&self) -> String {
        DynamoError::TableMissing {
            table: self.table.clone(),
            location: self.location.clone(),
        }
        .to_string()
    }

    /// Translates an SDK error of an operation on `key` into a [`StoreError`].
    /// `ConditionalCheckFailedException` becomes [`StoreError::Conflict`].
    pub fn store_error<E>(&self, key: &str, err: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let detail = DisplayErrorContext(&err).to_string();
        match &err {
            SdkError::TimeoutError(_) => StoreError::Timeout {
                key: key.to_owned(),
                after: self.attempt_timeout,
            },
            SdkError::DispatchFailure(d) if d.is_timeout() => StoreError::Timeout {
                key: key.to_owned(),
                after: self.attempt_timeout,
            },
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => StoreError::Unavailable {
                backend: BACKEND,
                message: format!(
                    "request for key {key:?} failed ({}): {detail}",
                    self.location
                ),
                source: Some(Box::new(err)),
            },
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                match se.err().code() {
                    Some("ConditionalCheckFailedException") => StoreError::Conflict {
                        key: key.to_owned(),
                    },
                    Some("ResourceNotFoundException") => StoreError::Backend {
                        backend: BACKEND,
                        message: self.table_missing(),
                        source: Some(Box::new(err)),
                    },
                    Some(code) if is_throttling_code(code) => StoreError::Unavailable {
                        backend: BACKEND,
                        message: format!(
                            "DynamoDB kept refusing the request for key {key:?} ({code}) after the SDK's retries; \
                             the table is throttled or contended, raise its capacity or retry later"
                        ),
                        source: Some(Box::new(err)),
                    },
                    Some(code) if is_auth_code(code) => StoreError::Backend {
                        backend: BACKEND,
                        message: format!(
                            "DynamoDB refused the credentials or permissions ({code}) for table {:?}: {detail}; \
                             check the AWS credential chain and the IAM policy",
                            self.table
                        ),
                        source: Some(Box::new(err)),
                    },
                    _ if status >= 500 => StoreError::Unavailable {
                        backend: BACKEND,
                        message: format!("DynamoDB answered {status} for key {key:?}: {detail}"),
                        source: Some(Box::new(err)),
                    },
                    _ => StoreError::Backend {
                        backend: BACKEND,
                        message: format!("request for key {key:?} failed: {detail}"),
                        source: Some(Box::new(err)),
                    },
                }
            }
            _ => StoreError::Backend {
                backend: BACKEND,
                message: format!("request for key {key:?} could not be built or sent: {detail}"),
                source: Some(Box::new(err)),
            },
        }
    }
}

/// A [`StoreError::Backend`] for a request that could not be built.
pub(crate) fn build_error(
    key: &str,
    err: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: format!("could not build the DynamoDB request for key {key:?}: {err}"),
        source: Some(Box::new(err)),
    }
}
