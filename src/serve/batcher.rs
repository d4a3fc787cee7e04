//! The device thread: gathers prepared images from concurrent requests into batches (up to
//! `max_batch` images, or whatever arrived within `max_wait` of the first, or sooner once every
//! request in flight has an image in the batch: a lone client waits for nobody; after a batch of
//! several, whose clients are sending again, sooner once arrivals pause for 0.5 ms) and runs each
//! batch through the classifier. The queue in front of it is bounded: a full queue is the caller's
//! cue to answer 503.

use crate::classifier::Classifier;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a batch, once every request in flight has its image in it, still waits for
/// another arrival when the last batch held several (their clients are sending again).
const ARRIVAL_PAUSE: Duration = Duration::from_micros(500);

/// One image's probabilities, or why the device failed.
pub type Reply = Result<Vec<f32>, String>;

struct Job {
    pixels: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// The sending side; the thread ends when every `Batcher` clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
}

/// The queue is full: try again later.
#[derive(Debug)]
pub struct QueueFull;

impl Batcher {
    /// Starts the device thread with room for `capacity` waiting images.
    /// `requests_in_flight` counts the requests that may still add images.
    pub fn start(
        classifier: Arc<Classifier>,
        max_batch: usize,
        max_wait: Duration,
        capacity: usize,
        requests_in_flight: impl Fn() -> usize + Send + 'static,
    ) -> std::io::Result<(Batcher, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let thread =
            std::thread::Builder::new().name("gpu-cnn-device".into()).spawn(move || work(rx, &classifier, max_batch.max(1), max_wait, requests_in_flight))?;
        Ok((Batcher { tx }, thread))
    }

    /// Queues one prepared image; the receiver gets its probabilities.
    pub fn submit(&self, pixels: Vec<u8>) -> Result<oneshot::Receiver<Reply>, QueueFull> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { pixels, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(QueueFull),
        }
    }
}

fn work(rx: Receiver<Job>, classifier: &Classifier, max_batch: usize, max_wait: Duration, requests_in_flight: impl Fn() -> usize) {
    // The last batch's size: after a batch of several, the clients it answered are likely
    // sending again, so a batch waits for stragglers until arrivals pause.
    let mut last_batch = 1;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + max_wait;
        while jobs.len() < max_batch {
            if let Ok(job) = rx.try_recv() {
                jobs.push(job);
                continue;
            }
            let mut left = deadline.saturating_duration_since(Instant::now());
            if jobs.len() >= requests_in_flight() {
                if last_batch <= 1 {
                    break;
                }
                left = left.min(ARRIVAL_PAUSE);
            }
            match rx.recv_timeout(left) {
                Ok(job) => jobs.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // A request that timed out or whose client left no longer needs its image computed.
        jobs.retain(|j| !j.reply.is_closed());
        last_batch = jobs.len();
        if jobs.is_empty() {
            continue;
        }
        let mut pixels = Vec::with_capacity(jobs.len() * classifier.input_len());
        for job in &jobs {
            pixels.extend_from_slice(&job.pixels);
        }
        match classifier.probabilities(&pixels) {
            Ok(probs) => {
                for (job, row) in jobs.into_iter().zip(probs.chunks(classifier.classes().max(1))) {
                    let _ = job.reply.send(Ok(row.to_vec()));
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                for job in jobs {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}
