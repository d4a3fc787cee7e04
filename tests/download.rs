//! The download cache against a small HTTP server on 127.0.0.1 that this test starts (the suite
//! never touches the network): success, a corrupted body, a truncated body, a 404, no server,
//! --offline, and test digests refused for real hosts.

mod common;
use common::{run_cli_env, temp_dir};
use gpu_cnn::data::download::{self, RemoteFile, Source};
use gpu_cnn::data::{cifar, idx};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A tiny HTTP/1.1 server: GET /<mode>/<dataset>/<file> answers the file as `mode` says:
/// ok, corrupt (one byte flipped), truncated (full Content-Length, half the body), redirect
/// (to another host), loop (redirect to itself), endless (zeros without end), biglength
/// (announces a terabyte), drip (one byte a second), anything else 404. Counts the requests.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let files = files.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    request.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&request).lines().next().unwrap_or("").to_string();
                let path = line.split(' ').nth(1).unwrap_or("/");
                let (mode, name) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
                let head =
                    |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
                let _ = match (mode, files.get(name)) {
                    ("ok", Some(body)) => stream.write_all(head(body.len()).as_bytes()).and_then(|_| stream.write_all(body)),
                    ("corrupt", Some(body)) => {
                        let mut bad = body.clone();
                        let mid = bad.len() / 2;
                        bad[mid] ^= 0xFF;
                        stream.write_all(head(bad.len()).as_bytes()).and_then(|_| stream.write_all(&bad))
                    }
                    ("truncated", Some(body)) => stream.write_all(head(body.len()).as_bytes()).and_then(|_| stream.write_all(&body[..body.len() / 2])),
                    ("redirect", _) => {
                        stream.write_all(b"HTTP/1.1 302 Found\r\nLocation: http://192.0.2.2:9/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    }
                    ("loop", _) => {
                        stream.write_all(format!("HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                    }
                    ("endless", Some(_)) => stream
                        .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        .and_then(|_| (0..).try_for_each(|_: u64| stream.write_all(&[0u8; 1 << 16]))),
                    ("biglength", Some(body)) => stream.write_all(head(1 << 40).as_bytes()).and_then(|_| stream.write_all(body)),
                    ("drip", Some(body)) => stream.write_all(head(body.len()).as_bytes()).and_then(|_| {
                        body.iter().try_for_each(|b| {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                            stream.write_all(&[*b])
                        })
                    }),
                    _ => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"),
                };
                let _ = stream.flush();
            });
        }
    });
    Server { base, hits }
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The four MNIST files in the real format (gzipped IDX): 30 training and 10 test images.
fn mnist_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (prefix, n) in [("train", 30), ("t10k", 10)] {
        let images: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 13 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let (ip, lp) = (dir.join(format!("{prefix}-images-idx3-ubyte")), dir.join(format!("{prefix}-labels-idx1-ubyte")));
        idx::write_idx(&ip, &lp, 28, 28, &images, &labels).unwrap();
        for p in [ip, lp] {
            out.push((format!("{}.gz", p.file_name().unwrap().to_str().unwrap()), gzip(&std::fs::read(&p).unwrap())));
        }
    }
    out
}

/// cifar-10-binary.tar.gz in the real layout: cifar-10-batches-bin/ with 6 batches and the names.
fn cifar_tarball(dir: &Path) -> Vec<u8> {
    let batches = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).unwrap();
    std::fs::write(batches.join("batches.meta.txt"), "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n").unwrap();
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        let images: Vec<u8> = (0..4 * 3072).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..4).map(|i| (i % 10) as u8).collect();
        cifar::write_batch(&batches.join(name), &images, &labels).unwrap();
    }
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    builder.append_dir_all("cifar-10-batches-bin", &batches).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn served(dataset: &str, files: &[(String, Vec<u8>)]) -> HashMap<String, Vec<u8>> {
    files.iter().map(|(n, b)| (format!("{dataset}/{n}"), b.clone())).collect()
}

fn test_checksums(files: &[(String, Vec<u8>)]) -> String {
    files.iter().map(|(n, b)| format!("{n}={}", md5_hex(b))).collect::<Vec<_>>().join(",")
}

fn tiny_arch(dir: &Path) -> String {
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 10 softmax\n").unwrap();
    arch.to_str().unwrap().to_string()
}

