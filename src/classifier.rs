//! [`Classifier`]: a trained checkpoint on a device, classifying images from Rust code. `predict`,
//! `serve` and `export` describe and apply the same preprocessing through this file.

use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::image_pipeline::{self, Preprocessing};
use crate::model::Model;
use crate::network::Network;
use anyhow::{bail, Context, Result};
use image::DynamicImage;
use std::path::Path;
use std::sync::mpsc;

/// Where a [`Classifier`] or [`Trainer`](crate::Trainer) computes (the CLI's `--device`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// A real GPU if wgpu finds one, else the CPU backend.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// Any wgpu adapter, software ones included.
    Gpu,
    /// Any other `--device` word: `vulkan`, `metal`, `dx12`, `gl`, or an index from `gpu-cnn devices`.
    Named(String),
}

impl Device {
    /// The `--device` word for this choice.
    pub fn spec(&self) -> &str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
            Device::Named(s) => s,
        }
    }
}

impl Device {
    /// The parsed request (an error for an unknown word in `Named`).
    pub fn request(&self) -> Result<crate::backend::gpu::DeviceRequest> {
        self.spec().parse()
    }
}

impl From<crate::backend::gpu::DeviceRequest> for Device {
    fn from(request: crate::backend::gpu::DeviceRequest) -> Device {
        use crate::backend::gpu::DeviceRequest as R;
        match request {
            R::Auto => Device::Auto,
            R::Cpu => Device::Cpu,
            R::Gpu => Device::Gpu,
            other => Device::Named(other.to_string()),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Device::Auto,
            "cpu" => Device::Cpu,
            "gpu" => Device::Gpu,
            other => Device::Named(other.to_string()),
        })
    }
}

/// One class and its probability.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The class name stored in the checkpoint (or "class N" when it has none).
    pub class: String,
    /// The class's index in the model's output.
    pub index: usize,
    pub probability: f32,
}

/// How many images a [`Classifier`] computes in one forward pass unless told otherwise.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// A batch of prepared images for the device thread, and where to send its probabilities.
struct Job {
    pixels: Vec<u8>,
    reply: mpsc::Sender<Result<Vec<f32>>>,
}

/// A trained model ready to classify images.
///
/// `Classifier` is `Send + Sync`: share it between threads in an `Arc`. The network lives on a
/// thread of its own (a wgpu backend keeps non-`Send` caches, so it never leaves the thread
/// that created it), and calls from any thread queue their images there: the device computes
/// one batch at a time, in arrival order. To keep the device busy from many threads, batch the
/// images ([`Classifier::classify_batch`]), or use `gpu-cnn serve`, which gathers concurrent
/// requests into batches.
pub struct Classifier {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    model: Model,
    meta: CheckpointMeta,
    /// How an image becomes the model's input: the checkpoint's image pipeline settings.
    preprocessing: Preprocessing,
    device: String,
    max_batch: usize,
    top_k: usize,
}

