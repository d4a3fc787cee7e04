//! Model description: shape inference, parameter counts, the text format, clear errors.

use gpu_cnn::model::{format_arch, parse_arch, seed_layers, summary_table, Model};

#[test]
fn seed_model_parameter_counts_match_keras() {
    let cifar = Model::new(&seed_layers(), (32, 32, 3)).unwrap();
    assert_eq!(cifar.param_count(), 122_570);
    let mnist = Model::new(&seed_layers(), (28, 28, 1)).unwrap();
    assert_eq!(mnist.param_count(), 93_322);
    let names: Vec<&str> = cifar.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2", "flatten", "dense", "dense_1"]);
    assert_eq!(cifar.layers[4].output, vec![4, 4, 64]);
    assert_eq!(cifar.layers[5].output, vec![1024]);
}

#[test]
fn summary_table_shows_layers_and_totals() {
    let table = summary_table(&Model::new(&seed_layers(), (32, 32, 3)).unwrap());
    assert!(table.contains("conv2d_1 (Conv2D)"), "{table}");
    assert!(table.contains("(None, 13, 13, 64)"), "{table}");
    assert!(table.contains("18,496"), "{table}");
    assert!(table.contains("Total params: 122,570"), "{table}");
}

#[test]
fn arch_text_round_trips_with_options() {
    let text = "Conv2D 16 3x5 relu stride=2 padding=same\nMaxPooling2D 3 stride=2\nflatten\nDense 7 activation=softmax\n";
    let layers = parse_arch(text).unwrap();
    assert_eq!(parse_arch(&format_arch(&layers)).unwrap(), layers);
    let model = Model::new(&layers, (13, 13, 2)).unwrap();
    // same padding, stride 2: ceil(13/2) = 7; pool 3 stride 2 on 7: (7-3)/2+1 = 3.
    assert_eq!(model.layers[0].output, vec![7, 7, 16]);
    assert_eq!(model.layers[1].output, vec![3, 3, 16]);
    assert_eq!(model.classes(), 7);
}

#[test]
fn architecture_errors_say_what_and_where() {
    let err = parse_arch("conv2d 32 3 relu\nconv2d 3x\n").unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    let err = parse_arch("pool 2\n").unwrap_err().to_string();
    assert!(err.contains("unknown layer 'pool'"), "{err}");
    // Four 2x2 pools shrink 8x8 to 0: the error names the layer.
    let layers = parse_arch("maxpool 2\nmaxpool 2\nmaxpool 2\nmaxpool 2\nflatten\ndense 10 softmax\n").unwrap();
    let err = Model::new(&layers, (8, 8, 1)).unwrap_err().to_string();
    assert!(err.contains("layer 4 (max_pooling2d_3)") && err.contains("dimension of 0"), "{err}");
    let err = Model::new(&parse_arch("dense 10 softmax").unwrap(), (8, 8, 1)).unwrap_err().to_string();
    assert!(err.contains("Flatten"), "{err}");
    let err = Model::new(&parse_arch("flatten\ndense 10 relu").unwrap(), (8, 8, 1)).unwrap_err().to_string();
    assert!(err.contains("last layer"), "{err}");
}

#[test]
fn conv_and_pool_geometry_follow_keras() {
    use gpu_cnn::model::{conv_shape, pool_shape, Padding};
    // "same", stride (2, 1), a 3x2 kernel on 7x6: ceil(7/2) x 6 outputs; 2 rows of padding
    // split 1 top / 1 bottom, 1 column all on the right (Keras puts the odd pixel there).
    let s = conv_shape((7, 6, 3), 4, (3, 2), (2, 1), Padding::Same).unwrap();
    assert_eq!((s.out_h, s.out_w, s.out_c, s.pad_top, s.pad_left), (4, 6, 4, 1, 0));
    let s = conv_shape((13, 13, 5), 7, (3, 3), (2, 2), Padding::Same).unwrap();
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (7, 7, 1, 1));
    let s = conv_shape((5, 6, 2), 3, (3, 3), (1, 1), Padding::Valid).unwrap();
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (3, 4, 0, 0));
    assert!(conv_shape((2, 6, 2), 3, (3, 3), (1, 1), Padding::Valid).is_none(), "a valid kernel larger than its input");
    // Model::new uses the same rule.
    let model = Model::new(&parse_arch("conv2d 7 3 relu stride=2 padding=same\nflatten\ndense 2 softmax").unwrap(), (13, 13, 5)).unwrap();
    let gpu_cnn::model::LayerSpec::Conv2D(conv) = &model.layers[0].spec else { panic!("{:?}", model.layers[0].spec) };
    assert_eq!(conv.shape(&model.layers[0].input), conv_shape((13, 13, 5), 7, (3, 3), (2, 2), Padding::Same).unwrap());
    let p = pool_shape((13, 13, 5), (2, 2), (2, 2)).unwrap();
    assert_eq!((p.out_h, p.out_w), (6, 6));
    assert!(pool_shape((1, 5, 1), (2, 2), (2, 2)).is_none());
}
