"""PyTorch counterpart of examples/train_step.rs: ms per SwAV step (forward, Sinkhorn, loss, backward, LARS)
for the same small ResNet-18, crops, batch and thread count, and the share of the step spent in Sinkhorn.

Run: /work/main/.venv/bin/python benches/train_step.py [--threads 2] [--steps 20]
"""
import argparse, math, time
import torch, torch.nn as nn, torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--width", type=int, default=16)
p.add_argument("--device", default="cpu")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
dev = torch.device(a.device)

# Same config as examples/train_step.rs: 2×32 px + 2×16 px crops, K 100, feat 128, hidden 512.
NMB_CROPS, SIZE_CROPS, K, FEAT, HIDDEN = [2, 2], [32, 16], 100, 128, 512

class Block(nn.Module):
    def __init__(s, cin, cout, stride):
        super().__init__()
        s.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); s.bn1 = nn.BatchNorm2d(cout)
        s.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); s.bn2 = nn.BatchNorm2d(cout)
        s.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else nn.Sequential()
    def forward(s, x):
        y = s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x)))))
        return F.relu(s.downsample(x) + y)

class Net(nn.Module):
    def __init__(s, w):
        super().__init__()
        s.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False); s.bn1 = nn.BatchNorm2d(w)
        layers, c = [], w
        for i, m in enumerate([1, 2, 4, 8]):
            layers.append(nn.Sequential(Block(c, w * m, 1 if i == 0 else 2), Block(w * m, w * m, 1))); c = w * m
        s.layer1, s.layer2, s.layer3, s.layer4 = layers
        s.projection_head = nn.Sequential(nn.Linear(c, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(inplace=True), nn.Linear(HIDDEN, FEAT))
        s.prototypes = nn.Linear(FEAT, K, bias=False)
    def backbone(s, x):
        x = F.relu(s.bn1(s.conv1(x)))
        x = s.layer4(s.layer3(s.layer2(s.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
    def forward(s, crops):
        outs, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]: end += 1
            outs.append(s.backbone(torch.cat(crops[start:end]))); start = end
        z = F.normalize(s.projection_head(torch.cat(outs)), dim=1)
        return z, s.prototypes(z)

@torch.no_grad()
def sinkhorn(out, eps=0.05, iters=3):  # main_swav.py distributed_sinkhorn, one process
    Q = torch.exp(out / eps).t(); B, Kk = Q.shape[1], Q.shape[0]
    Q /= Q.sum()
    for _ in range(iters):
        Q /= Q.sum(1, keepdim=True); Q /= Kk
        Q /= Q.sum(0, keepdim=True); Q /= B
    return (Q * B).t()

model = Net(a.width).to(dev)
params = sorted(model.named_parameters())
bufs = {n: torch.zeros_like(p) for n, p in params}

@torch.no_grad()
def lars_step(lr, wd=1e-6, mom=0.9, trust=0.001):
    for n, p in params:
        if p.grad is None: continue
        d = p.grad.clone()
        if p.dim() > 1:
            pn, gn = p.norm().item(), p.grad.norm().item()
            if pn != 0 and gn != 0:
                d = (d + wd * p) * (trust * pn / (gn + pn * wd + 1e-8))
        bufs[n].mul_(mom).add_(d); p.add_(bufs[n], alpha=-lr)

g = torch.Generator().manual_seed(1)
crops = [torch.rand(a.batch, 3, s, s, generator=g).to(dev) for n, s in zip(NMB_CROPS, SIZE_CROPS) for _ in range(n)]
V, bs = len(crops), a.batch
sk_time = 0.0

def step():
    global sk_time
    with torch.no_grad():
        w = F.normalize(model.prototypes.weight.data.clone(), dim=1); model.prototypes.weight.copy_(w)
    _, out = model(crops)
    loss = 0
    for c in [0, 1]:
        t0 = time.perf_counter()
        q = sinkhorn(out[bs * c: bs * (c + 1)].detach())
        sk_time += time.perf_counter() - t0
        sub = 0
        for v in range(V):
            if v == c: continue
            sub -= torch.mean(torch.sum(q * F.log_softmax(out[bs * v: bs * (v + 1)] / 0.1, dim=1), dim=1))
        loss += sub / (V - 1)
    loss /= 2
    for p_ in model.parameters(): p_.grad = None
    loss.backward()
    lars_step(0.1)
    return loss.item()

for _ in range(a.warmup): step()
sk_time = 0.0
t0 = time.perf_counter()
for _ in range(a.steps): step()
dt = (time.perf_counter() - t0) / a.steps
print(f"pytorch ms_per_step={dt*1e3:.2f} sinkhorn_share={sk_time/a.steps/dt:.4f} threads={a.threads} batch={a.batch} width={a.width} torch={torch.__version__}")
