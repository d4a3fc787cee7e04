//! Request bodies to model inputs, and the JSON error every refusal answers with. Everything a
//! client can send ends here as a 4xx naming the problem: empty bodies, unknown formats,
//! images over the pixel cap (checked from the header, before any pixel is decoded), and
//! files that do not decode.

use crate::classifier::Classifier;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use image::{ImageError, ImageReader};
use std::io::Cursor;

/// A refusal: the status and a message naming the problem, sent as `{"error": ..., "status": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a Retry-After header (503 when busy).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into(), retry_after: Some(1) }
    }
    /// The same error about one named file of a multipart request.
    pub fn about(self, file: &str) -> ApiError {
        ApiError { message: format!("{file}: {}", self.message), ..self }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

const FORMATS: &str = "JPEG, PNG, WebP, BMP or GIF";

/// What an upload's header says: its format and size, checked against the pixel cap.
#[derive(Clone, Copy, Debug)]
pub struct Upload {
    format: image::ImageFormat,
    pub pixels: u64,
}

/// Decodes one uploaded image (by its content) and prepares it for the model.
pub fn prepare_upload(bytes: &[u8], classifier: &Classifier, max_pixels: u64) -> Result<Vec<u8>, ApiError> {
    inspect_upload(bytes, max_pixels)?.prepare(bytes, classifier, max_pixels)
}

/// Reads an upload's format and size from its header (no pixel decoded): empty bodies, unknown
/// formats and images over `max_pixels` are refused here.
pub fn inspect_upload(bytes: &[u8], max_pixels: u64) -> Result<Upload, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("empty body: send a {FORMATS} image as the body, or as files of a multipart/form-data body"),
        ));
    }
    let guessed = ImageReader::new(Cursor::new(bytes)).with_guessed_format().expect("reading from memory cannot fail");
    let Some(format) = guessed.format() else {
        let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("not a {FORMATS} image (it starts with bytes {})", start.join(" "))));
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().map_err(|e| decode_error(format, e))?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the image is {width}x{height} = {pixels} pixels, over this server's cap of {max_pixels}"),
        ));
    }
    Ok(Upload { format, pixels })
}

impl Upload {
    /// Decodes the image (`bytes`, the upload this header came from) and prepares it for the
    /// model: the one image pipeline, as predict (truncated files are errors, large JPEGs
    /// DCT-scaled).
    pub fn prepare(&self, bytes: &[u8], classifier: &Classifier, max_pixels: u64) -> Result<Vec<u8>, ApiError> {
        let mut p = *classifier.preprocessing();
        p.max_pixels = max_pixels;
        let format = self.format;
        let img = crate::image_pipeline::decode(bytes, &p)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("cannot decode the {format:?} image: {e:#}")))?;
        classifier.prepare(&img).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e:#}")))
    }
}

fn decode_error(format: image::ImageFormat, e: ImageError) -> ApiError {
    match e {
        ImageError::Unsupported(u) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{format:?} images are not supported ({u}); send {FORMATS}")),
        ImageError::Limits(l) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the {format:?} image is too large to decode: {l}")),
        other => ApiError::new(StatusCode::BAD_REQUEST, format!("cannot decode the {format:?} image: {other}")),
    }
}
