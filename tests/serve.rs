//! `gpu-cnn serve` end to end over loopback: the mixed 200-request test against the real binary
//! (memory measured on its process, SIGTERM shutdown), and the routes, limits and multipart
//! uploads against an in-process server. Every request goes to 127.0.0.1 only.

mod common;

use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::image::{DynamicImage, ImageFormat, RgbImage};
use gpu_cnn::serve::client::{multipart, request, Connection, HttpResponse};
use gpu_cnn::serve::{start, ServeOptions};
use gpu_cnn::{Classifier, Device, TrainConfig, Trainer};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
/// Same CPU backend and weights as the server: only batch composition differs, which does not
/// change a row's arithmetic beyond rounding (1e-5 is far above f32 rounding of a softmax).
const PROB_TOLERANCE: f32 = 1e-5;

/// A seed-model checkpoint trained for one epoch on synthetic data (CPU), saved in `dir`.
fn checkpoint(dir: &Path) -> PathBuf {
    let data = generate(&SyntheticSpec { train: 256, test: 64, ..Default::default() }, 5);
    let config = TrainConfig { epochs: 1, device: Device::Cpu, out_dir: Some(dir.to_path_buf()), ..Default::default() };
    Trainer::new(gpu_cnn::model::seed_layers(), data, config).fit().unwrap();
    dir.join("last.safetensors")
}

/// Good uploads: synthetic test images as PNG (32x32) and as JPEG resized to 48x40, with the
/// classifier's own answer for each (computed from the same encoded bytes).
fn good_images(classifier: &Classifier, n: usize) -> Vec<(Vec<u8>, String, f32)> {
    let test = generate(&SyntheticSpec { train: 1, test: n, ..Default::default() }, 9).test;
    (0..n)
        .map(|i| {
            let rgb = RgbImage::from_raw(32, 32, test.image(i).to_vec()).unwrap();
            let img = DynamicImage::ImageRgb8(rgb);
            let (img, format) = if i % 2 == 0 {
                (img, ImageFormat::Png)
            } else {
                (img.resize_exact(48, 40, gpu_cnn::image::imageops::FilterType::Triangle), ImageFormat::Jpeg)
            };
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
            // Expected through the one image pipeline, as the server decodes (its JPEG decoder
            // differs from image::load_from_memory's in the last bits).
            let img = gpu_cnn::image_pipeline::decode(&bytes, classifier.preprocessing()).unwrap();
            let top = classifier.top(&classifier.probabilities(&classifier.prepare(&img).unwrap()).unwrap());
            (bytes, top[0].class.clone(), top[0].probability)
        })
        .collect()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(RgbImage::new(width, height)).write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
    bytes
}

/// What one request of the mixed test sends and expects.
enum Case {
    Good { body: Vec<u8>, class: String, probability: f32 },
    Bad { body: Vec<u8>, status: u16, says: &'static str },
}

fn check(case: &Case, r: &HttpResponse) {
    match case {
        Case::Good { class, probability, .. } => {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let top = &r.json()["predictions"][0]["top"][0];
            assert_eq!(top["class"].as_str(), Some(class.as_str()), "{}", r.json());
            let p = top["probability"].as_f64().unwrap() as f32;
            assert!((p - probability).abs() < PROB_TOLERANCE, "probability {p} vs {probability}");
        }
        Case::Bad { status, says, .. } => {
            assert_eq!(r.status, *status, "{}", String::from_utf8_lossy(&r.body));
            let error = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(error.contains(says), "error '{error}' does not say '{says}'");
        }
    }
}

/// Kills the server if the test fails before it is stopped by SIGTERM.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap()
}

