"""biaslab's PyTorch reference harness: the SwAV reference training loop (facebookresearch/swav main_swav.py,
src/multicropdataset.py, src/resnet50.py's projection head and prototypes), the SimCLR baseline, MoCo v2
(facebookresearch/moco moco/builder.py, main_moco.py with --mlp --aug-plus) and DINO (facebookresearch/dino
main_dino.py DINOLoss and train_one_epoch, utils.cosine_scheduler), run on a biaslab dataset folder with the
settings of a biaslab training config, so both programs can be compared at equal settings (`make bench`,
benches/run.sh).

Subcommands (run with the project virtualenv, e.g. `.venv/bin/python benches/reference.py train ...`):

  train --data DIR --probe DIR --out DIR [--config TOML] [--epochs N] [--threads T] [--workers W]
      Trains with the keys of biaslab's TrainConfig read from the TOML (same names and defaults as
      src/train/config.rs), printing one JSON line per epoch (loss, loss over the method's uniform-prediction
      loss with that normaliser's name, seconds per step) and the kNN accuracy on the probe (leave-one-out,
      weighted k 20, τ 0.07) before and after training; writes DIR/result.json.
  knn --embeddings PARQUET
      The same kNN on a `biaslab embed` Parquet (image crops), so both programs' probes use one code path.
  case --out DIR
      The optimiser and Sinkhorn cases that tests/reference.rs checks biaslab against (case.pt).

What follows the reference exactly: per-image PIL multi-crop (RandomResizedCrop → flip → RandomApply(
ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p) → RandomGrayscale(p) → PIL Gaussian blur p, radius U(0.1, 2) →
Normalize), Linear-BN-ReLU-Linear head, L2-normalised features and prototypes, Sinkhorn in the exp form,
the swapped-prediction loss, the queue, prototype freezing, apex LARC around SGD, linear warm-up + cosine.
MoCo v2: the queue of moco_k keys initialised as normalize(randn(dim, K)), the circular queue_ptr, the
momentum (EMA) key encoder, logits cat(l_pos, l_neg) / T with label 0, keys from view 1 for queries from
view 0. DINO: DINOLoss (centre, sharpening, the teacher-temperature warm-up by epoch, skipping v == iq,
update_center after the loss), the teacher fed the 2 global crops, its momentum on
cosine_scheduler(momentum_teacher, 1, epochs, niter_per_ep).
What follows biaslab where the reference has no answer: the small-image ResNet-18 (3×3 stride-1 stem, no
max-pool, width `width`), the eval transform (centre square → resize), and the options that reproduce its
choices (`exclude_bias_n_norm`, `init = "tch"`).
Deviations that biaslab makes on purpose, so that the four objectives differ in the objective alone: MoCo and
DINO use the same model, augmentations, optimiser and lr schedule as SwAV here (MoCo's head is Linear-BN-ReLU-
Linear, not Linear-ReLU-Linear; DINO's head is that projection head + L2 norm + the SwAV prototypes, not
DINOHead's 3-layer GELU MLP; no weight-decay schedule; one colour distortion for all crops, no DINO
solarization or per-crop blur probabilities). Single process: MoCo has no shuffle BN (_batch_shuffle_ddp
needs several GPUs), so its key encoder's BatchNorm sees the same batch it encodes. DINO's last layer is the
SwAV prototype matrix whose rows are renormalised in place before every step (DINOHead: weight_norm with g
fixed at 1): the same forward, but the gradient is taken on the unit rows, not through the normalisation;
it is frozen for freeze_prototypes_niters steps as SwAV's prototypes (main_dino.py: freeze_last_layer epochs).
The probe reads the student (MoCo's encoder_q); the teacher's probe is printed beside it for MoCo and DINO.
"""
import argparse
import copy
import json
import math
import os
import random
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torchvision import transforms

