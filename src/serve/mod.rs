//! `gpu-cnn serve`: a classifier behind HTTP (axum on tokio).
//!
//! - `POST /v1/classify`: an image as the raw body, or multipart/form-data with one or more
//!   image files -> `{"predictions": [{"file", "top": [{"class", "index", "probability"}]}]}`.
//! - `GET /v1/model`: architecture, classes, input, preprocessing, training metrics.
//! - `GET /healthz`: `{"status": "ok"}`.
//!
//! Requests are decoded on tokio's blocking threads, then their images join one queue that a
//! single device thread empties in batches (batcher.rs). Limits: body size, pixels per image,
//! files per request, requests in flight (503 + Retry-After beyond it), a per-request timeout.

mod batcher;
pub mod client;
mod images;

pub use batcher::Batcher;
pub use images::{inspect_upload, prepare_upload, ApiError};

/// Images up to this many pixels (128x128) are decoded on the async worker; larger ones on a
/// blocking thread, so a big photo never stalls the other connections.
const INLINE_DECODE_PIXELS: u64 = 128 * 128;

use crate::classifier::Classifier;
use anyhow::{Context, Result};
use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The server's settings (the CLI's flags).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on; loopback by default (use 0.0.0.0:PORT in a container).
    pub bind: String,
    /// Images per forward pass.
    pub max_batch: usize,
    /// How long the device thread waits for more images after the first of a batch.
    pub max_wait: Duration,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Largest image in pixels (width x height), checked before decoding.
    pub max_pixels: u64,
    /// Most files in one multipart request.
    pub max_files: usize,
    /// Requests in flight at once; more get 503 with Retry-After.
    pub max_queue: usize,
    /// A request taking longer (reading, decoding, waiting, computing) gets 503.
    pub timeout: Duration,
    /// How long a client may take to send a request's headers, which is also how long a
    /// kept-alive connection may sit idle: a silent or byte-a-second client cannot hold a
    /// connection (and a file descriptor) for ever, nor keep a shutdown waiting.
    pub header_timeout: Duration,
    /// Classes per image in the answer.
    pub top: usize,
    /// One line per request on stderr.
    pub access_log: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            bind: "127.0.0.1:8080".into(),
            max_batch: 64,
            max_wait: Duration::from_millis(5),
            max_body: 20 * 1000 * 1000,
            max_pixels: 40_000_000,
            max_files: 64,
            max_queue: 256,
            timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            top: 5,
            access_log: true,
        }
    }
}

struct AppState {
    classifier: Arc<Classifier>,
    batcher: Batcher,
    in_flight: Arc<Semaphore>,
    /// Pixels being decoded at once, in units of DECODE_UNIT: at most `max_pixels`, so the
    /// decode memory of all requests together is that of one largest image (a decoded pixel
    /// costs up to ~13 bytes: a 16-bit RGBA buffer and its 8-bit copy).
    decode_budget: Arc<Semaphore>,
    opts: ServeOptions,
    model_info: Value,
}

/// The routes, limits and logging around one classifier; `Batcher` feeds its device thread.
fn router(classifier: Arc<Classifier>, batcher: Batcher, in_flight: Arc<Semaphore>, opts: ServeOptions) -> Router {
    let model_info = model_json(&classifier, &opts);
    let decode_budget = Arc::new(Semaphore::new(decode_units(opts.max_pixels) as usize));
    let state = Arc::new(AppState { in_flight, classifier, batcher, decode_budget, opts: opts.clone(), model_info });
    let mut app = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/model", get(|State(s): State<Arc<AppState>>| async move { Json(s.model_info.clone()) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route: use POST /v1/classify, GET /v1/model or GET /healthz") })
        .method_not_allowed_fallback(|req: Request| async move {
            let allowed = if req.uri().path() == "/v1/classify" { "POST" } else { "GET" };
            let mut response = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} {}: use {allowed}", req.method(), req.uri().path())).into_response();
            response.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static(allowed));
            response
        })
        .layer(DefaultBodyLimit::max(opts.max_body))
        .layer(middleware::from_fn_with_state(state.clone(), with_timeout))
        .with_state(state);
    if opts.access_log {
        app = app.layer(middleware::from_fn(access_log));
    }
    app
}

/// A server running on its own thread (tests, benchmarks, embedding in a program).
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Stops accepting, finishes the requests in flight, and waits for the device thread.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }
    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Binds `opts.bind` and serves on a background thread until [`Server::shutdown`].
