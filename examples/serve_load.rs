//! Load bench for `gpu-cnn serve`: N concurrent clients over loopback, each sending one PNG per
//! request as fast as answers come on its own kept-alive connection (`--close`: a new
//! connection per request), at 1, 8 and 64 clients; reports requests/s and p50/p99 latency, and
//! compares with the batch throughput of the same work without HTTP (decode and preprocess on
//! every core, forward in batches of --max-batch: what `gpu-cnn predict` does).
//!
//! cargo run --release --example serve_load -- [--checkpoint FILE] [--device cpu] [--seconds 5] [--close]
//! Without --checkpoint it trains the seed model for one epoch on synthetic 32x32x3 data first.

use anyhow::Result;
use clap::Parser;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::image::{DynamicImage, ImageFormat, RgbImage};
use gpu_cnn::serve::client::{request, Connection};
use gpu_cnn::serve::{start, ServeOptions};
use gpu_cnn::{Classifier, Device, TrainConfig, Trainer};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Checkpoint to serve [default: a seed model trained for one epoch on synthetic data].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seconds per client count.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Each client opens a new connection per request instead of keeping one alive.
    #[arg(long)]
    close: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device: Device = args.device.parse().expect("infallible");
    let checkpoint = match &args.checkpoint {
        Some(c) => c.clone(),
        None => {
            let dir = std::env::temp_dir().join(format!("gpu-cnn-serve-load-{}", std::process::id()));
            let data = generate(&SyntheticSpec { train: 512, test: 64, ..Default::default() }, 0);
            Trainer::new(gpu_cnn::model::seed_layers(), data, TrainConfig { epochs: 1, device: Device::Cpu, out_dir: Some(dir.clone()), ..Default::default() })
                .fit()?;
            dir.join("last.safetensors")
        }
    };
    let classifier = Arc::new(Classifier::load_with_batch(&checkpoint, device, args.max_batch)?);
    if args.checkpoint.is_none() {
        // The model it trained is loaded; its run folder is not needed any more.
        std::fs::remove_dir_all(checkpoint.parent().expect("a run folder")).ok();
    }
    let (h, w, c) = classifier.input_shape();
    let test = generate(&SyntheticSpec { train: 1, test: 256, height: h, width: w, channels: c, classes: classifier.classes().max(2) }, 4).test;
    let images: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..test.len())
            .map(|i| {
                let img = if c == 1 {
                    DynamicImage::ImageLuma8(gpu_cnn::image::GrayImage::from_raw(w as u32, h as u32, test.image(i).to_vec()).unwrap())
                } else {
                    DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, test.image(i).to_vec()).unwrap())
                };
                let mut bytes = Vec::new();
                img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
                bytes
            })
            .collect(),
    );
    println!("device: {}; model input {h}x{w}x{c}; {}", classifier.device(), gpu_cnn::system_info::machine_name());

    // The same work without HTTP, as `gpu-cnn predict` does it: decode + preprocess the PNGs on
    // every core, forward in batches.
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed().as_secs_f64() < args.seconds {
        for chunk in images.chunks(args.max_batch) {
            let prepared: Vec<Vec<u8>> = chunk.par_iter().map(|bytes| classifier.prepare(&gpu_cnn::image::load_from_memory(bytes)?)).collect::<Result<_>>()?;
            classifier.probabilities(&prepared.concat())?;
            done += chunk.len();
        }
    }
    let batch_rate = done as f64 / started.elapsed().as_secs_f64();
    println!("batch (no HTTP, batches of {}): {batch_rate:.0} images/s", args.max_batch);

    let opts = ServeOptions {
        bind: "127.0.0.1:0".into(),
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        access_log: false,
        ..Default::default()
    };
    let server = start(classifier.clone(), opts)?;
    let addr = server.addr;
    let connections = if args.close { "a new connection per request" } else { "one kept-alive connection per client" };
    println!("HTTP clients: {connections}");
    println!("| clients | requests/s | vs batch | p50 ms | p99 ms | failed |");
    println!("|---|---|---|---|---|---|");
    for &clients in &args.clients {
        let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
        let started = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|t| {
                let images = images.clone();
                let close = args.close;
                // Named, so a profile tells the load generator from the server.
                std::thread::Builder::new().name("load-client".into()).spawn(move || {
                    let mut connection = Connection::new(addr, Duration::from_secs(60));
                    let mut latencies = Vec::new();
                    let mut failed = 0usize;
                    let mut i = t;
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let body = &images[i % images.len()];
                        let answer = if close {
                            request(addr, "POST", "/v1/classify", None, body, Duration::from_secs(60))
                        } else {
                            connection.send("POST", "/v1/classify", None, body)
                        };
                        match answer {
                            Ok(r) if r.status == 200 => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                            _ => failed += 1,
                        }
                        i += clients;
                    }
                    (latencies, failed)
                })
            })
            .collect::<std::io::Result<_>>()?;
        let mut latencies = Vec::new();
        let mut failed = 0;
        for t in threads {
            let (l, f) = t.join().unwrap();
            latencies.extend(l);
            failed += f;
        }
        let seconds = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
        let rate = latencies.len() as f64 / seconds;
        println!("| {clients} | {rate:.0} | {:.0}% | {:.1} | {:.1} | {failed} |", rate / batch_rate * 100.0, pct(0.5), pct(0.99));
    }
    server.shutdown()
}