# src/multicropdataset.py: Normalize(mean, std) (the reference's 0.228 for red, sic)
MEAN = [0.485, 0.456, 0.406]
STD = [0.228, 0.224, 0.225]
# DESIGN.md, kNN accuracy: weighted kNN, k = 20, τ = 0.07
KNN_K, KNN_TAU = 20, 0.07
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# biaslab's TrainConfig::default() (src/train/config.rs); a TOML overrides these under the same names.
DEFAULTS = {
    "method": "swav", "nmb_crops": [2, 4], "size_crops": [64, 32], "min_scale_crops": [0.14, 0.05],
    "max_scale_crops": [1.0, 0.14], "jitter_strength": 1.0, "jitter_prob": 0.8, "grayscale_prob": 0.2,
    "blur_prob": 0.5, "crops_for_assign": [0, 1], "temperature": 0.1, "epsilon": 0.05,
    "sinkhorn_iterations": 3, "feat_dim": 128, "nmb_prototypes": [100], "queue_length": 480,
    "epoch_queue_starts": 15, "epochs": 100, "batch_size": 32, "steps_per_epoch": 100, "base_lr": 0.075,
    "final_lr": 0.000075, "warmup_epochs": 5, "start_warmup": 0.0, "wd": 1e-6, "optimizer": "lars",
    "momentum": 0.9, "trust_coefficient": 0.001, "exclude_bias_n_norm": True,
    "freeze_prototypes_niters": 100, "arch": "resnet18", "width": 16, "small_images": True,
    "hidden_mlp": 512, "seed": 31, "device": "cpu", "use_fp16": True,
    # TOML tables [moco] and [dino]: filled key by key, so a table that names some keys keeps the rest.
    # main_moco.py --moco-k 65536 / --moco-m 0.999 at ImageNet scale, shortened for small sets and short runs;
    # --moco-t 0.2 is MoCo v2's. moco_m_cos: momentum on DINO's cosine schedule from moco_m to 1.
    "moco": {"moco_k": 1024, "moco_m": 0.99, "moco_t": 0.2, "moco_m_cos": False},
    # main_dino.py's names; teacher_temp 0.07 with a 30-epoch warm-up from 0.04 is its README's "boosted"
    # recipe; warmup_teacher_temp_epochs is clipped to the run's epochs.
    "dino": {"momentum_teacher": 0.996, "teacher_temp": 0.07, "warmup_teacher_temp": 0.04,
             "warmup_teacher_temp_epochs": 30, "student_temp": 0.1, "center_momentum": 0.9},
}
TABLES = ("moco", "dino")
METHODS = ("swav", "simclr", "moco", "dino")
# Per-method defaults under the flat keys, for what a TOML leaves out. MoCo v2 (main_moco.py --aug-plus): two
# views at RandomResizedCrop scale (0.2, 1) of the large crop size, ColorJitter(0.4, 0.4, 0.4, 0.1) = s 0.5,
# grayscale 0.2, blur 0.5. DINO: SwAV's multi-crop (its ResNet-50 README command uses these scales) at s 0.5,
# and more prototypes than SwAV (main_dino.py --out_dim 65536 at ImageNet scale).
METHOD_DEFAULTS = {
    "moco": {"nmb_crops": [2], "size_crops": [DEFAULTS["size_crops"][0]], "min_scale_crops": [0.2],
             "max_scale_crops": [1.0], "jitter_strength": 0.5, "grayscale_prob": 0.2, "blur_prob": 0.5},
    "dino": {"jitter_strength": 0.5, "nmb_prototypes": [1024]},
}


def load_config(path, overrides):
    given = {}
    if path:
        with open(path, "rb") as f:
            given = tomllib.load(f)
        unknown = sorted(set(given) - set(DEFAULTS))
        for t in TABLES:
            if t in given and not isinstance(given[t], dict):
                sys.exit(f"{path}: {t} must be a table ([{t}])")
            unknown += [f"{t}.{k}" for k in sorted(set(given.get(t, {})) - set(DEFAULTS[t]))]
        if unknown:
            sys.exit(f"{path}: keys biaslab's TrainConfig does not have: {unknown}")
    method = overrides.get("method") or given.get("method", DEFAULTS["method"])
    if method not in METHODS:
        sys.exit(f"method {method!r}: the harness implements {list(METHODS)}")
    cfg = {**DEFAULTS, **METHOD_DEFAULTS.get(method, {})}
    cfg.update({k: v for k, v in given.items() if k not in TABLES})
    for t in TABLES:
        cfg[t] = {**DEFAULTS[t], **given.get(t, {})}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if cfg["arch"] != "resnet18" or not cfg["small_images"]:
        sys.exit("the harness implements the small-image ResNet-18 only (arch resnet18, small_images true)")
    if len(cfg["nmb_prototypes"]) != 1:
        sys.exit("the harness implements one prototype head (nmb_prototypes of length 1)")
    if method == "dino" and cfg["nmb_crops"][0] != 2:
        # main_dino.py: the teacher takes images[:2], the 2 global crops
        sys.exit(f"dino: the first crop group holds the 2 global crops the teacher sees; got nmb_crops "
                 f"{cfg['nmb_crops']}")
    if method == "moco":
        mk, bs = cfg["moco"]["moco_k"], cfg["batch_size"]
        if mk <= 0:
            sys.exit(f"moco: moco_k {mk} must be a positive multiple of batch_size {bs}")
        if mk % bs:
            # moco/builder.py _dequeue_and_enqueue asserts K % batch_size == 0; biaslab's fit_to_run rounds
            # up to the next multiple, with a note, and so does the harness
            cfg["moco"]["moco_k"] = (mk + bs - 1) // bs * bs
            note(f"moco.moco_k {mk} is not a multiple of batch_size {bs}; using {cfg['moco']['moco_k']}")
    if method == "dino" and cfg["dino"]["warmup_teacher_temp_epochs"] > cfg["epochs"] >= 1:
        # the reference's np.ones(nepochs - warmup_teacher_temp_epochs) fails for a shorter run: biaslab's
        # fit_to_run warms up over the whole run instead
        note(f"dino.warmup_teacher_temp_epochs {cfg['dino']['warmup_teacher_temp_epochs']} exceeds the run's "
             f"{cfg['epochs']} epoch(s); using {cfg['epochs']}")
        cfg["dino"]["warmup_teacher_temp_epochs"] = cfg["epochs"]
    return cfg


