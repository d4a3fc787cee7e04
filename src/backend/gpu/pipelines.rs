//! Every compute pipeline, created once when the backend starts. Shaders are embedded in the
//! binary as build.rs composed and validated them; layouts come from each entry point's bindings. The GEMM
//! kernels come in a few tile shapes (pipeline overrides), each compiled on first use.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

include!(concat!(env!("OUT_DIR"), "/shaders/all_shaders.rs"));

/// The composed source of `file` (one of shader_sources.rs SHADERS).
fn shader(file: &str) -> &'static str {
    ALL_SHADERS.iter().find(|(name, _)| *name == file).unwrap_or_else(|| panic!("{file} is not in shader_sources.rs")).1
}

/// A GEMM kernel's tile: the workgroup computes tm x tn outputs, each invocation 8 x 8 of them
/// (RM x RN in common/gemm_tile.wgsl). Set through WGSL pipeline overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub tm: u32,
    pub tn: u32,
}

impl Tile {
    /// The tile for a GEMM of `rows` x `cols` outputs: the smallest of 32/64/128 that covers
    /// each side (a 32-channel layer or a 28-row filter gradient should not compute mostly
    /// padding), with columns capped at `max_cols`. 16 to 256 invocations; workgroup memory at
    /// most 16 KiB (see `tile_fits_the_shaders` for what the shaders need of a tile).
    pub fn for_gemm(rows: usize, cols: usize, max_cols: u32) -> Tile {
        let side = |len: usize| {
            if len <= 32 {
                32
            } else if len <= 64 {
                64
            } else {
                128
            }
        };
        Tile { tm: side(rows), tn: side(cols).min(max_cols) }
    }
}

/// The GEMM-shaped entry points, compiled per tile on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmEntry {
    Conv2dForward,
    Conv2dBackwardInput,
    Conv2dBackwardFilter,
    MatmulBiasAct,
    MatmulSplitPartials,
}

impl GemmEntry {
    fn name(self) -> &'static str {
        match self {
            GemmEntry::Conv2dForward => "conv2d_forward",
            GemmEntry::Conv2dBackwardInput => "conv2d_backward_input",
            GemmEntry::Conv2dBackwardFilter => "conv2d_backward_filter",
            GemmEntry::MatmulBiasAct => "matmul_bias_act",
            GemmEntry::MatmulSplitPartials => "matmul_split_partials",
        }
    }
}

