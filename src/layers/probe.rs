//! A test-only layer that owns a trainable and a non-trainable tensor (as BatchNormalization
//! will), to check the framework's bookkeeping: only trainable tensors get gradients and
//! optimizer state, every tensor is saved, loaded, counted and validated. It is a view (its
//! output is its input), so its tensors keep their initial values through training.

use super::{Args, Backward, Forward, Init, LayerKind, ParamSpec, ScratchKind, ScratchSpec};
use crate::backend::Backend;
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Probe;

impl LayerKind for Probe {
    const CLASS: &'static str = "Probe";
    const BASE: &'static str = "probe";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&[])?;
        args.check_positional(0, "Probe")?;
        Ok(Probe)
    }
    fn to_args(&self) -> Vec<String> {
        Vec::new()
    }
    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let c = *input.last().unwrap();
        vec![ParamSpec::trainable("gamma", vec![c], Init::Ones), ParamSpec::non_trainable("moving_mean", vec![c], Init::Zeros)]
    }
    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        vec![ScratchSpec::fixed(ScratchKind::Tensor, *input.last().unwrap())]
    }
    fn is_view(&self) -> bool {
        true
    }
    fn forward<B: Backend>(&self, _f: Forward<'_, B>) {}
    fn backward<B: Backend>(&self, _b: Backward<'_, B>) {}
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::checkpoint::{self, CheckpointMeta};
    use crate::model::{parse_arch, summary_table, Model};
    use crate::network::{HostTensor, Network};

    const ARCH: &str = "Conv2D(3, 3, activation=\"relu\") Probe Flatten Dense(2, activation=\"softmax\")";

    fn model() -> Model {
        Model::new(&parse_arch(ARCH).unwrap(), (5, 5, 1)).unwrap()
    }

    fn names(tensors: &[HostTensor]) -> Vec<&str> {
        tensors.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn non_trainable_tensors_are_saved_but_get_no_gradient_or_optimizer_state() {
        let model = model();
        // conv 3x3x1x3 + 3, probe 3 + 3, dense 27x2 + 2.
        assert_eq!((model.param_count(), model.trainable_count()), (30 + 6 + 56, 30 + 3 + 56));
        let table = summary_table(&model);
        assert!(table.contains("probe (Probe)") && table.contains("Non-trainable params: 3 (12.00 B)") && table.contains("Trainable params: 89 "), "{table}");
        // Trainable: value, gradient, 2 moments; non-trainable: value; scratch: 3 values.
        // Activations, then the two gradient buffers of the largest output.
        let activations = (25 + 27 + 27 + 27 + 2) * 4 + 2 * 27 * 4;
        assert_eq!(model.memory_bytes(4), Some((activations + 89 * 4 + 3 + 3) * 4));

        let mut net = Network::new(CpuBackend::new(), model, 4, 7).unwrap();
        let weights = net.weights().unwrap();
        assert_eq!(names(&weights), ["conv2d.kernel", "conv2d.bias", "probe.gamma", "probe.moving_mean", "dense.kernel", "dense.bias"]);
        assert_eq!(weights[2].data, [1.0; 3], "Init::Ones");
        assert_eq!(weights[3].data, [0.0; 3], "Init::Zeros");
        let data = net.backend.upload_images(&[7u8; 4 * 25], &[0, 1, 0, 1], 25).unwrap();
        net.train_step(&data, &[0, 1, 2, 3]).unwrap();
        assert_eq!(names(&net.gradients().unwrap()), ["conv2d.kernel", "conv2d.bias", "probe.gamma", "dense.kernel", "dense.bias"]);
        let optimizer = net.optimizer_state().unwrap();
        assert!(optimizer.iter().all(|t| !t.name.starts_with("probe.moving_mean")), "{:?}", names(&optimizer));
        assert_eq!(optimizer.len(), 2 * 5);

        // load_state takes the non-trainable tensor too, and needs it.
        let mut changed = weights.clone();
        changed[3].data = vec![0.5; 3];
        net.load_state(&changed, false).unwrap();
        assert_eq!(net.weights().unwrap()[3].data, [0.5; 3]);
        let without: Vec<HostTensor> = weights.iter().filter(|t| t.name != "probe.moving_mean").cloned().collect();
        assert!(net.load_state(&without, false).unwrap_err().to_string().contains("probe.moving_mean"));
    }

    #[test]
    fn checkpoints_validate_non_trainable_tensors() {
        let net = Network::new(CpuBackend::new(), model(), 2, 1).unwrap();
        let meta = CheckpointMeta {
            arch: crate::model::format_arch(&parse_arch(ARCH).unwrap()),
            input: (5, 5, 1),
            class_names: vec!["a".into(), "b".into()],
            dataset: "test".into(),
            epoch: 0,
            step: 1,
            seed: 1,
            batch_size: 2,
            learning_rate: 1e-3,
            optimizer: crate::optimizer::Optimizer::default(),
            label_smoothing: 0.0,
            augment: crate::augment::Augmentation::NONE,
            history: Vec::new(),
            preprocessing: None,
            data_source: None,
            class_weights: None,
            recipe: Default::default(),
        };
        let dir = std::env::temp_dir().join(format!("gpu-cnn-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe.safetensors");
        let mut tensors = net.weights().unwrap();
        tensors.extend(net.optimizer_state().unwrap());
        checkpoint::save(&path, &meta, &tensors).unwrap();
        let loaded = checkpoint::load(&path).unwrap();
        assert!(names(&loaded.tensors).contains(&"probe.moving_mean"));
        // Optimizer state of a non-trainable tensor is refused by name.
        let mut hostile = tensors.clone();
        hostile.push(HostTensor { name: "probe.moving_mean.adam_m".into(), dims: vec![3], data: vec![0.0; 3] });
        checkpoint::save(&path, &meta, &hostile).unwrap();
        let err = checkpoint::load(&path).err().unwrap().to_string();
        assert!(err.contains("probe.moving_mean.adam_m") && err.contains("not trainable"), "{err}");
        // A missing non-trainable tensor is refused before allocating.
        let missing: Vec<HostTensor> = tensors.into_iter().filter(|t| t.name != "probe.moving_mean").collect();
        checkpoint::save(&path, &meta, &missing).unwrap();
        let err = checkpoint::load(&path).err().unwrap().to_string();
        assert!(err.contains("probe.moving_mean") && err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