def note(text):
    """A change the harness made to the config, as biaslab prints it ("note: ...")."""
    print(json.dumps({"note": text}), flush=True)


# ------------------------------------------------------------------------------------------------- data
def list_images(root):
    """(path, label) for every image under root/images (biaslab's dataset layout) or root, sorted; the label
    is the first folder below that root ('' for files directly in it)."""
    base = os.path.join(root, "images") if os.path.isdir(os.path.join(root, "images")) else root
    out = []
    for d, _, files in os.walk(base):
        for f in files:
            if f.lower().endswith(IMAGE_EXT):
                p = os.path.join(d, f)
                rel = os.path.relpath(p, base).split(os.sep)
                out.append((p, rel[0] if len(rel) > 1 else ""))
    if not out:
        sys.exit(f"{root}: no images")
    return sorted(out)


class PILRandomGaussianBlur:
    """src/multicropdataset.py PILRandomGaussianBlur(p, radius_min=0.1, radius_max=2.), drawing from torch's
    RNG so DataLoader workers are seeded."""

    def __init__(self, p, radius_min=0.1, radius_max=2.0):
        self.p, self.lo, self.hi = p, radius_min, radius_max

    def __call__(self, img):
        if self.p <= 0 or float(torch.rand(())) > self.p:  # reference: np.random.rand() <= p applies it
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(()).uniform_(self.lo, self.hi))))


def crop_transforms(cfg):
    """One torchvision transform per crop, in output order (src/multicropdataset.py MultiCropDataset)."""
    s = cfg["jitter_strength"]
    color = [
        transforms.RandomApply([transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=cfg["jitter_prob"]),
        transforms.RandomGrayscale(p=cfg["grayscale_prob"]),
        PILRandomGaussianBlur(cfg["blur_prob"]),
    ]
    if cfg["method"] in ("simclr", "moco"):  # biaslab: two views of the first group's size and scale
        groups = [(2, cfg["size_crops"][0], cfg["min_scale_crops"][0], cfg["max_scale_crops"][0])]
    else:
        groups = zip(cfg["nmb_crops"], cfg["size_crops"], cfg["min_scale_crops"], cfg["max_scale_crops"])
    out = []
    for n, size, lo, hi in groups:
        t = transforms.Compose([transforms.RandomResizedCrop(size, scale=(lo, hi)),
                                transforms.RandomHorizontalFlip(p=0.5), *color, transforms.ToTensor(),
                                transforms.Normalize(MEAN, STD)])
        out.extend([t] * n)
    return out


class MultiCropDataset(torch.utils.data.Dataset):
    """Images held decoded in memory (the composed sets are small); every item is the list of its crops."""

    def __init__(self, items, trans):
        self.images = [Image.open(p).convert("RGB") for p, _ in items]
        self.trans = trans

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return [t(self.images[i]) for t in self.trans]


def eval_batch(items, size):
    """biaslab's EvalTransform: the centred square of the shorter side, resized to size, normalised."""
    norm = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    out = []
    for p, _ in items:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = min(w, h)
        x, y = (w - s) // 2, (h - s) // 2
        out.append(norm(im.crop((x, y, x + s, y + s)).resize((size, size), Image.BILINEAR)))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ model
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Net(nn.Module):
    """Small-image ResNet-18 (torchvision names) + projection_head + prototypes (src/resnet50.py)."""

    def __init__(self, width, hidden_mlp, feat_dim, nmb_prototypes, init="reference"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, mult in enumerate([1, 2, 4, 8]):
            c = width * mult
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1)))
            cin = c
        if hidden_mlp == 0:
            self.projection_head = nn.Linear(cin, feat_dim)
        else:
            self.projection_head = nn.Sequential(nn.Linear(cin, hidden_mlp), nn.BatchNorm1d(hidden_mlp),
                                                 nn.ReLU(inplace=True), nn.Linear(hidden_mlp, feat_dim))
        self.prototypes = nn.Linear(feat_dim, nmb_prototypes, bias=False) if nmb_prototypes else None
        for m in self.modules():
            if init == "reference":  # src/resnet50.py ResNet.__init__
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
            else:  # tch 0.24 defaults: kaiming-uniform fan-in weights, BN γ ~ U(0, 1), β = 0
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                    nn.init.uniform_(m.weight, 0.0, 1.0)
                    nn.init.constant_(m.bias, 0)

    def backbone(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, crops):
        """One backbone pass per run of equal-size crops (resnet50.py forward), then head, L2 norm, scores."""
        feats, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        z = F.normalize(self.projection_head(torch.cat(feats)), dim=1, p=2)
        return z, (self.prototypes(z) if self.prototypes is not None else None)


