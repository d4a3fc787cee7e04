//! Hostile or absurd input (crafted checkpoints, huge flags, IDX headers, gzip bombs, devices
//! named as files) gets a clear error and exit code 1: never an abort, a panic or GBs of memory.
//! The memory-sensitive cases run the binary under a 2 GiB address-space limit (prlimit --as),
//! where an unchecked allocation would abort with "memory allocation of N bytes failed".

mod common;
use common::temp_dir;
use gpu_cnn::checkpoint::{self, CheckpointMeta};
use gpu_cnn::model::{parse_arch, Model};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const LIMIT_AS: &str = "--as=2147483648";

/// Runs the binary under the address-space limit; returns (exit code, stderr).
fn run_limited(args: &[&str]) -> (i32, String) {
    let out = Command::new("prlimit").arg(LIMIT_AS).arg("--").arg(env!("CARGO_BIN_EXE_gpu-cnn")).args(args).output().expect("prlimit (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("memory allocation of") && !err.contains("panicked") && !err.contains("capacity overflow"), "{args:?}: {err}");
    (out.status.code().unwrap_or(-1), err)
}

/// Expects exit code 1 and an error mentioning every needle.
fn refused(args: &[&str], needles: &[&str]) {
    let (code, err) = run_limited(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: the error should mention '{n}': {err}");
    }
}

/// A checkpoint of `arch` for `input`: zero weights of the right shapes when `with_weights`.
fn write_checkpoint(path: &Path, arch: &str, input: (usize, usize, usize), with_weights: bool) {
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let meta = CheckpointMeta { epoch: 0, step: 10, ..common::checkpoint_meta(arch, input, &names) };
    let tensors = if with_weights { common::constant_weights(&Model::new(&parse_arch(arch).unwrap(), input).unwrap(), 0.0) } else { Vec::new() };
    checkpoint::save(path, &meta, &tensors).unwrap();
}

fn image(dir: &Path) -> String {
    let path = dir.join("x.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30])).save(&path).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn checkpoints_describing_huge_models_are_refused_before_allocating() {
    let dir = temp_dir("hostile-ck");
    let img = image(&dir);
    // (name, arch, input, valid tensors, what the error names)
    type Case<'a> = (&'a str, &'a str, (usize, usize, usize), bool, &'a [&'a str]);
    let cases: [Case; 4] = [
        ("wide-conv", "conv2d 100000000 3 relu\nflatten\ndense 10 softmax\n", (32, 32, 3), false, &["wide-conv.safetensors", "too large"]),
        ("wide-dense", "flatten\ndense 2000000000 relu\ndense 10 softmax\n", (32, 32, 3), false, &["wide-dense.safetensors", "too large"]),
        ("huge-kernel", "conv2d 4 100000 relu padding=same\nflatten\ndense 10 softmax\n", (32, 32, 3), false, &["huge-kernel.safetensors", "too large"]),
        ("no-weights", "conv2d 4 3 relu\nflatten\ndense 10 softmax\n", (32, 32, 3), false, &["no-weights.safetensors", "conv2d.kernel", "missing"]),
    ];
    for (name, arch, input, weights, needles) in cases {
        let ck = dir.join(format!("{name}.safetensors"));
        write_checkpoint(&ck, arch, input, weights);
        refused(&["predict", "--device", "cpu", "--checkpoint", ck.to_str().unwrap(), &img], needles);
        refused(&["evaluate", "--device", "cpu", "--checkpoint", ck.to_str().unwrap(), "--limit-test", "10"], needles);
        refused(&["train", "--device", "cpu", "--resume", ck.to_str().unwrap(), "--epochs", "5", "--out", dir.join(name).to_str().unwrap()], needles);
    }
    // 9,998 layers: its 19,996 weights would have to be in the file.
    let deep = dir.join("deep.safetensors");
    write_checkpoint(&deep, &format!("flatten\n{}dense 10 softmax\n", "dense 10 relu\n".repeat(9_998)), (32, 32, 3), false);
    refused(&["predict", "--device", "cpu", "--checkpoint", deep.to_str().unwrap(), &img], &["deep.safetensors", "missing"]);
    // One more layer than the limit of 10,000.
    write_checkpoint(&deep, &format!("flatten\n{}dense 10 softmax\n", "dense 10 relu\n".repeat(9_999)), (32, 32, 3), false);
    refused(&["predict", "--device", "cpu", "--checkpoint", deep.to_str().unwrap(), &img], &["deep.safetensors", "10001 layers, over the limit of 10000"]);
    // A 4000x4000 input with few weights: even one image's activations and im2col blocks
    // (1.7 GB a thread) cannot be had under the limit (predict's batch is one per file).
    let big = dir.join("big-input.safetensors");
    write_checkpoint(&big, "conv2d 4 3 relu\nmaxpool 1000\nflatten\ndense 10 softmax\n", (4000, 4000, 3), true);
    refused(&["predict", "--device", "cpu", "--checkpoint", big.to_str().unwrap(), &img], &["batch size 1", "too large for this machine"]);
    // A tensor whose shape is not the architecture's.
    let shaped = dir.join("shape.safetensors");
    write_checkpoint(&shaped, "conv2d 4 3 relu\nflatten\ndense 10 softmax\n", (8, 8, 3), true);
    // Edited as bytes: the header's 8-byte length prefix is not text.
    let mut bytes = std::fs::read(&shaped).unwrap();
    let at = bytes.windows(9).position(|w| w == b"[3,3,3,4]").expect("the kernel's shape is in the header");
    bytes[at..at + 9].copy_from_slice(b"[3,3,4,3]");
    std::fs::write(&shaped, &bytes).unwrap();
    refused(&["predict", "--device", "cpu", "--checkpoint", shaped.to_str().unwrap(), &img], &["shape.safetensors", "conv2d.kernel", "[3, 3, 4, 3]"]);
}

#[test]
fn absurd_sizes_in_flags_and_arch_files_get_clear_errors() {
    let dir = temp_dir("hostile-flags");
    // A batch larger than the data is one batch of all of it (as Keras): buffers for 2,000
    // images, not for a billion; 2,000 of 16 MB activations each do not fit, and say so.
    let wide = dir.join("wide.arch");
    std::fs::write(&wide, "conv2d 4096 3 relu padding=same\nflatten\ndense 10 softmax\n").unwrap();
    refused(
        &[
            "train",
            "--device",
            "cpu",
            "--dataset",
            "synthetic",
            "--arch",
            wide.to_str().unwrap(),
            "--batch-size",
            "1000000000",
            "--epochs",
            "1",
            "--out",
            dir.join("a").to_str().unwrap(),
        ],
        &["batch size 2000", "use a smaller batch size"],
    );
    // The seed model with that batch on 100 images trains (in the 2 GiB address space).
    let args =
        ["train", "--device", "cpu", "--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50", "--batch-size", "1000000000", "--epochs", "1"];
    let (code, err) = run_limited(&[&args[..], &["--out", dir.join("one-batch").to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    let photos = dir.join("photos");
    for class in ["a", "b"] {
        std::fs::create_dir_all(photos.join(class)).unwrap();
    }
    refused(
        &["train", "--device", "cpu", "--data", photos.to_str().unwrap(), "--image-size", "100000", "--epochs", "1", "--out", dir.join("b").to_str().unwrap()],
        &["--image-size 100000", "4096"],
    );
    let ck = dir.join("ok.safetensors");
    write_checkpoint(&ck, "conv2d 4 3 relu\nflatten\ndense 10 softmax\n", (8, 8, 3), true);
    let img = image(&dir);
    // predict runs batches of at most 4096 images whatever --batch-size says: a huge one is
    // no error, and must not allocate for it either (the address-space limit would abort).
    let (code, err) = run_limited(&["predict", "--device", "cpu", "--checkpoint", ck.to_str().unwrap(), "--batch-size", "18446744073709551615", &img]);
    assert_eq!(code, 0, "{err}");
    let arch = dir.join("huge.arch");
    std::fs::write(&arch, "flatten\ndense 9223372036854775808 relu\ndense 10 softmax\n").unwrap();
    refused(&["summary", "--arch", arch.to_str().unwrap()], &["layer 2 (dense)", "too large"]);
    refused(
        &["train", "--device", "cpu", "--dataset", "synthetic", "--arch", arch.to_str().unwrap(), "--out", dir.join("c").to_str().unwrap()],
        &["too large"],
    );
    // summary refuses inputs whose totals would wrap, instead of printing them.
    refused(&["summary", "--input", "100000x100000x3"], &["the input of 100000x100000x3 is too large"]);
    refused(&["summary", "--input", "20000x20000x3"], &["layer 1 (conv2d): the output of 19998x19998x32 is too large"]);
    std::fs::write(&arch, "conv2d -8 3\nflatten\ndense 10 softmax\n").unwrap();
    refused(&["summary", "--arch", arch.to_str().unwrap()], &["filters '-8' is not a positive whole number"]);
    // A pool window near usize::MAX would wrap the padded-window arithmetic.
    std::fs::write(&arch, "MaxPooling2D(18446744073709551615, strides=1, padding=\"same\") Flatten Dense(10, softmax)\n").unwrap();
    refused(&["summary", "--arch", arch.to_str().unwrap()], &["layer 1 (max_pooling2d)", "pool size and stride must be at most"]);
    // Devices and endless files are not read.
    refused(&["summary", "--arch", "/dev/zero"], &["/dev/zero", "not a regular file"]);
    refused(&["predict", "--device", "cpu", "--checkpoint", "/dev/zero", &img], &["/dev/zero", "not a regular file"]);
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    [magic].iter().chain(dims).flat_map(|w| w.to_be_bytes()).collect()
}

fn gzip_members(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(part).unwrap();
        out.extend(enc.finish().unwrap());
    }
    out
}

/// A valid IDX pair for `prefix` (n images of 28x28) in `dir`, gzipped in two members.
fn write_mnist_split(dir: &Path, prefix: &str, n: u32) {
    let images: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let head = idx_header(0x803, &[n, 28, 28]);
    let (a, b) = images.split_at(images.len() / 3);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip_members(&[&head, a, b])).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip_members(&[&idx_header(0x801, &[n]), &labels])).unwrap();
}

#[test]
fn idx_headers_that_overflow_and_gzip_bombs_are_refused_and_multi_member_gzip_loads() {
    let dir = temp_dir("hostile-idx");
    write_mnist_split(&dir, "train", 30);
    write_mnist_split(&dir, "t10k", 10);
    // Several gzip members (as `cat a.gz b.gz` makes) are one valid file.
    let ds = gpu_cnn::data::idx::load_dir(&dir, "mnist", (0..10).map(|i| i.to_string()).collect()).unwrap();
    assert_eq!((ds.train.len(), ds.test.len(), ds.train.image(29)[0]), (30, 10, (29 * 784 % 251) as u8));

    let images = dir.join("train-images-idx3-ubyte.gz");
    let data_dir = dir.to_str().unwrap();
    // 4 x 2^31 x 2^31 bytes: the product overflows 64 bits.
    std::fs::write(&images, gzip_members(&[&idx_header(0x803, &[4, 1 << 31, 1 << 31])])).unwrap();
    refused(
        &["show", "--dataset", "mnist", "--data-dir", data_dir, "--out", dir.join("g.png").to_str().unwrap()],
        &["train-images-idx3-ubyte.gz", "more than the limit"],
    );
    refused(
        &["train", "--device", "cpu", "--dataset", "mnist", "--data-dir", data_dir, "--out", dir.join("r").to_str().unwrap()],
        &["train-images-idx3-ubyte.gz", "more than the limit"],
    );
    // 30 images declared, 256 MiB of zeros behind them in a 256 KB file: reading stops at the
    // declared size, so it fails cleanly under a 300 MB address-space limit (which a full
    // decompression into memory would exceed; show on the real Fashion-MNIST fits in it).
    let zeros = vec![0u8; 256 << 20];
    std::fs::write(&images, gzip_members(&[&idx_header(0x803, &[30, 28, 28]), &zeros])).unwrap();
    let out = Command::new("/usr/bin/env")
        .args([
            "prlimit",
            "--as=300000000",
            "--",
            env!("CARGO_BIN_EXE_gpu-cnn"),
            "show",
            "--dataset",
            "mnist",
            "--data-dir",
            data_dir,
            "--out",
            dir.join("g.png").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("train-images-idx3-ubyte.gz") && err.contains("padded"), "{err}");
}

/// The safetensors header of `path` as JSON, changed by `edit`, written back (tensor bytes kept).
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    edit(header.as_object_mut().unwrap());
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + len..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn damaged_checkpoints_are_refused_naming_the_damage() {
    let dir = temp_dir("hostile-damage");
    let img = image(&dir);
    let arch = "conv2d 4 3 relu\nflatten\ndense 10 softmax\n";
    let fresh = |name: &str| {
        let ck = dir.join(format!("{name}.safetensors"));
        write_checkpoint(&ck, arch, (8, 8, 3), true);
        ck
    };
    let every_command = |ck: &Path, needles: &[&str]| {
        let ck = ck.to_str().unwrap();
        refused(&["predict", "--device", "cpu", "--checkpoint", ck, &img], needles);
        refused(&["export", "--checkpoint", ck, "--out", dir.join("x.onnx").to_str().unwrap()], needles);
        refused(&["evaluate", "--device", "cpu", "--checkpoint", ck, "--dataset", "synthetic", "--limit-test", "10"], needles);
    };
    // A NaN weight: training never saves one, so it is damage, not a model.
    let nan = fresh("nan");
    let mut bytes = std::fs::read(&nan).unwrap();
    let end = bytes.len();
    bytes[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&nan, bytes).unwrap();
    every_command(&nan, &["nan.safetensors", "holds NaN", "damaged"]);
    // Three class names for a model with ten outputs.
    let names = fresh("names");
    edit_header(&names, |h| h["__metadata__"]["class_names"] = serde_json::json!("[\"a\",\"b\",\"c\"]"));
    every_command(&names, &["names.safetensors", "class_names has 3 names but the model outputs 10 classes"]);
    // Many empty tensors: refused from a count, before the safetensors crate indexes them
    // (about 1 KB each); a million of them took 1.5 GB before.
    let many = fresh("many");
    edit_header(&many, |h| {
        for i in 0..100_000 {
            h.insert(format!("x{i}"), serde_json::json!({"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}));
        }
    });
    every_command(&many, &["many.safetensors", "lists 100004 tensors", "4 weights can have (16)"]);
    // So with metadata: only the keys gpu-cnn writes are kept, and no more entries than a few
    // times their number are read.
    let meta = fresh("meta");
    edit_header(&meta, |h| {
        for i in 0..1000 {
            h["__metadata__"][format!("k{i}")] = serde_json::json!("v");
        }
    });
    every_command(&meta, &["meta.safetensors", "more than 80 metadata entries"]);
    // Unknown metadata keys within that are ignored (a later version may add some).
    let extra = fresh("extra");
    edit_header(&extra, |h| h["__metadata__"]["written_by"] = serde_json::json!("a later gpu-cnn"));
    let (code, err) = run_limited(&["predict", "--device", "cpu", "--checkpoint", extra.to_str().unwrap(), &img]);
    assert_eq!(code, 0, "{err}");
}

/// Runs the binary, killing it after `seconds`; (exit code, stderr); -1 when it had to be killed.
fn run_with_deadline(args: &[&str], seconds: u64) -> (i32, String) {
    let out = Command::new("timeout").arg(seconds.to_string()).arg(env!("CARGO_BIN_EXE_gpu-cnn")).args(args).output().expect("timeout (coreutils) runs");
    let code = out.status.code().map_or(-1, |c| if c == 124 { -1 } else { c });
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn fifos_given_as_input_files_are_refused_instead_of_blocking() {
    let dir = temp_dir("hostile-fifo");
    let fifo = |name: &str| {
        let path = dir.join(name);
        let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo (coreutils) runs");
        assert!(made.success());
        path.to_str().unwrap().to_string()
    };
    let img = image(&dir);
    // Opening a FIFO with no writer blocks for ever: each of these hung before.
    let ck = fifo("ck.safetensors");
    let arch = fifo("arch.txt");
    let fm = dir.join("fm");
    std::fs::create_dir(&fm).unwrap();
    write_mnist_split(&fm, "train", 10);
    write_mnist_split(&fm, "t10k", 10);
    std::fs::remove_file(fm.join("train-images-idx3-ubyte.gz")).unwrap();
    let idx = fifo("fm/train-images-idx3-ubyte.gz");
    let cifar = dir.join("cifar/cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).unwrap();
    std::fs::write(cifar.join("batches.meta.txt"), "cat\ndog\n").unwrap();
    let batch = fifo("cifar/cifar-10-batches-bin/data_batch_1.bin");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (onnx, run, grid, fm, cifar) = (path("x.onnx"), path("r"), path("g.png"), path("fm"), path("cifar"));
    let cases: [(&[&str], &str); 6] = [
        (&["predict", "--device", "cpu", "--checkpoint", &ck, &img], &ck),
        (&["export", "--checkpoint", &ck, "--out", &onnx], &ck),
        (&["train", "--device", "cpu", "--dataset", "synthetic", "--resume", &ck, "--out", &run], &ck),
        (&["summary", "--arch", &arch], &arch),
        (&["show", "--dataset", "mnist", "--data-dir", &fm, "--out", &grid], &idx),
        (&["show", "--dataset", "cifar10", "--offline", "--data-dir", &cifar, "--out", &grid], &batch),
    ];
    for (args, file) in cases {
        let (code, err) = run_with_deadline(args, 30);
        assert_eq!(code, 1, "{args:?} (-1: still running after 30 s): {err}");
        assert!(err.contains(file) && err.contains("not a regular file"), "{args:?}: {err}");
    }
    // Outputs: a FIFO (or a device) at --out is refused, not replaced by a regular file.
    use std::os::unix::fs::FileTypeExt;
    let out = fifo("out.onnx");
    write_checkpoint(&dir.join("ok.safetensors"), "conv2d 4 3 relu\nflatten\ndense 10 softmax\n", (8, 8, 3), true);
    let (code, err) = run_with_deadline(&["export", "--checkpoint", dir.join("ok.safetensors").to_str().unwrap(), "--out", &out], 30);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file; refusing to replace it"), "{err}");
    assert!(std::fs::metadata(&out).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");
    let grid = fifo("grid.png");
    let (code, err) = run_with_deadline(&["show", "--dataset", "synthetic", "--out", &grid], 30);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file; refusing to replace it"), "{err}");
    // A symlink is written through, as open(path, "w") would: the link stays, its target changes.
    let target = dir.join("target.onnx");
    std::fs::write(&target, "old").unwrap();
    let link = dir.join("link.onnx");
    std::os::unix::fs::symlink("target.onnx", &link).unwrap();
    let (code, err) = run_with_deadline(&["export", "--checkpoint", dir.join("ok.safetensors").to_str().unwrap(), "--out", link.to_str().unwrap()], 60);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is still a link");
    assert!(std::fs::metadata(&target).unwrap().len() > 100, "the export went into the link's target");
}

#[test]
fn a_bad_flag_exits_with_code_1_like_any_bad_input() {
    let dir = temp_dir("hostile-clap");
    for args in [
        &["train", "--device", "nonsense"][..],
        &["train", "--batch-size", "-1"],
        &["train", "--learning-rate", "abc"],
        &["predict", "--no-such-flag"],
        // A folder-only flag without --data (it was accepted and ignored before).
        &["train", "--dataset", "synthetic", "--image-size", "64", "--out", dir.join("a").to_str().unwrap()],
        &["train", "--dataset", "synthetic", "--skip-bad", "--out", dir.join("b").to_str().unwrap()],
    ] {
        let (code, err) = run_limited(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
    }
    for args in [&["--help"][..], &["train", "--help"], &["--version"]] {
        assert_eq!(run_limited(args).0, 0, "{args:?}");
    }
}

#[test]
fn errors_never_print_escape_sequences_or_a_hostile_line_whole() {
    let dir = temp_dir("hostile-escape");
    let img = image(&dir);
    // A file name with a screen-clearing escape and a right-to-left override.
    let name = dir.join("\u{1b}[2Jck\u{202e}gnp.safetensors");
    let (code, err) = run_limited(&["predict", "--device", "cpu", "--checkpoint", name.to_str().unwrap(), &img]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{202e}'), "{err:?}");
    assert!(err.contains("?[2Jck?gnp.safetensors"), "{err:?}");
    // An architecture line of 200,000 characters is quoted, but not whole.
    let arch = dir.join("long.txt");
    std::fs::write(&arch, format!("Conv2D{}{}\nFlatten Dense(10)\n", "(".repeat(100_000), ")".repeat(100_000))).unwrap();
    let (code, err) = run_limited(&["summary", "--arch", arch.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.len() < 5_000 && err.contains("more characters)"), "{} bytes: {}", err.len(), &err[..err.len().min(300)]);
}

/// A PNG of a few MB may declare 8000x8000 16-bit RGBA pixels (64 megapixels, within the default
/// limit): ~950 MB to decode and convert. A folder of four, loaded on four threads, used to
/// decode all four at once; now full-size decodes share a budget of a quarter of the memory
/// the process may use, so under a 3 GB address-space limit they decode one after another
/// instead of failing to allocate (or, without the limit, taking 4 GB).
#[test]
fn large_decodes_in_a_folder_share_one_memory_budget() {
    let dir = temp_dir("hostile-decode-budget");
    let photos = dir.join("photos");
    let bomb = {
        let img = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::new(8000, 8000);
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgba16(img).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    };
    assert!(bomb.len() < 5_000_000, "{} bytes", bomb.len());
    for class in ["a", "b"] {
        std::fs::create_dir_all(photos.join(class)).unwrap();
        for i in 0..2 {
            std::fs::write(photos.join(class).join(format!("{i}.png")), &bomb).unwrap();
        }
    }
    let out = Command::new("prlimit")
        .args(["--as=3000000000", "--"])
        .arg(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["train", "--device", "cpu", "--data", photos.to_str().unwrap(), "--image-size", "32", "--epochs", "1", "--val-split", "0.5"])
        .args(["--out", dir.join("run").to_str().unwrap()])
        .env("RAYON_NUM_THREADS", "4")
        .env("GPU_CNN_DATA", dir.join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("memory allocation of") && !err.contains("out of memory"), "{err}");
    assert!(err.contains("Decoded 4 images"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
