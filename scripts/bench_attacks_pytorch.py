"""PyTorch baseline for examples/bench_attacks.rs: the same attacks on the same network, written as one would in
PyTorch, timed the same way.

* Network: the DLG paper's LeNet (5x5 convolutions 1->12->12->12 with strides 2, 2, 1 and padding 2, sigmoid after
  each, one linear layer 588->10), weights and biases uniform(-0.5, 0.5); one random 28x28 image, label 3.
* DLG: dummy input and label logits from randn, soft-label cross-entropy, squared L2 distance between the gradients
  summed over all layers, torch.optim.LBFGS(lr=1, history_size=100, line_search_fn="strong_wolfe", no tolerance
  stops), 100 iterations. Only the dummies' gradients are computed in the closure (torch.autograd.grad), as
  gradleak does.
* Inverting Gradients: input from randn, label fixed, cosine distance over all layers + 1e-4 total variation,
  Adam(lr=0.1) on the sign of the input gradient, MultiStepLR at 3/8, 5/8, 7/8 (gamma 0.1), clamp to [0, 1] after
  each step, 300 iterations.

Prints iterations/s and evaluations/s (best of 3) in float32 and float64.

Run: python3 scripts/bench_attacks_pytorch.py [THREADS]   (needs torch; scripts/bench-attacks.sh sets it up)
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 12, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(12, 12, 5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(12, 12, 5, stride=1, padding=2)
        self.fc = nn.Linear(12 * 7 * 7, 10)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.conv2(x))
        x = torch.sigmoid(self.conv3(x))
        return self.fc(x.flatten(1))


def soft_cross_entropy(logits, target):
    return torch.mean(torch.sum(-target * F.log_softmax(logits, dim=-1), 1))


def dlg(net, shared, iterations, seed):
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, 28, 28, generator=gen).requires_grad_(True)
    z = torch.randn(1, 10, generator=gen).requires_grad_(True)
    opt = torch.optim.LBFGS([x, z], lr=1, history_size=100, max_iter=iterations, max_eval=iterations * 30,
                            tolerance_grad=0, tolerance_change=0, line_search_fn="strong_wolfe")
    evals = [0]

    def closure():
        evals[0] += 1
        loss = soft_cross_entropy(net(x), F.softmax(z, dim=-1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        distance = sum(((g - s) ** 2).sum() for g, s in zip(grads, shared))
        x.grad, z.grad = torch.autograd.grad(distance, [x, z])
        return distance

    opt.step(closure)
    return opt.state[opt._params[0]]["n_iter"], evals[0]


def total_variation(x):
    dx = torch.mean(torch.abs(x[:, :, :, :-1] - x[:, :, :, 1:]))
    dy = torch.mean(torch.abs(x[:, :, :-1, :] - x[:, :, 1:, :]))
    return dx + dy


def inverting_gradients(net, shared, label, iterations, seed):
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, 28, 28, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.1)
    milestones = [iterations * 3 // 8, iterations * 5 // 8, iterations * 7 // 8]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    t_norm = sum((s * s).sum() for s in shared).sqrt()
    for _ in range(iterations):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), label)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        inner = sum((g * s).sum() for g, s in zip(grads, shared))
        g_norm = sum((g * g).sum() for g in grads).sqrt()
        cost = 1 - inner / (g_norm * t_norm) + 1e-4 * total_variation(x)
        (grad,) = torch.autograd.grad(cost, [x])
        x.grad = grad.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return iterations, iterations


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    for name, dtype in [("f32", torch.float32), ("f64", torch.float64)]:
        torch.manual_seed(0)
        net = LeNet().to(dtype)
        with torch.no_grad():
            for p in net.parameters():
                p.uniform_(-0.5, 0.5)
        image = torch.rand(1, 1, 28, 28, dtype=dtype)
        label = torch.tensor([3])
        loss = F.cross_entropy(net(image), label)
        shared = [g.detach() for g in torch.autograd.grad(loss, list(net.parameters()))]
        torch.set_default_dtype(dtype)
        for method, fn, iterations in [("dlg", lambda s: dlg(net, shared, 100, s), 100),
                                       ("ig", lambda s: inverting_gradients(net, shared, label, 300, s), 300)]:
            best = (0.0, 0.0)
            for seed in range(3):
                started = time.perf_counter()
                n_iter, evals = fn(seed)
                seconds = time.perf_counter() - started
                if n_iter / seconds > best[0]:
                    best = (n_iter / seconds, evals / seconds)
            print(f"pytorch {torch.__version__} {method:<4} {name}: {best[0]:7.1f} iterations/s, "
                  f"{best[1]:7.1f} evaluations/s ({iterations} iterations, best of 3, "
                  f"{threads} thread{'' if threads == 1 else 's'})")
        torch.set_default_dtype(torch.float32)


if __name__ == "__main__":
    main()