# ------------------------------------------------------------------------------------------- optimiser
class Larc:
    """apex.parallel.LARC(optimizer, trust_coefficient, clip=False, eps=1e-8) around torch.optim.SGD: for
    every parameter with a gradient and non-zero norms, grad ← η‖w‖/(‖g‖ + wd‖w‖ + eps) · (grad + wd·w),
    and SGD then runs without its own weight decay. `exclude` names parameters that keep their plain
    gradient and get no decay (biaslab's `exclude_bias_n_norm`)."""

    def __init__(self, sgd, trust_coefficient, exclude=lambda p: False, eps=1e-8):
        self.sgd, self.eta, self.exclude, self.eps = sgd, trust_coefficient, exclude, eps
        self.param_groups = sgd.param_groups

    def zero_grad(self):
        self.sgd.zero_grad()

    @torch.no_grad()
    def step(self):
        saved = [g["weight_decay"] for g in self.sgd.param_groups]
        for group, wd in zip(self.sgd.param_groups, saved):
            group["weight_decay"] = 0
            for p in group["params"]:
                if p.grad is None or self.exclude(p):
                    continue
                w_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                if w_norm != 0 and g_norm != 0:
                    p.grad.add_(p, alpha=wd).mul_(self.eta * w_norm / (g_norm + w_norm * wd + self.eps))
        self.sgd.step()
        for group, wd in zip(self.sgd.param_groups, saved):
            group["weight_decay"] = wd


def make_optimizer(model, cfg):
    excl = (lambda p: p.dim() <= 1) if cfg["exclude_bias_n_norm"] else (lambda p: False)
    if cfg["optimizer"] == "sgd":
        # weight decay only where biaslab applies it: two groups when rank ≤ 1 parameters are excluded
        decay = [p for p in model.parameters() if not excl(p)]
        no_decay = [p for p in model.parameters() if excl(p)]
        groups = [{"params": decay, "weight_decay": cfg["wd"]}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.SGD(groups, lr=cfg["base_lr"], momentum=cfg["momentum"])
    sgd = torch.optim.SGD(model.parameters(), lr=cfg["base_lr"], momentum=cfg["momentum"], weight_decay=cfg["wd"])
    return Larc(sgd, cfg["trust_coefficient"], excl)


def lr_schedule(cfg, steps_per_epoch):
    """main_swav.py: np.linspace warm-up from start_warmup to base_lr, then cosine to final_lr."""
    warm_n = steps_per_epoch * cfg["warmup_epochs"]
    cos_n = steps_per_epoch * (cfg["epochs"] - cfg["warmup_epochs"])
    b, f, s = cfg["base_lr"], cfg["final_lr"], cfg["start_warmup"]
    warm = [s + (b - s) * i / (warm_n - 1) for i in range(warm_n)] if warm_n > 1 else [s] * warm_n
    return warm + [f + 0.5 * (b - f) * (1 + math.cos(math.pi * t / cos_n)) for t in range(cos_n)]


def linspace(start, stop, num):
    """np.linspace(start, stop, num) as a list: start + i·step, the last value exactly stop."""
    if num <= 0:
        return []
    if num == 1:
        return [start]
    step = (stop - start) / (num - 1)
    return [start + i * step for i in range(num - 1)] + [stop]


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep):
    """dino utils.cosine_scheduler without warm-up: one value per step, cosine from base_value towards
    final_value over epochs × niter_per_ep steps (the last value stops one step short of final_value)."""
    n = epochs * niter_per_ep
    return [final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / n)) for i in range(n)]


@torch.no_grad()
def momentum_update(student, teacher, m):
    """moco/builder.py _momentum_update_key_encoder, main_dino.py's "EMA update for the teacher": over
    parameters only (BatchNorm running statistics are the teacher's own, from its train-mode forwards)."""
    for param_q, param_k in zip(student.parameters(), teacher.parameters()):
        param_k.mul_(m).add_(param_q.detach().mul(1.0 - m))


