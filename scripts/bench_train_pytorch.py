"""PyTorch baseline for examples/bench_train.rs: the same LeNet-5 (same-padding 5x5 convolutions, ReLU, 2x2
max-pooling, 120-84-10 classifier), the same loop (shuffle, batch 64, Adam 1e-3, loss and accuracy read every
step, test evaluation at the end), one epoch of 10,000 random MNIST-shaped samples, best of 3.

Run: python3 scripts/bench_train_pytorch.py [THREADS]   (needs torch; scripts/bench-train.sh sets it up)
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.fc1 = nn.Linear(16 * 7 * 7, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def epoch(model, opt, x, y, batch):
    order = torch.randperm(x.shape[0])
    loss_sum, correct = 0.0, 0
    for start in range(0, x.shape[0], batch):
        idx = order[start : start + batch]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        with torch.no_grad():
            correct += (logits.argmax(-1) == yb).sum().item()
    return loss_sum, correct


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    n = 10_000
    x = torch.rand(n, 1, 28, 28)
    y = torch.randint(10, (n,))
    xt, yt = torch.rand(64, 1, 28, 28), torch.randint(10, (64,))
    best = float("inf")
    for _ in range(3):
        model = LeNet5()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        started = time.perf_counter()
        with torch.no_grad():
            model(xt)  # the initial evaluation gradleak also does
        epoch(model, opt, x, y, 64)
        with torch.no_grad():
            model(xt)
        best = min(best, time.perf_counter() - started)
    print(f"pytorch {torch.__version__} lenet5 training: {n / best:.0f} samples/s "
          f"(best of 3 epochs of {n}, batch 64, {threads} threads)")


if __name__ == "__main__":
    main()