/// Nothing but finished entries in the cache root: no partial downloads left behind.
fn entries(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root).map_or(Vec::new(), |d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect());
    names.sort();
    names
}

#[test]
fn mnist_is_downloaded_checked_cached_and_reused_offline() {
    let dir = temp_dir("dl-mnist");
    let files = mnist_files(&dir);
    let server = serve(served("mnist", &files));
    let cache = dir.join("cache");
    let mirror = format!("{}/ok", server.base);
    let sums = test_checksums(&files);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap()), ("GPU_CNN_MIRROR", mirror.as_str()), ("GPU_CNN_TEST_CHECKSUMS", sums.as_str())];
    let arch = tiny_arch(&dir);
    let out = dir.join("run");
    let args = ["train", "--dataset", "mnist", "--arch", &arch, "--epochs", "1", "--device", "cpu", "--out", out.to_str().unwrap()];
    // What a download killed half way leaves (its pid is long gone): cleaned up by the next one.
    let abandoned = cache.join(".mnist.partial-4000000000");
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join("train-images-idx3-ubyte.gz"), b"half a file").unwrap();
    let (ok, _, err) = run_cli_env(&args, &env);
    assert!(ok, "{err}");
    assert!(err.contains("Downloading") && err.contains("/ok/mnist/train-images-idx3-ubyte.gz") && err.contains("30 training, 10 test images"), "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 4, "one request per file");
    assert_eq!(entries(&cache), ["mnist"]);
    for (name, body) in &files {
        assert_eq!(&std::fs::read(cache.join("mnist").join(name)).unwrap(), body, "{name}");
    }
    // The second run, offline, reads the cache and never calls the server.
    let (ok, _, err) = run_cli_env(&[&args[..], &["--offline", "--overwrite"]].concat(), &env);
    assert!(ok && !err.contains("Downloading"), "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 4);
}

#[test]
fn cifar10_tarball_is_checked_and_unpacked() {
    let dir = temp_dir("dl-cifar");
    let tarball = vec![("cifar-10-binary.tar.gz".to_string(), cifar_tarball(&dir.join("src")))];
    let server = serve(served("cifar10", &tarball));
    let cache = dir.join("cache");
    let mirror = format!("{}/ok/", server.base);
    let sums = test_checksums(&tarball);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap()), ("GPU_CNN_MIRROR", mirror.as_str()), ("GPU_CNN_TEST_CHECKSUMS", sums.as_str())];
    let arch = tiny_arch(&dir);
    let (ok, _, err) =
        run_cli_env(&["train", "--dataset", "cifar10", "--arch", &arch, "--epochs", "1", "--device", "cpu", "--out", dir.join("run").to_str().unwrap()], &env);
    assert!(ok, "{err}");
    assert!(err.contains("20 training, 4 test images of 32x32x3, 10 classes"), "{err}");
    let unpacked = cache.join("cifar10").join("cifar-10-batches-bin");
    assert!(unpacked.join("test_batch.bin").is_file());
    assert!(!cache.join("cifar10").join("cifar-10-binary.tar.gz").exists(), "the archive is dropped after unpacking");
    assert_eq!(entries(&cache), ["cifar10"]);
}

/// A source with this test's own digests (the library-level way to test with other files).
fn test_source(files: &[(String, Vec<u8>)]) -> Source {
    Source {
        dataset: "mnist".into(),
        base_url: "unused".into(),
        files: files.iter().map(|(n, b)| RemoteFile { name: n.clone(), md5: md5_hex(b), max_bytes: b.len() as u64 }).collect(),
        untar: false,
        unpacked: Vec::new(),
        unpacked_max_bytes: 0,
    }
}

fn download_error(mode: &str, name: &str) -> (String, Vec<String>) {
    let dir = temp_dir(&format!("dl-{name}"));
    let files = mnist_files(&dir);
    let server = serve(served("mnist", &files));
    let root = dir.join("cache");
    let base = format!("{}/{mode}/mnist/", server.base);
    let err = download::download_into(&test_source(&files), &base, &root).unwrap_err();
    (format!("{err:#}"), entries(&root))
}