pub fn start(classifier: Arc<Classifier>, opts: ServeOptions) -> Result<Server> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(&opts.bind)).with_context(|| format!("cannot listen on {}", opts.bind))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name("gpu-cnn-serve".into()).spawn(move || {
        runtime.block_on(serve_on(listener, classifier, opts, async {
            let _ = stopped.await;
        }))
    })?;
    Ok(Server { addr, stop: Some(stop), thread: Some(thread) })
}

/// `gpu-cnn serve`: serves until SIGINT or SIGTERM, then finishes the requests in flight.
pub fn run(classifier: Arc<Classifier>, opts: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&opts.bind).await.with_context(|| format!("cannot listen on {}", opts.bind))?;
        serve_on(listener, classifier, opts, shutdown_signal()).await
    })
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    classifier: Arc<Classifier>,
    opts: ServeOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr()?;
    // Room for every image of every admitted request, so only the in-flight cap refuses work.
    let capacity = opts.max_queue.saturating_mul(opts.max_files).min(1 << 16);
    let max_queue = opts.max_queue.max(1);
    let in_flight = Arc::new(Semaphore::new(max_queue));
    // A batch stops waiting once it holds an image from every request in flight.
    let requests = {
        let in_flight = in_flight.clone();
        move || max_queue - in_flight.available_permits()
    };
    let (batcher, device_thread) = Batcher::start(classifier.clone(), opts.max_batch, opts.max_wait, capacity, requests)?;
    crate::stderr_line!("gpu-cnn serve: {} on {}; listening on http://{addr}", classifier.meta().dataset, classifier.device());
    let header_timeout = opts.header_timeout;
    let app = router(classifier, batcher, in_flight, opts);
    serve_connections(listener, app, header_timeout, stop).await;
    // The router (and with it the last Batcher) is gone: the device thread ends.
    let _ = tokio::task::spawn_blocking(move || device_thread.join()).await;
    crate::stderr_line!("gpu-cnn serve: stopped");
    Ok(())
}

/// The decode budget's unit: 64 Ki pixels (a 256x256 image).
const DECODE_UNIT: u64 = 1 << 16;

/// `pixels` in decode-budget units, rounded up (at least 1; at most u32::MAX).
fn decode_units(pixels: u64) -> u32 {
    pixels.div_ceil(DECODE_UNIT).clamp(1, u32::MAX as u64) as u32
}

/// Accepts connections until `stop`, each served by hyper's HTTP/1 with `header_timeout`
/// (axum::serve sets no timer), then lets each finish its request in flight.
async fn serve_connections(listener: tokio::net::TcpListener, app: Router, header_timeout: Duration, stop: impl std::future::Future<Output = ()>) {
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of file descriptors or a connection reset before accept: it passes.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let app = app.clone();
        let mut closed = closed.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                tower_service::Service::call(&mut app.clone(), req.map(Body::new))
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closed.wait_for(|closing| *closing) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    crate::stderr_line!("gpu-cnn serve: shutting down (finishing the requests in flight)");
}

async fn with_timeout(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(s.opts.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::busy(format!("the request took longer than {:.1} s", s.opts.timeout.as_secs_f64())).into_response(),
    }
}

/// One line per request: client, method, path, status, milliseconds.
async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map_or("-".to_string(), |c| c.0.to_string());
    let line = format!("{client} \"{} {}\"", req.method(), req.uri().path());
    let response = next.run(req).await;
    crate::stderr_line!("{line} {} {:.1}ms", response.status().as_u16(), started.elapsed().as_secs_f64() * 1000.0);
    response
}

async fn classify(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<Value>, ApiError> {
    let _permit = s.in_flight.clone().try_acquire_owned().map_err(|_| ApiError::busy(format!("busy: {} requests in flight; retry later", s.opts.max_queue)))?;
    let uploads = read_uploads(&s, req).await?;
    let mut waiting = Vec::with_capacity(uploads.len());
    for (name, bytes) in uploads {
        let max_pixels = s.opts.max_pixels;
        let prepared = match inspect_upload(&bytes, max_pixels) {
            // A thumbnail decodes in well under a millisecond: here, without the hop to a
            // blocking thread and back that would cost more than the decode.
            Ok(upload) if upload.pixels <= INLINE_DECODE_PIXELS => upload.prepare(&bytes, &s.classifier, max_pixels),
            Ok(upload) => {
                let budget = s.decode_budget.clone().acquire_many_owned(decode_units(upload.pixels.min(max_pixels))).await;
                let budget = budget.map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the server is stopping"))?;
                let state = s.clone();
                tokio::task::spawn_blocking(move || {
                    let _budget = budget;
                    upload.prepare(&bytes, &state.classifier, max_pixels)
                })
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")))?
            }
            Err(e) => Err(e),
        };
        let pixels = prepared.map_err(|e| match &name {
            Some(n) => e.about(n),
            None => e,
        })?;
        let reply = s.batcher.submit(pixels).map_err(|_| ApiError::busy("busy: the device queue is full; retry later"))?;
        waiting.push((name, reply));
    }
    let mut predictions = Vec::with_capacity(waiting.len());
    for (name, reply) in waiting {
        let probs = reply
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the device thread stopped"))?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the device failed: {e}")))?;
        let mut top = s.classifier.top(&probs);
        top.truncate(s.opts.top.max(1));
        predictions.push(match name {
            Some(file) => json!({"file": file, "top": top}),
            None => json!({"top": top}),
        });
    }
    Ok(Json(json!({ "predictions": predictions })))
}

