//! The `gpu-cnn` command line: parses flags with clap and calls into the library.

use anyhow::Result;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gpu_cnn::augment::Augmentation;
use gpu_cnn::backend::gpu::DeviceRequest;
use gpu_cnn::class_weight::ClassWeight;
use gpu_cnn::commands::{self, DataOptions, EvaluateArgs, ImageFolderArgs, TrainArgs};
use gpu_cnn::data::DatasetKind;
use gpu_cnn::image_pipeline::{Background, ColorMode, Interpolation, ResizeMode};
use gpu_cnn::model::parse_input_shape;
use gpu_cnn::optimizer::{OptimizerFlags, OptimizerName};
use gpu_cnn::predict::PredictArgs;
use gpu_cnn::schedule::ScheduleKind;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "gpu-cnn", version, about = "Train convolutional image classifiers on any GPU (wgpu) or the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the model's layers, output shapes and parameter counts, like Keras's model.summary().
    Summary {
        /// Architecture file (Keras layer calls, e.g. `Conv2D(32, 3, activation="relu") MaxPooling2D(2)`; see README); default: the seed model (archs/seed.txt).
        #[arg(long)]
        arch: Option<PathBuf>,
        /// Input shape as HxWxC.
        #[arg(long, default_value = "32x32x3")]
        input: String,
        /// The class count a last layer of `dense classes` takes [default: 10].
        #[arg(long, value_name = "N")]
        classes: Option<usize>,
    },
    /// Train a model; writes history.json, last.safetensors and best.safetensors to the run directory.
    Train(TrainCli),
    /// Loss and accuracy of a checkpoint, per-class precision/recall and the confusion matrix;
    /// with no data flags, on exactly the data training held out (for --data runs: the same
    /// folder, --val-split and seed); --data of another folder: every image in it. Writes the pictures and report.html into evaluate/ next to
    /// the checkpoint (or to --out).
    Evaluate(EvaluateCli),
    /// The images whose label the model disagrees with most (by loss: file, true class,
    /// predicted class, probability) and the class pairs it confuses most; finds mislabelled
    /// photos. Uses the folder and split the checkpoint was trained on unless --data is given.
    Review(ReviewCli),
    /// List the devices: the CPU backend and every adapter wgpu finds, with their limits.
    Devices,
    /// Time every kernel and whole training steps of the seed model on each device.
    Bench(BenchCli),
    /// Classify image files (JPEG, PNG, WebP, BMP, GIF) with a checkpoint: the top classes of each.
    Predict(PredictCli),
    /// Write a checkpoint as an ONNX model (opset 17) for other runtimes.
    Export(ExportCli),
    /// Serve a checkpoint over HTTP: POST /v1/classify, GET /v1/model, GET /healthz.
    Serve(ServeCli),
    /// Save a 5x5 grid of training images (a seeded sample spread over the classes), each
    /// named by its class.
    Show {
        #[command(flatten)]
        data: DataCli,
        /// The PNG file to write.
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
        /// Seed of the sample shown.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args)]
struct BenchCli {
    /// Device to measure, a --device word (repeat for several); default: the CPU backend and
    /// every adapter there is.
    #[arg(long)]
    device: Vec<DeviceRequest>,
    /// A short run (fewer batch sizes and repeats; under a minute on a software GPU).
    #[arg(long)]
    quick: bool,
    /// Batch size for the per-kernel table and the whole training steps (repeat for several)
    /// [default: 32 and 128 for kernels, 32, 128 and 256 for steps; --quick: 8].
    #[arg(long)]
    batch: Vec<usize>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct PredictCli {
    /// The checkpoint (.safetensors) whose weights and class names to use.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files, or folders searched (recursively, real folders only, not links to folders; hidden files and folders skipped, as in training)
    /// for .jpg/.jpeg/.jfif/.png/.webp/.bmp/.gif files. Each image is prepared exactly as the
    /// training images were (the pipeline stored in the checkpoint: size, colour mode, alpha
    /// over white or black, --resize stretch|crop|pad, filter; checkpoints from before it was
    /// stored: alpha over black, stretched, bilinear).
    #[arg(required = true, value_name = "IMAGE_OR_DIR")]
    inputs: Vec<PathBuf>,
    /// Print `unknown` instead of a class when the top probability is below P (0 to 1).
    #[arg(long, value_name = "P")]
    threshold: Option<f32>,
    /// Refuse images with more pixels than this (width x height) [default: 64000000].
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u64).range(1..))]
    max_pixels: Option<u64>,
    /// How many of the most probable classes to print per image.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    top: usize,
    #[command(flatten)]
    run: InferenceCli,
}

