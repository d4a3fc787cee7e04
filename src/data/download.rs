//! The download cache: MNIST, Fashion-MNIST and CIFAR-10 are fetched once from their canonical
//! hosts (or `GPU_CNN_MIRROR`), checked against their published MD5, unpacked in a temporary
//! folder and only then renamed into place, so a cache entry that exists is always complete.

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the cache lives: `$GPU_CNN_DATA`, else the platform cache folder + `gpu-cnn/`.
pub const CACHE_ENV: &str = "GPU_CNN_DATA";
/// A base URL that replaces every canonical host; files are then fetched from
/// `<mirror>/<dataset>/<file>` (e.g. `http://host/data/mnist/train-images-idx3-ubyte.gz`).
pub const MIRROR_ENV: &str = "GPU_CNN_MIRROR";
/// For tests only: `name=md5,name=md5` replacing published digests. Honoured only when the
/// mirror is on this machine (127.0.0.1, localhost, [::1]); anywhere else it is an error.
pub const TEST_CHECKSUMS_ENV: &str = "GPU_CNN_TEST_CHECKSUMS";

#[derive(Clone, Debug)]
pub struct RemoteFile {
    pub name: String,
    pub md5: String,
    /// The most bytes accepted: the published size plus 1% (the MD5 pins the exact bytes;
    /// this bounds what an endless or wrong body can write before that check).
    pub max_bytes: u64,
}

/// A file an archive must unpack to, at most `max_bytes` long.
#[derive(Clone, Debug)]
pub struct ExpectedFile {
    pub path: String,
    pub max_bytes: u64,
}

/// One downloadable data set: its files, where they are published, and how to unpack them.
#[derive(Clone, Debug)]
pub struct Source {
    /// The cache entry's folder name, and the sub-path under a mirror.
    pub dataset: String,
    pub base_url: String,
    pub files: Vec<RemoteFile>,
    /// Unpack .tar.gz files after checking them (and drop the archive); other files are kept as is.
    pub untar: bool,
    /// What the unpacked archives must hold (checked before the cache entry is committed).
    pub unpacked: Vec<ExpectedFile>,
    /// The most bytes all unpacked files together may take.
    pub unpacked_max_bytes: u64,
}

fn files(list: &[(&str, &str, u64)]) -> Vec<RemoteFile> {
    list.iter().map(|&(name, md5, size)| RemoteFile { name: name.to_string(), md5: md5.to_string(), max_bytes: size + size / 100 }).collect()
}

/// The slowest download accepted, on average (after a grace period for the first bytes).
pub const MIN_BYTES_PER_SECOND: u64 = 64 << 10;
const GRACE: Duration = Duration::from_secs(10);

/// The overall deadline for fetching a file of at most `max_bytes`.
pub fn deadline(max_bytes: u64) -> Duration {
    GRACE + Duration::from_secs(max_bytes / MIN_BYTES_PER_SECOND)
}

/// The binary version from the University of Toronto (the digest its page publishes).
pub fn cifar10() -> Source {
    Source {
        dataset: "cifar10".into(),
        base_url: "https://www.cs.toronto.edu/~kriz/".into(),
        files: files(&[("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", 170_052_171)]),
        untar: true,
        unpacked: ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin", "batches.meta.txt"]
            .iter()
            .map(|f| ExpectedFile { path: format!("cifar-10-batches-bin/{f}"), max_bytes: if f.ends_with(".bin") { 30_730_000 } else { 4096 } })
            .collect(),
        // Six batches of 30,730,000 bytes, the names and readme.html.
        unpacked_max_bytes: 6 * 30_730_000 + (1 << 20),
    }
}

/// torchvision's mirror and digests.
pub fn mnist() -> Source {
    Source {
        dataset: "mnist".into(),
        base_url: "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
        files: files(&[
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
        ]),
        untar: false,
        unpacked: Vec::new(),
        unpacked_max_bytes: 0,
    }
}

/// Zalando's bucket, as torchvision uses it (plain HTTP: the MD5 is what vouches for the bytes).
pub fn fashion_mnist() -> Source {
    Source {
        dataset: "fashion-mnist".into(),
        base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into(),
        files: files(&[
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29_515),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4_422_102),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5_148),
        ]),
        untar: false,
        unpacked: Vec::new(),
        unpacked_max_bytes: 0,
    }
}

/// The cache root: `$GPU_CNN_DATA`, else e.g. ~/.cache/gpu-cnn.
pub fn cache_root() -> Result<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => dirs::cache_dir()
            .map(|d| d.join("gpu-cnn"))
            .with_context(|| format!("no cache folder on this platform; set {CACHE_ENV} to a folder for downloaded data")),
    }
}

/// The base URL files come from: the mirror's `<mirror>/<dataset>/` or the canonical one.
pub fn base_url(source: &Source) -> String {
    match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => format!("{}/{}/", m.trim_end_matches('/'), source.dataset),
        _ => source.base_url.clone(),
    }
}