/// The request's images: the raw body (no name), or each file of a multipart body (named).
async fn read_uploads(s: &AppState, req: Request) -> Result<Vec<(Option<String>, Vec<u8>)>, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over this server's cap of {} bytes", s.opts.max_body));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.opts.max_body as u64) {
        return Err(too_large());
    }
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if !multipart {
        let body: Body = req.into_body();
        let bytes = to_bytes(body, s.opts.max_body).await.map_err(|e| {
            if format!("{e:#}").contains("length limit") {
                too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))
            }
        })?;
        return Ok(vec![(None, bytes.to_vec())]);
    }
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::new(e.status(), format!("bad multipart body: {}", e.body_text())))?;
    let mut files = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| multipart_error(e, &too_large))? {
        if files.len() == s.opts.max_files {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {} files in one request", s.opts.max_files)));
        }
        let has_file_name = field.file_name().is_some();
        let name = field.file_name().or(field.name()).map_or_else(|| format!("file {}", files.len() + 1), str::to_string);
        let bytes = field.bytes().await.map_err(|e| multipart_error(e, &too_large))?;
        // A part without a file name is a form value (`-F top=3`) unless its bytes are an image.
        if !has_file_name && image::guess_format(&bytes).is_err() {
            continue;
        }
        files.push((Some(name), bytes.to_vec()));
    }
    if files.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the multipart body has no files (parts without a file name that are not images are ignored)"));
    }
    Ok(files)
}

fn multipart_error(e: axum::extract::multipart::MultipartError, too_large: &dyn Fn() -> ApiError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::new(e.status(), format!("bad multipart body: {}", e.body_text()))
    }
}

/// `GET /v1/model`.
fn model_json(c: &Classifier, opts: &ServeOptions) -> Value {
    let meta = c.meta();
    let (h, w, ch) = c.input_shape();
    let layers: Vec<Value> = c.model().layers.iter().map(|l| json!({"name": l.name, "output": l.output, "parameters": l.param_count()})).collect();
    json!({
        "architecture": meta.arch,
        "layers": layers,
        "parameters": c.model().param_count(),
        "classes": meta.class_names,
        "input": {"height": h, "width": w, "channels": ch, "accepts": "JPEG, PNG, WebP, BMP or GIF files of any size"},
        "preprocessing": crate::classifier::preprocessing_json(meta, false),
        "training": {"dataset": meta.dataset, "epochs": meta.epoch, "steps": meta.step, "seed": meta.seed, "batch_size": meta.batch_size, "learning_rate": meta.learning_rate, "history": meta.history},
        "device": c.device(),
        "limits": {"max_batch": opts.max_batch, "max_wait_ms": opts.max_wait.as_millis() as u64, "max_body": opts.max_body, "max_pixels": opts.max_pixels, "max_files": opts.max_files, "max_queue": opts.max_queue, "timeout_s": opts.timeout.as_secs_f64()},
    })
}

/// `gpu-cnn serve --checkpoint X`: loads the classifier on `device` and serves until a signal.
pub fn serve_checkpoint(checkpoint: &std::path::Path, device: crate::Device, opts: ServeOptions) -> Result<()> {
    let classifier = Classifier::load_with_batch(checkpoint, device, opts.max_batch.max(1))?;
    run(Arc::new(classifier), opts)
}

/// A byte count as people write it: `20MB` (10^6), `512KB`, `1MiB` (2^20), `1GB`, or plain bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1048576.0,
        "gib" => 1073741824.0,
        other => return Err(format!("'{text}': unknown unit '{other}' (use B, KB, MB, GB, KiB, MiB or GiB)")),
    };
    let n: f64 = number.parse().map_err(|_| format!("'{text}' is not a size like 20MB"))?;
    let bytes = n * scale;
    if !(bytes >= 1.0 && bytes < usize::MAX as f64) {
        return Err(format!("'{text}': the size must be at least 1 byte"));
    }
    Ok(bytes as usize)
}
