//! The training recipe: learning-rate schedules against hand-computed references (formulas
//! cited from Keras's and PyTorch's sources), warmup, EarlyStopping and ReduceLROnPlateau as
//! Keras runs them, their state in checkpoints, and a bit-exact resume on the CPU backend.

mod common;
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::callbacks::{EarlyStop, EarlyStopping, Recipe, ReduceLrOnPlateau};
use gpu_cnn::checkpoint;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::history::EpochRecord;
use gpu_cnn::model::{format_arch, parse_arch, Model};
use gpu_cnn::network::{HostTensor, Network};
use gpu_cnn::schedule::{default_step_epochs, LrSchedule, ScheduleKind};
use gpu_cnn::train::{run, run_epochs, TrainOptions};
use std::path::Path;

/// The schedules compute in f64 and these references are the same formulas evaluated by hand
/// (Python floats): they agree to the last few bits of an f64, so rtol 1e-12.
#[track_caller]
fn assert_rate(schedule: &LrSchedule, step: u64, steps_per_epoch: usize, expected: f64) {
    let got = schedule.rate(1e-3, step, steps_per_epoch);
    assert!((got - expected).abs() <= 1e-12 * expected.abs() + 1e-18, "{schedule:?} step {step}: {got} vs {expected}");
}

/// base 1e-3 as an f64 (the schedules start from the f32 rate).
const LR: f64 = 1e-3f32 as f64;

#[test]
fn constant_gives_the_base_rate_bit_for_bit() {
    let s = LrSchedule::new(ScheduleKind::Constant, 0, None, 10).unwrap();
    for step in [0, 1, 99, 1_000_000] {
        // The f32 rate comes back unchanged: runs without a schedule keep their bits.
        assert_eq!((s.rate(1e-3, step, 10) as f32).to_bits(), 1e-3f32.to_bits());
    }
    assert!(s.is_constant());
}

#[test]
fn cosine_matches_keras_cosine_decay() {
    // keras/src/optimizers/schedules/learning_rate_schedule.py, CosineDecay (alpha 0):
    // step = min(step, decay_steps); lr * 0.5 * (1 + cos(pi * step / decay_steps)).
    // 10 epochs of 10 steps: decay_steps 100.
    let s = LrSchedule::new(ScheduleKind::Cosine, 0, None, 10).unwrap();
    assert_rate(&s, 0, 10, LR);
    assert_rate(&s, 25, 10, LR * 0.8535533905932737); // 0.5 * (1 + cos(pi / 4))
    assert_rate(&s, 50, 10, LR * 0.5);
    assert_rate(&s, 100, 10, 0.0);
    assert_rate(&s, 150, 10, 0.0); // capped at decay_steps
}

#[test]
fn step_multiplies_by_a_tenth_every_step_epochs() {
    // PyTorch StepLR: lr * gamma ** (epoch // step_size), gamma 0.1; counted in steps here.
    assert_eq!(default_step_epochs(9), 3);
    assert_eq!(default_step_epochs(10), 4); // a third, rounded up: three levels in 10 epochs
    assert_eq!(default_step_epochs(1), 1);
    let s = LrSchedule::new(ScheduleKind::Step, 0, None, 9).unwrap();
    assert_eq!(s.step_epochs, 3);
    assert_rate(&s, 11, 4, LR); // epoch 3, last step
    assert_rate(&s, 12, 4, LR * 0.1); // epoch 4, first step
    assert_rate(&s, 24, 4, LR * 0.1 * 0.1);
    let two = LrSchedule::new(ScheduleKind::Step, 0, Some(2), 9).unwrap();
    assert_rate(&two, 8, 4, LR * 0.1);
    assert!(LrSchedule::new(ScheduleKind::Cosine, 0, Some(2), 9).is_err(), "--lr-step-epochs belongs to step");
    assert!(LrSchedule::new(ScheduleKind::Step, 0, Some(0), 9).is_err());
}

#[test]
fn onecycle_matches_pytorch_one_cycle_lr() {
    // torch/optim/lr_scheduler.py, OneCycleLR (anneal_strategy "cos", three_phase False):
    // initial_lr = max_lr / 25, min_lr = initial_lr / 1e4; phase 1 ends at 0.3 * total - 1
    // (initial_lr -> max_lr), phase 2 at total - 1 (max_lr -> min_lr), each
    // end + (start - end) / 2 * (cos(pi * pct) + 1). total_steps 100.
    let s = LrSchedule::new(ScheduleKind::Onecycle, 0, None, 10).unwrap();
    assert_rate(&s, 0, 10, LR / 25.0);
    assert_rate(&s, 10, 10, 2.9516394846410075e-4 * (LR / 1e-3)); // pct 10/29 of phase 1
    assert_rate(&s, 29, 10, LR);
    assert_rate(&s, 30, 10, 9.994965352845243e-4 * (LR / 1e-3)); // pct 1/70 of phase 2
    assert_rate(&s, 64, 10, 5.000019999999999e-4 * (LR / 1e-3)); // pct 0.5: (max + min) / 2
    assert_rate(&s, 99, 10, LR / 25.0 / 1e4);
}

