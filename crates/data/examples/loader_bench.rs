//! Loader throughput for `bench/training`: an image-folder dataset of PNG files (28×28 gray,
//! like MNIST, or larger with `--size`), imported once, then read back through the loader
//! with decoding, random crop and horizontal flip, as training reads it. Prints one JSON
//! line per worker count: images per second delivered as batches.
//!
//! `cargo run --release -p trainyard-data --example loader_bench -- --images 20000`

use std::sync::Arc;
use std::time::Instant;

use trainyard_data::{DirStore, ImageOptions, ImportOptions, LoaderOptions, ShardSource};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let images = arg(&args, "--images", 20_000);
    let size = arg(&args, "--size", 28) as u32;
    let batch = arg(&args, "--batch", 64);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("images");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..images {
        let class = format!("class{}", i % 10);
        std::fs::create_dir_all(folder.join(&class)).unwrap();
        let img = image::GrayImage::from_fn(size, size, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            image::Luma([(state >> 56) as u8])
        });
        img.save(folder.join(&class).join(format!("{i}.png")))
            .unwrap();
    }
    let mut store = DirStore::new(dir.path().join("shards"));
    let started = Instant::now();
    let manifest = trainyard_data::import(&folder, &ImportOptions::default(), &mut store).unwrap();
    let import_s = started.elapsed().as_secs_f64();
    println!(
        "{{\"what\":\"import\",\"images\":{images},\"size\":{size},\"images_per_s\":{:.0}}}",
        images as f64 / import_s
    );
    let source: Arc<dyn ShardSource> = Arc::new(store);
    for workers in [1, 2] {
        let options = LoaderOptions {
            batch_size: batch,
            seed: 1,
            epoch: 0,
            shuffle: true,
            drop_last: false,
            input: "image".into(),
            target: Some("label".into()),
            filter: None,
            prefetch: 4,
            workers,
            image: Some(ImageOptions {
                channels: 1,
                height: size as usize,
                width: size as usize,
                scale: 1.0 / 255.0,
                random_crop_padding: 2,
                horizontal_flip: true,
            }),
        };
        let started = Instant::now();
        let mut rows = 0;
        for b in trainyard_data::batches(&manifest, source.clone(), options).unwrap() {
            rows += b.unwrap().rows;
        }
        assert_eq!(rows, images);
        println!(
            "{{\"what\":\"load+decode+augment\",\"workers\":{workers},\"batch\":{batch},\"images\":{images},\"size\":{size},\"images_per_s\":{:.0}}}",
            rows as f64 / started.elapsed().as_secs_f64()
        );
    }
}
