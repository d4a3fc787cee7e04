//! The gpu-cnn binary end to end: summary, train, evaluate, resume, and clear errors on bad input.

mod common;
use common::{run_cli, temp_dir};

#[test]
fn help_explains_every_subcommand() {
    let (ok, out, _) = run_cli(&["--help"]);
    assert!(ok && out.contains("train") && out.contains("evaluate") && out.contains("summary"), "{out}");
    let (ok, out, _) = run_cli(&["train", "--help"]);
    for flag in ["--dataset", "--data-dir", "--arch", "--epochs", "--batch-size", "--learning-rate", "--seed", "--device", "--out", "--resume", "--augment"] {
        assert!(ok && out.contains(flag), "train --help lacks {flag}: {out}");
    }
}

#[test]
fn summary_prints_keras_totals() {
    let (ok, out, err) = run_cli(&["summary"]);
    assert!(ok, "{err}");
    assert!(out.contains("Total params: 122,570"), "{out}");
    let (ok, out, _) = run_cli(&["summary", "--input", "28x28x1"]);
    assert!(ok && out.contains("Total params: 93,322"), "{out}");
    let dir = temp_dir("cli-arch");
    let arch = dir.join("small.arch");
    std::fs::write(&arch, "conv2d 8 3 relu padding=same\nmaxpool 2\nflatten\ndense 5 softmax\n").unwrap();
    let (ok, out, _) = run_cli(&["summary", "--arch", arch.to_str().unwrap(), "--input", "10x10x1"]);
    // conv 3*3*1*8+8 = 80; dense 5*5*8*5+5 = 1005
    assert!(ok && out.contains("Total params: 1,085"), "{out}");
}