/// The real binary: 200 concurrent requests (good PNG/JPEG, garbage, truncated, empty,
/// oversized bodies, images over the pixel cap). Every good one gets the right class, every
/// bad one its 4xx; the server's peak memory stays far below what buffering the oversized
/// bodies would take; SIGTERM stops it cleanly.
#[test]
fn mixed_200_concurrent_requests_against_the_binary() {
    let dir = common::temp_dir("serve-mixed");
    let ck = checkpoint(&dir);
    let classifier = Classifier::load(&ck, Device::Cpu).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args([
            "serve",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--device",
            "cpu",
            "--bind",
            "127.0.0.1:0",
            "--max-body",
            "256KiB",
            "--max-pixels",
            "1000000",
            "--max-queue",
            "250",
            "--max-wait-ms",
            "10",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    // Keep reading stderr (the access log) so the server never blocks on a full pipe.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = {
        let log = log.clone();
        let stderr = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.split("listening on http://").nth(1) {
                    let _ = addr_tx.send(at.trim().parse::<SocketAddr>().unwrap());
                }
                log.lock().unwrap().push(line);
            }
        })
    };
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("the server says where it listens");
    assert!(addr.ip().is_loopback());

    let goods = good_images(&classifier, 8);
    let mut truncated = goods[0].0.clone();
    truncated.truncate(truncated.len() / 2);
    let huge = vec![0x42u8; 4 * 1000 * 1000];
    let over_pixel_cap = png(1001, 1000);
    let mut cases = Vec::new();
    for i in 0..200 {
        cases.push(match i % 10 {
            0..=4 => {
                let (body, class, probability) = goods[i % goods.len()].clone();
                Case::Good { body, class, probability }
            }
            5 => Case::Bad { body: b"GIF89a\x10\x00\x10\x00 says 16x16 but is no image".to_vec(), status: 400, says: "cannot decode" },
            6 => Case::Bad { body: (0..1000u32).map(|v| (v * 7 + 3) as u8).collect(), status: 415, says: "not a JPEG, PNG" },
            7 => Case::Bad { body: Vec::new(), status: 400, says: "empty body" },
            8 => Case::Bad {
                body: if i % 20 == 8 { huge.clone() } else { truncated.clone() },
                status: if i % 20 == 8 { 413 } else { 400 },
                says: if i % 20 == 8 { "over this server's cap" } else { "cannot decode" },
            },
            _ => Case::Bad { body: over_pixel_cap.clone(), status: 413, says: "pixels, over this server's cap" },
        });
    }
    // Warm up, then take the baseline memory.
    assert_eq!(request(addr, "POST", "/v1/classify", None, &goods[0].0, TIMEOUT).unwrap().status, 200);
    let baseline_kib = vm_kib(pid, "VmRSS:");

    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(cases.len()));
    let cases = Arc::new(cases);
    let threads: Vec<_> = (0..cases.len())
        .map(|i| {
            let (cases, barrier) = (cases.clone(), barrier.clone());
            std::thread::spawn(move || {
                let body = match &cases[i] {
                    Case::Good { body, .. } | Case::Bad { body, .. } => body,
                };
                barrier.wait();
                request(addr, "POST", "/v1/classify", None, body, TIMEOUT)
            })
        })
        .collect();
    let responses: Vec<HttpResponse> = threads.into_iter().map(|t| t.join().unwrap().expect("every request is answered")).collect();
    eprintln!("200 mixed requests in {:.2} s", started.elapsed().as_secs_f64());
    for (case, r) in cases.iter().zip(&responses) {
        check(case, r);
    }
    // Buffering the 10 oversized bodies (4 MB each) and decoding the 20 images over the pixel
    // cap (3 MB each) would add 100 MB; the caps must keep the growth under 40 MB.
    let peak_kib = vm_kib(pid, "VmHWM:");
    eprintln!("server memory: {baseline_kib} KiB after warm-up, peak {peak_kib} KiB");
    assert!(peak_kib < baseline_kib + 40 * 1024, "peak {peak_kib} KiB vs baseline {baseline_kib} KiB");
    assert_eq!(request(addr, "GET", "/healthz", None, b"", TIMEOUT).unwrap().status, 200, "still serving");

    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let log = log.lock().unwrap();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
    let logged = log.iter().filter(|l| l.contains("\"POST /v1/classify\"")).count();
    assert_eq!(logged, 201, "one access-log line per request");
    assert!(log.iter().any(|l| l.contains("\"POST /v1/classify\" 413")), "access lines carry the status");
}

fn in_process(dir: &Path, opts: ServeOptions) -> (gpu_cnn::serve::Server, Arc<Classifier>) {
    let classifier = Arc::new(Classifier::load(checkpoint(dir), Device::Cpu).unwrap());
    let server = start(classifier.clone(), ServeOptions { bind: "127.0.0.1:0".into(), access_log: false, ..opts }).unwrap();
    (server, classifier)
}

