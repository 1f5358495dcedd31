"""torchvision's state_dict keys ↔ fusionjax variable paths (torchvision.models.resnet and .densenet, v0.28)."""

from fusionjax.convert.mapping import CONV, COUNTER, LINEAR, VECTOR, KeyRule


def batchnorm(source: str, jax: str, legacy: bool = False) -> list[KeyRule]:
    """The five entries of a ``torch.nn.BatchNorm2d``, in the order torch writes them."""
    return [
        KeyRule(f"{source}.weight", f"params/{jax}/scale", VECTOR, legacy),
        KeyRule(f"{source}.bias", f"params/{jax}/bias", VECTOR, legacy),
        KeyRule(f"{source}.running_mean", f"batch_stats/{jax}/mean", VECTOR, legacy),
        KeyRule(f"{source}.running_var", f"batch_stats/{jax}/var", VECTOR, legacy),
        KeyRule(f"{source}.num_batches_tracked", f"batch_stats/{jax}/mean", COUNTER, legacy),
    ]


_DENSE_LAYER = "features.denseblock{block}.denselayer{layer}"
KEY_TABLE: tuple[KeyRule, ...] = (
    # ResNet, ResNeXt, Wide ResNet
    KeyRule("conv1.weight", "params/conv1/kernel", CONV),
    *batchnorm("bn1", "bn1"),
    KeyRule("layer{stage}.{block}.conv{n}.weight", "params/layer{stage}_{block}/conv{n}/kernel", CONV),
    *batchnorm("layer{stage}.{block}.bn{n}", "layer{stage}_{block}/bn{n}"),
    KeyRule("layer{stage}.{block}.downsample.0.weight", "params/layer{stage}_{block}/downsample_conv/kernel", CONV),
    *batchnorm("layer{stage}.{block}.downsample.1", "layer{stage}_{block}/downsample_bn"),
    KeyRule("fc.weight", "params/fc/kernel", LINEAR),
    KeyRule("fc.bias", "params/fc/bias", VECTOR),
    # DenseNet; "norm.1"-style names are those of checkpoints before torchvision 0.3, which torchvision's own
    # densenet._load_state_dict renames to "norm1" the same way.
    KeyRule("features.conv0.weight", "params/conv0/kernel", CONV),
    *batchnorm("features.norm0", "norm0"),
    KeyRule(_DENSE_LAYER + ".conv{n}.weight", "params/denseblock{block}/denselayer{layer}/conv{n}/kernel", CONV),
    *batchnorm(_DENSE_LAYER + ".norm{n}", "denseblock{block}/denselayer{layer}/norm{n}"),
    KeyRule(_DENSE_LAYER + ".conv.{n}.weight", "params/denseblock{block}/denselayer{layer}/conv{n}/kernel", CONV,
            legacy=True),
    *batchnorm(_DENSE_LAYER + ".norm.{n}", "denseblock{block}/denselayer{layer}/norm{n}", legacy=True),
    KeyRule("features.transition{block}.conv.weight", "params/transition{block}/conv/kernel", CONV),
    *batchnorm("features.transition{block}.norm", "transition{block}/norm"),
    *batchnorm("features.norm5", "norm5"),
    KeyRule("classifier.weight", "params/classifier/kernel", LINEAR),
    KeyRule("classifier.bias", "params/classifier/bias", VECTOR),
)
