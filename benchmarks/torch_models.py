"""The PyTorch side of the comparisons: the reference models and the calls timed on them.

torchvision's ImageNet models are the references for the ImageNet architectures; He et al.'s CIFAR ResNets
(option-A shortcuts), which torchvision does not ship, are written out here. The training step is what a PyTorch
user writes: forward, cross-entropy, backward, ``torch.optim.SGD`` with momentum, BatchNorm in train mode.
"""

from typing import Callable

import numpy as np

import fusionjax


def cifar_resnet(depth: int, num_classes: int = 10):
    """He et al. 2016 §4.2's CIFAR ResNet: 3×3 convolutions, 16/32/64 channels, zero-padded identity shortcuts."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, in_channels: int, channels: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.stride, self.extra_channels = stride, channels - in_channels

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            shortcut = x
            if self.stride > 1 or self.extra_channels:  # option A: subsample, then pad the new channels with zeros
                half = self.extra_channels // 2
                shortcut = nn.functional.pad(x[:, :, :: self.stride, :: self.stride],
                                             (0, 0, 0, 0, half, self.extra_channels - half))
            return torch.relu(y + shortcut)

    blocks_per_stage = (depth - 2) // 6
    layers, in_channels = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, channels in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            layers.append(BasicBlock(in_channels, channels, 2 if stage > 0 and block == 0 else 1))
            in_channels = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def reference_model(name: str, num_classes: int | None = None):
    """The PyTorch model of the registered architecture ``name``: torchvision's, or ``cifar_resnet``."""
    from fusionjax.torch_compat import import_torchvision

    spec = fusionjax.get_model_spec(name)
    num_classes = num_classes or spec.num_classes
    if spec.torchvision:
        return getattr(import_torchvision().models, spec.torchvision)(num_classes=num_classes)
    if name.startswith("resnet") and name[6:].isdigit() and (int(name[6:]) - 2) % 6 == 0:
        return cifar_resnet(int(name[6:]), num_classes)
    raise ValueError(f"benchmarks: no PyTorch reference for {name!r}; use a torchvision architecture or a CIFAR "
                     "ResNet (resnet20, resnet32, resnet44, resnet56, resnet110).")


def synthetic_batch(batch: int, size: int, num_classes: int, device: str = "cpu", memory_format=None):
    """Standard-normal NCHW images (in ``memory_format``) and random labels, from NumPy's seed 0."""
    import torch

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32)).to(device)
    labels = torch.from_numpy(rng.integers(0, num_classes, batch)).to(device)
    return images.contiguous(memory_format=memory_format or torch.contiguous_format), labels


def forward_call(module, images, autocast: Callable, sync: Callable) -> Callable[[], None]:
    """One evaluation-mode forward, without autograd."""
    import torch

    module.eval()

    def run():
        with torch.inference_mode(), autocast():
            module(images)
        sync()

    return run


def train_call(module, images, labels, autocast: Callable, sync: Callable, learning_rate: float,
               momentum: float) -> Callable[[], None]:
    """One SGD-momentum training step, BatchNorm in train mode."""
    import torch

    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate, momentum=momentum)

    def run():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(module(images), labels)
        loss.backward()
        optimizer.step()
        sync()

    return run
