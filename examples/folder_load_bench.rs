//! How fast a folder of photos loads: generates 10 classes x 1,000 JPEG photos of 256x256 (once,
//! photo-like: smooth gradients, shapes and sensor noise), then loads the folder twice through
//! the same code as `gpu-cnn train --data`: the first time decodes and resizes on every core,
//! the second reads the cache.
//!
//! cargo run --release --example folder_load_bench -- [DIR] [IMAGES_PER_CLASS] [SIZE]

use gpu_cnn::data::folder::{self, FolderOptions};
use gpu_cnn::rng::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn photo(class: usize, i: usize, side: u32) -> image::RgbImage {
    let mut rng = Rng::derive(7, class as u64, i as u64);
    let base = [(class * 25 % 256) as f32, (class * 71 % 256) as f32, (class * 113 % 256) as f32];
    let (cx, cy, r) = (rng.unit_f32() * side as f32, rng.unit_f32() * side as f32, 20.0 + rng.unit_f32() * 60.0);
    image::RgbImage::from_fn(side, side, |x, y| {
        let (fx, fy) = (x as f32 / side as f32, y as f32 / side as f32);
        let inside = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < r;
        let mut px = [0u8; 3];
        for c in 0..3 {
            let v = base[c] * (0.6 + 0.4 * fx) + 60.0 * fy + if inside { 80.0 } else { 0.0 } + rng.unit_f32() * 64.0;
            px[c] = v.clamp(0.0, 255.0) as u8;
        }
        image::Rgb(px)
    })
}

fn generate(dir: &Path, per_class: usize, side: u32) {
    let t = Instant::now();
    (0..10 * per_class).into_par_iter().for_each(|k| {
        let (class, i) = (k / per_class, k % per_class);
        let path = dir.join(format!("class{class}")).join(format!("photo{i:05}.jpg"));
        if !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            photo(class, i, side).save(&path).unwrap();
        }
    });
    eprintln!("photos ready in {:.1} s", t.elapsed().as_secs_f64());
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("gpu-cnn-folder-bench"));
    let per_class: usize = args.get(2).map_or(Ok(1000), |s| s.parse())?;
    let side: u32 = args.get(3).map_or(Ok(256), |s| s.parse())?;
    let photos = dir.join("photos");
    generate(&photos, per_class, side);
    let bytes: u64 = walk_size(&photos);
    let n = 10 * per_class;
    eprintln!("{n} JPEG files, {:.1} MB ({:.1} KB each)", bytes as f64 / 1e6, bytes as f64 / n as f64 / 1e3);
    let cache = dir.join("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let opts = FolderOptions {
        preprocessing: gpu_cnn::image_pipeline::Preprocessing::new((32, 32, 3))?,
        val_split: 0.2,
        seed: 0,
        skip_bad: false,
        cache_dir: Some(cache),
    };
    let t = Instant::now();
    let ds = folder::load(&photos, &opts)?;
    let first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let again = folder::load(&photos, &opts)?;
    let second = t.elapsed().as_secs_f64();
    assert_eq!(ds.train.images, again.train.images);
    println!("machine: {}", gpu_cnn::system_info::machine_name());
    println!(
        "first load (list + decode + resize to 32x32 + write cache): {first:.2} s, {:.0} images/s on {} threads",
        n as f64 / first,
        rayon::current_num_threads()
    );
    println!("second load (list + stat + read cache): {second:.3} s");
    Ok(())
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk_size(&p) } else { p.metadata().unwrap().len() }).sum()
}
