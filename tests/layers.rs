//! The layer framework's arch text: Keras call syntax and the classic words, round trips,
//! errors that name the line, Keras auto-names and the summary's counts.

mod common;
use common::CONV_KINDS_ARCH;
use gpu_cnn::model::{format_arch, parse_arch, seed_layers, summary_table, with_classes, Activation, LayerSpec, Model, Padding, SEED_ARCH};

#[test]
fn keras_call_syntax_parses_with_several_layers_a_line() {
    let text = "Conv2D(32, (3,3), strides=2, activation=\"relu\") conv2d(8, 3, padding='same') MaxPooling2D(2)\n\
                maxpooling2d(pool_size=(3, 2), strides=[1, 2]) FLATTEN Dense(64, relu) Dense(10, activation=\"softmax\")\n";
    let layers = parse_arch(text).unwrap();
    let classes: Vec<&str> = layers.iter().map(|l| l.class()).collect();
    assert_eq!(classes, ["Conv2D", "Conv2D", "MaxPooling2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]);
    let LayerSpec::Conv2D(c) = &layers[0] else { panic!() };
    assert_eq!((c.filters, c.conv.kernel, c.conv.strides, c.conv.padding, c.conv.activation), (32, (3, 3), (2, 2), Padding::Valid, Activation::Relu));
    let LayerSpec::Conv2D(c) = &layers[1] else { panic!() };
    assert_eq!((c.filters, c.conv.kernel, c.conv.strides, c.conv.padding, c.conv.activation), (8, (3, 3), (1, 1), Padding::Same, Activation::None));
    let LayerSpec::MaxPooling2D(p) = &layers[2] else { panic!() };
    assert_eq!((p.pool.pool_size, p.pool.strides), ((2, 2), (2, 2)), "strides default to the pool size");
    let LayerSpec::MaxPooling2D(p) = &layers[3] else { panic!() };
    assert_eq!((p.pool.pool_size, p.pool.strides), ((3, 2), (1, 2)));
    let LayerSpec::Dense(d) = &layers[5] else { panic!() };
    assert_eq!((d.units, d.activation), (64, Activation::Relu), "Keras's second positional argument of Dense is its activation");
    // Keras's positional order for Conv2D: filters, kernel_size, strides, padding.
    let layers = parse_arch("Conv2D(4, 3, 2, \"same\") Flatten Dense(classes, softmax)").unwrap();
    let LayerSpec::Conv2D(c) = &layers[0] else { panic!() };
    assert_eq!((c.conv.strides, c.conv.padding), ((2, 2), Padding::Same));
}

#[test]
fn classic_and_keras_text_give_the_same_layers_and_round_trip() {
    let classic = "conv2d 32 3 relu\nmaxpool 2\nconv2d 16 3x5 stride=2 padding=same\nmaxpool 3 stride=2\nflatten\ndense 64 relu\ndense classes softmax\n";
    let keras = "Conv2D(32, 3, activation=\"relu\") MaxPooling2D(2)\n\
                 Conv2D(16, (3, 5), strides=2, padding=\"same\") MaxPooling2D(3, strides=2)\n\
                 Flatten Dense(64, activation=\"relu\") Dense(classes, activation=\"softmax\")";
    let layers = parse_arch(classic).unwrap();
    assert_eq!(parse_arch(keras).unwrap(), layers);
    let text = format_arch(&layers);
    assert_eq!(parse_arch(&text).unwrap(), layers);
    assert_eq!(
        text,
        "Conv2D(32, 3, activation=\"relu\")\nMaxPooling2D(2)\nConv2D(16, (3, 5), strides=2, padding=\"same\")\nMaxPooling2D(3, strides=2)\nFlatten\n\
         Dense(64, activation=\"relu\")\nDense(classes, activation=\"softmax\")\n"
    );
}

#[test]
fn the_seed_arch_file_is_the_seed_model() {
    assert_eq!(SEED_ARCH, include_str!("../archs/seed.txt"));
    let seed = Model::new(&seed_layers(), (32, 32, 3)).unwrap();
    assert_eq!((seed.param_count(), seed.trainable_count()), (122_570, 122_570));
    // The same layers as the classic text the seed model was written in before.
    let classic = "conv2d 32 3 relu\nmaxpool 2\nconv2d 64 3 relu\nmaxpool 2\nconv2d 64 3 relu\nflatten\ndense 64 relu\ndense classes softmax\n";
    assert_eq!(parse_arch(SEED_ARCH).unwrap(), parse_arch(classic).unwrap());
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let err = |text: &str| parse_arch(text).unwrap_err().to_string();
    let e = err("Flatten\nConv2D(8, 3) Pool(2)\n");
    assert!(e.contains("line 2") && e.contains("unknown layer 'Pool'") && e.contains("MaxPooling2D"), "{e}");
    let e = err("Conv2D(8, 3, dilation=2)");
    assert!(e.contains("line 1") && e.contains("Conv2D has no argument 'dilation'") && e.contains("strides"), "{e}");
    let e = err("Conv2D(8)");
    assert!(e.contains("needs filters and a kernel size"), "{e}");
    let e = err("Conv2D(8, 3, padding=\"full\")");
    assert!(e.contains("padding 'full' is not valid or same"), "{e}");
    let e = err("Dense(10, activation=\"swishy\")");
    assert!(e.contains("unknown activation 'swishy'"), "{e}");
    let e = err("Dense(10, units=5)");
    assert!(e.contains("'units' is given both"), "{e}");
    let e = err("Conv2D(8, 3, strides=2, strides=1)");
    assert!(e.contains("'strides' is given twice"), "{e}");
    // Keras's positional order for pooling: pool_size, strides, padding.
    let e = err("MaxPooling2D(2, 2, 2)");
    assert!(e.contains("padding '2' is not valid or same"), "{e}");
    let e = err("MaxPooling2D(2, 2, \"same\", 1)");
    assert!(e.contains("at most 3 positional"), "{e}");
    let e = err("Conv2D(8, (3, 3)");
    assert!(e.contains("')' is missing") || e.contains("expected"), "{e}");
    let e = err("Dense(strides=2, 10)");
    assert!(e.contains("positional argument 10 after a keyword"), "{e}");
    let e = err("Conv2D(8, (((((3))))))");
    assert!(e.contains("nested"), "{e}");
    let e = err("Conv2D(-8, 3)");
    assert!(e.contains("filters '-8' is not a positive whole number"), "{e}");
    let e = err("Flatten(1)");
    assert!(e.contains("Flatten takes at most 0"), "{e}");
    let e = err("# nothing\n\n");
    assert!(e.contains("no layers"), "{e}");
}

#[test]
fn auto_names_count_per_class_as_keras_does() {
    let layers = parse_arch("Conv2D(4, 3) MaxPooling2D(2) Conv2D(4, 3) Conv2D(4, 3, padding=\"same\") MaxPooling2D(1) Flatten Dense(8) Dense(3)").unwrap();
    let model = Model::new(&layers, (16, 16, 1)).unwrap();
    let names: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv2d", "max_pooling2d", "conv2d_1", "conv2d_2", "max_pooling2d_1", "flatten", "dense", "dense_1"]);
    // Checkpoint names are <layer>.<suffix> in Keras get_weights() order.
    let tensors: Vec<String> = model.layers.iter().flat_map(|l| l.params().into_iter().map(move |p| format!("{}.{}", l.name, p.suffix))).collect();
    assert_eq!(tensors[..4], ["conv2d.kernel", "conv2d.bias", "conv2d_1.kernel", "conv2d_1.bias"]);
    assert_eq!(tensors.len(), 10);
}

#[test]
fn summary_counts_total_trainable_and_non_trainable() {
    let table = summary_table(&Model::new(&seed_layers(), (32, 32, 3)).unwrap());
    assert!(table.contains("conv2d_2 (Conv2D)") && table.contains("max_pooling2d_1 (MaxPooling2D)") && table.contains("flatten (Flatten)"), "{table}");
    assert!(table.contains("Total params: 122,570 (478.79 KB)"), "{table}");
    assert!(table.contains("Trainable params: 122,570 (478.79 KB)"), "{table}");
    assert!(table.contains("Non-trainable params: 0 (0.00 B)"), "{table}");
}

#[test]
fn conv_options_depthwise_and_separable_parse_round_trip_and_count_as_keras() {
    use gpu_cnn::backend::ActivationFn;
    let layers = with_classes(&parse_arch(CONV_KINDS_ARCH).unwrap(), 4).unwrap();
    assert_eq!(parse_arch(&format_arch(&layers)).unwrap(), layers);
    let LayerSpec::Conv2D(c) = &layers[0] else { panic!() };
    assert!(!c.conv.use_bias);
    let LayerSpec::Conv2D(c) = &layers[3] else { panic!() };
    assert_eq!((c.conv.dilation, c.conv.use_bias, c.conv.activation), ((2, 2), true, Activation::Function(ActivationFn::Gelu)));
    let LayerSpec::DepthwiseConv2D(d) = &layers[4] else { panic!() };
    assert_eq!((d.conv.kernel, d.depth_multiplier, d.conv.activation), ((3, 3), 2, Activation::Relu));
    let LayerSpec::SeparableConv2D(s) = &layers[7] else { panic!() };
    assert_eq!((s.filters, s.conv.strides, s.depth_multiplier, s.conv.use_bias), (5, (2, 2), 2, false));
    // Keras's positional order: DepthwiseConv2D(kernel_size, strides, padding, depth_multiplier),
    // and `True`/`False` in any case; the classic words read the same arguments.
    assert_eq!(
        parse_arch("DepthwiseConv2D(3, 1, \"same\", 2, use_bias=false)").unwrap(),
        parse_arch("depthwise_conv2d 3 padding=same depth_multiplier=2 use_bias=FALSE").unwrap()
    );
    assert_eq!(
        format_arch(&layers[3..5]),
        "Conv2D(6, 3, dilation_rate=2, activation=\"gelu\")\nDepthwiseConv2D(3, padding=\"same\", depth_multiplier=2, activation=\"relu\")\n"
    );

    let model = Model::new(&layers, (13, 13, 3)).unwrap();
    let shapes: Vec<(&str, Vec<usize>)> = model.layers.iter().map(|l| (l.name.as_str(), l.output.clone())).collect();
    // "same" keeps 13; a 3x3 kernel at dilation 2 spans 5 pixels: 13 - 5 + 1 = 9; the (3, 2)
    // depthwise kernel at stride 2: (9 - 3) / 2 + 1 = 4 and (9 - 2) / 2 + 1 = 4; "same" at
    // stride 2: ceil(4 / 2) = 2.
    assert_eq!(shapes[3], ("conv2d_1", vec![9, 9, 6]));
    assert_eq!(shapes[4], ("depthwise_conv2d", vec![9, 9, 12]));
    assert_eq!(shapes[5], ("separable_conv2d", vec![9, 9, 7]));
    assert_eq!(shapes[6], ("depthwise_conv2d_1", vec![4, 4, 7]));
    assert_eq!(shapes[7], ("separable_conv2d_1", vec![2, 2, 5]));
    // Keras's tensors, names, shapes and order (Keras 3.15's model.summary() / layer.weights of
    // the same model; Keras 3 itself names DepthwiseConv2D's kernel plain "kernel", tf.keras 2
    // "depthwise_kernel", which we keep for both MobileNet blocks).
    let tensors: Vec<(String, Vec<usize>)> =
        model.layers.iter().flat_map(|l| l.params().into_iter().map(move |p| (format!("{}.{}", l.name, p.suffix), p.dims))).collect();
    let expect: &[(&str, &[usize])] = &[
        ("conv2d.kernel", &[3, 3, 3, 5]),
        ("batch_normalization.gamma", &[5]),
        ("batch_normalization.beta", &[5]),
        ("batch_normalization.moving_mean", &[5]),
        ("batch_normalization.moving_variance", &[5]),
        ("conv2d_1.kernel", &[3, 3, 5, 6]),
        ("conv2d_1.bias", &[6]),
        ("depthwise_conv2d.depthwise_kernel", &[3, 3, 6, 2]),
        ("depthwise_conv2d.bias", &[12]),
        ("separable_conv2d.depthwise_kernel", &[3, 3, 12, 1]),
        ("separable_conv2d.pointwise_kernel", &[1, 1, 12, 7]),
        ("separable_conv2d.bias", &[7]),
        ("depthwise_conv2d_1.depthwise_kernel", &[3, 2, 7, 1]),
        ("separable_conv2d_1.depthwise_kernel", &[3, 3, 7, 2]),
        ("separable_conv2d_1.pointwise_kernel", &[1, 1, 14, 5]),
    ];
    for (i, (name, dims)) in expect.iter().enumerate() {
        assert_eq!((tensors[i].0.as_str(), &tensors[i].1[..]), (*name, *dims), "tensor {i}");
    }
    // By hand: conv 3*3*3*5 = 135, BN 4*5 = 20, dilated conv 3*3*5*6 + 6 = 276, depthwise
    // 3*3*6*2 + 12 = 120, separable 3*3*12 + 12*7 + 7 = 199, depthwise 3*2*7 = 42, separable
    // 3*3*7*2 + 14*5 = 196, dense 5*9+9 = 54, 9*8+8 = 80, 8*6+6 = 54, 6*4+4 = 28: 1,204 in all,
    // the BN's 10 moving statistics not trainable (Keras 3.15's summary of the same model says
    // "Total params: 1,204", "Non-trainable params: 10").
    assert_eq!((model.param_count(), model.trainable_count()), (1_204, 1_194));

    let err = |text: &str| format!("{:#}", parse_arch(text).and_then(|l| Model::new(&l, (13, 13, 3)).map(|_| ())).unwrap_err());
    for (bad, says) in [
        ("Conv2D(4, 3, strides=2, dilation_rate=2) Flatten Dense(2)", "strides > 1 is not supported together with dilation_rate > 1"),
        ("Conv2D(4, 3, use_bias=maybe) Flatten Dense(2)", "use_bias maybe is not True or False"),
        ("Conv2D(4, 3, activation=\"softmax\") Flatten Dense(2)", "not softmax"),
        ("Conv2D(4, 5, dilation_rate=4) Flatten Dense(2)", "spans 17x17 pixels and does not fit its 13x13 input"),
        ("DepthwiseConv2D(3, depth_multiplier=0) Flatten Dense(2)", "depth_multiplier '0' is not a positive whole number"),
        ("DepthwiseConv2D(3, filters=4) Flatten Dense(2)", "DepthwiseConv2D has no argument 'filters'"),
        ("SeparableConv2D(3) Flatten Dense(2)", "needs filters and a kernel size"),
        ("SeparableConv2D(4, 3, 1, \"same\", 2) Flatten Dense(2)", "at most 4 positional"),
        ("Dense(4, activation=\"mish\") Dense(2)", "unknown activation 'mish'"),
    ] {
        assert!(err(bad).contains(says), "{bad}: {}", err(bad));
    }
}