/// True when the URL's host is this machine (the only place test digests are accepted). The
/// URL is parsed as HTTP does (http::Uri), so `?@localhost` or `#@localhost` tails and user
/// parts do not count; anything that does not parse as an http(s) URL is not loopback.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else { return false };
    if !matches!(uri.scheme_str().map(str::to_ascii_lowercase).as_deref(), Some("http" | "https")) {
        return false;
    }
    let Some(host) = uri.host() else { return false };
    matches!(host.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

/// True when `GPU_CNN_TEST_CHECKSUMS` is in force: then no redirect is followed (a loopback
/// server must not hand the download to another host).
fn test_checksums_set() -> bool {
    std::env::var_os(TEST_CHECKSUMS_ENV).is_some()
}

/// Applies `GPU_CNN_TEST_CHECKSUMS` when the files come from this machine; refuses it otherwise,
/// so real downloads are always checked against the published digests.
pub fn with_test_checksums(mut source: Source, base: &str) -> Result<Source> {
    let Ok(spec) = std::env::var(TEST_CHECKSUMS_ENV) else { return Ok(source) };
    if !is_loopback_url(base) {
        bail!("{TEST_CHECKSUMS_ENV} is set, but it is for tests against a server on 127.0.0.1 only and the files would come from {base}; unset it");
    }
    for pair in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, md5) = pair.split_once('=').with_context(|| format!("{TEST_CHECKSUMS_ENV}: '{pair}' is not name=md5"))?;
        if let Some(f) = source.files.iter_mut().find(|f| f.name == name.trim()) {
            f.md5 = md5.trim().to_ascii_lowercase();
        }
    }
    Ok(source)
}

/// How to put the files in place by hand, for every error message.
fn by_hand(source: &Source, base: &str, entry: &Path) -> String {
    let urls: Vec<String> = source.files.iter().map(|f| format!("  {base}{}  (MD5 {})", f.name, f.md5)).collect();
    let place = if source.untar { "unpack it (tar xzf) in" } else { "put them in" };
    format!("To place the files by hand: download\n{}\nand {place} {}; or pass --data-dir to the folder that holds them.", urls.join("\n"), entry.display())
}

/// The cache entry for `source`, downloading it first when it is missing. With `offline`, a
/// missing entry is an error and the network is never touched.
pub fn ensure_cached(source: &Source, offline: bool) -> Result<PathBuf> {
    let root = cache_root()?;
    let entry = root.join(&source.dataset);
    if entry.is_dir() {
        return Ok(entry);
    }
    let base = base_url(source);
    if offline {
        bail!("{}: not in the cache ({}) and --offline forbids downloading.\n{}", source.dataset, entry.display(), by_hand(source, &base, &entry));
    }
    let source = with_test_checksums(source.clone(), &base)?;
    download_into(&source, &base, &root).map_err(|e| anyhow::anyhow!("{e:#}\n{}", by_hand(&source, &base, &entry)))
}

