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
}

fn files(list: &[(&str, &str)]) -> Vec<RemoteFile> {
    list.iter().map(|(name, md5)| RemoteFile { name: name.to_string(), md5: md5.to_string() }).collect()
}

/// The binary version from the University of Toronto (the digest its page publishes).
pub fn cifar10() -> Source {
    Source {
        dataset: "cifar10".into(),
        base_url: "https://www.cs.toronto.edu/~kriz/".into(),
        files: files(&[("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")]),
        untar: true,
    }
}

/// torchvision's mirror and digests.
pub fn mnist() -> Source {
    Source {
        dataset: "mnist".into(),
        base_url: "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
        files: files(&[
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ]),
        untar: false,
    }
}

/// Zalando's bucket, as torchvision uses it (plain HTTP: the MD5 is what vouches for the bytes).
pub fn fashion_mnist() -> Source {
    Source {
        dataset: "fashion-mnist".into(),
        base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into(),
        files: files(&[
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ]),
        untar: false,
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

/// True when the URL's host is this machine (the only place test digests are accepted).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if authority.starts_with('[') {
        authority.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    matches!(host.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "[::1]")
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
        let agent = agent_for(base);
        for file in &source.files {
            let url = format!("{base}{}", file.name);
            let path = partial.join(&file.name);
            fetch_checked(&agent, &url, &file.md5, &path)?;
            if source.untar && file.name.ends_with(".tar.gz") {
                untar(&path, &partial).with_context(|| format!("{url}: cannot unpack"))?;
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
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
    eprintln!("Cached {} in {}", source.dataset, entry.display());
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

fn agent_for(base: &str) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().timeout_connect(Some(Duration::from_secs(30))).timeout_recv_response(Some(Duration::from_secs(60))).timeout_per_read(Some(Duration::from_secs(60)));
    if is_loopback_url(base) {
        // A proxy from the environment must not intercept a server on this machine.
        config = config.proxy(None);
    }
    config.build().into()
}

/// Streams `url` into `path` with a progress bar, then checks the length and the MD5.
fn fetch_checked(agent: &ureq::Agent, url: &str, expected_md5: &str, path: &Path) -> Result<()> {
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(code)) => bail!("{url}: the server answered HTTP {code}"),
        Err(e) => bail!("{url}: cannot download: {e} (no network, or the host is unreachable?)"),
    };
    let total = response.body().content_length();
    eprintln!("Downloading {url}{}", total.map(|t| format!(" ({:.1} MB)", t as f64 / 1e6)).unwrap_or_default());
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    let mut out = std::fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let mut reader = response.body_mut().as_reader();
    let mut md5 = Md5::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                bail!("{url}: the download broke off after {received}{of} bytes (truncated): {e}");
            }
        };
        md5.update(&buf[..n]);
        out.write_all(&buf[..n]).with_context(|| format!("{}: cannot write", path.display()))?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    out.sync_all().ok();
    if let Some(t) = total.filter(|&t| t != received) {
        bail!("{url}: truncated: received {received} of {t} bytes");
    }
    let got = format!("{:x}", md5.finalize());
    if got != expected_md5 {
        bail!("{url}: checksum mismatch: MD5 {got}, expected {expected_md5} (a corrupted or changed file; nothing was cached)");
    }
    Ok(())
}

/// Unpacks a .tar.gz into `dest` (the tar crate refuses entries that would land outside it).
fn untar(archive: &Path, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(archive)?;
    tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file))).unpack(dest)?;
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
        for url in ["https://www.cs.toronto.edu/~kriz/", "http://127.0.0.1.evil.com/", "http://localhost.example/", "http://user@evil.com/"] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
