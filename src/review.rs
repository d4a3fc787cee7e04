//! `gpu-cnn review`: the images whose label the model disagrees with most (fastai's
//! `plot_top_losses`) and the class pairs it confuses most (`most_confused`). After a first
//! training, mislabelled and odd photos are what this finds first.

use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint};
use crate::commands::{evaluation_folder, folder_options, EvaluateArgs, ImageFolderArgs};
use crate::predict::{printable, probabilities};
use crate::report::confusion::Confusion;
use crate::report::{argmax_rows, plural};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The images training held out (or DIR/test).
    Validation,
    /// The images training learned from.
    Train,
}

#[derive(Clone, Debug)]
pub struct ReviewArgs {
    pub checkpoint: PathBuf,
    /// The folder [default: the one the checkpoint was trained on, with its split].
    pub images: Option<ImageFolderArgs>,
    pub split: Split,
    /// How many images to list.
    pub top: usize,
    pub batch_size: usize,
    pub json: bool,
}

/// One reviewed image.
pub struct Loss {
    pub file: PathBuf,
    pub truth: usize,
    pub predicted: usize,
    /// Probability of the predicted class and of the true one.
    pub p_predicted: f32,
    pub p_true: f32,
    /// Cross-entropy: -ln p_true.
    pub loss: f64,
}

/// Images by loss, highest first (ties: file order).
pub fn top_losses(files: &[PathBuf], labels: &[u8], probs: &[f32], classes: usize) -> Vec<Loss> {
    let predicted = argmax_rows(probs, classes);
    let mut out: Vec<Loss> = files
        .iter()
        .zip(labels)
        .zip(probs.chunks(classes).zip(predicted))
        .map(|((file, &t), (row, p))| {
            let p_true = row[t as usize];
            Loss { file: file.clone(), truth: t as usize, predicted: p, p_predicted: row[p], p_true, loss: -(p_true.max(f32::MIN_POSITIVE) as f64).ln() }
        })
        .collect();
    out.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    out
}

/// Off-diagonal cells of the confusion matrix, largest first: (true, predicted, images).
pub fn most_confused(conf: &Confusion) -> Vec<(usize, usize, usize)> {
    let mut pairs: Vec<(usize, usize, usize)> = conf
        .counts
        .iter()
        .enumerate()
        .flat_map(|(t, row)| row.iter().enumerate().filter(move |&(p, &n)| p != t && n > 0).map(move |(p, &n)| (t, p, n)))
        .collect();
    pairs.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    pairs
}

pub fn review_on<B: Backend>(backend: B, args: &ReviewArgs) -> Result<String> {
    let ck: Checkpoint = checkpoint::load(&args.checkpoint)?;
    let base = ck.preprocessing()?;
    let as_evaluate = EvaluateArgs {
        checkpoint: args.checkpoint.clone(),
        dataset: None,
        data_dir: None,
        limit_test: None,
        batch_size: args.batch_size,
        json: args.json,
        out: None,
        offline: true,
        images: args.images.clone(),
    };
    if let (None, Some(src)) = (&args.images, &ck.meta.data_source) {
        crate::commands::check_trained_folder(src, &args.checkpoint)?;
    }
    let Some((images, seed)) = evaluation_folder(&as_evaluate, &ck) else {
        bail!("{}: was not trained on a folder of images; give one with --data DIR", args.checkpoint.display());
    };
    crate::commands::note_other_pipeline(&images, &base)?;
    let mut folder = crate::data::folder::load_with_files(&images.dir, &folder_options(&images, seed, Some(&base))?)?;
    crate::commands::match_classes(&mut folder.dataset, &ck.meta.class_names, &args.checkpoint)?;
    let ds = &folder.dataset;
    if args.split == Split::Train && images.val_split == Some(1.0) {
        bail!(
            "{}: training did not use this folder, so it has no training split; review scores every image in it (leave out --split train)",
            images.dir.display()
        );
    }
    let (set, files, split) = match args.split {
        Split::Validation => (&ds.test, &folder.test_files, "validation"),
        Split::Train => (&ds.train, &folder.train_files, "training"),
    };
    let batch = args.batch_size.clamp(1, set.len().clamp(1, 4096));
    let mut net = crate::inference::inference_network(backend, &ck, batch).with_context(|| format!("{}: at batch size {batch}", args.checkpoint.display()))?;
    let data = net.backend.upload_images(&set.images, &set.labels, set.image_len())?;
    let probs = probabilities(&mut net, &data, set.len())?;
    let classes = ds.class_names.len();
    let losses = top_losses(files, &set.labels, &probs, classes);
    let truth: Vec<usize> = set.labels.iter().map(|&l| l as usize).collect();
    let conf = Confusion::new(&ds.class_names, &truth, &argmax_rows(&probs, classes));
    let pairs = most_confused(&conf);
    let name = |i: usize| ds.class_names[i].clone();
    let shown = &losses[..args.top.min(losses.len())];
    if args.json {
        let rows: Vec<_> = shown
            .iter()
            .map(|l| json!({"file": l.file.display().to_string(), "true": name(l.truth), "predicted": name(l.predicted), "probability": l.p_predicted, "true_probability": l.p_true, "loss": l.loss}))
            .collect();
        let confused: Vec<_> = pairs.iter().map(|&(t, p, n)| json!({"true": name(t), "predicted": name(p), "images": n})).collect();
        return Ok(serde_json::to_string_pretty(
            &json!({"checkpoint": args.checkpoint.display().to_string(), "split": split, "images": set.len(), "top_losses": rows, "most_confused": confused}),
        )?);
    }
    let mut out = format!("Top losses: {} of the {} {split} images, the ones the model disagrees with most first\n", shown.len(), set.len());
    out += "    loss  p(predicted)  p(true)  true -> predicted  file\n";
    for l in shown {
        let mark = if l.truth == l.predicted { "  (right)" } else { "" };
        out += &format!(
            "{:8.4}  {:12.4}  {:7.4}  {} -> {}  {}{mark}\n",
            l.loss,
            l.p_predicted,
            l.p_true,
            printable(&name(l.truth)),
            printable(&name(l.predicted)),
            printable(&l.file.display().to_string())
        );
    }
    out += "\nMost confused (true -> predicted: images):\n";
    if pairs.is_empty() {
        out += "  none: every image is predicted as its class\n";
    }
    for &(t, p, n) in pairs.iter().take(args.top) {
        out += &format!("  {} -> {}: {}\n", printable(&name(t)), printable(&name(p)), plural(n, "image"));
    }
    Ok(out)
}