/// Downloads every file of `source` from `base`, checks and unpacks them in a temporary folder
/// under `root`, then renames it to `root/<dataset>`. Returns that folder.
pub fn download_into(source: &Source, base: &str, root: &Path) -> Result<PathBuf> {
    let entry = root.join(&source.dataset);
    std::fs::create_dir_all(root).with_context(|| format!("{}: cannot create the cache folder", root.display()))?;
    remove_abandoned_downloads(root, &source.dataset);
    let partial = root.join(format!(".{}.partial-{}", source.dataset, std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("{}: cannot create", partial.display()))?;
    let result = (|| -> Result<()> {
        for file in &source.files {
            let url = format!("{base}{}", file.name);
            let path = partial.join(&file.name);
            let agent = agent_for(base, file.max_bytes);
            fetch_checked(&agent, &url, file, &path)?;
            if source.untar && file.name.ends_with(".tar.gz") {
                untar(&path, &partial, source.unpacked_max_bytes).with_context(|| format!("{url}: cannot unpack"))?;
                std::fs::remove_file(&path)?;
            }
        }
        check_unpacked(source, &partial)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&partial, &entry) {
        let _ = std::fs::remove_dir_all(&partial);
        // Another process may have finished the same download first; its entry is as good.
        if !entry.is_dir() {
            return Err(e).with_context(|| format!("cannot move the download into {}", entry.display()));
        }
    }
    crate::stderr_line!("Cached {} in {}", source.dataset, entry.display());
    Ok(entry)
}

/// Deletes the temporary folders of downloads whose process is gone (killed mid-download), so
/// an interrupted run leaves no hundreds of MB behind. Only where /proc tells which pids live.
fn remove_abandoned_downloads(root: &Path, dataset: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{dataset}.partial-");
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn agent_for(base: &str, max_bytes: u64) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .timeout_global(Some(deadline(max_bytes)));
    if is_loopback_url(base) {
        // A proxy from the environment must not intercept a server on this machine.
        config = config.proxy(None);
    }
    if test_checksums_set() {
        config = config.max_redirects(0);
    }
    config.build().into()
}

/// Streams `url` into `path` with a progress bar, then checks the length and the MD5.
fn fetch_checked(agent: &ureq::Agent, url: &str, file: &RemoteFile, path: &Path) -> Result<()> {
    let expected_md5 = file.md5.as_str();
    let limit = file.max_bytes;
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(code)) => bail!("{url}: the server answered HTTP {code}"),
        Err(ureq::Error::TooManyRedirects) => bail!("{url}: too many redirects (a redirect loop on the server?)"),
        Err(ureq::Error::Timeout(t)) => bail!("{url}: too slow: {t} timeout (the deadline for this file is {} s)", deadline(limit).as_secs()),
        Err(e) => bail!("{url}: cannot download: {e} (no network, or the host is unreachable?)"),
    };
    if response.status().is_redirection() {
        bail!("{url}: the server redirects (HTTP {}), and redirects are not followed while {TEST_CHECKSUMS_ENV} is set", response.status().as_u16());
    }
    if !response.status().is_success() {
        bail!("{url}: the server answered HTTP {}", response.status().as_u16());
    }
    let total = response.body().content_length();
    if let Some(t) = total.filter(|&t| t > limit) {
        bail!("{url}: the server announces {t} bytes, more than this file's {limit} (wrong file?)");
    }
    crate::stderr_line!("Downloading {url}{}", total.map(|t| format!(" ({:.1} MB)", t as f64 / 1e6)).unwrap_or_default());
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}").unwrap().progress_chars("=> "));
    let mut out = std::fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    // The body reader's own cap is 10 MB by default; ours is the file's.
    let mut reader = response.body_mut().with_config().limit(limit + 1).reader();
    let mut md5 = Md5::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if received >= limit => {
                bar.abandon();
                bail!("{url}: the body is longer than this file's {limit} bytes (wrong file?): {e}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timeout") => {
                bar.abandon();
                bail!(
                    "{url}: too slow: {received} bytes before the deadline of {} s (at least {} KiB/s is needed)",
                    deadline(limit).as_secs(),
                    MIN_BYTES_PER_SECOND >> 10
                );
            }
            Err(e) => {
                bar.abandon();
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                bail!("{url}: the download broke off after {received}{of} bytes (truncated): {e}");
            }
        };
        md5.update(&buf[..n]);
        out.write_all(&buf[..n]).with_context(|| format!("{}: cannot write", path.display()))?;
        received += n as u64;
        if received > limit {
            bar.abandon();
            bail!("{url}: the body is longer than this file's {limit} bytes (wrong file?)");
        }
        bar.set_position(received);
    }
    bar.finish_and_clear();
    out.sync_all().with_context(|| format!("{}: cannot write", path.display()))?;
    if let Some(t) = total.filter(|&t| t != received) {
        bail!("{url}: truncated: received {received} of {t} bytes");
    }
    let got = format!("{:x}", md5.finalize());
    if got != expected_md5 {
        bail!("{url}: checksum mismatch: MD5 {got}, expected {expected_md5} (a corrupted or changed file; nothing was cached)");
    }
    Ok(())
}

/// Unpacks a .tar.gz into `dest`: regular files and folders only (a link could point outside
/// the cache), each placed by the tar crate's checks (no `..`, no absolute paths), and at most
/// `max_total` bytes in all, refused from the entry headers before anything is written.
fn untar(archive: &Path, dest: &Path, max_total: u64) -> Result<()> {
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut total = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = entry.path().map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into());
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            bail!("entry '{name}' is a {kind:?}, not a regular file or folder (refused: a link could point outside the cache)");
        }
        total = total
            .checked_add(entry.header().size()?)
            .filter(|&t| t <= max_total)
            .with_context(|| format!("entry '{name}': the unpacked archive would exceed {max_total} bytes"))?;
        if !entry.unpack_in(dest)? {
            bail!("entry '{name}' would land outside the cache folder");
        }
    }
    Ok(())
}

/// Checks an unpacked download holds what it must (each expected file, regular, non-empty,
/// within its size) before it becomes a cache entry: a broken archive is never cached.
fn check_unpacked(source: &Source, dir: &Path) -> Result<()> {
    for f in &source.unpacked {
        let path = dir.join(&f.path);
        let info = std::fs::symlink_metadata(&path).with_context(|| format!("the archive lacks {}", f.path))?;
        if !info.is_file() || info.len() == 0 || info.len() > f.max_bytes {
            bail!("the archive's {} is not a regular file of 1 to {} bytes ({} bytes)", f.path, f.max_bytes, info.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for url in ["http://127.0.0.1:8080/x", "http://localhost/", "http://[::1]:9/a", "HTTP://LOCALHOST:1"] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://www.cs.toronto.edu/~kriz/",
            "http://127.0.0.1.evil.com/",
            "http://localhost.example/",
            "http://user@evil.com/",
            "http://192.0.2.2:8766?@localhost",
            "http://192.0.2.2:8766?@localhost/mnist/",
            "http://192.0.2.2:8766#@localhost/mnist/",
            "http://192.0.2.2:8766/?@127.0.0.1",
            "ftp://localhost/",
            "localhost",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
