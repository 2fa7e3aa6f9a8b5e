"""Reference side of examples/bench_per_sample.rs: per-sample gradients of the same models in PyTorch, with
Opacus 1.6 (GradSampleModule, hooks) and with torch.func (vmap of grad), as samples per second and as a multiple
of one batched forward+backward pass of the same batches, timed the same way (median of 3 after a warm-up).

The models are gradleak's, rebuilt here: LeNet-5 (5x5 convolutions with "same" padding, ReLU, 2x2 max-pool,
linear 120-84-10), and the GroupNorm ResNet-20 and ResNet-18 (3x3 stem, basic blocks, 1x1 convolution shortcuts
when the shape changes, GroupNorm with up to 32 groups of at least 2 channels, every convolution with a bias).

    python3 scripts/bench_per_sample_pytorch.py THREADS [MODELS]     (scripts/bench-per-sample.sh sets it up)
    python3 scripts/bench_per_sample_pytorch.py THREADS opacus-lenet5 N

The second form computes N per-sample gradients of LeNet-5 with Opacus in batches of 256, kept in memory, and
prints the seconds: the reference for the whole `gradleak grads` process.
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap


def groups(channels):
    g = 32
    while g > 1 and (channels % g != 0 or channels // g < 2):
        g //= 2
    return g


class LeNet5(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.fc1 = nn.Linear(16 * 7 * 7, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.norm1 = nn.GroupNorm(groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups(cout), cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0), nn.GroupNorm(groups(cout), cout))

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, stem, stages, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1)
        self.norm1 = nn.GroupNorm(groups(stem), stem)
        blocks, cin = [], stem
        for channels, count, stride in stages:
            for i in range(count):
                blocks.append(Block(cin, channels, stride if i == 0 else 1))
                cin = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


CASES = {
    # name: (constructor, input shape, samples measured, batch size), as in examples/bench_per_sample.rs
    "lenet5": (LeNet5, (1, 28, 28), 2048, 256),
    "resnet20": (lambda: ResNet(16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)]), (3, 32, 32), 512, 64),
    "resnet18": (lambda: ResNet(64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]), (3, 32, 32), 128, 32),
}


def median_time(f, reps=3):
    f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return sorted(times)[reps // 2]


def opacus_module(model):
    from opacus import GradSampleModule

    return GradSampleModule(model, loss_reduction="sum")


def run_opacus(gsm, batches):
    for x, y in batches:
        gsm.zero_grad(set_to_none=True)
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
        samples = [p.grad_sample for p in gsm.parameters()]
        assert samples[0].shape[0] == x.shape[0]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    if len(sys.argv) > 2 and sys.argv[2] == "opacus-lenet5":
        n = int(sys.argv[3])
        torch.manual_seed(0)
        gsm = opacus_module(LeNet5())
        x = torch.rand(n, 1, 28, 28)
        y = torch.randint(0, 10, (n,))
        start = time.perf_counter()
        kept = []
        for i in range(0, n, 256):
            gsm.zero_grad(set_to_none=True)
            F.cross_entropy(gsm(x[i : i + 256]), y[i : i + 256], reduction="sum").backward()
            kept.append([p.grad_sample.detach().clone() for p in gsm.parameters()])
        print(json.dumps({"side": "opacus", "updates": n, "threads": threads, "seconds": time.perf_counter() - start}))
        return
    wanted = sys.argv[2].split(",") if len(sys.argv) > 2 else list(CASES)
    for name in wanted:
        make, shape, n, batch = CASES[name]
        torch.manual_seed(0)
        model = make()
        x = torch.rand(n, *shape)
        y = torch.randint(0, 10, (n,))
        batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]

        def batched():
            for xb, yb in batches:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()

        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss_one(p, xi, yi):
            out = functional_call(model, p, (xi.unsqueeze(0),))
            return F.cross_entropy(out, yi.unsqueeze(0))

        per_sample_grad = vmap(grad(loss_one), in_dims=(None, 0, 0))

        def func():
            for xb, yb in batches:
                g = per_sample_grad(params, xb, yb)
                assert next(iter(g.values())).shape[0] == xb.shape[0]

        base = median_time(batched)
        results = [("batched", base), ("torch.func", median_time(func))]
        gsm = opacus_module(make())
        results.append(("opacus", median_time(lambda: run_opacus(gsm, batches))))
        for method, seconds in results:
            print(
                json.dumps(
                    {
                        "side": "pytorch",
                        "model": name,
                        "method": method,
                        "threads": threads,
                        "samples": n,
                        "batch": batch,
                        "seconds": round(seconds, 4),
                        "samples_per_s": round(n / seconds, 1),
                        "x_batched": round(seconds / base, 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
