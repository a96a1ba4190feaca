"""The model builder's choices, importable without TensorFlow (the CLI's --help is instant)."""

BACKBONES: tuple[str, ...] = ("small_cnn", "mobilenet_v3_small", "efficientnet_b0", "vgg16")
TEXT_ENCODERS: tuple[str, ...] = ("lstm", "bilstm", "gru")
FUSIONS: tuple[str, ...] = ("concat", "multiply", "bilinear")
