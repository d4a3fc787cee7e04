//! Nothing saved is ever lost: a diverging run stops before saving, two runs never share a
//! folder, a fresh run never replaces another run's files unless asked, a resume never
//! replaces a better best, and evaluate writes its own folder, metrics first, whole files only.

mod common;
use common::{run_cli, temp_dir};
use gpu_cnn::checkpoint;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const DATA: [&str; 8] = ["--dataset", "synthetic", "--limit-train", "200", "--limit-test", "100", "--device", "cpu"];

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-cnn")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A finished one-epoch run in `dir/run`.
fn trained_run(dir: &Path) -> PathBuf {
    let run_dir = dir.join("run");
    let (ok, _, err) = run_cli(&[&["train", "--epochs", "1", "--out", run_dir.to_str().unwrap()], &DATA[..]].concat());
    assert!(ok, "{err}");
    run_dir
}

/// Copies a checkpoint with its metadata changed by `edit`.
fn with_metadata(from: &Path, to: &Path, edit: impl FnOnce(&mut HashMap<String, String>)) {
    let bytes = std::fs::read(from).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    edit(&mut meta);
    let tensors: Vec<_> = st.tensors();
    std::fs::write(to, safetensors::serialize(tensors, &Some(meta)).unwrap()).unwrap();
}

