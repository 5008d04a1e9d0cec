//! Errors with stable codes. The binding maps each `Error` to a JS error whose `code` is `Error::code()`,
//! so codes are part of the public contract: never rename one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidModel,
    ModelNotFound,
    InvalidSamplingParams,
    InvalidInput,
    InvalidOptions,
    PromptTooLong,
    EngineShutdown,
    Aborted,
    Download,
    /// The model has no chat template, or its template failed to compile or render (raise_exception included).
    ChatTemplate,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidModel => "ERR_INVALID_MODEL",
            ErrorCode::ModelNotFound => "ERR_MODEL_NOT_FOUND",
            ErrorCode::InvalidSamplingParams => "ERR_INVALID_SAMPLING_PARAMS",
            ErrorCode::InvalidInput => "ERR_INVALID_INPUT",
            ErrorCode::InvalidOptions => "ERR_INVALID_OPTIONS",
            ErrorCode::PromptTooLong => "ERR_PROMPT_TOO_LONG",
            ErrorCode::EngineShutdown => "ERR_ENGINE_SHUTDOWN",
            ErrorCode::Aborted => "ERR_ABORTED",
            ErrorCode::Download => "ERR_DOWNLOAD",
            ErrorCode::ChatTemplate => "ERR_CHAT_TEMPLATE",
            ErrorCode::Internal => "ERR_INTERNAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }
    pub fn invalid_model(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidModel, message)
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidSamplingParams, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidInput, message)
    }
    pub fn invalid_options(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidOptions, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
    /// Prefixes the message with context, keeping the code (the cause chain, flattened).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for Error {}

/// Tensor errors inside the forward pass are engine bugs or resource failures, not user errors.
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::internal(e.to_string())
    }
}

/// Extension for turning foreign errors into a coded `Error` at the call site.
pub trait ResultExt<T> {
    fn code(self, code: ErrorCode, what: &str) -> Result<T>;
}

impl<T, E: fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn code(self, code: ErrorCode, what: &str) -> Result<T> {
        self.map_err(|e| Error::new(code, format!("{what}: {e}")))
    }
}