#[test]
fn a_corrupted_body_is_a_checksum_error_and_caches_nothing() {
    let (err, left) = download_error("corrupt", "corrupt");
    assert!(err.contains("/corrupt/mnist/train-images-idx3-ubyte.gz") && err.contains("checksum mismatch") && err.contains("expected"), "{err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_truncated_body_is_an_error_and_caches_nothing() {
    let (err, left) = download_error("truncated", "truncated");
    assert!(err.contains("/truncated/mnist/train-images-idx3-ubyte.gz") && err.contains("truncated"), "{err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn http_404_names_the_url_and_caches_nothing() {
    let (err, left) = download_error("gone", "404");
    assert!(err.contains("/gone/mnist/train-images-idx3-ubyte.gz") && err.contains("HTTP 404"), "{err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn no_server_says_which_url_failed_and_how_to_place_the_files() {
    let dir = temp_dir("dl-refused");
    // A port that was free a moment ago: nothing listens there, so the connection is refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache = dir.join("cache");
    let mirror = format!("http://127.0.0.1:{port}");
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap()), ("GPU_CNN_MIRROR", mirror.as_str())];
    let (ok, _, err) = run_cli_env(&["train", "--dataset", "mnist", "--device", "cpu", "--out", dir.join("run").to_str().unwrap()], &env);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert!(err.contains(&format!("{mirror}/mnist/train-images-idx3-ubyte.gz")) && err.contains("cannot download"), "{err}");
    assert!(
        err.contains("place the files by hand") && err.contains(cache.join("mnist").to_str().unwrap()) && err.contains("f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "{err}"
    );
    assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
}

#[test]
fn offline_never_touches_the_network() {
    let dir = temp_dir("dl-offline");
    let server = serve(HashMap::new());
    let cache = dir.join("cache");
    let mirror = format!("{}/ok", server.base);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap()), ("GPU_CNN_MIRROR", mirror.as_str())];
    for dataset in ["mnist", "cifar10"] {
        let (ok, _, err) = run_cli_env(&["train", "--dataset", dataset, "--offline", "--device", "cpu", "--out", dir.join("run").to_str().unwrap()], &env);
        assert!(!ok && err.contains("--offline") && err.contains("not in the cache"), "{err}");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[test]
fn test_checksums_are_refused_unless_the_mirror_is_this_machine() {
    let dir = temp_dir("dl-test-sums");
    let cache = dir.join("cache");
    let sums = "train-images-idx3-ubyte.gz=00000000000000000000000000000000";
    // The last two put "localhost" where a naive parser sees a host, not where HTTP does.
    for mirror in
        ["http://example.invalid/data", "http://127.0.0.1.example.invalid/", "", "http://192.0.2.2:8766?@localhost", "http://192.0.2.2:8766#@localhost"]
    {
        let env = [("GPU_CNN_DATA", cache.to_str().unwrap()), ("GPU_CNN_MIRROR", mirror), ("GPU_CNN_TEST_CHECKSUMS", sums)];
        let (ok, _, err) = run_cli_env(&["train", "--dataset", "mnist", "--device", "cpu", "--out", dir.join("run").to_str().unwrap()], &env);
        assert!(!ok && err.contains("GPU_CNN_TEST_CHECKSUMS") && err.contains("127.0.0.1 only"), "mirror '{mirror}': {err}");
    }
    assert!(entries(&cache).is_empty());
}

/// The MNIST files served in `mode`, fetched through the CLI with this test's digests.
fn cli_download(mode: &str, name: &str) -> (bool, String, Vec<String>, usize) {
    let dir = temp_dir(&format!("dl-cli-{name}"));
    let files = mnist_files(&dir);
    let server = serve(served("mnist", &files));
    let cache = dir.join("cache");
    let mirror = format!("{}/{mode}", server.base);
    let sums = test_checksums(&files);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap()), ("GPU_CNN_MIRROR", mirror.as_str()), ("GPU_CNN_TEST_CHECKSUMS", sums.as_str())];
    let (ok, _, err) = run_cli_env(&["train", "--dataset", "mnist", "--device", "cpu", "--epochs", "1", "--out", dir.join("run").to_str().unwrap()], &env);
    (ok, err, entries(&cache), server.hits.load(Ordering::SeqCst))
}

#[test]
fn with_test_digests_a_loopback_mirror_cannot_redirect_elsewhere() {
    let (ok, err, left, hits) = cli_download("redirect", "redirect");
    assert!(!ok && err.contains("redirects (HTTP 302)") && err.contains("GPU_CNN_TEST_CHECKSUMS"), "{err}");
    assert!(left.is_empty() && hits == 1, "{left:?} after {hits} requests");
}