/// `--device`, parsed once into a `DeviceRequest`.
#[derive(Args)]
struct DeviceCli {
    /// Where to compute: auto (a real GPU if there is one, else the CPU), cpu, gpu (any wgpu
    /// adapter, software ones too), vulkan, metal, dx12, gl, or N from `gpu-cnn devices`.
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

/// The options every command that runs a checkpoint over images shares.
#[derive(Args)]
struct InferenceCli {
    #[command(flatten)]
    device: DeviceCli,
    /// Images per forward pass [default: 64 for predict (its results print as each batch
    /// finishes), 256 for evaluate and review].
    #[arg(long, value_parser = at_least_one)]
    batch_size: Option<usize>,
    /// Print JSON instead of text (predict: one object per image and line, JSON Lines).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExportCli {
    /// The checkpoint (.safetensors) to export.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The output format (onnx is the only one).
    #[arg(long, value_enum, default_value = "onnx")]
    format: ExportFormat,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// What the graph takes: float (NHWC float32, pixel / 255, as training saw it) or uint8
    /// (NHWC raw pixels; the graph casts and divides by 255).
    #[arg(long, value_enum, default_value = "float")]
    input: ExportInput,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Onnx,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportInput {
    Float,
    Uint8,
}

#[derive(Args)]
struct ServeCli {
    /// The checkpoint (.safetensors) to serve.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Address to listen on. Loopback by default; 0.0.0.0:8080 listens on every interface (in a
    /// container, behind a proxy).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    #[command(flatten)]
    device: DeviceCli,
    /// Most images per forward pass (concurrent requests are gathered into batches).
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    max_batch: usize,
    /// How long a batch waits for more images after its first, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Largest request body (e.g. 20MB, 512KB, 1MiB).
    #[arg(long, default_value = "20MB", value_parser = gpu_cnn::serve::parse_size)]
    max_body: usize,
    /// Largest image in pixels (width x height), checked before decoding.
    #[arg(long, default_value_t = 40_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pixels: u64,
    /// Most requests in flight; beyond it, 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    max_queue: usize,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Seconds a client may take to send a request's headers; also how long a kept-alive
    /// connection may sit idle before it is closed.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Classes per image in the answer.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    top: usize,
    /// No access log lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct DataCli {
    /// The data set [default: cifar10; with train --resume, the checkpoint's].
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Folder with the data set's files (cifar10: the folder holding cifar-10-batches-bin/;
    /// fashion-mnist: defaults to /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use only the first N training images (quick runs).
    #[arg(long, value_name = "N")]
    limit_train: Option<usize>,
    /// Use only the first N test images (quick runs).
    #[arg(long, value_name = "N")]
    limit_test: Option<usize>,
    /// Never download: a data set missing from the cache ($GPU_CNN_DATA, else the platform
    /// cache folder + gpu-cnn/) is an error.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    images: ImagesCli,
}

impl DataCli {
    fn options(self) -> Result<DataOptions> {
        self.options_defaulting_to(DatasetKind::Cifar10)
    }
    /// With `--resume` and no data flags, the data set the checkpoint was trained on (as
    /// evaluate does), not a download of CIFAR-10 that could not fit it anyway.
    /// A checkpoint trained on a folder resumes on that folder, split as before.
    fn options_for_resume(self, resume: Option<&std::path::Path>) -> Result<DataOptions> {
        let meta = resume.and_then(|r| gpu_cnn::checkpoint::load_meta(r).ok());
        let no_data_flags = self.dataset.is_none() && self.data_dir.is_none() && self.images.data.is_none();
        let source = meta.as_ref().and_then(|m| m.data_source.as_ref()).filter(|_| no_data_flags);
        if let (Some(src), Some(path)) = (source, resume) {
            commands::check_trained_folder(src, path)?;
        }
        let folder = source.map(commands::trained_folder);
        let trained_on = meta.and_then(|m| commands::dataset_kind_by_name(&m.dataset));
        let mut options = self.options_defaulting_to(trained_on.unwrap_or(DatasetKind::Cifar10))?;
        if let Some(folder) = folder {
            gpu_cnn::stderr_line!("Data: {}, the folder the checkpoint was trained on", folder.dir.display());
            options.images = Some(folder);
        }
        Ok(options)
    }
    fn options_defaulting_to(self, default: DatasetKind) -> Result<DataOptions> {
        Ok(DataOptions {
            dataset: self.dataset.unwrap_or(default),
            data_dir: self.data_dir,
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            offline: self.offline,
            images: self.images.args()?,
        })
    }
}

/// Flags for a folder of one's own images.
#[derive(Args)]
struct ImagesCli {
    /// A folder of your own images, one sub-folder per class (optionally DIR/train/<class> and
    /// DIR/test/<class>); JPEG, PNG, WebP, BMP or GIF of any size. Replaces --dataset.
    // The folder-only flags below `require` it, but clap drops a requirement on an argument
    // that conflicts with one given (--dataset), so `args` checks them again.
    #[arg(long = "data", id = "image_folder", value_name = "DIR", conflicts_with_all = ["dataset", "data_dir"])]
    data: Option<PathBuf>,
    /// With --data: resize every image to SIZExSIZE [default: the checkpoint's input, else 32].
    #[arg(long, value_name = "SIZE", requires = "image_folder")]
    image_size: Option<usize>,
    /// With --data: rgb or grayscale (1 channel) [default: the checkpoint's, else rgb].
    #[arg(long, value_enum, requires = "image_folder")]
    color_mode: Option<ColorMode>,
    /// With --data: what transparent pixels are composited over [default: the checkpoint's,
    /// else white]. Stored in the checkpoint; predict uses the same.
    #[arg(long, value_enum, requires = "image_folder")]
    background: Option<Background>,
    /// With --data: how an image of another aspect ratio fits the square input: stretch
    /// (Keras's default), crop (centre crop) or pad (fit inside, background around)
    /// [default: the checkpoint's, else stretch].
    #[arg(long, value_enum, requires = "image_folder")]
    resize: Option<ResizeMode>,
    /// With --data: the resize filter, antialiased when shrinking [default: the checkpoint's,
    /// else bilinear].
    #[arg(long, value_enum, requires = "image_folder")]
    interpolation: Option<Interpolation>,
    /// With --data: refuse images with more pixels than this (width x height) [default:
    /// 64000000].
    #[arg(long, value_name = "PIXELS", requires = "image_folder")]
    max_pixels: Option<u64>,
    /// With --data and no train/ + test/ (or val/) sub-folders: the fraction of each class held
    /// out for validation (stratified, seeded by --seed) [default: the checkpoint's, else 0.2;
    /// evaluate and review of a folder training did not use: 1, every image].
    #[arg(long, value_name = "FRACTION", requires = "image_folder")]
    val_split: Option<f32>,
    /// With --data: skip files that do not decode (each named in one warning) instead of stopping.
    #[arg(long, requires = "image_folder")]
    skip_bad: bool,
}

impl ImagesCli {
    /// The folder and its settings; a folder-only flag without --data is an error (clap's
    /// `requires` lets it through whenever --dataset, which conflicts with --data, is given).
    fn args(self) -> Result<Option<ImageFolderArgs>> {
        if self.data.is_none() {
            let given = [
                ("--image-size", self.image_size.is_some()),
                ("--color-mode", self.color_mode.is_some()),
                ("--background", self.background.is_some()),
                ("--resize", self.resize.is_some()),
                ("--interpolation", self.interpolation.is_some()),
                ("--max-pixels", self.max_pixels.is_some()),
                ("--val-split", self.val_split.is_some()),
                ("--skip-bad", self.skip_bad),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                anyhow::bail!("{flag} is for a folder of images (--data DIR); it does nothing with a built-in --dataset");
            }
        }
        Ok(self.data.map(|dir| ImageFolderArgs {
            dir,
            image_size: self.image_size,
            color: self.color_mode,
            background: self.background,
            resize: self.resize,
            interpolation: self.interpolation,
            max_pixels: self.max_pixels,
            val_split: self.val_split,
            skip_bad: self.skip_bad,
        }))
    }
}

#[derive(Args)]
struct TrainCli {
    #[command(flatten)]
    data: DataCli,
    /// Architecture file (Keras layer calls, e.g. `Conv2D(32, 3, activation="relu") MaxPooling2D(2)`; see README); default: the seed model (archs/seed.txt).
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Total number of epochs (a resumed run continues until this many are done).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per training step [default: 32, or the checkpoint's when resuming].
    #[arg(long)]
    batch_size: Option<usize>,
    /// The optimizer's learning rate [default: Keras's, 0.01 for sgd and 0.001 for the
    /// others, or the checkpoint's when resuming].
    #[arg(long)]
    learning_rate: Option<f32>,
    /// The optimizer, with Keras's defaults and formulas: adam, adamw (decoupled weight decay),
    /// sgd or rmsprop (rho 0.9, epsilon 1e-7) [default: adam, or the checkpoint's when resuming;
    /// a resumed run cannot change it].
    #[arg(long, value_name = "NAME", value_parser = OptimizerName::parse)]
    optimizer: Option<OptimizerName>,
    /// With --optimizer sgd: the momentum, 0 to 1 [default: 0, or the checkpoint's].
    #[arg(long)]
    momentum: Option<f32>,
    /// With --optimizer sgd: Nesterov momentum [default: off, or the checkpoint's].
    #[arg(long)]
    nesterov: bool,
    /// With --optimizer adamw: the decoupled weight decay, p -= lr * wd * p each step, on every
    /// weight and bias as Keras [default: 0.004, or the checkpoint's].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// With --optimizer rmsprop: the discounting factor of the squared-gradient average
    /// [default: 0.9, or the checkpoint's].
    #[arg(long)]
    rho: Option<f32>,
    /// With --optimizer adam, adamw or rmsprop: epsilon [default: 1e-7, or the checkpoint's].
    #[arg(long)]
    epsilon: Option<f32>,
    /// Keras's CategoricalCrossentropy label_smoothing: train against onehot * (1 - F) + F /
    /// classes; the reported loss (training and validation) is the smoothed one, accuracy is
    /// unaffected [default: 0, or the checkpoint's when resuming].
    #[arg(long, value_name = "F")]
    label_smoothing: Option<f32>,
    /// How the rate moves step by step after any warmup: constant; cosine (Keras's CosineDecay
    /// to 0 over the remaining steps); step (x0.1 every --lr-step-epochs); onecycle (PyTorch's
    /// OneCycleLR: up from rate/25 to the rate over the first 30% of the remaining steps, then
    /// down to rate/25e4) [default: constant, or the checkpoint's when resuming]. Planned over
    /// --epochs; a resumed run keeps the epochs its schedule was planned over.
    #[arg(long, value_enum, value_name = "SCHEDULE")]
    lr_schedule: Option<ScheduleKind>,
    /// Raise the rate linearly from 0 to --learning-rate over the first N epochs' steps, then
    /// run the schedule [default: 0].
    #[arg(long, value_name = "N")]
    warmup_epochs: Option<usize>,
    /// With --lr-schedule step: epochs between each x0.1 [default: a third of --epochs,
    /// rounded up, so three levels].
    #[arg(long, value_name = "N")]
    lr_step_epochs: Option<usize>,
    /// Stop when val_loss has not improved for PATIENCE epochs and put back the weights of the
    /// epoch with the lowest val_loss (Keras's EarlyStopping(restore_best_weights=True)); the
    /// final last.safetensors holds those weights [default: off, or the checkpoint's].
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
    /// Multiply the rate by 0.1 when val_loss has not improved by 1e-4 for PATIENCE epochs
    /// (Keras's ReduceLROnPlateau defaults) [default: off, or the checkpoint's].
    #[arg(long, value_name = "PATIENCE")]
    reduce_lr_on_plateau: Option<usize>,
    /// Seed for the initial weights and the shuffles [default: 0, or the checkpoint's].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    device: DeviceCli,
    /// Run directory [default: runs/<dataset>, or runs/<dataset>-N if that exists; when
    /// resuming from a run's last.safetensors, that run's folder]. A fresh run refuses a
    /// non-empty one (see --overwrite); one run at a time may write into it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from a checkpoint (weights, optimizer and its state, step, history) until
    /// --epochs are done.
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Augment the training batches: none, or a comma list of flip (random horizontal flip),
    /// crop (random crop after 4-pixel zero padding), rotate=DEG (Keras's RandomRotation, a
    /// uniform angle in [-DEG, DEG] degrees, DEG <= 180), zoom=F (RandomZoom(F): scale about
    /// the centre by a uniform 1-F..1+F, above 1 zooming out), contrast=F (RandomContrast(F):
    /// (x - mean) * c + mean per channel, c uniform in [1-F, 1+F], clipped to [0, 1]) and
    /// brightness=F (RandomBrightness(F): x + delta, delta uniform in [-F, F], clipped), each F
    /// in [0.001, 1]; e.g. flip,crop,rotate=10,zoom=0.1. Rotation and zoom sample bilinearly
    /// and fill with zeros (Keras's fill_mode="constant"; its default is "reflect"); contrast
    /// and brightness apply after the geometry. Seeded [default: none, or the checkpoint's
    /// when resuming].
    #[arg(long, value_name = "LIST", value_parser = Augmentation::parse)]
    augment: Option<Augmentation>,
    /// Weight the training loss per class: balanced (Keras's n_samples / (n_classes * n_c)
    /// from the training split's counts, for imbalanced catalogues) or none [default: none,
    /// or the checkpoint's when resuming].
    #[arg(long, value_name = "MODE", value_parser = ClassWeight::parse)]
    class_weight: Option<ClassWeight>,
    /// Let a fresh run replace the files of an earlier run in --out (its checkpoints and
    /// history); without it a non-empty run directory is refused.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
struct ReviewCli {
    /// The checkpoint (.safetensors) to review with.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Which images: the validation split training held out (or DIR/test), or the training images.
    #[arg(long, value_enum, default_value = "validation")]
    split: gpu_cnn::review::Split,
    /// How many images (and confused pairs) to list.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(flatten)]
    run: InferenceCli,
    #[command(flatten)]
    images: ImagesCli,
}

#[derive(Args)]
struct EvaluateCli {
    /// The checkpoint (.safetensors) to evaluate.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The data set [default: the one the checkpoint was trained on].
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Folder with the data set's files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    limit_test: Option<usize>,
    #[command(flatten)]
    run: InferenceCli,
    /// Folder for predictions.png, curves.png, confusion.png/.json and report.html
    /// [default: evaluate/ in the checkpoint's folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Never download a data set missing from the cache.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    images: ImagesCli,
}

/// A count flag that must be at least 1 (0 was quietly taken as 1 before).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() {
    // No "XDG_RUNTIME_DIR is invalid" lines from Mesa's Vulkan layers on headless machines.
    gpu_cnn::device::quiet_vulkan_layers();
    // A file-size limit (ulimit -f) then fails the write with EFBIG, which the checkpoint
    // writer reports and cleans up after, instead of killing the process mid-write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // A bad flag is bad input like any other: exit code 1 (clap's own is 2); --help and
    // --version still exit 0.
    // `--learning-rate -1`, `--epochs -1`: a value for the flag's own range check, not an unknown
    // flag "-1" (no flag of ours is a bare number).
    let command = Cli::command().allow_negative_numbers(true).mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = command.try_get_matches().and_then(|m| Cli::from_arg_matches(&m)).unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 1 } else { 0 });
    });
    // Ctrl-C and SIGTERM stop training between steps (see interrupt.rs).
    if matches!(cli.command, Command::Train(_)) {
        gpu_cnn::interrupt::install();
    }
    // `gpu-cnn evaluate | head -1`: a closed pipe ends the process quietly, as it ends any Unix
    // tool (Rust ignores SIGPIPE, and then every print to the pipe panics). Not for serve,
    // which writes to sockets: a client gone is an error there, not the end.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve(_)) {
        // SAFETY: restoring a signal's default disposition installs no handler code.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Errors print as one readable chain ("error: what: why"), never as a panic or backtrace.
    if let Err(e) = run_on_worker_threads(cli) {
        gpu_cnn::stderr_line!("error: {}", gpu_cnn::predict::printable_error(&format!("{e:#}")));
        let code = e.downcast_ref::<gpu_cnn::interrupt::Interrupted>().map_or(1, |i| 128 + i.signal);
        std::process::exit(code);
    }
}

