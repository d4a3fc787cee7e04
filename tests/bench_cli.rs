//! `gpu-cnn bench --quick --json`: every field present with a plausible value (finite and
//! positive) for the CPU backend and the GPU. No timing thresholds: speed is not asserted.

mod common;

fn check_positive(v: &serde_json::Value, path: &str) {
    let x = v.as_f64().unwrap_or_else(|| panic!("{path} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{path} = {x}");
}

fn check_device(d: &serde_json::Value) {
    assert!(d["device"].as_str().is_some_and(|s| !s.is_empty()));
    for key in ["matmul_1024_gflops", "time_to_first_step_ms", "peak_rss_bytes", "training_fraction_of_matmul"] {
        check_positive(&d[key], key);
    }
    let kernels = d["kernels"].as_array().unwrap();
    let names: std::collections::HashSet<&str> = kernels.iter().map(|k| k["kernel"].as_str().unwrap()).collect();
    for name in [
        "conv2d_forward",
        "conv2d_backward_input",
        "conv2d_backward_filter",
        "maxpool_forward",
        "maxpool_backward",
        "dense_forward",
        "dense_backward_input",
        "dense_backward_filter",
        "softmax_xent",
        "adam_update",
        "gather_batch",
    ] {
        assert!(names.contains(name), "kernel {name} missing");
    }
    // 3 convs x 3 + 2 pools x 2 + 2 dense x 3 + loss + Adam + gather, per batch size.
    assert_eq!(kernels.len(), 22);
    let cpu = d["device"].as_str().unwrap().starts_with("CPU backend");
    for k in kernels {
        check_positive(&k["median_ms"], "median_ms");
        let clock = k["timed_by"].as_str().unwrap();
        assert!(if cpu { clock == "host clock" } else { clock == "host clock" || clock == "device timestamps" }, "{clock}");
        let rate = if k["gflops"].is_null() { &k["gbytes_per_s"] } else { &k["gflops"] };
        check_positive(rate, &format!("{} rate", k["kernel"]));
    }
    for key in ["training", "scaling"] {
        for t in d[key].as_array().unwrap() {
            check_positive(&t["images_per_second"], key);
            check_positive(&t["batch"], key);
        }
    }
    check_positive(&d["inference"]["images_per_second"], "inference");
    let minimum = &d["minimum_bytes_per_step"];
    check_positive(&minimum["read"], "minimum read");
    check_positive(&minimum["written"], "minimum written");
    // Device memory: a number on a GPU, null on the CPU backend (its memory is the RSS).
    if d["device"].as_str().unwrap().starts_with("CPU backend") {
        assert!(d["device_bytes_allocated"].is_null() && d["dispatches_per_step"].is_null());
    } else {
        check_positive(&d["device_bytes_allocated"], "device_bytes_allocated");
        // A training step: some 30 dispatches in one compute pass.
        check_positive(&d["dispatches_per_step"], "dispatches_per_step");
        assert_eq!(d["compute_passes_per_step"], 1);
        check_positive(&d["device_bytes_read_per_step"], "device_bytes_read_per_step");
        check_positive(&d["device_bytes_written_per_step"], "device_bytes_written_per_step");
        // The kernels cannot move less than every tensor of the step once.
        for (counted, least) in [("device_bytes_read_per_step", "read"), ("device_bytes_written_per_step", "written")] {
            assert!(d[counted].as_u64().unwrap() >= minimum[least].as_u64().unwrap(), "{counted} {} below the minimum {}", d[counted], minimum[least]);
        }
    }
}

#[test]
fn quick_bench_reports_every_figure() {
    let gpu = common::gpu_backend().is_some();
    let json = common::temp_dir("bench").join("bench.json");
    let mut args = vec!["bench", "--quick", "--device", "cpu", "--json", json.to_str().unwrap()];
    if gpu {
        args.extend(["--device", "gpu"]);
    }
    let (ok, out, err) = common::run_cli(&args);
    assert!(ok, "{err}");
    assert!(out.contains("conv2d_backward_filter") && out.contains("images/s"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), if gpu { 2 } else { 1 });
    for d in devices {
        check_device(d);
    }
    assert!(v["machine"].as_str().is_some_and(|m| m.contains("cores")));
}

/// The minimum a training step moves, by hand for a tiny model at batch 5 with Adam (2 state
/// tensors): input 4x4x1, Conv2D(2, 3) -> 2x2x2 (8 values), Flatten (a view: no tensor),
/// Dense(3) (3 values); parameters 18 + 2 + 24 + 3 = 47, all trainable.
#[test]
fn the_minimum_step_bytes_count_every_tensor_once() {
    let model = gpu_cnn::model::Model::new(&gpu_cnn::model::parse_arch("Conv2D(2, 3) Flatten Dense(3, softmax)").unwrap(), (4, 4, 1)).unwrap();
    let batch = 5 * (16 + 1); // u8 pixels and labels
    let activations = 4 * 2 * 5 * (8 + 3); // outputs and their gradients, f32
    let parameters_and_state = 4 * (47 + 2 * 47);
    let gradients = 4 * 47;
    let want = gpu_cnn::bench::StepBytes {
        read: (batch + activations + parameters_and_state + gradients) as u64,
        written: (activations + parameters_and_state + gradients) as u64,
    };
    assert_eq!(gpu_cnn::bench::StepBytes::minimum(&model, 5, 2), want);
}