#[test]
fn a_redirect_loop_is_named_as_such() {
    let (err, left) = download_error("loop", "loop");
    assert!(err.contains("too many redirects") && !err.contains("no network"), "{err}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn endless_or_oversized_bodies_stop_at_the_files_size() {
    let (err, left) = download_error("endless", "endless");
    assert!(err.contains("train-images-idx3-ubyte.gz") && err.contains("longer than this file's"), "{err}");
    assert!(left.is_empty(), "{left:?}");
    let (err, left) = download_error("biglength", "biglength");
    assert!(err.contains("announces 1099511627776 bytes"), "{err}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_dripping_server_is_cut_off_at_the_deadline() {
    let started = std::time::Instant::now();
    let (err, left) = download_error("drip", "drip");
    let waited = started.elapsed().as_secs();
    assert!(err.contains("too slow") && err.contains("deadline"), "{err}");
    // The deadline for a file of a few KB is the 10 s grace period; the bar is 60 s.
    assert!(waited < 20, "took {waited} s");
    assert!(left.is_empty(), "{left:?}");
}

/// A .tar.gz holding `entries` (path, type, link target, body).
fn tarball(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, kind, link, body) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        if !link.is_empty() {
            header.set_link_name(link).unwrap();
        }
        builder.append_data(&mut header, path, *body).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Downloads one archive as a CIFAR-like source (the real unpacked checks, tiny caps).
fn unpack_error(name: &str, archive: Vec<u8>, unpacked_max_bytes: u64) -> (String, Vec<String>) {
    let dir = temp_dir(&format!("dl-tar-{name}"));
    let files = vec![("cifar-10-binary.tar.gz".to_string(), archive)];
    let server = serve(served("cifar10", &files));
    let root = dir.join("cache");
    let mut source = download::cifar10();
    source.files = files.iter().map(|(n, b)| RemoteFile { name: n.clone(), md5: md5_hex(b), max_bytes: b.len() as u64 }).collect();
    source.unpacked_max_bytes = unpacked_max_bytes;
    let err = download::download_into(&source, &format!("{}/ok/cifar10/", server.base), &root).unwrap_err();
    (format!("{err:#}"), entries(&root))
}

#[test]
fn archives_may_hold_only_regular_files_and_folders() {
    let outside = temp_dir("dl-tar-secret").join("secret.txt");
    std::fs::write(&outside, "secret\n").unwrap();
    for (name, kind) in [("symlink", tar::EntryType::Symlink), ("hardlink", tar::EntryType::Link)] {
        let archive = tarball(&[
            ("cifar-10-batches-bin/data_batch_1.bin", tar::EntryType::Regular, "", &[0u8; 3073]),
            ("cifar-10-batches-bin/batches.meta.txt", kind, outside.to_str().unwrap(), b""),
        ]);
        let (err, left) = unpack_error(name, archive, 1 << 20);
        assert!(err.contains("batches.meta.txt") && err.contains("not a regular file or folder"), "{name}: {err}");
        assert!(left.is_empty(), "{name}: {left:?}");
    }
}

#[test]
fn an_archive_too_large_unpacked_or_lacking_its_files_is_never_cached() {
    // 8 MiB of zeros gzip to a few KB; the unpacked limit here is 1 MiB.
    let bomb = tarball(&[("cifar-10-batches-bin/data_batch_1.bin", tar::EntryType::Regular, "", &vec![0u8; 8 << 20])]);
    assert!(bomb.len() < 100_000);
    let (err, left) = unpack_error("bomb", bomb, 1 << 20);
    assert!(err.contains("data_batch_1.bin") && err.contains("would exceed 1048576 bytes"), "{err}");
    assert!(left.is_empty(), "{left:?}");
    let readme_only = tarball(&[("cifar-10-batches-bin/readme.html", tar::EntryType::Regular, "", b"<p>hi</p>")]);
    let (err, left) = unpack_error("incomplete", readme_only, 1 << 20);
    assert!(err.contains("the archive lacks cifar-10-batches-bin/data_batch_1.bin"), "{err}");
    assert!(left.is_empty(), "{left:?}");
}