#[test]
fn routes_multipart_and_model_description() {
    let dir = common::temp_dir("serve-routes");
    let (server, classifier) = in_process(&dir, ServeOptions { top: 3, ..Default::default() });
    let addr = server.addr;
    let health = request(addr, "GET", "/healthz", None, b"", TIMEOUT).unwrap();
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")));

    let model = request(addr, "GET", "/v1/model", None, b"", TIMEOUT).unwrap().json();
    assert_eq!(model["classes"].as_array().unwrap().len(), 10);
    assert_eq!(model["input"]["height"], 32);
    assert_eq!(model["preprocessing"]["resize"], "stretch");
    assert_eq!(model["training"]["epochs"], 1);
    assert_eq!(model["parameters"], 122_570);

    let goods = good_images(&classifier, 3);
    let files: Vec<(&str, &[u8])> = vec![("a.png", &goods[0].0), ("b.jpg", &goods[1].0), ("c.png", &goods[2].0)];
    let (content_type, body) = multipart(&files);
    let r = request(addr, "POST", "/v1/classify", Some(&content_type), &body, TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let predictions = r.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions.len(), 3);
    for (p, (name, good)) in predictions.iter().zip(["a.png", "b.jpg", "c.png"].iter().zip(&goods)) {
        assert_eq!(p["file"], *name);
        assert_eq!(p["top"].as_array().unwrap().len(), 3, "--top 3");
        assert_eq!(p["top"][0]["class"].as_str(), Some(good.1.as_str()));
    }
    // A bad file in a multipart request is named in the error.
    let (content_type, body) = multipart(&[("fine.png", &goods[0].0), ("broken.png", b"\x89PNG\r\n\x1a\nbroken")]);
    let r = request(addr, "POST", "/v1/classify", Some(&content_type), &body, TIMEOUT).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().starts_with("broken.png: "), "{}", r.json());

    // Requests one after another on one kept-alive connection (as a pooled client sends them),
    // a bad one between good ones: each gets its own answer and the connection stays usable.
    let mut connection = Connection::new(addr, TIMEOUT);
    for (i, body) in [&goods[0].0[..], b"garbage", &goods[1].0[..], &goods[2].0[..]].into_iter().enumerate() {
        let r = connection.send("POST", "/v1/classify", None, body).unwrap();
        if i == 1 {
            assert_eq!(r.status, 415, "{}", String::from_utf8_lossy(&r.body));
        } else {
            let good = &goods[if i == 0 { 0 } else { i - 1 }];
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["predictions"][0]["top"][0]["class"].as_str(), Some(good.1.as_str()));
        }
        assert_ne!(r.header("connection"), Some("close"), "the server keeps the connection open");
    }

    // A photo larger than a thumbnail is decoded on a blocking thread, with the same answer as
    // the classifier gives it directly.
    let photo = png(300, 200);
    let r = connection.send("POST", "/v1/classify", None, &photo).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let direct = classifier.classify(&gpu_cnn::image::load_from_memory(&photo).unwrap()).unwrap();
    assert_eq!(r.json()["predictions"][0]["top"][0]["class"].as_str(), Some(direct[0].class.as_str()));

    let missing = request(addr, "GET", "/v2/nothing", None, b"", TIMEOUT).unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("/v1/classify"));
    server.shutdown().unwrap();
}

/// A client that sends half its body and stalls holds the only slot: the next request gets
/// 503 with Retry-After at once, and the stalled one gets 503 when the timeout passes.
#[test]
fn full_queue_answers_503_with_retry_after_and_stalled_requests_time_out() {
    use std::io::{Read, Write};
    let dir = common::temp_dir("serve-busy");
    let (server, classifier) = in_process(&dir, ServeOptions { max_queue: 1, timeout: Duration::from_millis(1500), ..Default::default() });
    let addr = server.addr;
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    stalled.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\nhalf").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let busy = request(addr, "POST", "/v1/classify", None, &good_images(&classifier, 1)[0].0, TIMEOUT).unwrap();
    assert_eq!(busy.status, 503, "{}", String::from_utf8_lossy(&busy.body));
    assert_eq!(busy.header("retry-after"), Some("1"));
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("longer than 1.5 s"), "{answer}");
    // The slot is free again.
    let ok = request(addr, "POST", "/v1/classify", None, &good_images(&classifier, 1)[0].0, TIMEOUT).unwrap();
    assert_eq!(ok.status, 200);
    server.shutdown().unwrap();
}

/// Reads from `stream` until the server closes it (or `limit` passes); how long that took.
fn closed_after(stream: &mut std::net::TcpStream, limit: Duration) -> Duration {
    use std::io::Read;
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    started.elapsed()
}