#[test]
fn warmup_rises_linearly_from_zero_then_the_schedule_runs_over_the_rest() {
    // Keras CosineDecay's warmup from initial_learning_rate 0 to warmup_target:
    // warmup_target * step / warmup_steps, then the decay over step - warmup_steps.
    let constant = LrSchedule::new(ScheduleKind::Constant, 2, None, 5).unwrap();
    assert_rate(&constant, 0, 5, 0.0);
    assert_rate(&constant, 5, 5, LR * 0.5);
    assert_rate(&constant, 9, 5, LR * 0.9);
    assert_rate(&constant, 10, 5, LR);
    // Cosine over 4 epochs of 10 steps after 1 warmup epoch: decay_steps 30.
    let cosine = LrSchedule::new(ScheduleKind::Cosine, 1, None, 4).unwrap();
    assert_rate(&cosine, 3, 10, LR * 0.3);
    assert_rate(&cosine, 10, 10, LR);
    assert_rate(&cosine, 17, 10, LR * 0.8715724127386971); // 0.5 * (1 + cos(pi * 7 / 30))
    assert_rate(&cosine, 25, 10, LR * 0.5);
    assert_rate(&cosine, 40, 10, 0.0);
    assert!(LrSchedule::new(ScheduleKind::Cosine, 4, None, 4).is_err(), "warmup must leave epochs for the schedule");
}

#[test]
fn keras_early_stopping_rule() {
    // Keras: wait += 1; a new best (current < best) resets it; stop when wait >= patience
    // (never on the first epoch).
    let mut e = EarlyStopping::new(2);
    let decisions: Vec<EarlyStop> = [1.0, 0.8, 0.9, 0.8, 0.7].iter().enumerate().map(|(i, &v)| e.on_epoch_end(i + 1, v)).collect();
    assert_eq!(decisions, [EarlyStop::Improved, EarlyStop::Improved, EarlyStop::Continue, EarlyStop::Stop, EarlyStop::Improved]);
    // 0.8 again is no improvement with min_delta 0.
    assert_eq!((e.best_epoch, e.stopped_epoch), (5, 4));
    let mut zero = EarlyStopping::new(0);
    assert_eq!(zero.on_epoch_end(1, 1.0), EarlyStop::Improved);
    assert_eq!(zero.on_epoch_end(2, 1.5), EarlyStop::Stop);
}

#[test]
fn keras_reduce_lr_on_plateau_rule() {
    // Keras: an improvement is current < best - 1e-4; after `patience` epochs without one the
    // rate is multiplied by 0.1 and wait restarts.
    let mut r = ReduceLrOnPlateau::new(2);
    assert!(!r.on_epoch_end(1.0, 1e-3));
    assert!(!r.on_epoch_end(0.99995, 1e-3)); // within min_delta: wait 1
    assert!(r.on_epoch_end(0.99992, 1e-3)); // not below 1.0 - 1e-4 either: wait 2, reduce
    assert_eq!((r.reductions, r.wait), (1, 0));
    assert!((r.factor() - 0.1).abs() < 1e-17);
    assert!(!r.on_epoch_end(0.5, 1e-4)); // improvement
    assert!(!r.on_epoch_end(0.6, 1e-4));
    assert!(r.on_epoch_end(0.6, 1e-4));
    let recipe = Recipe { reduce_lr: Some(r), ..Recipe::default() };
    // Tolerance: 1e-3 * 0.01 computed in f64 and rounded once to f32, vs 1e-5 as an f32.
    assert!((recipe.rate(1e-3, 0, 10) - 1e-5).abs() <= 1e-5 * 1e-6);
}

const ARCH: &str = "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 16 relu\ndense 4 softmax\n";

/// Few training images and a high rate: val_loss soon stops improving (overfitting).
fn tiny_data() -> Dataset {
    generate(&SyntheticSpec { train: 40, test: 64, height: 8, width: 8, channels: 3, classes: 4 }, 3)
}

