//! Each kernel's parameter uniform as a Rust struct with the WGSL struct's name and fields, so a
//! dispatch fills fields by name instead of slots by position. A unit test checks every struct
//! here against the struct naga parses from the composed shader: names, offsets, sizes.

use bytemuck::{Pod, Zeroable};

/// A kernel's uniform: plain old data laid out as its WGSL struct (every field a 4-byte scalar,
/// padded by named `unused` fields to a multiple of 16 bytes, as uniform structs must be).
pub trait KernelParams: Pod {
    /// The shader file and the WGSL struct this mirrors.
    const WGSL: (&'static str, &'static str);
    /// (name, byte offset, byte size) of every field, in order (what the layout test compares).
    #[allow(dead_code)]
    const FIELDS: &'static [(&'static str, usize, usize)];
}

/// Declares `#[repr(C)]` Pod structs mirroring WGSL structs, with their field table.
macro_rules! kernel_params {
    ($( $(#[$doc:meta])* $name:ident in $file:literal { $($field:ident: $ty:ty),* $(,)? } )*) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name { $(pub $field: $ty),* }

        impl KernelParams for $name {
            const WGSL: (&'static str, &'static str) = ($file, stringify!($name));
            const FIELDS: &'static [(&'static str, usize, usize)] =
                &[$((stringify!($field), std::mem::offset_of!($name, $field), std::mem::size_of::<$ty>())),*];
        }
        const _: () = assert!(std::mem::size_of::<$name>() % 16 == 0, "a uniform struct's size is a multiple of 16");
    )*};
}