/// A connection that sends nothing, one that sends its headers a byte at a time, and one
/// left idle after a request are all closed after the header timeout, while other clients
/// are served, and a shutdown does not wait for them. Before, each stayed open for ever: 1,100
/// such connections took every file descriptor, and a half-sent header blocked shutdown.
#[test]
fn silent_and_slow_clients_are_disconnected_and_cannot_hold_up_shutdown() {
    use std::io::Write;
    let dir = common::temp_dir("serve-slow");
    let (server, classifier) = in_process(&dir, ServeOptions { header_timeout: Duration::from_secs(1), ..Default::default() });
    let addr = server.addr;
    let limit = Duration::from_secs(20);
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed() + closed_after(&mut s, Duration::from_secs(20))
    });
    let mut kept = Connection::new(addr, TIMEOUT);
    assert_eq!(kept.send("GET", "/healthz", None, b"").unwrap().status, 200);
    let kept_since = Instant::now();
    // Served while those hang around.
    let good = &good_images(&classifier, 1)[0];
    let r = request(addr, "POST", "/v1/classify", None, &good.0, TIMEOUT).unwrap();
    assert_eq!(r.status, 200);
    let silent_for = closed_after(&mut silent, limit);
    assert!(silent_for < Duration::from_secs(8), "a silent connection lived {silent_for:?}");
    let slow_for = slow.join().unwrap();
    assert!(slow_for < Duration::from_secs(8), "a byte-a-100-ms header lived {slow_for:?}");
    // The kept-alive connection was closed while idle: the next request on it fails.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(kept_since.elapsed()));
    assert!(kept.send("GET", "/healthz", None, b"").is_err(), "an idle kept-alive connection is closed after the header timeout");
    // A half-sent header does not keep a shutdown waiting.
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    server.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(8), "shutdown took {:?}", started.elapsed());
}

/// Refusals of the router itself answer with the same JSON error as every other; form values
/// in a multipart upload are not taken for images; media types match in any case.
#[test]
fn wrong_methods_and_form_values_get_clear_answers() {
    let dir = common::temp_dir("serve-methods");
    let (server, classifier) = in_process(&dir, ServeOptions::default());
    let addr = server.addr;
    for (method, path, allowed) in [("GET", "/v1/classify", "POST"), ("POST", "/healthz", "GET"), ("DELETE", "/v1/model", "GET")] {
        let r = request(addr, method, path, None, b"", TIMEOUT).unwrap();
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allowed));
        assert!(r.json()["error"].as_str().unwrap().contains(&format!("use {allowed}")), "{}", r.json());
    }
    let good = &good_images(&classifier, 1)[0];
    // curl -F file=@a.png -F top=3: a part without a file name that is not an image.
    let boundary = "b0undary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"top\"\r\n\r\n3\r\n").into_bytes();
    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
    body.extend(&good.0);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = request(addr, "POST", "/v1/classify", Some(&format!("Multipart/Form-Data; boundary={boundary}")), &body, TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let predictions = r.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions.len(), 1, "{predictions:?}");
    assert_eq!((predictions[0]["file"].as_str(), predictions[0]["top"][0]["class"].as_str()), (Some("a.png"), Some(good.1.as_str())));
    server.shutdown().unwrap();
}

/// A small PNG that declares many 16-bit RGBA pixels decodes into ~13 bytes a pixel. Six sent
/// at once used to decode at once (six times the memory; 256 at --max-queue's default); now
/// the pixels being decoded at once are capped at --max-pixels, so six cost about what one
/// does. Measured on the binary's own process.
#[test]
fn concurrent_large_decodes_share_one_memory_budget() {
    let dir = common::temp_dir("serve-decode-budget");
    let ck = checkpoint(&dir);
    let bomb = {
        let img = gpu_cnn::image::ImageBuffer::<gpu_cnn::image::Rgba<u16>, Vec<u16>>::new(2000, 2000);
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba16(img).write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        bytes
    };
    assert!(bomb.len() < 200_000, "a small upload: {} bytes", bomb.len());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["serve", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--bind", "127.0.0.1:0", "--max-pixels", "4000000", "--quiet"])
        // glibc: buffers over 1 MB go straight back to the system when freed. Its default
        // threshold grows to 32 MB after such a free, and then each blocking thread's arena
        // keeps its freed decode buffers: the peak would count decodes that never overlapped.
        .env("MALLOC_MMAP_THRESHOLD_", "1048576")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("the server says where it listens").unwrap();
        if let Some(at) = line.split("listening on http://").nth(1) {
            break at.trim().parse().unwrap();
        }
    };
    let classify = |body: &[u8]| assert_eq!(request(addr, "POST", "/v1/classify", None, body, TIMEOUT).unwrap().status, 200);
    // Warm up with a thumbnail (threads, the device thread's first batch), then one large image.
    classify(&png(32, 32));
    let base = vm_kib(pid, "VmHWM:");
    classify(&bomb);
    let one = vm_kib(pid, "VmHWM:") - base;
    let barrier = Barrier::new(6);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                barrier.wait();
                classify(&bomb);
            });
        }
    });
    let six = vm_kib(pid, "VmHWM:") - base;
    assert!(one > 30_000, "one decode should take tens of MB ({one} KiB): the test measures nothing otherwise");
    // Allocator reuse makes it less; at most the one decode plus some slack for the buffers
    // of requests waiting their turn (6 x 0.2 MB bodies) and thread stacks.
    assert!(six < one * 2, "six concurrent large decodes peaked at {six} KiB over the base, one at {one} KiB");
}