fn options(epochs: usize, out: Option<&Path>, learning_rate: f32, recipe: Recipe) -> TrainOptions {
    TrainOptions { out_dir: out.map(Path::to_path_buf), learning_rate, recipe, ..TrainOptions::new(&format_arch(&parse_arch(ARCH).unwrap()), epochs, 8, 2) }
}

fn new_net(ds: &Dataset, seed: u64) -> Network<CpuBackend> {
    let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
    Network::new(CpuBackend::new(), model, 8, seed).unwrap()
}

#[track_caller]
fn assert_same_tensors(what: &str, a: &[HostTensor], b: &[HostTensor]) {
    assert_eq!(a.len(), b.len(), "{what}: tensor counts");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.name, y.name, "{what}");
        common::assert_same_bits(&format!("{what}: {}", x.name), &x.data, &y.data);
    }
}

/// Where Keras's EarlyStopping(patience) stops on these val_losses (1-based; None: never) and
/// the epoch of the lowest val_loss up to then.
fn keras_stop(val_losses: &[f64], patience: usize) -> (Option<usize>, usize) {
    let (mut best, mut wait, mut best_epoch) = (f64::INFINITY, 0, 0);
    for (i, &v) in val_losses.iter().enumerate() {
        wait += 1;
        if v < best {
            (best, best_epoch, wait) = (v, i + 1, 0);
        } else if wait >= patience && i > 0 {
            return (Some(i + 1), best_epoch);
        }
    }
    (None, best_epoch)
}

#[test]
fn early_stopping_stops_where_keras_would_and_restores_the_best_weights() {
    let dir = common::temp_dir("schedules-early-stopping");
    let ds = tiny_data();
    let recipe = Recipe { early_stopping: Some(EarlyStopping::new(2)), ..Recipe::default() };
    let mut net = new_net(&ds, 2);
    let fitted = run(&mut net, &ds, &options(30, Some(&dir), 2e-2, recipe), Vec::new()).unwrap();
    let losses: Vec<f64> = fitted.history.iter().map(|r| r.val_loss).collect();
    let (stop, best_epoch) = keras_stop(&losses, 2);
    assert_eq!(stop, Some(fitted.history.len()), "val_loss {losses:?}: the run must stop, and where Keras would");
    assert!(best_epoch < fitted.history.len());
    let state = fitted.recipe.early_stopping.as_ref().unwrap();
    assert_eq!((state.best_epoch, state.stopped_epoch), (best_epoch, fitted.history.len()));
    // The weights after fit are those at the end of the best epoch: an uninterrupted run of
    // that many epochs ends with the same bits.
    let mut reference = new_net(&ds, 2);
    run(&mut reference, &ds, &options(best_epoch, None, 2e-2, Recipe::default()), Vec::new()).unwrap();
    let best = reference.weights().unwrap();
    assert_same_tensors("restored weights", &net.weights().unwrap(), &best);
    // last.safetensors holds them too, and records the stop.
    let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    // (The file's tensors come back in name order; compared by name.)
    let mut saved: Vec<HostTensor> = ck.tensors.iter().filter(|t| !t.name.contains(".adam_") && !t.name.ends_with(".best_weights")).cloned().collect();
    let mut best = best;
    saved.sort_by(|a, b| a.name.cmp(&b.name));
    best.sort_by(|a, b| a.name.cmp(&b.name));
    assert_same_tensors("last.safetensors", &saved, &best);
    let saved_state = ck.meta.recipe.early_stopping.as_ref().unwrap();
    assert_eq!((saved_state.best_epoch, saved_state.stopped_epoch), (best_epoch, fitted.history.len()));
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("history.json")).unwrap()).unwrap();
    assert_eq!(history["early_stopping"]["stopped_epoch"], fitted.history.len());
    assert_eq!(history["early_stopping"]["restored_epoch"], best_epoch);
}

#[test]
fn reduce_lr_on_plateau_lowers_the_rate_after_patience_bad_epochs() {
    let ds = tiny_data();
    let recipe = Recipe { reduce_lr: Some(ReduceLrOnPlateau::new(1)), ..Recipe::default() };
    let mut net = new_net(&ds, 2);
    let fitted = run(&mut net, &ds, &options(8, None, 2e-2, recipe), Vec::new()).unwrap();
    // Replay Keras's rule on the recorded val_losses: the rate of each epoch.
    let (mut best, mut rate, mut expected) = (f64::INFINITY, 2e-2f32 as f64, Vec::new());
    for r in &fitted.history {
        expected.push(rate as f32);
        if r.val_loss < best - 1e-4 {
            best = r.val_loss;
        } else {
            rate *= 0.1; // patience 1: every epoch without improvement
        }
    }
    let rates: Vec<f32> = fitted.history.iter().map(|r| r.learning_rate.unwrap() as f32).collect();
    // Tolerance: 0.1^k is computed as one power here and there, rounded to f32 once.
    for (got, want) in rates.iter().zip(&expected) {
        assert!((got - want).abs() <= want * 1e-6, "rates {rates:?} vs {expected:?}");
    }
    assert!(rates.last().unwrap() < &rates[0], "the rate must have been lowered at least once: {rates:?}");
}