impl Classifier {
    /// Loads a checkpoint written by `gpu-cnn train` onto `device`.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Classifier> {
        Self::load_with_batch(path, device, DEFAULT_MAX_BATCH)
    }

    /// As [`load`](Classifier::load), computing up to `max_batch` images per forward pass.
    pub fn load_with_batch(path: impl AsRef<Path>, device: Device, max_batch: usize) -> Result<Classifier> {
        let path = path.as_ref();
        let ck = checkpoint::load(path)?;
        Self::from_checked(ck, device, max_batch).with_context(|| path.display().to_string())
    }

    /// A classifier from checkpoint contents already in memory.
    pub fn from_checkpoint(ck: Checkpoint, device: Device, max_batch: usize) -> Result<Classifier> {
        // Its fields are public: held to what `load` holds a file to.
        ck.check()?;
        Self::from_checked(ck, device, max_batch)
    }

    /// `from_checkpoint` for a checkpoint `checkpoint::load` has already checked.
    pub(crate) fn from_checked(ck: Checkpoint, device: Device, max_batch: usize) -> Result<Classifier> {
        let model = ck.model().context("its architecture")?;
        if max_batch == 0 {
            bail!("the batch size must be at least 1");
        }
        let meta = ck.meta.clone();
        let preprocessing = ck.preprocessing().context("its preprocessing")?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel::<Result<String>>();
        let request = device.request()?;
        let thread = std::thread::Builder::new()
            .name("gpu-cnn-classifier".into())
            .spawn(move || {
                let opened = crate::device::open(request);
                let _ = match opened {
                    Ok(crate::device::Device::Cpu(b)) => serve_jobs(b, &ck, max_batch, &ready, queue),
                    Ok(crate::device::Device::Gpu(b)) => serve_jobs(*b, &ck, max_batch, &ready, queue),
                    Err(e) => ready.send(Err(e)),
                };
            })
            .context("starting the classifier's device thread")?;
        let device = match started.recv() {
            Ok(Ok(device)) => device,
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the classifier's device thread stopped while starting"),
        };
        let top_k = meta.class_names.len().clamp(1, 5);
        Ok(Classifier { jobs: Some(jobs), thread: Some(thread), model, meta, preprocessing, device, max_batch, top_k })
    }

    /// How many classes `classify*` return (default: 5, or fewer when the model has fewer).
    pub fn set_top_k(&mut self, k: usize) {
        self.top_k = k.max(1);
    }

    /// The most probable classes of one image, most probable first.
    pub fn classify(&self, image: &DynamicImage) -> Result<Vec<Prediction>> {
        Ok(self.classify_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// The most probable classes of each image, in order; computed in batches.
    pub fn classify_batch(&self, images: &[DynamicImage]) -> Result<Vec<Vec<Prediction>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let mut pixels = Vec::new();
        pixels.try_reserve(images.len().saturating_mul(self.model.input_len())).context("not enough memory for the batch")?;
        for img in images {
            pixels.extend(self.prepare(img)?);
        }
        let probs = self.probabilities(&pixels)?;
        Ok(probs.chunks(self.classes().max(1)).map(|p| self.top(p)).collect())
    }

    /// Reads and decodes an image file (by its content, whatever its name) and classifies it;
    /// a truncated or corrupt file is an error naming it, as in `gpu-cnn predict`.
    pub fn classify_path(&self, path: impl AsRef<Path>) -> Result<Vec<Prediction>> {
        let pixels = image_pipeline::load_image(path.as_ref(), &self.preprocessing)?;
        let probs = self.probabilities(&pixels)?;
        Ok(self.top(&probs))
    }

    /// An image as the model takes it: (h, w, c) u8, channels last, through the one image
    /// pipeline with the checkpoint's settings, exactly as `gpu-cnn predict` prepares it.
    pub fn prepare(&self, image: &DynamicImage) -> Result<Vec<u8>> {
        image_pipeline::prepare(image, &self.preprocessing)
    }

    /// The checkpoint's image pipeline settings (size, colour, background, resize, filter).
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// Class probabilities `(n, classes)` of `n` prepared images laid end to end (each
    /// [`input_len`](Classifier::input_len) bytes, as [`prepare`](Classifier::prepare) makes them).
    pub fn probabilities(&self, pixels: &[u8]) -> Result<Vec<f32>> {
        let len = self.model.input_len();
        if pixels.is_empty() || !pixels.len().is_multiple_of(len) {
            bail!("{} bytes are not a whole number of {len}-byte images", pixels.len());
        }
        let n = pixels.len() / len;
        let mut probs = Vec::new();
        probs.try_reserve(n.saturating_mul(self.classes())).context("not enough memory for the probabilities")?;
        let (reply, answer) = mpsc::channel();
        for chunk in pixels.chunks(self.max_batch * len) {
            let job = Job { pixels: chunk.to_vec(), reply: reply.clone() };
            self.jobs.as_ref().expect("present until drop").send(job).map_err(|_| anyhow::anyhow!("the classifier's device thread has stopped"))?;
        }
        drop(reply);
        for _ in pixels.chunks(self.max_batch * len) {
            probs.extend(answer.recv().map_err(|_| anyhow::anyhow!("the classifier's device thread has stopped"))??);
        }
        Ok(probs)
    }

    /// The `top_k` most probable classes of one row of probabilities.
    pub fn top(&self, probs: &[f32]) -> Vec<Prediction> {
        let name = |i: usize| self.meta.class_names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
        crate::predict::top_k(probs, self.top_k).into_iter().map(|(index, probability)| Prediction { class: name(index), index, probability }).collect()
    }

    pub fn classes(&self) -> usize {
        self.model.classes()
    }
    pub fn class_names(&self) -> &[String] {
        &self.meta.class_names
    }
    /// The model's input (height, width, channels).
    pub fn input_shape(&self) -> (usize, usize, usize) {
        self.model.input
    }
    /// Bytes of one prepared image.
    pub fn input_len(&self) -> usize {
        self.model.input_len()
    }
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
    /// The checkpoint's facts: architecture text, data set, epochs, history, ...
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// One line naming the device it computes on.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl Drop for Classifier {
    fn drop(&mut self) {
        // Closing the queue ends the device thread, which frees the device's memory.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The device thread: builds the network, says it is ready (or why not), then answers jobs
/// in arrival order until the classifier is dropped.
fn serve_jobs<B: Backend>(
    backend: B,
    ck: &Checkpoint,
    max_batch: usize,
    ready: &mpsc::Sender<Result<String>>,
    queue: mpsc::Receiver<Job>,
) -> std::result::Result<(), mpsc::SendError<Result<String>>> {
    let device = backend.describe();
    let mut net = match crate::inference::inference_network(backend, ck, max_batch) {
        Ok(net) => net,
        Err(e) => return ready.send(Err(e)),
    };
    ready.send(Ok(device))?;
    for job in queue {
        let _ = job.reply.send(run(&mut net, &job.pixels));
    }
    Ok(())
}

/// Probabilities of the prepared images in `pixels` (at most the network's batch).
fn run<B: Backend>(net: &mut Network<B>, pixels: &[u8]) -> Result<Vec<f32>> {
    let n = pixels.len() / net.model.input_len();
    let labels = vec![0u8; n];
    let data = net.backend.upload_images(pixels, &labels, net.model.input_len())?;
    crate::predict::probabilities(net, &data, n)
}

/// The checkpoint's image pipeline settings, as JSON (ONNX metadata, `GET /v1/model`).
/// `uint8_input`: the consumer feeds u8 pixels (the ONNX graph scales them).
pub fn preprocessing_json(meta: &CheckpointMeta, uint8_input: bool) -> serde_json::Value {
    let (h, w, c) = meta.input;
    let p = meta.preprocessing.or_else(|| Preprocessing::legacy(meta.input).ok());
    let word = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    serde_json::json!({
        "height": h,
        "width": w,
        "channels": c,
        "color_mode": if c == 1 { "grayscale" } else { "rgb" },
        "grayscale_weights": "Rec. 709 luma",
        "background": word(p.map(|p| image_pipeline::word(p.background))),
        "resize": word(p.map(|p| image_pipeline::word(p.resize))),
        "interpolation": word(p.map(|p| image_pipeline::word(p.interpolation))),
        "layout": "NHWC",
        "scale": if uint8_input { "uint8 pixels; the model divides by 255" } else { "pixel / 255 (float32 in [0, 1])" },
    })
}