/// `run` on a thread of the CPU backend's rayon pool, so each op's parallel loop starts on
/// the calling thread instead of handing its work to the pool and sleeping until a worker
/// finishes it (two thread wake-ups per op, dozens of ops per training step). The workers get
/// the main thread's 8 MiB stack. Falls back to this thread if the pool cannot start.
///
/// The pool is never dropped: dropping it lets its threads exit (running their thread-local
/// destructors) while the process exits and the Vulkan driver, which ran on one of them,
/// tears down its own state: the probable cause of two test runs that failed after all their
/// work was done, one of them seen as SIGSEGV. Parked workers are simply ended with the process.
fn run_on_worker_threads(cli: Cli) -> Result<()> {
    match rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build() {
        Ok(pool) => {
            let result = pool.install(|| run(cli));
            std::mem::forget(pool);
            result
        }
        Err(_) => run(cli),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Summary { arch, input, classes } => commands::print_out(&commands::summary(arch.as_deref(), parse_input_shape(&input)?, classes)?)?,
        Command::Train(t) => {
            let args = TrainArgs {
                data: t.data.options_for_resume(t.resume.as_deref())?,
                arch: t.arch,
                epochs: t.epochs,
                batch_size: t.batch_size,
                learning_rate: t.learning_rate,
                optimizer: OptimizerFlags {
                    optimizer: t.optimizer,
                    momentum: t.momentum,
                    nesterov: t.nesterov,
                    weight_decay: t.weight_decay,
                    rho: t.rho,
                    epsilon: t.epsilon,
                },
                label_smoothing: t.label_smoothing,
                seed: t.seed,
                out: t.out,
                resume: t.resume,
                progress: std::io::stderr().is_terminal(),
                augment: t.augment,
                class_weight: t.class_weight,
                overwrite: t.overwrite,
                lr_schedule: t.lr_schedule,
                warmup_epochs: t.warmup_epochs,
                lr_step_epochs: t.lr_step_epochs,
                early_stopping: t.early_stopping,
                reduce_lr_on_plateau: t.reduce_lr_on_plateau,
            };
            commands::train(&args, t.device.device)?;
        }
        Command::Evaluate(e) => {
            let args = EvaluateArgs {
                checkpoint: e.checkpoint,
                dataset: e.dataset,
                data_dir: e.data_dir,
                limit_test: e.limit_test,
                batch_size: e.run.batch_size.unwrap_or(256),
                json: e.run.json,
                offline: e.offline,
                images: e.images.args()?,
                out: e.out,
            };
            commands::print_out(&format!("{}\n", commands::evaluate(&args, e.run.device.device)?))?;
        }
        Command::Review(r) => {
            let args = gpu_cnn::review::ReviewArgs {
                checkpoint: r.checkpoint,
                images: r.images.args()?,
                split: r.split,
                top: r.top,
                batch_size: r.run.batch_size.unwrap_or(256),
                json: r.run.json,
            };
            commands::print_out(&commands::review(&args, r.run.device.device)?)?;
        }
        Command::Devices => commands::print_out(&gpu_cnn::device::describe_devices())?,
        Command::Bench(b) => commands::bench(&commands::BenchArgs { devices: b.device, quick: b.quick, batches: b.batch, json: b.json })?,
        Command::Predict(p) => {
            let args = PredictArgs {
                checkpoint: p.checkpoint,
                inputs: p.inputs,
                top: p.top,
                batch_size: p.run.batch_size.unwrap_or(64),
                json: p.run.json,
                threshold: p.threshold,
                max_pixels: p.max_pixels,
                progress: std::io::stderr().is_terminal(),
            };
            let result = commands::predict(&args, p.run.device.device, &mut std::io::stdout().lock(), &mut std::io::stderr())?;
            if !result.errors.is_empty() {
                gpu_cnn::stderr_line!(
                    "error: {} of {} could not be read",
                    result.errors.len(),
                    gpu_cnn::report::plural(result.errors.len() + result.predicted, "image")
                );
                std::process::exit(1);
            }
        }
        Command::Export(x) => {
            let ExportFormat::Onnx = x.format;
            let input = match x.input {
                ExportInput::Float => gpu_cnn::export::onnx::OnnxInput::Float,
                ExportInput::Uint8 => gpu_cnn::export::onnx::OnnxInput::Uint8,
            };
            gpu_cnn::stderr_line!("{}", gpu_cnn::export::onnx::export_file(&x.checkpoint, &x.out, input)?);
        }
        Command::Serve(s) => {
            if !(s.timeout > 0.0 && s.timeout.is_finite()) {
                anyhow::bail!("--timeout must be a positive number of seconds");
            }
            if !(s.header_timeout > 0.0 && s.header_timeout.is_finite()) {
                anyhow::bail!("--header-timeout must be a positive number of seconds");
            }
            let opts = gpu_cnn::serve::ServeOptions {
                bind: s.bind,
                max_batch: s.max_batch,
                max_wait: std::time::Duration::from_millis(s.max_wait_ms),
                max_body: s.max_body,
                max_pixels: s.max_pixels,
                max_queue: s.max_queue,
                timeout: std::time::Duration::from_secs_f64(s.timeout),
                header_timeout: std::time::Duration::from_secs_f64(s.header_timeout),
                top: s.top,
                access_log: !s.quiet,
                ..Default::default()
            };
            gpu_cnn::serve::serve_checkpoint(&s.checkpoint, s.device.device.into(), opts)?;
        }
        Command::Show { data, out, seed } => {
            commands::show(&data.options()?, &out, seed)?;
            gpu_cnn::stderr_line!("Wrote {}", out.display());
        }
    }
    Ok(())
}