/// The record of each epoch holds the rate of its last step.
fn recorded_rates(history: &[EpochRecord]) -> Vec<f64> {
    history.iter().map(|r| r.learning_rate.expect("learning_rate recorded")).collect()
}

#[test]
fn resume_with_a_cosine_schedule_and_callbacks_is_bit_exact_on_the_cpu() {
    let ds = generate(&SyntheticSpec { train: 96, test: 32, height: 8, width: 8, channels: 3, classes: 4 }, 1);
    let recipe = Recipe {
        schedule: LrSchedule::new(ScheduleKind::Cosine, 1, None, 3).unwrap(),
        early_stopping: Some(EarlyStopping::new(5)),
        reduce_lr: Some(ReduceLrOnPlateau::new(1)),
    };
    let straight_dir = common::temp_dir("schedules-straight");
    let mut straight = new_net(&ds, 4);
    let straight_fit = run(&mut straight, &ds, &options(3, Some(&straight_dir), 3e-3, recipe.clone()), Vec::new()).unwrap();
    // The same run interrupted after epoch 2 (its epochs without the end of training; the
    // schedule still planned over 3) and resumed from its checkpoint into a network
    // initialised differently.
    let dir = common::temp_dir("schedules-resumed");
    run_epochs(&mut new_net(&ds, 4), &ds, &options(2, Some(&dir), 3e-3, recipe), Vec::new()).unwrap();
    let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.recipe.schedule.kind, ScheduleKind::Cosine);
    let mut resumed = new_net(&ds, 99);
    resumed.load_state(&ck.tensors, true).unwrap();
    resumed.step = ck.meta.step;
    let resumed_fit = run(&mut resumed, &ds, &options(3, Some(&dir), 3e-3, ck.meta.recipe.clone()), ck.meta.history.clone()).unwrap();
    assert_eq!(recorded_rates(&straight_fit.history), recorded_rates(&resumed_fit.history));
    assert_eq!(straight_fit.recipe, resumed_fit.recipe);
    let a = checkpoint::load(&straight_dir.join("last.safetensors")).unwrap();
    let b = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert_same_tensors("last.safetensors", &b.tensors, &a.tensors);
    assert_eq!(a.meta.recipe, b.meta.recipe);
    // The warmup epoch ends just below the base rate, then cosine falls: recorded per epoch.
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("history.json")).unwrap()).unwrap();
    let rates: Vec<f64> = history["learning_rate"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(rates, recorded_rates(&resumed_fit.history));
    let steps = 96 / 8;
    let schedule = &a.meta.recipe.schedule;
    // Epoch 1's last step is warmup step 11 of 12 (no plateau reduction can act before epoch 1 ends).
    assert_eq!(rates[0], (schedule.rate(3e-3, steps as u64 - 1, steps) as f32) as f64);
    assert!(rates[1] < 3e-3 && rates[2] < rates[1], "{rates:?}");
}

#[test]
fn a_checkpoint_without_a_recipe_is_a_constant_rate_without_callbacks() {
    let dir = common::temp_dir("schedules-old");
    let meta = common::checkpoint_meta("flatten\ndense 2 softmax\n", (2, 2, 1), &["a", "b"]);
    let model = Model::new(&parse_arch(&meta.arch).unwrap(), meta.input).unwrap();
    let path = dir.join("old.safetensors");
    checkpoint::save(&path, &meta, &common::constant_weights(&model, 0.5)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize]).into_owned();
    // What checkpoints from before the recipe look like: none of its keys.
    assert!(!header.contains("lr_schedule") && !header.contains("early_stopping"), "{header}");
    assert_eq!(checkpoint::load(&path).unwrap().meta.recipe, Recipe::default());
}