kernel_params! {
    /// A convolution's geometry (conv.wgsl's GEMM kernels and col2im).
    ConvParams in "conv.wgsl" {
        n: u32, in_h: u32, in_w: u32, in_c: u32,
        out_h: u32, out_w: u32, out_c: u32, k_h: u32,
        k_w: u32, stride_h: u32, stride_w: u32, pad_top: u32,
        pad_left: u32, relu: u32, k_per_split: u32, relu_mask: u32,
        dilation_h: u32, dilation_w: u32, bias: u32, direct: u32,
    }
    /// A depthwise convolution's geometry (depthwise.wgsl).
    DepthwiseParams in "depthwise.wgsl" {
        n: u32, in_h: u32, in_w: u32, channels: u32,
        multiplier: u32, out_h: u32, out_w: u32, k_h: u32,
        k_w: u32, stride_h: u32, stride_w: u32, pad_top: u32,
        pad_left: u32, dilation_h: u32, dilation_w: u32, bias: u32,
        relu: u32, k_per_split: u32, unused0: u32, unused1: u32,
    }
    /// A strided GEMM c (m, n) = a (m, k) * b (k, n) and its epilogue (matmul.wgsl).
    MatmulParams in "matmul.wgsl" {
        m: u32, n: u32, k: u32, a_row_stride: u32,
        a_col_stride: u32, b_row_stride: u32, b_col_stride: u32, bias: u32,
        relu: u32, k_per_split: u32, ones_row: u32, splits: u32,
        relu_mask: u32, direct: u32, unused1: u32, unused2: u32,
    }
    /// A max- or average-pool's geometry (pool.wgsl).
    PoolParams in "pool.wgsl" {
        n: u32, in_h: u32, in_w: u32, c: u32,
        out_h: u32, out_w: u32, size_h: u32, size_w: u32,
        stride_h: u32, stride_w: u32, relu_mask: u32, pad_top: u32,
        pad_left: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// An element-wise activation: its length, function (ActivationFn as a number) and slope
    /// or alpha (activation.wgsl).
    ActivationParams in "activation.wgsl" {
        len: u32, kind: u32, alpha: f32, unused: u32,
    }
    /// One batch gather from one chunk of the data set (data.wgsl).
    GatherParams in "data.wgsl" {
        n: u32, image_len: u32, first_image: u32, chunk_images: u32,
        total_images: u32, augmented: u32, height: u32, width: u32,
        channels: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// Rows and classes of the softmax kernels (loss.wgsl).
    LossParams in "loss.wgsl" {
        n: u32, classes: u32, label_smoothing: f32, unused1: u32,
    }
    /// Elements of an element-wise op (elementwise.wgsl).
    ElementwiseParams in "elementwise.wgsl" {
        len: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// Parameters of one Adam dispatch (adam.wgsl); cached per shape like every uniform.
    AdamShape in "adam.wgsl" {
        len: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// A BatchNormalization's rows (n * positions), channels and hyper-parameters (batchnorm.wgsl).
    BatchNormParams in "batchnorm.wgsl" {
        rows: u32, channels: u32, momentum: f32, epsilon: f32,
        relu: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// One Dropout layer's fixed mask parameters (dropout.wgsl); the step's key is a buffer.
    DropoutParams in "dropout.wgsl" {
        len: u32, layer: u32, threshold: u32, scale: f32,
    }
    /// One step's Adam scalars (adam.wgsl): written with the queue each step, not cached.
    AdamScalars in "adam.wgsl" {
        alpha: f32, beta1: f32, beta2: f32, epsilon: f32,
    }
    /// Parameters of one AdamW dispatch (adamw.wgsl).
    AdamWShape in "adamw.wgsl" {
        len: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// One step's AdamW scalars (adamw.wgsl): Adam's, the learning rate and the weight decay.
    AdamWScalars in "adamw.wgsl" {
        alpha: f32, beta1: f32, beta2: f32, epsilon: f32,
        learning_rate: f32, weight_decay: f32, unused0: f32, unused1: f32,
    }
    /// Parameters of one SGD dispatch (sgd.wgsl).
    SgdShape in "sgd.wgsl" {
        len: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// One step's SGD scalars (sgd.wgsl); nesterov is 0 or 1.
    SgdScalars in "sgd.wgsl" {
        learning_rate: f32, momentum: f32, nesterov: u32, unused0: u32,
    }
    /// Parameters of one RMSprop dispatch (rmsprop.wgsl).
    RmsPropShape in "rmsprop.wgsl" {
        len: u32, unused0: u32, unused1: u32, unused2: u32,
    }
    /// One step's RMSprop scalars (rmsprop.wgsl).
    RmsPropScalars in "rmsprop.wgsl" {
        learning_rate: f32, rho: f32, epsilon: f32, unused0: f32,
    }
}

/// A usize that a shader sees as u32. Shapes are checked to fit a buffer binding (at most
/// 4 GiB) before any op is recorded, so every count and index here fits.
pub fn u32_of(v: usize) -> u32 {
    u32::try_from(v).expect("a GPU shape fits in u32 (buffers are checked against the binding limit)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::ALL_SHADERS;

    /// (name, offset, size) of every member of `struct_name` in the composed `file`.
    fn wgsl_fields(file: &str, struct_name: &str) -> (Vec<(String, usize, usize)>, usize) {
        let source = ALL_SHADERS.iter().find(|(name, _)| *name == file).unwrap_or_else(|| panic!("no shader {file}")).1;
        let module = naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (members, span) = module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(n), naga::TypeInner::Struct { members, span }) if n == struct_name => Some((members.clone(), *span)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{file} has no struct {struct_name}"));
        let fields =
            members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize, module.types[m.ty].inner.size(module.to_ctx()) as usize)).collect();
        (fields, span as usize)
    }

    fn check<P: KernelParams>() {
        let (file, name) = P::WGSL;
        let (wgsl, span) = wgsl_fields(file, name);
        let rust: Vec<(String, usize, usize)> = P::FIELDS.iter().map(|(n, o, s)| (n.to_string(), *o, *s)).collect();
        assert_eq!(rust, wgsl, "{name}: the Rust struct and {file}'s struct differ");
        assert_eq!(std::mem::size_of::<P>(), span, "{name}: size");
    }

    #[test]
    fn every_params_struct_matches_its_wgsl_struct() {
        check::<ConvParams>();
        check::<DepthwiseParams>();
        check::<MatmulParams>();
        check::<PoolParams>();
        check::<ActivationParams>();
        check::<GatherParams>();
        check::<LossParams>();
        check::<ElementwiseParams>();
        check::<AdamShape>();
        check::<AdamScalars>();
        check::<BatchNormParams>();
        check::<DropoutParams>();
        check::<AdamWShape>();
        check::<AdamWScalars>();
        check::<SgdShape>();
        check::<SgdScalars>();
        check::<RmsPropShape>();
        check::<RmsPropScalars>();
    }

    #[test]
    fn linear_kernels_have_the_workgroup_size_linear_grid_assumes() {
        use crate::backend::gpu::recorder::LINEAR_GROUP_SIZE;
        let linear = [
            ("conv.wgsl", "conv2d_col2im"),
            ("depthwise.wgsl", "depthwise_forward"),
            ("depthwise.wgsl", "depthwise_backward_input"),
            ("depthwise.wgsl", "depthwise_backward_filter"),
            ("matmul.wgsl", "sum_split_partials"),
            ("pool.wgsl", "maxpool_forward"),
            ("pool.wgsl", "maxpool_backward"),
            ("pool.wgsl", "avgpool_forward"),
            ("pool.wgsl", "avgpool_backward"),
            ("activation.wgsl", "activation_forward"),
            ("activation.wgsl", "activation_backward"),
            ("elementwise.wgsl", "relu_backward"),
            ("loss.wgsl", "softmax"),
            ("adam.wgsl", "adam_update"),
            ("adamw.wgsl", "adamw_update"),
            ("sgd.wgsl", "sgd_update"),
            ("sgd.wgsl", "sgd_momentum_update"),
            ("rmsprop.wgsl", "rmsprop_update"),
            ("data.wgsl", "gather_batch"),
            ("batchnorm.wgsl", "batchnorm_moving_stats"),
            ("batchnorm.wgsl", "batchnorm_normalize"),
            ("batchnorm.wgsl", "batchnorm_backward_input"),
            ("dropout.wgsl", "dropout"),
        ];
        for (file, entry) in linear {
            let source = ALL_SHADERS.iter().find(|(name, _)| *name == file).unwrap().1;
            let module = naga::front::wgsl::parse_str(source).unwrap();
            let ep = module.entry_points.iter().find(|e| e.name == entry).unwrap_or_else(|| panic!("{file} has no {entry}"));
            assert_eq!(ep.workgroup_size, [LINEAR_GROUP_SIZE, 1, 1], "{file} {entry}");
        }
    }
}