# ----------------------------------------------------------------------------------- sinkhorn and losses
@torch.no_grad()
def sinkhorn(out, epsilon, iters):
    """main_swav.py distributed_sinkhorn (one process): Q = exp(S/ε)ᵀ [K, B], rows to 1/K, columns to 1/B."""
    Q = torch.exp(out / epsilon).t()
    K, B = Q.shape
    Q /= torch.sum(Q)
    for _ in range(iters):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()  # [B, K]


def nt_xent(z1, z2, tau):
    """SimCLR NT-Xent over 2B views: each view's positive is its pair, the other 2B − 2 are negatives."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = (z @ z.t() / tau).fill_diagonal_(float("-inf"))
    return F.cross_entropy(sim, (torch.arange(2 * n) + n) % (2 * n))


def moco_loss(q, k, queue, t):
    """moco/builder.py MoCo.forward from the normalised q and k: logits cat(l_pos, l_neg) / T over the key and
    the queue (a copy, as queue.clone().detach(): the queue is written before backward), label 0."""
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", [q, queue.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


class DINOLoss(nn.Module):
    """main_dino.py DINOLoss (one process: update_center's all_reduce is the identity), plus the collapse
    signals of the DINO paper §5.3 (Fig. 7) computed on the same centred, sharpened teacher distribution."""

    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs,
                 nepochs, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        # the reference's np.concatenate((np.linspace(warm, teacher, W), np.ones(nepochs - W) * teacher))
        self.teacher_temp_schedule = (linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs)
                                      + [teacher_temp] * (nepochs - warmup_teacher_temp_epochs))
        self.stats = {}

    def forward(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        # teacher centering and sharpening
        temp = self.teacher_temp_schedule[epoch]
        teacher_logits = (teacher_output - self.center) / temp
        teacher_out = F.softmax(teacher_logits, dim=-1).detach().chunk(2)
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:  # the reference skips the pairs where student and teacher see the same view
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        with torch.no_grad():
            # collapse signals: uniform collapse drives the entropies to ln K, collapse onto one dimension
            # drives them to 0; either collapse drives KL(teacher ‖ student) to 0 (paper §5.3)
            log_t = F.log_softmax(teacher_logits.detach(), dim=-1)
            p_t = log_t.exp()
            mean_p = p_t.mean(0)
            kl, n = 0.0, 0
            for iq, lq in enumerate(log_t.chunk(2)):
                for v in range(len(student_out)):
                    if v != iq:
                        ls = F.log_softmax(student_out[v].detach(), dim=-1)
                        kl += float(torch.sum(lq.exp() * (lq - ls), dim=-1).mean())
                        n += 1
            self.stats = {"teacher_temp": temp,
                          "teacher_entropy_of_batch_mean": float(-torch.xlogy(mean_p, mean_p).sum()),
                          "teacher_entropy_per_image": float(-(p_t * log_t).sum(-1).mean()),
                          "kl_teacher_student": kl / n}
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
        # ema update
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


# ---------------------------------------------------------------------------------------------- probe
def knn_loo(feats, labels):
    """Leave-one-out weighted kNN accuracy (k 20, τ 0.07) on L2-normalised features, with its 95% bootstrap
    interval over images (1,000 seeded resamples) and chance (the largest class share)."""
    f = F.normalize(feats.double(), dim=1)
    names = sorted(set(labels))
    y = torch.tensor([names.index(l) for l in labels])
    sim = f @ f.t()
    sim.fill_diagonal_(float("-inf"))
    k = min(KNN_K, len(labels) - 1)
    s, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(labels), len(names), dtype=torch.float64)
    votes.scatter_add_(1, y[idx], torch.exp(s / KNN_TAU))
    hit = (votes.argmax(1) == y).double()
    g = torch.Generator().manual_seed(0)
    boot = hit[torch.randint(len(hit), (1000, len(hit)), generator=g)].mean(1).sort().values
    chance = max(labels.count(l) for l in names) / len(labels)
    return {"acc": float(hit.mean()), "ci95": [float(boot[24]), float(boot[974])], "chance": chance,
            "n": len(labels), "classes": len(names)}


@torch.no_grad()
def probe(model, x, labels):
    model.eval()
    f = torch.cat([model.backbone(x[i:i + 256]) for i in range(0, len(x), 256)])
    model.train()
    return knn_loo(f, labels)


# ---------------------------------------------------------------------------------------------- train
def train(a):
    cfg = load_config(a.config, {"epochs": a.epochs, "seed": a.seed, "method": a.method,
                                 "batch_size": a.batch_size})
    torch.set_num_threads(a.threads)
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    os.makedirs(a.out, exist_ok=True)
    method = cfg["method"]
    swav, moco, dino = method == "swav", method == "moco", method == "dino"
    items = list_images(a.data)
    ds = MultiCropDataset(items, crop_transforms(cfg))
    bs = cfg["batch_size"]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=a.workers,  # main_swav.py: drop_last
        generator=torch.Generator().manual_seed(cfg["seed"]), persistent_workers=a.workers > 0,
        collate_fn=lambda b: [torch.stack(c) for c in zip(*b)])
    spe = len(loader)
    if spe == 0:
        sys.exit(f"{a.data}: {len(ds)} images, fewer than one batch of {bs}")
    E = cfg["epochs"]
    K = cfg["nmb_prototypes"][0]
    # prototypes where the objective reads them (SwAV's codes, DINO's last layer); SimCLR and MoCo use z alone,
    # so their prototypes would get no gradient and take no part: they are not built
    protos = swav or dino
    model = Net(cfg["width"], cfg["hidden_mlp"], cfg["feat_dim"], K if protos else 0, a.init)
    teacher, moms, moco_queue, dino_loss = None, None, None, None
    if moco or dino:
        # moco/builder.py: encoder_k's parameters copied from encoder_q, requires_grad False; main_dino.py:
        # teacher.load_state_dict(student.state_dict()). Kept in train mode as both references do (BatchNorm
        # on batch statistics, its own running statistics).
        teacher = copy.deepcopy(model)
        for p in teacher.parameters():
            p.requires_grad = False
        teacher.train()
    if moco and cfg["moco"]["moco_k"] > spe * bs:
        # biaslab's fit_to_data: a queue longer than an epoch's images would hold two keys of one image, one
        # the other's negative (MoCo's 65,536 keys are 5% of ImageNet); cut to one epoch, a multiple of bs
        note(f"moco.moco_k {cfg['moco']['moco_k']} exceeds the {spe * bs} images an epoch trains on; using "
             f"{spe * bs}")
        cfg["moco"]["moco_k"] = spe * bs
    if moco:
        mc = cfg["moco"]
        # a constant momentum as MoCo v2, or DINO's cosine increase to 1 over all steps (moco_m_cos)
        moms = cosine_scheduler(mc["moco_m"], 1, E, spe) if mc["moco_m_cos"] else [mc["moco_m"]] * (E * spe)
        # moco/builder.py: queue = normalize(randn(dim, K), dim=0), held here as K rows of keys; queue_ptr 0
        moco_queue = F.normalize(torch.randn(cfg["feat_dim"], mc["moco_k"]), dim=0).t().contiguous()
        queue_ptr = 0
    if dino:
        dc = cfg["dino"]
        # main_dino.py: momentum_schedule = utils.cosine_scheduler(args.momentum_teacher, 1, epochs, len(loader))
        moms = cosine_scheduler(dc["momentum_teacher"], 1, E, spe)
        dino_loss = DINOLoss(K, sum(cfg["nmb_crops"]), dc["warmup_teacher_temp"], dc["teacher_temp"],
                             dc["warmup_teacher_temp_epochs"], E, dc["student_temp"], dc["center_momentum"])
    opt = make_optimizer(model, cfg)
    lrs = lr_schedule(cfg, spe)
    V = len(crop_transforms(cfg))
    cfa = cfg["crops_for_assign"]
    # the loss of uniform predictions: SwAV and DINO over K prototypes, NT-Xent over 2B − 1 candidates, MoCo
    # over the key and moco_k queued negatives
    normaliser, ln_k = {"swav": ("ln K", math.log(K)), "dino": ("ln K", math.log(K)),
                        "simclr": ("ln(2B-1)", math.log(2 * bs - 1)),
                        "moco": ("ln(1+moco_k)", math.log(1 + cfg["moco"]["moco_k"]))}[method]
    qlen = cfg["queue_length"] - cfg["queue_length"] % bs if swav else 0  # main_swav.py: multiple of bs
    queue = None
    probe_items = list_images(a.probe) if a.probe else []
    px = eval_batch(probe_items, max(cfg["size_crops"])) if probe_items else None
    plabels = [l for _, l in probe_items]
    floor = probe(model, px, plabels) if px is not None else None
    if floor:
        print(json.dumps({"probe": "untrained", **floor}), flush=True)
    result = {"config": cfg, "images": len(ds), "steps_per_epoch": spe, "floor": floor, "epochs": []}
    step, t_run = 0, time.time()
    model.train()
    for epoch in range(E):
        if swav and qlen > 0 and epoch >= cfg["epoch_queue_starts"] and queue is None:
            queue = torch.zeros(len(cfa), qlen, cfg["feat_dim"])
        use_the_queue = False
        losses, signals, compute, t_epoch = [], [], 0.0, time.time()
        for inputs in loader:
            t0 = time.time()
            # ============ set lr, normalise prototypes ... ============
            for g in opt.param_groups:
                g["lr"] = lrs[step]
            if protos:
                with torch.no_grad():
                    model.prototypes.weight.copy_(F.normalize(model.prototypes.weight, dim=1, p=2))
            if moco:
                # ============ MoCo: queries from view 0, keys from view 1 by the key encoder ... ============
                q, _ = model(inputs[:1])
                with torch.no_grad():
                    k, _ = teacher(inputs[1:2])
                loss = moco_loss(q, k, moco_queue, cfg["moco"]["moco_t"])
                # _dequeue_and_enqueue(k): replace the oldest batch of keys, move the pointer
                with torch.no_grad():
                    moco_queue[queue_ptr:queue_ptr + bs] = k
                    queue_ptr = (queue_ptr + bs) % cfg["moco"]["moco_k"]
            elif dino:
                # ============ DINO: teacher on the 2 global crops, student on all ... ============
                with torch.no_grad():
                    zt, _ = teacher(inputs[:2])
                    # DINOHead's last layer with weight_norm, g = 1: cosine to the teacher's rows, normalised
                    # in the forward (its stored rows are the EMA of the student's)
                    teacher_output = zt @ F.normalize(teacher.prototypes.weight, dim=1, p=2).t()
                _, student_output = model(inputs)
                loss = dino_loss(student_output, teacher_output, epoch)
                signals.append(dino_loss.stats)
            else:
                # ============ forward all crops ... ============
                z, scores = model(inputs)
            if swav:
                z = z.detach()
                loss = 0
                for i, c in enumerate(cfa):
                    # ============ assignments (no grad, queue) ... ============
                    with torch.no_grad():
                        out = scores[bs * c:bs * (c + 1)].detach()
                        if queue is not None:
                            if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                                use_the_queue = True
                                out = torch.cat((queue[i] @ model.prototypes.weight.t(), out))
                            queue[i, bs:] = queue[i, :-bs].clone()
                            queue[i, :bs] = z[bs * c:bs * (c + 1)]
                        q = sinkhorn(out, cfg["epsilon"], cfg["sinkhorn_iterations"])[-bs:]
                    # ============ swapped prediction from every other crop ... ============
                    sub = 0
                    for v in (v for v in range(V) if v != c):
                        p = F.log_softmax(scores[bs * v:bs * (v + 1)] / cfg["temperature"], dim=1)
                        sub -= torch.mean(torch.sum(q * p, dim=1))
                    loss += sub / (V - 1)
                loss /= len(cfa)
            elif method == "simclr":
                loss = nt_xent(z[:bs], z[bs:], cfg["temperature"])
            # ============ backward, frozen prototypes (SwAV; DINO's cancel_gradients_last_layer), step ... ====
            opt.zero_grad()
            loss.backward()
            if protos and step < cfg["freeze_prototypes_niters"]:
                model.prototypes.weight.grad = None
            opt.step()
            # ============ key encoder / teacher: EMA of the student after its step ... ============
            # (MoCo updates at the start of the next forward, which is the same update)
            if teacher is not None:
                momentum_update(model, teacher, moms[step])
            compute += time.time() - t0
            lv = loss.item()
            if not math.isfinite(lv):
                sys.exit(f"non-finite loss at step {step}")
            losses.append(lv)
            step += 1
            if a.max_steps and step >= a.max_steps:
                break
        n = len(losses)
        row = {"epoch": epoch, "steps": n, "loss": sum(losses) / n, "loss_over_ln_k": sum(losses) / n / ln_k,
               "normaliser": normaliser, "sec_per_step_wall": (time.time() - t_epoch) / n,
               "sec_per_step_compute": compute / n, "wall": time.time() - t_run}
        if teacher is not None:
            row["ema_momentum"] = moms[step - 1]  # the EMA momentum of the epoch's last step
        if dino:
            # the epoch's teacher temperature and the collapse signals averaged over its steps
            row["teacher_temp"] = signals[-1]["teacher_temp"]
            for key in ("teacher_entropy_of_batch_mean", "teacher_entropy_per_image", "kl_teacher_student"):
                row[key] = sum(r[key] for r in signals) / len(signals)
        result["epochs"].append(row)
        print(json.dumps(row), flush=True)
        if a.max_steps and step >= a.max_steps:
            break
    result["steps"] = step
    result["wall"] = time.time() - t_run
    if px is not None:
        result["probe"] = probe(model, px, plabels)
        print(json.dumps({"probe": "trained", **result["probe"]}), flush=True)
        if teacher is not None:
            # MoCo evaluates encoder_q (the "probe" above); DINO's eval_knn.py the teacher by default
            result["probe_teacher"] = probe(teacher, px, plabels)
            print(json.dumps({"probe": "trained teacher", **result["probe_teacher"]}), flush=True)
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("RESULT " + json.dumps({k: result[k] for k in ("steps", "wall")} | {
        "final_loss_over_ln_k": result["epochs"][-1]["loss_over_ln_k"],
        "sec_per_step_wall": result["wall"] / max(step, 1),
        "knn": result.get("probe", {}).get("acc"), "floor": (floor or {}).get("acc")}), flush=True)


# ------------------------------------------------------------------------------------ knn on embeddings
def knn_embeddings(a):
    """The probe above on a `biaslab embed` Parquet (one row per image crop: label, embedding)."""
    import polars as pl
    df = pl.read_parquet(a.embeddings).filter(pl.col("label").is_not_null())
    feats = torch.tensor(df["embedding"].to_list(), dtype=torch.float64)
    r = knn_loo(feats, df["label"].to_list())
    print("RESULT " + json.dumps(r), flush=True)


# ------------------------------------------------------------------------------- case for tests/reference.rs
def case(a):
    """Identical inputs for biaslab and this harness (tests/reference.rs): a small model's initial
    parameters, three steps of gradients and learning rates, and the parameters each optimiser mode leaves
    (Larc adapting all parameters as the reference, Larc excluding rank ≤ 1 ones as biaslab's default, plain
    SGD); prototypes frozen at step 0. Plus Sinkhorn at ε 0.02 (regime R) on scores of unit vectors."""
    torch.manual_seed(0)
    base = Net(4, 16, 8, 5)
    named = dict(base.named_parameters())
    t = {f"init.{n}": p.detach().clone() for n, p in named.items()}
    lrs = [0.3, 0.2, 0.1]
    grads = [{n: torch.randn_like(p) for n, p in named.items()} for _ in lrs]
    for s, g in enumerate(grads):
        t.update({f"grad{s}.{n}": v for n, v in g.items()})
    t["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    # wd and η larger than the reference's so each term moves the parameters measurably
    wd, eta, momentum = 0.01, 0.02, 0.9
    t["hyper"] = torch.tensor([wd, eta, momentum], dtype=torch.float64)
    modes = {"lars_all": ("lars", False), "lars_excl": ("lars", True), "sgd": ("sgd", False)}
    for mode, (kind, excl) in modes.items():
        model = Net(4, 16, 8, 5)
        model.load_state_dict(base.state_dict())
        cfg = {"optimizer": kind, "exclude_bias_n_norm": excl, "wd": wd, "trust_coefficient": eta,
               "momentum": momentum, "base_lr": lrs[0]}
        opt = make_optimizer(model, cfg)
        params = dict(model.named_parameters())
        for s, lr in enumerate(lrs):
            for group in opt.param_groups:
                group["lr"] = lr
            for n, p in params.items():
                p.grad = grads[s][n].clone()
            if s == 0:  # freeze_prototypes_niters = 1
                model.prototypes.weight.grad = None
            opt.step()
        t.update({f"{mode}.{n}": p.detach().clone() for n, p in params.items()})
    scores = F.normalize(torch.randn(16, 8), dim=1) @ F.normalize(torch.randn(10, 8), dim=1).t()
    t["sinkhorn.scores"] = scores
    t["sinkhorn.q"] = sinkhorn(scores, 0.02, 3)
    os.makedirs(a.out, exist_ok=True)
    torch.save(t, os.path.join(a.out, "case.pt"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train SwAV, SimCLR, MoCo v2 or DINO as the references do")
    tr.add_argument("--data", required=True, help="biaslab dataset dir (images/<label>/...) or image folder")
    tr.add_argument("--probe", help="labelled dataset dir for the kNN probe (e.g. data/gcompris-photos)")
    tr.add_argument("--out", required=True)
    tr.add_argument("--config", help="biaslab training TOML (TrainConfig keys)")
    tr.add_argument("--method", choices=list(METHODS))
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--max-steps", type=int, default=0, help="stop after N steps (the schedule stays the full run's)")
    tr.add_argument("--threads", type=int, default=2, help="torch threads for the step")
    tr.add_argument("--workers", type=int, default=1, help="DataLoader worker processes for the crops")
    tr.add_argument("--init", choices=["reference", "tch"], default="reference")
    kn = sub.add_parser("knn", help="the probe on a biaslab embeddings Parquet")
    kn.add_argument("--embeddings", required=True)
    ca = sub.add_parser("case", help="write the optimiser/Sinkhorn case of tests/reference.rs")
    ca.add_argument("--out", required=True)
    a = ap.parse_args()
    {"train": train, "knn": knn_embeddings, "case": case}[a.cmd](a)


if __name__ == "__main__":
    main()
