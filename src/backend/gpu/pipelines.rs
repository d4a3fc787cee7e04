//! Every compute pipeline, created once when the backend starts. Shaders are embedded in the
//! binary (and validated by build.rs); layouts come from each entry point's bindings.

pub const CONV_WGSL: &str = include_str!("../../../shaders/conv.wgsl");
pub const MATMUL_WGSL: &str = include_str!("../../../shaders/matmul.wgsl");
pub const POOL_WGSL: &str = include_str!("../../../shaders/pool.wgsl");
pub const ELEMENTWISE_WGSL: &str = include_str!("../../../shaders/elementwise.wgsl");
pub const LOSS_WGSL: &str = include_str!("../../../shaders/loss.wgsl");
pub const ADAM_WGSL: &str = include_str!("../../../shaders/adam.wgsl");
pub const DATA_WGSL: &str = include_str!("../../../shaders/data.wgsl");

/// Every embedded shader with its file name (for tests and diagnostics).
pub const ALL_SHADERS: [(&str, &str); 7] = [
    ("conv.wgsl", CONV_WGSL),
    ("matmul.wgsl", MATMUL_WGSL),
    ("pool.wgsl", POOL_WGSL),
    ("elementwise.wgsl", ELEMENTWISE_WGSL),
    ("loss.wgsl", LOSS_WGSL),
    ("adam.wgsl", ADAM_WGSL),
    ("data.wgsl", DATA_WGSL),
];

pub struct Pipeline {
    /// Distinguishes pipelines in the bind group cache.
    pub id: u32,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub struct Pipelines {
    pub conv2d_forward: Pipeline,
    pub conv2d_backward_input: Pipeline,
    pub conv2d_backward_filter: Pipeline,
    pub matmul_bias_act: Pipeline,
    pub matmul_split_partials: Pipeline,
    pub sum_split_partials: Pipeline,
    pub maxpool_forward: Pipeline,
    pub maxpool_backward: Pipeline,
    pub relu_backward: Pipeline,
    pub softmax_xent: Pipeline,
    pub softmax: Pipeline,
    pub adam_update: Pipeline,
    pub gather_batch: Pipeline,
}

impl Pipelines {
    pub fn new(device: &wgpu::Device) -> Self {
        let module = |name: &str, source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.into()) })
        };
        let conv = module("conv.wgsl", CONV_WGSL);
        let matmul = module("matmul.wgsl", MATMUL_WGSL);
        let pool = module("pool.wgsl", POOL_WGSL);
        let elementwise = module("elementwise.wgsl", ELEMENTWISE_WGSL);
        let loss = module("loss.wgsl", LOSS_WGSL);
        let adam = module("adam.wgsl", ADAM_WGSL);
        let data = module("data.wgsl", DATA_WGSL);
        let mut next_id = 0;
        let mut make = |module: &wgpu::ShaderModule, entry: &str| {
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
            let layout = pipeline.get_bind_group_layout(0);
            next_id += 1;
            Pipeline { id: next_id, pipeline, layout }
        };
        Pipelines {
            conv2d_forward: make(&conv, "conv2d_forward"),
            conv2d_backward_input: make(&conv, "conv2d_backward_input"),
            conv2d_backward_filter: make(&conv, "conv2d_backward_filter"),
            matmul_bias_act: make(&matmul, "matmul_bias_act"),
            matmul_split_partials: make(&matmul, "matmul_split_partials"),
            sum_split_partials: make(&matmul, "sum_split_partials"),
            maxpool_forward: make(&pool, "maxpool_forward"),
            maxpool_backward: make(&pool, "maxpool_backward"),
            relu_backward: make(&elementwise, "relu_backward"),
            softmax_xent: make(&loss, "softmax_xent"),
            softmax: make(&loss, "softmax"),
            adam_update: make(&adam, "adam_update"),
            gather_batch: make(&data, "gather_batch"),
        }
    }
}