#[test]
fn the_cli_trains_with_a_schedule_prints_the_rate_and_refuses_bad_combinations() {
    let dir = common::temp_dir("schedules-cli");
    let out = dir.join("run");
    let base = ["train", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32", "--device", "cpu", "--batch-size", "16"];
    let (ok, _, err) = common::run_cli(
        &[&base[..], &["--epochs", "2", "--lr-schedule", "cosine", "--warmup-epochs", "1", "--reduce-lr-on-plateau", "3"], &["--out", out.to_str().unwrap()]]
            .concat(),
    );
    assert!(ok, "{err}");
    assert!(err.contains("learning_rate: "), "{err}");
    let ck = checkpoint::load(&out.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.recipe.schedule, LrSchedule::new(ScheduleKind::Cosine, 1, None, 2).unwrap());
    assert_eq!(ck.meta.recipe.reduce_lr.as_ref().map(|r| r.patience), Some(3));
    for (flags, needle) in [
        (&["--epochs", "2", "--warmup-epochs", "2"][..], "--warmup-epochs"),
        (&["--epochs", "2", "--lr-schedule", "cosine", "--lr-step-epochs", "1"][..], "--lr-step-epochs"),
        (&["--epochs", "2", "--lr-schedule", "sawtooth"][..], "sawtooth"),
    ] {
        let (ok, _, err) = common::run_cli(&[&base[..], flags, &["--out", dir.join("refused").to_str().unwrap()]].concat());
        assert!(!ok && err.contains(needle), "{flags:?}: {err}");
    }
    let (_, help, _) = common::run_cli(&["train", "--help"]);
    for flag in ["--lr-schedule", "--warmup-epochs", "--lr-step-epochs", "--early-stopping", "--reduce-lr-on-plateau"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// Issue 12's resume bar in one run: BatchNormalization and Dropout, SGD with Nesterov
/// momentum, label smoothing and a cosine schedule with warmup, interrupted after epoch 1 and
/// resumed into a differently initialised network, ends with the same bits (weights, moving
/// statistics, momentum, recorded rates) as 3 epochs straight through, on the CPU backend.
#[test]
fn resume_with_batchnorm_dropout_sgd_momentum_and_cosine_is_bit_exact_on_the_cpu() {
    let arch = "Conv2D(6, 3, padding=\"same\") BatchNormalization ReLU MaxPooling2D(2) Dropout(0.3)\nConv2D(8, 3) BatchNormalization ReLU GlobalAveragePooling2D Dropout(0.5) Dense(4, softmax)\n";
    let ds = generate(&SyntheticSpec { train: 80, test: 24, height: 9, width: 9, channels: 3, classes: 4 }, 2);
    let sgd = gpu_cnn::optimizer::Optimizer::Sgd { momentum: 0.9, nesterov: true };
    let net = |seed: u64| {
        let model = Model::new(&parse_arch(arch).unwrap(), ds.input_shape()).unwrap();
        let mut net = Network::new(CpuBackend::new(), model, 16, seed).unwrap();
        net.set_optimizer(sgd).unwrap();
        net.label_smoothing = 0.1;
        net
    };
    let recipe = Recipe { schedule: LrSchedule::new(ScheduleKind::Cosine, 1, None, 3).unwrap(), ..Recipe::default() };
    let opts = |epochs: usize, dir: &Path, recipe: Recipe| TrainOptions {
        out_dir: Some(dir.to_path_buf()),
        learning_rate: 0.05,
        recipe,
        ..TrainOptions::new(&format_arch(&parse_arch(arch).unwrap()), epochs, 16, 3)
    };
    let (straight_dir, dir) = (common::temp_dir("schedules-recipe-straight"), common::temp_dir("schedules-recipe-resumed"));
    let mut straight = net(3);
    let straight_fit = run(&mut straight, &ds, &opts(3, &straight_dir, recipe.clone()), Vec::new()).unwrap();
    let mut first = net(3);
    run_epochs(&mut first, &ds, &opts(1, &dir, recipe), Vec::new()).unwrap();
    let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert_eq!((ck.meta.optimizer, ck.meta.label_smoothing), (sgd, 0.1));
    let mut resumed = net(99);
    resumed.load_state(&ck.tensors, true).unwrap();
    // What `train --resume` restores besides the tensors (the seed keys the dropout masks).
    (resumed.step, resumed.seed) = (ck.meta.step, ck.meta.seed);
    let resumed_fit = run(&mut resumed, &ds, &opts(3, &dir, ck.meta.recipe.clone()), ck.meta.history.clone()).unwrap();
    assert_eq!(recorded_rates(&straight_fit.history), recorded_rates(&resumed_fit.history));
    let a = checkpoint::load(&straight_dir.join("last.safetensors")).unwrap();
    let b = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert!(a.tensors.iter().any(|t| t.name.ends_with(".momentum")) && a.tensors.iter().any(|t| t.name.ends_with(".moving_variance")));
    assert_same_tensors("resumed vs straight", &b.tensors, &a.tensors);
}
