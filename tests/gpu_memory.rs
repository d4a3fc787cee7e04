//! A long-lived process must get its GPU memory back: models and data sets come and go on one
//! device, and the bind-group cache must not keep their buffers alive (a cache entry never
//! outlives the buffers it binds).

#[macro_use]
mod common;
use gpu_cnn::backend::Backend;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::model::{parse_arch, Model};
use gpu_cnn::network::Network;

/// Three different models: different shapes, tiles, scratch sizes and conv input-gradient paths.
const ARCHS: [&str; 3] = [
    "conv2d 8 3 relu\nmaxpool 2\nconv2d 6 3 relu padding=same stride=2\nflatten\ndense 16 relu\ndense 4 softmax\n",
    "conv2d 16 3 relu padding=same\nmaxpool 2\nflatten\ndense 4 softmax\n",
    "conv2d 4 5 relu\nconv2d 12 3 relu\nflatten\ndense 9 relu\ndense 4 softmax\n",
];

gpu_test! {
    fn three_models_trained_and_dropped_give_back_device_memory_and_cache(gpu: &GpuBackend) {
        let baseline = (gpu.device_bytes_allocated().unwrap(), gpu.cache_sizes());
        for (k, arch) in ARCHS.iter().enumerate() {
            let ds = generate(&SyntheticSpec { train: 60, test: 20, height: 13, width: 13, channels: 3, classes: 4 }, k as u64);
            {
                let model = Model::new(&parse_arch(arch).unwrap(), ds.input_shape()).unwrap();
                let mut net = Network::new(gpu, model, 7, k as u64).unwrap();
                // Load weights as a checkpoint would (from host tensors), then train, evaluate, predict.
                let weights = net.weights().unwrap();
                net.load_state(&weights, false).unwrap();
                let train = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
                let test = net.backend.upload_images(&ds.test.images, &ds.test.labels, ds.test.image_len()).unwrap();
                let order = gpu_cnn::train::epoch_order(ds.train.len(), 3, 0);
                for batch in order.chunks(7).take(3) {
                    net.train_step(&train, batch).unwrap();
                }
                let metrics = net.evaluate(&test, ds.test.len()).unwrap();
                assert_eq!(metrics.count, ds.test.len());
                let probs = net.predict_step(&test, &[0, 1, 2]).unwrap();
                assert_eq!(probs.len(), 3 * 4);
                // The measure sees the model: buffers and cached bind groups while it lives.
                assert!(gpu.device_bytes_allocated().unwrap() > baseline.0 + 60 * 13 * 13 * 3);
                assert!(gpu.cache_sizes().bind_groups > 10, "{:?}", gpu.cache_sizes());
            }
            // Dropped: only the reusable scratch and read-back buffers remain, until released.
            assert_eq!(gpu.cache_sizes(), baseline.1, "model {k}: bind groups left in the cache");
            gpu.release_scratch();
            assert_eq!(gpu.device_bytes_allocated().unwrap(), baseline.0, "model {k}: device memory not given back");
        }
    }
}

gpu_test! {
    /// Filter gradients of growing batches regrow the split-k scratch buffer: the old one, and
    /// the bind groups that bound it, must go.
    fn a_regrown_scratch_buffer_is_freed(gpu: &GpuBackend) {
        let s = gpu_cnn::backend::DenseShape { inputs: 40, units: 30 };
        let mut peak_cache = 0;
        for n in [300, 600, 1200] {
            let x = gpu.tensor(n * s.inputs).unwrap();
            let dy = gpu.tensor(n * s.units).unwrap();
            let (mut dw, mut db) = (gpu.tensor(s.inputs * s.units).unwrap(), gpu.tensor(s.units).unwrap());
            gpu.dense_backward_filter(&x, &dy, &mut dw, &mut db, &s, n);
            gpu.flush().unwrap();
            peak_cache = peak_cache.max(gpu.cache_sizes().bind_groups);
            // x, dy, dw, db and the scratch buffer, nothing else (at most 64 splits of 41 x 30).
            let tensors = 4 * (n * (s.inputs + s.units) + s.inputs * s.units + s.units) as u64;
            let scratch_max = 4 * 64 * 41 * 30;
            let live = gpu.device_bytes_allocated().unwrap();
            assert!(live <= tensors + scratch_max + 4096, "batch {n}: {live} bytes alive for {tensors} bytes of tensors");
        }
        // Two dispatches a call; entries of dropped tensors are gone.
        assert!(gpu.cache_sizes().bind_groups <= 2 && peak_cache <= 2, "{:?}", gpu.cache_sizes());
    }
}

gpu_test! {
    /// An arena's views (a network's trainable tensors) share its buffer: the memory stays while
    /// any of them lives, even with the whole dropped first, and goes with the last; two views of
    /// one buffer in the same dispatch otherwise (same kernel, parameters and other operands)
    /// get bind groups of their own, dropped with their view.
    fn arena_views_keep_their_buffer_and_leave_no_cache_behind(gpu: &GpuBackend) {
        let baseline = (gpu.device_bytes_allocated().unwrap(), gpu.cache_sizes());
        let arena = gpu.tensor_arena(&[5, 5]).unwrap();
        let (whole, _) = arena.whole.expect("the GPU lays an arena out in one buffer");
        let [mut a, mut b]: [gpu_cnn::backend::gpu::GpuTensor; 2] = arena.parts.try_into().ok().unwrap();
        gpu.upload(&mut a, &[-1.0; 5]);
        gpu.upload(&mut b, &[2.0; 5]);
        // relu_backward zeroes dy where y <= 0 (y is all zeros here): each view in turn.
        let y = gpu.tensor(5).unwrap();
        gpu.relu_backward(&y, &mut a, 5);
        gpu.relu_backward(&y, &mut b, 5);
        gpu.flush().unwrap();
        assert_eq!(gpu.cache_sizes().bind_groups, baseline.1.bind_groups + 2, "one bind group per view");
        drop(whole);
        assert_eq!(gpu.download(&a).unwrap(), vec![0.0; 5], "the first view");
        assert_eq!(gpu.download(&b).unwrap(), vec![0.0; 5], "the second view");
        assert!(gpu.device_bytes_allocated().unwrap() > baseline.0, "the views keep the buffer");
        drop((a, b, y));
        gpu.release_scratch(); // the read-back buffer
        assert_eq!((gpu.device_bytes_allocated().unwrap(), gpu.cache_sizes()), baseline, "everything given back");
    }
}