pub struct Pipeline {
    /// Distinguishes pipelines in the bind group cache.
    pub id: u32,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub struct Pipelines {
    conv: wgpu::ShaderModule,
    matmul: wgpu::ShaderModule,
    gemm: RefCell<HashMap<(GemmEntry, Tile), Rc<Pipeline>>>,
    next_id: Cell<u32>,
    pub sum_split_partials: Pipeline,
    pub conv2d_col2im: Pipeline,
    pub depthwise_forward: Pipeline,
    pub depthwise_backward_input: Pipeline,
    pub depthwise_backward_filter: Pipeline,
    pub maxpool_forward: Pipeline,
    pub maxpool_backward: Pipeline,
    pub avgpool_forward: Pipeline,
    pub avgpool_backward: Pipeline,
    pub activation_forward: Pipeline,
    pub activation_backward: Pipeline,
    pub relu_backward: Pipeline,
    pub softmax_xent: Pipeline,
    pub softmax_xent_weighted: Pipeline,
    pub softmax: Pipeline,
    pub adam_update: Pipeline,
    pub adamw_update: Pipeline,
    pub sgd_update: Pipeline,
    pub sgd_momentum_update: Pipeline,
    pub rmsprop_update: Pipeline,
    pub gather_batch: Pipeline,
    pub batchnorm_batch_stats: Pipeline,
    pub batchnorm_moving_stats: Pipeline,
    pub batchnorm_normalize: Pipeline,
    pub batchnorm_backward_sums: Pipeline,
    pub batchnorm_backward_input: Pipeline,
    pub dropout: Pipeline,
}

impl Pipelines {
    pub fn new(device: &wgpu::Device) -> Self {
        let module = |name: &str, source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.into()) })
        };
        let module = |name: &str| module(name, shader(name));
        let conv = module("conv.wgsl");
        let matmul = module("matmul.wgsl");
        let depthwise = module("depthwise.wgsl");
        let pool = module("pool.wgsl");
        let elementwise = module("elementwise.wgsl");
        let activation = module("activation.wgsl");
        let loss = module("loss.wgsl");
        let adam = module("adam.wgsl");
        let adamw = module("adamw.wgsl");
        let sgd = module("sgd.wgsl");
        let rmsprop = module("rmsprop.wgsl");
        let data = module("data.wgsl");
        let batchnorm = module("batchnorm.wgsl");
        let dropout = module("dropout.wgsl");
        let mut next_id = 0;
        let mut make = |module: &wgpu::ShaderModule, entry: &str| {
            next_id += 1;
            create(device, module, entry, &[], next_id)
        };
        Pipelines {
            sum_split_partials: make(&matmul, "sum_split_partials"),
            conv2d_col2im: make(&conv, "conv2d_col2im"),
            depthwise_forward: make(&depthwise, "depthwise_forward"),
            depthwise_backward_input: make(&depthwise, "depthwise_backward_input"),
            depthwise_backward_filter: make(&depthwise, "depthwise_backward_filter"),
            maxpool_forward: make(&pool, "maxpool_forward"),
            maxpool_backward: make(&pool, "maxpool_backward"),
            avgpool_forward: make(&pool, "avgpool_forward"),
            avgpool_backward: make(&pool, "avgpool_backward"),
            activation_forward: make(&activation, "activation_forward"),
            activation_backward: make(&activation, "activation_backward"),
            relu_backward: make(&elementwise, "relu_backward"),
            softmax_xent: make(&loss, "softmax_xent"),
            softmax_xent_weighted: make(&loss, "softmax_xent_weighted"),
            softmax: make(&loss, "softmax"),
            adam_update: make(&adam, "adam_update"),
            adamw_update: make(&adamw, "adamw_update"),
            sgd_update: make(&sgd, "sgd_update"),
            sgd_momentum_update: make(&sgd, "sgd_momentum_update"),
            rmsprop_update: make(&rmsprop, "rmsprop_update"),
            gather_batch: make(&data, "gather_batch"),
            batchnorm_batch_stats: make(&batchnorm, "batchnorm_batch_stats"),
            batchnorm_moving_stats: make(&batchnorm, "batchnorm_moving_stats"),
            batchnorm_normalize: make(&batchnorm, "batchnorm_normalize"),
            batchnorm_backward_sums: make(&batchnorm, "batchnorm_backward_sums"),
            batchnorm_backward_input: make(&batchnorm, "batchnorm_backward_input"),
            dropout: make(&dropout, "dropout"),
            conv,
            matmul,
            gemm: RefCell::new(HashMap::new()),
            next_id: Cell::new(1000),
        }
    }

    /// The GEMM pipeline for `entry` with `tile`, compiled on first use.
    pub fn gemm(&self, device: &wgpu::Device, entry: GemmEntry, tile: Tile) -> Rc<Pipeline> {
        if let Some(p) = self.gemm.borrow().get(&(entry, tile)) {
            return p.clone();
        }
        let module = match entry {
            GemmEntry::Conv2dForward | GemmEntry::Conv2dBackwardInput | GemmEntry::Conv2dBackwardFilter => &self.conv,
            GemmEntry::MatmulBiasAct | GemmEntry::MatmulSplitPartials => &self.matmul,
        };
        let constants = [("TM", tile.tm as f64), ("TN", tile.tn as f64)];
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let pipeline = Rc::new(create(device, module, entry.name(), &constants, id));
        self.gemm.borrow_mut().insert((entry, tile), pipeline.clone());
        pipeline
    }
}

fn create(device: &wgpu::Device, module: &wgpu::ShaderModule, entry: &str, constants: &[(&str, f64)], id: u32) -> Pipeline {
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module,
        entry_point: Some(entry),
        // Every kernel writes its workgroup memory before reading it: skip the zeroing.
        compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
        cache: None,
    });
    let layout = pipeline.get_bind_group_layout(0);
    Pipeline { id, pipeline, layout }
}

#[cfg(test)]
mod tests {
    use super::Tile;

    /// Outputs per invocation on each side (RM = RN in common/gemm_tile.wgsl).
    const REGISTER_BLOCK: u32 = 8;

    /// What conv.wgsl and matmul.wgsl assume of a tile, for every tile `for_gemm` can pick.
    #[test]
    fn tile_fits_the_shaders() {
        for rows in [1, 32, 33, 64, 65, 1000] {
            for cols in [1, 32, 33, 64, 65, 1000] {
                for max_cols in [64, 128] {
                    let t = Tile::for_gemm(rows, cols, max_cols);
                    let threads = (t.tm / REGISTER_BLOCK) * (t.tn / REGISTER_BLOCK);
                    assert!(threads <= 256, "{t:?}: {threads} invocations");
                    for side in [t.tm, t.tn] {
                        assert!((4 * threads).is_multiple_of(side) && 4 * threads <= 16 * side, "{t:?}");
                    }
                    assert!(16 * (t.tm + t.tn) * 4 <= 16 * 1024, "{t:?}: workgroup memory");
                    assert!(t.tn <= max_cols);
                }
            }
        }
    }
}