#[test]
fn a_diverging_run_stops_with_an_error_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("safety-nan");
    let run_dir = trained_run(&dir);
    let last = run_dir.join("last.safetensors");
    let (before_last, before_best) = (std::fs::read(&last).unwrap(), std::fs::read(run_dir.join("best.safetensors")).unwrap());
    let (code, _, err) = run(&[&["train", "--epochs", "3", "--resume", last.to_str().unwrap(), "--learning-rate", "1e30"], &DATA[..]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("epoch 2") && err.contains("NaN") && err.contains("diverged") && err.contains("still holds epoch 1"), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before_last, "last.safetensors must stay the good epoch 1");
    assert_eq!(std::fs::read(run_dir.join("best.safetensors")).unwrap(), before_best);
    assert!(checkpoint::load(&last).is_ok());
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn checkpoints_with_null_or_nan_history_still_load_and_absurd_steps_are_refused() {
    let dir = temp_dir("safety-null");
    let run_dir = trained_run(&dir);
    let last = run_dir.join("last.safetensors");
    // What older versions wrote after a NaN loss: "loss": null.
    let nulled = dir.join("null.safetensors");
    with_metadata(&last, &nulled, |m| {
        let h = m["history"].replace(r#""loss":"#, r#""loss":null,"was":"#);
        m.insert("history".into(), h);
    });
    let ck = checkpoint::load(&nulled).unwrap();
    assert!(ck.meta.history[0].loss.is_nan());
    let (code, out, err) =
        run(&["evaluate", "--checkpoint", nulled.to_str().unwrap(), "--limit-test", "50", "--device", "cpu", "--out", dir.join("ev").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    // A NaN written as the string "NaN" round-trips through save and load.
    let mut meta = ck.meta.clone();
    meta.history[0].val_loss = f64::INFINITY;
    checkpoint::save(&dir.join("nan.safetensors"), &meta, &ck.tensors).unwrap();
    let again = checkpoint::load(&dir.join("nan.safetensors")).unwrap();
    assert!(again.meta.history[0].loss.is_nan() && again.meta.history[0].val_loss == f64::INFINITY);
    // A history out of order, or an accuracy that is no fraction: damage, named.
    for (edit, needle) in [
        (r#""epoch":1"#, r#""epoch":2"#),
        (r#""val_accuracy":"#, r#""val_accuracy":7,"was":"#),
        (r#"[{"#, r#"[{"epoch":1,"loss":1,"accuracy":0.5,"val_loss":1,"val_accuracy":0.5,"seconds":1},{"#),
    ] {
        let damaged = dir.join("history.safetensors");
        with_metadata(&last, &damaged, |m| {
            let h = m["history"].replacen(edit, needle, 1);
            m.insert("history".into(), h);
        });
        let Err(e) = checkpoint::load(&damaged) else { panic!("{needle}: accepted") };
        let err = format!("{e:#}");
        assert!((err.contains("metadata history") || err.contains("history holds 2 epochs")) && err.contains("damaged"), "{needle}: {err}");
    }

    let wrapped = dir.join("step.safetensors");
    with_metadata(&last, &wrapped, |m| {
        m.insert("step".into(), u64::MAX.to_string());
    });
    let (code, _, err) = run(&[
        "train",
        "--epochs",
        "3",
        "--resume",
        wrapped.to_str().unwrap(),
        "--out",
        dir.join("r2").to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("step.safetensors") && err.contains("not a plausible Adam step count"), "{err}");

    // A damaged learning rate names the checkpoint, not a --learning-rate that was never given.
    let bad_lr = dir.join("lr.safetensors");
    with_metadata(&last, &bad_lr, |m| {
        m.insert("learning_rate".into(), "NaN".into());
    });
    let (code, _, err) = run(&[
        "train",
        "--epochs",
        "3",
        "--resume",
        bad_lr.to_str().unwrap(),
        "--out",
        dir.join("r3").to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("lr.safetensors: its learning rate NaN is not a positive number") && err.contains("give --learning-rate"), "{err}");
    let (code, _, err) = run(&[
        "train",
        "--epochs",
        "2",
        "--resume",
        bad_lr.to_str().unwrap(),
        "--learning-rate",
        "0.001",
        "--out",
        dir.join("r4").to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--limit-train",
        "200",
        "--limit-test",
        "100",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "a given --learning-rate replaces the damaged one: {err}");
}

#[test]
fn a_run_directory_holds_one_run_at_a_time() {
    let dir = temp_dir("safety-lock");
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    // A live process holds the lock: this test's own.
    let lock = run_dir.join(gpu_cnn::run_dir::LOCK_FILE);
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    let (code, _, err) = run(&[&["train", "--epochs", "1", "--out", run_dir.to_str().unwrap()], &DATA[..]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(run_dir.to_str().unwrap()) && err.contains(&format!("process {}", std::process::id())), "{err}");
    assert!(!err.contains("Epoch 1/1"), "refused before training: {err}");
    // A lock whose process is gone (killed) is taken over, and released at the end.
    std::fs::write(&lock, "4000000000").unwrap();
    let (code, _, err) = run(&[&["train", "--epochs", "1", "--out", run_dir.to_str().unwrap()], &DATA[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(!lock.exists(), "the lock is released");
}

#[test]
fn concurrent_atomic_writes_of_one_file_never_mix() {
    let dir = temp_dir("safety-atomic");
    let path = dir.join("last.safetensors");
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    gpu_cnn::atomic_file::write_atomically(&path, &vec![w; 100_000]).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() == 100_000 && bytes.iter().all(|&b| b == bytes[0]), "one writer's whole file");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary files left");
}

#[test]
fn a_fresh_run_refuses_a_used_folder_unless_overwrite() {
    let dir = temp_dir("safety-overwrite");
    let run_dir = trained_run(&dir);
    let best = std::fs::read(run_dir.join("best.safetensors")).unwrap();
    let args = [&["train", "--epochs", "1", "--seed", "7", "--out", run_dir.to_str().unwrap()], &DATA[..]].concat();
    let (code, _, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not empty") && err.contains("best.safetensors") && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(run_dir.join("best.safetensors")).unwrap(), best);
    // An overwriting run that fails before it saves an epoch puts the old run's files back.
    let files = ["last.safetensors", "best.safetensors", "history.json", "report.html", "curves.png"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(run_dir.join(f)).unwrap()).collect();
    let (code, _, err) = run(&[&args[..], &["--overwrite", "--learning-rate", "1e30"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("diverged") && !err.contains("still holds"), "no file of this run holds an epoch: {err}");
    for (f, bytes) in files.iter().zip(&before) {
        assert_eq!(&std::fs::read(run_dir.join(f)).unwrap(), bytes, "{f} is the old run's again");
    }
    let (code, _, err) = run(&[&args[..], &["--overwrite"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(checkpoint::load(&run_dir.join("best.safetensors")).unwrap().meta.seed, 7, "the new run's best");
    assert!(!run_dir.join(gpu_cnn::run_dir::REPLACED_FOLDER).exists(), "the old run's files are gone once the new one saved");
}

#[test]
fn a_file_size_limit_fails_the_write_cleanly_and_keeps_the_saved_run() {
    let dir = temp_dir("safety-fsize");
    let run_dir = trained_run(&dir);
    let last = run_dir.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();
    // ulimit -f in 512-byte blocks: under a checkpoint's size. SIGXFSZ used to kill the
    // process mid-write with nothing printed and a temporary file left behind.
    let command = format!("ulimit -f {}; exec \"$0\" \"$@\"", before.len() / 1024);
    let out = Command::new("sh")
        .args(["-c", &command, env!("CARGO_BIN_EXE_gpu-cnn"), "train", "--epochs", "2", "--resume", last.to_str().unwrap()])
        .args(DATA)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("last.safetensors") && err.contains("cannot write"), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before, "epoch 1's checkpoint is intact");
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_resume_never_replaces_a_better_best_or_a_later_last() {
    let dir = temp_dir("safety-resume");
    let run_dir = trained_run(&dir);
    let (last, best) = (run_dir.join("last.safetensors"), run_dir.join("best.safetensors"));
    // The folder's best claims a perfect validation accuracy, which no epoch can beat.
    with_metadata(&best.clone(), &best, |m| {
        let h = m["history"].replace(r#""val_accuracy":"#, r#""val_accuracy":1,"was":"#);
        m.insert("history".into(), h);
    });
    let best_bytes = std::fs::read(&best).unwrap();
    let (code, _, err) = run(&[&["train", "--epochs", "2", "--resume", last.to_str().unwrap()], &DATA[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("Run directory: {}", run_dir.display())), "continues its own folder: {err}");
    assert_eq!(std::fs::read(&best).unwrap(), best_bytes, "the better best is kept");
    assert_eq!(checkpoint::load(&last).unwrap().meta.epoch, 2);

    // Resuming from best.safetensors (epoch 1) must not replace the folder's later last (epoch 2).
    let last_bytes = std::fs::read(&last).unwrap();
    let work = dir.join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .current_dir(&work)
        .args([&["train", "--epochs", "2", "--resume", best.to_str().unwrap()], &DATA[..]].concat())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), last_bytes, "the folder's last is untouched");
    assert!(work.join("runs/synthetic/last.safetensors").exists(), "a new run directory: {err}");
}

/// A tmpfs mounted at `dir` (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs", dir.to_str().unwrap()]).status().unwrap().success();
        assert!(ok, "mounting a tmpfs (the test runs as root, as CI does)");
        Tmpfs(dir.to_path_buf())
    }
    fn read_only(&self) {
        assert!(Command::new("mount").args(["-o", "remount,ro", self.0.to_str().unwrap()]).status().unwrap().success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A folder no write can go into: a read-only tmpfs as root, else a chmod 555 folder.
fn unwritable_dir(dir: &Path) -> Option<Tmpfs> {
    if is_root() {
        let fs = Tmpfs::mount(dir, "size=1m");
        std::fs::create_dir_all(dir.join("old")).unwrap();
        fs.read_only();
        Some(fs)
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir.join("old")).unwrap();
        std::fs::set_permissions(dir.join("old"), std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    }
}

#[test]
fn evaluate_writes_its_own_folder_and_prints_metrics_before_a_failed_write() {
    let dir = temp_dir("safety-evaluate");
    let run_dir = trained_run(&dir);
    let report = std::fs::read(run_dir.join("report.html")).unwrap();
    let last = run_dir.join("last.safetensors");
    let (code, out, err) = run(&["evaluate", "--checkpoint", last.to_str().unwrap(), "--limit-test", "50", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(run_dir.join("evaluate/report.html").exists() && run_dir.join("evaluate/confusion.png").exists(), "{out}");
    assert_eq!(std::fs::read(run_dir.join("report.html")).unwrap(), report, "the training run's report is untouched");

    // A full disk: the metrics are printed, the failed file is not left half-written.
    // (Not root: a folder without write permission instead.)
    let target = dir.join("full");
    let _fs = if is_root() {
        Some(Tmpfs::mount(&target, "size=64k"))
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    let (code, out, err) =
        run(&["evaluate", "--checkpoint", last.to_str().unwrap(), "--limit-test", "50", "--device", "cpu", "--out", target.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("50 test images of synthetic: loss:") && out.contains("accuracy"), "metrics first: {out}");
    assert!(err.contains(target.to_str().unwrap()), "{err}");
    for entry in std::fs::read_dir(&target).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file left: {name}");
        assert!(std::fs::metadata(entry.path()).unwrap().len() > 0, "empty file {name}");
    }
}

#[test]
fn a_read_only_out_folder_fails_before_training() {
    let dir = temp_dir("safety-readonly");
    let _fs = unwritable_dir(&dir.join("ro"));
    let out = dir.join("ro/old");
    let (code, _, err) = run(&[&["train", "--epochs", "1", "--out", out.to_str().unwrap()], &DATA[..]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(out.to_str().unwrap()) && !err.contains("Epoch 1/1"), "{err}");
}

#[test]
fn epochs_zero_and_mismatched_resumes_get_clear_messages() {
    let (code, _, err) = run(&[&["train", "--epochs", "0"], &DATA[..]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("--epochs 0"), "{err}");
    let dir = temp_dir("safety-mismatch");
    let run_dir = trained_run(&dir);
    // Same data set name, other input: the message says what differs.
    let other = dir.join("other.safetensors");
    with_metadata(&run_dir.join("last.safetensors"), &other, |m| {
        m.insert("class_names".into(), r#"["a","b","c"]"#.into());
    });
    let (code, _, err) = run(&[
        "train",
        "--epochs",
        "3",
        "--resume",
        other.to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--device",
        "cpu",
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    // Three names for ten class scores is caught when the checkpoint loads, before the data.
    assert!(err.contains("other.safetensors") && err.contains("class_names has 3 names but the model outputs 10 classes"), "{err}");
    // A sound checkpoint on other data: the message says what differs.
    let last = run_dir.join("last.safetensors");
    let args = ["train", "--epochs", "3", "--resume", last.to_str().unwrap(), "--dataset", "fashion-mnist", "--limit-train", "50", "--limit-test", "50"];
    let (code, _, err) = run(&[&args[..], &["--device", "cpu", "--out", dir.join("f").to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("trained on 32x32x3 images in 10 classes (synthetic), but the data here are 28x28x1"), "{err}");
}

/// Starts an `--overwrite` run into `run_dir` whose first epoch takes seconds (batches of one),
/// and returns it once that epoch has begun.
fn start_slow_overwrite(run_dir: &Path) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
        .args(["train", "--dataset", "synthetic", "--device", "cpu", "--batch-size", "1", "--epochs", "2", "--overwrite", "--out", run_dir.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the run started an epoch").unwrap();
        if line.starts_with("Epoch 1/") {
            break;
        }
    }
    // Keep reading (and discarding) so the run never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(std::time::Duration::from_millis(100));
    child
}

fn signal(child: &std::process::Child, name: &str) {
    assert!(Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success());
}

fn run_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap_or_default()))
        .collect();
    files.sort();
    files
}

#[test]
fn an_overwrite_run_stopped_by_a_signal_or_killed_gives_the_old_run_back() {
    let dir = temp_dir("safety-signal");
    let run_dir = trained_run(&dir);
    let before = run_files(&run_dir);
    assert!(before.iter().any(|(n, _)| n == "best.safetensors"), "{before:?}");

    // Ctrl-C in the first epoch: the run stops between steps, puts the old files back, unlocks.
    let child = start_slow_overwrite(&run_dir);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "exit code 128 + SIGINT");
    assert_eq!(run_files(&run_dir), before, "the old run's files, and nothing else (no lock, no folder aside)");
    // SIGTERM (docker stop) likewise.
    let child = start_slow_overwrite(&run_dir);
    signal(&child, "-TERM");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(143));
    assert_eq!(run_files(&run_dir), before);

    // Killed outright: the old files wait aside; reading the checkpoint says where.
    let mut child = start_slow_overwrite(&run_dir);
    signal(&child, "-KILL");
    child.wait().unwrap();
    assert!(run_dir.join(gpu_cnn::run_dir::REPLACED_FOLDER).join("best.safetensors").is_file());
    let (code, _, err) = run(&["evaluate", "--checkpoint", run_dir.join("best.safetensors").to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(".gpu-cnn.replaced/best.safetensors") && err.contains("puts it back"), "{err}");
    // The next run into the folder puts them back, then (no --overwrite) refuses the folder.
    let (code, _, err) = run(&[&["train", "--epochs", "1", "--out", run_dir.to_str().unwrap()], &DATA[..]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("put back the files of the run before") && err.contains("not empty"), "{err}");
    assert_eq!(run_files(&run_dir), before, "the old run whole again, the killed run's lock taken over and released");
}

#[test]
fn overwrite_settles_only_after_a_whole_epoch_is_saved() {
    use gpu_cnn::run_dir::{lock, prepare_fresh, REPLACED_FOLDER};
    let dir = temp_dir("safety-settle");
    for f in ["last.safetensors", "best.safetensors", "history.json"] {
        std::fs::write(dir.join(f), format!("old {f}")).unwrap();
    }
    // The new run saved last.safetensors, then failed (a full disk at best.safetensors): the old
    // run comes back whole, without the new run's half epoch beside it.
    let held = lock(&dir).unwrap();
    let replaced = prepare_fresh(&dir, true).unwrap().expect("files moved aside");
    std::fs::write(dir.join("last.safetensors"), "new last").unwrap();
    drop(replaced);
    assert_eq!(std::fs::read_to_string(dir.join("last.safetensors")).unwrap(), "old last.safetensors");
    assert_eq!(std::fs::read_to_string(dir.join("best.safetensors")).unwrap(), "old best.safetensors");
    assert!(!dir.join(REPLACED_FOLDER).exists());
    // Settled (an epoch saved whole): the old files are gone at once, not at the run's end.
    let mut replaced = prepare_fresh(&dir, true).unwrap().expect("files moved aside");
    std::fs::write(dir.join("last.safetensors"), "new last").unwrap();
    replaced.settle();
    assert!(!dir.join(REPLACED_FOLDER).exists() && !dir.join("best.safetensors").exists());
    drop(replaced);
    assert_eq!(std::fs::read_to_string(dir.join("last.safetensors")).unwrap(), "new last");
    drop(held);

    // A move aside that failed halfway (a file that cannot be moved): the files not yet moved
    // stay, the moved ones come back, nothing is deleted.
    let dir = temp_dir("safety-half-moved");
    for f in ["last.safetensors", "history.json", "report.html"] {
        std::fs::write(dir.join(f), format!("old {f}")).unwrap();
    }
    let held = lock(&dir).unwrap();
    let aside = dir.join(REPLACED_FOLDER);
    // As a kill after the first move leaves it: one file aside, the rest in place, no marker.
    std::fs::create_dir(&aside).unwrap();
    std::fs::rename(dir.join("last.safetensors"), aside.join("last.safetensors")).unwrap();
    drop(held);
    let held = lock(&dir).unwrap();
    for f in ["last.safetensors", "history.json", "report.html"] {
        assert_eq!(std::fs::read_to_string(dir.join(f)).unwrap(), format!("old {f}"), "{f}");
    }
    assert!(!aside.exists());
    drop(held);
}

#[test]
fn a_lock_settles_what_a_killed_run_left_and_refuses_what_it_cannot_read() {
    use gpu_cnn::run_dir::{lock, LOCK_FILE};
    let dir = temp_dir("safety-leftovers");
    // A lock naming this very process is stale (a container's PID 1 finds its last run's).
    std::fs::write(dir.join(LOCK_FILE), std::process::id().to_string()).unwrap();
    // Temporary files of a writer that is gone go; a live writer's stay.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = dir.join(format!(".best.safetensors.{}.3.tmp", gone.id()));
    let live = dir.join(format!(".last.safetensors.{}.0.tmp", std::process::id()));
    // Named like a temporary file, but not of a file a run writes: a user's, kept.
    let users = dir.join(format!(".notes.txt.{}.1.tmp", gone.id()));
    for f in [&dead, &live, &users] {
        std::fs::write(f, "bytes").unwrap();
    }
    let held = lock(&dir).unwrap();
    assert!(!dead.exists() && live.exists() && users.exists());
    drop(held);
    assert_eq!(gpu_cnn::atomic_file::temp_file_pid(".last.safetensors.123.4.tmp"), Some(123));
    assert_eq!(gpu_cnn::atomic_file::temp_file_pid(".last.safetensors.tmp"), None);
    // A FIFO where the lock goes: refused at once (reading it blocked for ever).
    let fifo_dir = temp_dir("safety-fifo-lock");
    assert!(Command::new("mkfifo").arg(fifo_dir.join(LOCK_FILE)).status().unwrap().success());
    let err = format!("{:#}", lock(&fifo_dir).expect_err("refused"));
    assert!(err.contains("is not a file"), "{err}");
}

#[test]
fn runs_started_together_without_out_take_their_own_folders() {
    let dir = temp_dir("safety-default-out");
    let children: Vec<_> = (0..3)
        .map(|seed| {
            Command::new(env!("CARGO_BIN_EXE_gpu-cnn"))
                .current_dir(&dir)
                .args(["train", "--epochs", "1", "--seed", &seed.to_string()])
                .args(DATA)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut runs: Vec<String> = std::fs::read_dir(dir.join("runs")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    runs.sort();
    assert_eq!(runs, ["synthetic", "synthetic-2", "synthetic-3"]);
    let seeds: std::collections::BTreeSet<u64> =
        runs.iter().map(|r| checkpoint::load(&dir.join("runs").join(r).join("last.safetensors")).unwrap().meta.seed).collect();
    assert_eq!(seeds.len(), 3, "each run in its own folder");
}
