//! Data readers: the real formats round trip, and every kind of bad file gets an error that
//! names the file and the problem.

mod common;
use gpu_cnn::data::{cifar, idx, load, DatasetKind};
use std::path::Path;

fn write_fake_idx(dir: &Path, prefix: &str, n: usize, gz: bool) {
    let images: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let (ip, lp) = (dir.join(format!("{prefix}-images-idx3-ubyte")), dir.join(format!("{prefix}-labels-idx1-ubyte")));
    idx::write_idx(&ip, &lp, 28, 28, &images, &labels).unwrap();
    if gz {
        for p in [ip, lp] {
            let raw = std::fs::read(&p).unwrap();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, &raw).unwrap();
            std::fs::write(format!("{}.gz", p.display()), enc.finish().unwrap()).unwrap();
            std::fs::remove_file(&p).unwrap();
        }
    }
}

fn load_mnist(dir: &Path) -> anyhow::Result<gpu_cnn::data::Dataset> {
    load(DatasetKind::Mnist, Some(dir), 0)
}

#[test]
fn idx_reads_raw_and_gzip() {
    for gz in [false, true] {
        let dir = common::temp_dir(&format!("idx-ok-{gz}"));
        write_fake_idx(&dir, "train", 20, gz);
        write_fake_idx(&dir, "t10k", 7, gz);
        let ds = load_mnist(&dir).unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (20, 7));
        assert_eq!(ds.input_shape(), (28, 28, 1));
        assert_eq!(ds.train.image(1)[0], (784 % 251) as u8);
        assert_eq!(ds.test.labels[3], 3);
        assert_eq!(ds.class_names[7], "7");
    }
}

fn expect_error(dir: &Path, needles: &[&str]) {
    let err = format!("{:#}", load_mnist(dir).unwrap_err());
    for n in needles {
        assert!(err.contains(n), "error '{err}' should mention '{n}'");
    }
}

#[test]
fn idx_errors_name_the_file_and_the_problem() {
    let dir = common::temp_dir("idx-bad");
    write_fake_idx(&dir, "train", 20, false);
    write_fake_idx(&dir, "t10k", 7, false);
    let images = dir.join("train-images-idx3-ubyte");
    let labels = dir.join("t10k-labels-idx1-ubyte");
    let good_images = std::fs::read(&images).unwrap();
    let good_labels = std::fs::read(&labels).unwrap();

    std::fs::write(&images, &good_images[..good_images.len() - 100]).unwrap();
    expect_error(&dir, &["train-images-idx3-ubyte", "truncated"]);

    let mut wrong_magic = good_images.clone();
    wrong_magic[3] = 0x01;
    std::fs::write(&images, &wrong_magic).unwrap();
    expect_error(&dir, &["train-images-idx3-ubyte", "magic"]);
    std::fs::write(&images, &good_images).unwrap();

    let mut bad_label = good_labels.clone();
    bad_label[8 + 2] = 12;
    std::fs::write(&labels, &bad_label).unwrap();
    expect_error(&dir, &["t10k-labels-idx1-ubyte", "label 12", "index 2"]);

    // 7 test images but 6 labels.
    let mut fewer = good_labels.clone();
    fewer[7] = 6;
    fewer.pop();
    std::fs::write(&labels, &fewer).unwrap();
    expect_error(&dir, &["t10k-images-idx3-ubyte", "7 images", "6 labels"]);

    std::fs::remove_file(&labels).unwrap();
    expect_error(&dir, &["t10k-labels-idx1-ubyte", "missing"]);

    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), b"not gzip at all").unwrap();
    expect_error(&dir, &["t10k-labels-idx1-ubyte.gz", "gzip"]);
}

fn write_fake_cifar(dir: &Path, per_batch: usize) -> (Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n").unwrap();
    let mut first = (Vec::new(), Vec::new());
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        let images: Vec<u8> = (0..per_batch * 3072).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..per_batch).map(|i| (i % 10) as u8).collect();
        cifar::write_batch(&dir.join(name), &images, &labels).unwrap();
        if first.0.is_empty() {
            first = (images, labels);
        }
    }
    first
}

#[test]
fn cifar_reads_the_real_binary_format() {
    let root = common::temp_dir("cifar-ok");
    let dir = root.join("cifar-10-batches-bin");
    let (images, labels) = write_fake_cifar(&dir, 4);
    // The planar record: the first red byte, then green, then blue of pixel 0.
    let raw = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    assert_eq!(raw.len(), 4 * 3073);
    assert_eq!((raw[0], raw[1], raw[1 + 1024], raw[1 + 2048]), (labels[0], images[0], images[1], images[2]));
    let ds = load(DatasetKind::Cifar10, Some(&root), 0).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (20, 4));
    assert_eq!(ds.input_shape(), (32, 32, 3));
    assert_eq!(ds.train.image(0), &images[..3072]);
    assert_eq!(ds.class_names[9], "truck");
}

#[test]
fn cifar_errors_name_the_file_and_the_problem() {
    let root = common::temp_dir("cifar-bad");
    let dir = root.join("cifar-10-batches-bin");
    write_fake_cifar(&dir, 3);
    let batch = dir.join("data_batch_3.bin");
    let good = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &good[..good.len() - 10]).unwrap();
    let err = format!("{:#}", load(DatasetKind::Cifar10, Some(&root), 0).unwrap_err());
    assert!(err.contains("data_batch_3.bin") && err.contains("truncated"), "{err}");
    let mut bad = good.clone();
    bad[3073] = 10;
    std::fs::write(&batch, &bad).unwrap();
    let err = format!("{:#}", load(DatasetKind::Cifar10, Some(&root), 0).unwrap_err());
    assert!(err.contains("data_batch_3.bin") && err.contains("record 1 has label 10"), "{err}");
    // A batch file over the cap (sparse: no disk used) is refused from its size, before any
    // memory is reserved for it.
    std::fs::File::create(&batch).unwrap().set_len(gpu_cnn::data::cifar::MAX_BATCH_BYTES + gpu_cnn::data::cifar::RECORD as u64).unwrap();
    let err = format!("{:#}", load(DatasetKind::Cifar10, Some(&root), 0).unwrap_err());
    assert!(err.contains("data_batch_3.bin") && err.contains("larger than the limit"), "{err}");
    let empty = common::temp_dir("cifar-missing");
    let err = format!("{:#}", load(DatasetKind::Cifar10, Some(&empty), 0).unwrap_err());
    assert!(err.contains("CIFAR-10 not found") && err.contains(empty.to_str().unwrap()) && err.contains("cifar-10-binary.tar.gz"), "{err}");
}

#[test]
fn synthetic_data_is_seeded() {
    let a = load(DatasetKind::Synthetic, None, 3).unwrap();
    let b = load(DatasetKind::Synthetic, None, 3).unwrap();
    let c = load(DatasetKind::Synthetic, None, 4).unwrap();
    assert_eq!(a.train.images, b.train.images);
    assert_ne!(a.train.images, c.train.images);
    assert!(a.train.labels.iter().all(|&l| l < 10));
}