#[test]
fn train_evaluate_and_resume_on_synthetic_data() {
    let dir = temp_dir("cli-train");
    let run = dir.join("run");
    let common = ["--dataset", "synthetic", "--limit-train", "400", "--limit-test", "200", "--device", "cpu", "--out", run.to_str().unwrap()];
    let (ok, _, err) = run_cli(&[&["train", "--epochs", "1"], &common[..]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("Epoch 1/1") && err.contains("val_accuracy") && err.contains("ms/step"), "{err}");
    for f in ["history.json", "last.safetensors", "best.safetensors"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let last = run.join("last.safetensors");
    let (ok, _, err) = run_cli(&[&["train", "--epochs", "2", "--resume", last.to_str().unwrap()], &common[..]].concat());
    assert!(ok && err.contains("Resuming") && err.contains("Epoch 2/2") && !err.contains("Epoch 1/2"), "{err}");
    // Without --dataset a resume takes the checkpoint's data set (it tried to download
    // CIFAR-10 before), as evaluate does.
    let limits = ["--limit-train", "400", "--limit-test", "200", "--device", "cpu"];
    let (ok, _, err) = run_cli(&[&["train", "--epochs", "3", "--resume", last.to_str().unwrap()], &limits[..]].concat());
    assert!(ok && err.contains("Data: synthetic") && err.contains("Epoch 3/3"), "{err}");
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("history.json")).unwrap()).unwrap();
    assert_eq!(history["loss"].as_array().unwrap().len(), 3);
    let (ok, out, err) = run_cli(&["evaluate", "--checkpoint", last.to_str().unwrap(), "--limit-test", "200", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"], 200);
    // The evaluation of the same weights on the same 200 images equals the run's last val_accuracy.
    assert_eq!(v["accuracy"].as_f64(), history["val_accuracy"][2].as_f64());
}

fn expect_failure(args: &[&str], needles: &[&str]) {
    let (ok, _, err) = run_cli(args);
    assert!(!ok, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: error should mention '{n}': {err}");
    }
}

#[test]
fn bad_input_gets_clear_errors_not_panics() {
    let dir = temp_dir("cli-bad");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    expect_failure(&["train", "--data-dir", empty.to_str().unwrap()], &["CIFAR-10 not found", "cifar-10-batches-bin"]);
    expect_failure(&["train", "--dataset", "mnist", "--data-dir", empty.to_str().unwrap()], &["train-images-idx3-ubyte", "missing"]);
    let arch = dir.join("bad.arch");
    std::fs::write(&arch, "conv2d 32 3 relu\nconv2d sixty-four 3\n").unwrap();
    expect_failure(&["summary", "--arch", arch.to_str().unwrap()], &["bad.arch", "line 2"]);
    std::fs::write(&arch, "maxpool 2\nmaxpool 2\nmaxpool 2\nmaxpool 2\nmaxpool 2\nmaxpool 2\nflatten\ndense 10 softmax\n").unwrap();
    expect_failure(
        &["train", "--dataset", "synthetic", "--arch", arch.to_str().unwrap(), "--out", dir.join("r").to_str().unwrap()],
        &["max_pooling2d_5", "dimension of 0"],
    );
    std::fs::write(&arch, "flatten\ndense 3 softmax\n").unwrap();
    expect_failure(
        &["train", "--dataset", "synthetic", "--arch", arch.to_str().unwrap(), "--out", dir.join("r").to_str().unwrap()],
        &["3 class scores", "10 classes"],
    );
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"this is not a checkpoint").unwrap();
    expect_failure(&["evaluate", "--checkpoint", junk.to_str().unwrap()], &["junk.safetensors", "not a valid safetensors"]);
    expect_failure(&["evaluate", "--checkpoint", dir.join("nope.safetensors").to_str().unwrap()], &["nope.safetensors", "cannot read"]);
    expect_failure(&["train", "--dataset", "synthetic", "--batch-size", "0"], &["batch-size"]);
    expect_failure(&["summary", "--input", "32x32"], &["HxWxC"]);
    // Negative numbers reach the range checks (they were taken for unknown flags: "unexpected
    // argument '-1'").
    let out = dir.join("neg");
    let out = out.to_str().unwrap();
    for (flag, value, needle) in [
        ("--learning-rate", "-1", "--learning-rate must be a positive number"),
        ("--label-smoothing", "-0.1", "between 0 and 1"),
        ("--epsilon", "-1", "--epsilon must be"),
    ] {
        expect_failure(&["train", "--dataset", "synthetic", flag, value, "--out", out], &[needle]);
    }
    expect_failure(&["train", "--dataset", "synthetic", "--optimizer", "sgd", "--momentum", "-0.1", "--out", out], &["--momentum must be between 0 and 1"]);
    expect_failure(&["train", "--dataset", "synthetic", "--epochs", "-1", "--out", out], &["invalid value '-1' for '--epochs"]);
    // --val-split splits a --data folder; without one it was ignored.
    expect_failure(&["train", "--dataset", "synthetic", "--val-split", "0.5", "--out", out], &["--data"]);
    expect_failure(&["train", "--data", dir.to_str().unwrap(), "--val-split", "-0.5", "--out", out], &["--val-split must be between 0 and 1"]);
}

#[test]
fn resuming_with_another_architecture_is_refused() {
    let dir = temp_dir("cli-arch-mismatch");
    let run = dir.join("run");
    let (ok, _, err) =
        run_cli(&["train", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32", "--epochs", "1", "--out", run.to_str().unwrap()]);
    assert!(ok, "{err}");
    let arch = dir.join("other.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nflatten\ndense 10 softmax\n").unwrap();
    let last = run.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();
    expect_failure(
        &["train", "--dataset", "synthetic", "--epochs", "2", "--resume", last.to_str().unwrap(), "--arch", arch.to_str().unwrap()],
        &["different architecture"],
    );
    assert_eq!(std::fs::read(&last).unwrap(), before, "the saved checkpoint must be untouched");
}

#[test]
fn output_that_cannot_be_written_is_an_error_or_a_quiet_end_never_a_panic() {
    use std::process::{Command, Stdio};
    // A full disk: exit 1 with the reason.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-cnn")).arg("summary").stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the output") && !err.contains("panicked"), "{err}");
    // A reader that went away (`gpu-cnn summary | head -0`): the end, quietly, as for any Unix tool.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpu-cnn")).arg("summary").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && out.status.code() != Some(101), "{err}");
}

#[test]
fn evaluate_never_writes_into_a_training_run_folder() {
    let dir = common::temp_dir("cli-eval-out");
    let run = dir.join("run");
    let (ok, _, err) = common::run_cli(&[
        "train",
        "--dataset",
        "synthetic",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let report = std::fs::read(run.join("report.html")).unwrap();
    let (ok, _, err) =
        common::run_cli(&["evaluate", "--checkpoint", run.join("best.safetensors").to_str().unwrap(), "--device", "cpu", "--out", run.to_str().unwrap()]);
    assert!(!ok && err.contains("is a training run's folder"), "{err}");
    assert_eq!(std::fs::read(run.join("report.html")).unwrap(), report);
    // Its headline to a full disk: exit 1 with the reason (it panicked).
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["evaluate", "--checkpoint", run.join("best.safetensors").to_str().unwrap(), "--device", "cpu", "--out", dir.join("eval").to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the output") && !err.contains("panicked"), "{err}");
}

#[test]
fn progress_that_cannot_be_written_never_stops_a_command() {
    // `train ... 2>/dev/full` panicked on its first progress line; the run's results are its
    // files, so a lost progress line must not cost them.
    let dir = common::temp_dir("cli-stderr-full");
    let run = dir.join("run");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let args = ["train", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32", "--epochs", "1", "--device", "cpu", "--out"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn")).args(args).arg(&run).stderr(full()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(run.join("best.safetensors").exists() && run.join("history.json").exists());
    // predict: a bad file's message is lost, the good file's prediction still prints, and the
    // exit code still says one failed.
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let good = dir.join("good.png");
    gpu_cnn::image::RgbImage::new(32, 32).save(&good).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["predict", "--device", "cpu", "--checkpoint"])
        .arg(run.join("best.safetensors"))
        .args([&bad, &good])
        .stderr(full())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("good.png") && !stdout.contains("bad.png"), "{stdout}");
    // Its results to a full disk: exit 1 with the reason, as the other commands say it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["predict", "--device", "cpu", "--checkpoint"])
        .arg(run.join("best.safetensors"))
        .arg(&good)
        .stdout(full())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("cannot write the output"), "{err}");
}

#[test]
fn a_failed_run_without_out_leaves_no_empty_run_folder() {
    // Each failed attempt used to leave an empty runs/<dataset>-N behind.
    let dir = common::temp_dir("cli-failed-fresh");
    let arch = dir.join("huge.arch");
    std::fs::write(&arch, "conv2d 2000000 3 relu\nflatten\ndense 10 softmax\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["train", "--dataset", "synthetic", "--limit-train", "64", "--epochs", "1", "--device", "cpu", "--arch"])
        .arg(&arch)
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not fit"), "{err}");
    // runs/ goes too when it is left empty (inside a photo folder it would read as a class).
    assert!(!dir.join("runs").exists());
}
