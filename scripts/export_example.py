"""Exports the example TorchScript model and the reference per-sample gradients the Rust tests compare against.

The model is not one of gradleak's built-in architectures: a small CNN for 3x16x16 images and 3 classes with
BatchNorm, a residual block and one convolution without bias. It is exported twice, with torch.jit.script and
torch.jit.trace. The reference gradients come from torch.func.vmap(torch.func.grad(...)) on fixed inputs, in
evaluation mode (BatchNorm on its running statistics, as gradleak computes per-sample gradients of a loaded
module).

It also exports `lenet_dlg.pt`, the same network as gradleak's built-in `lenet` (the DLG paper's sigmoid LeNet)
for 3x16x16 inputs and 3 classes, with the built-in's layer names: the tests load the built-in's weights into it
and compare the attacks through both.

Writes, under tests/fixtures/:
  example_cnn.pt                      torch.jit.script export
  example_cnn_traced.pt               torch.jit.trace export of the same weights
  example_cnn_reference.safetensors   inputs, labels, logits and every parameter's per-sample gradient
                                      (grad.<parameter name>, shape (N, *parameter shape))
  lenet_dlg.pt                        torch.jit.script export of the LeNet of the DLG paper

Run with scripts/export-example.sh (it installs PyTorch 2.13, the version of gradleak's libtorch, into a venv),
then `cargo test --release --test torchscript` to check gradleak against the new fixtures.
"""

import os
import sys
import zipfile

import torch
import torch.nn as nn
from safetensors.torch import save_file

CLASSES = 3
SHAPE = (3, 16, 16)
SAMPLES = 4


class Residual(nn.Module):
    """conv (no bias) - BatchNorm - ReLU - conv, plus the input, then ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.bn1(self.conv1(x)))))


class ExampleCNN(nn.Module):
    def __init__(self, channels: int = 6):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(SHAPE[0], channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block = Residual(channels)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, CLASSES))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class DlgLeNet(nn.Module):
    """gradleak's built-in `lenet`: three 5x5 convolutions ("same" padding, strides 2, 2, 1) with sigmoid, one
    linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(SHAPE[0], 12, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(12, 12, 5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(12, 12, 5, stride=1, padding=2)
        self.fc = nn.Linear(12 * (SHAPE[1] // 4) * (SHAPE[2] // 4), CLASSES)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.conv2(x))
        x = torch.sigmoid(self.conv3(x))
        return self.fc(x.flatten(1))


def save_without_debug(module: torch.jit.ScriptModule, path: str) -> None:
    """Saves a TorchScript module without its `.debug_pkl` records: they hold the source file paths of the
    machine that exported it, and loading does not need them."""
    module.save(path)
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist() if not info.filename.endswith(".debug_pkl")]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            z.writestr(info, data)


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    model = ExampleCNN()
    # Non-trivial BatchNorm statistics and affine parameters, so that evaluation mode is really tested.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.train()
        for _ in range(5):
            model(torch.rand(8, *SHAPE))
    model.eval()

    os.makedirs(out_dir, exist_ok=True)
    example = torch.rand(2, *SHAPE)
    save_without_debug(torch.jit.script(model), os.path.join(out_dir, "example_cnn.pt"))
    save_without_debug(torch.jit.trace(model, example), os.path.join(out_dir, "example_cnn_traced.pt"))

    gen = torch.Generator().manual_seed(1)
    inputs = torch.rand(SAMPLES, *SHAPE, generator=gen)
    labels = torch.randint(0, CLASSES, (SAMPLES,), generator=gen)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):
        logits = torch.func.functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, y.unsqueeze(0))

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, inputs, labels)
    tensors = {"inputs": inputs, "labels": labels, "logits": model(inputs).detach()}
    tensors.update({f"grad.{k}": v.contiguous() for k, v in grads.items()})
    save_file(tensors, os.path.join(out_dir, "example_cnn_reference.safetensors"))
    print(f"wrote {len(tensors)} tensors; parameters: {sum(p.numel() for p in params.values())}")
    save_without_debug(torch.jit.script(DlgLeNet().eval()), os.path.join(out_dir, "lenet_dlg.pt"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
