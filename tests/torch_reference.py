"""Writes the PyTorch side of tests/import.rs into the directory given as argv[1].

- resnet18.pth: a torchvision ResNet-18 state dict, torch.save's zip format (what torchvision ships);
- swav_rn50.pth.tar: a main_swav.py-style training checkpoint in torch's legacy format (what the 2020 SwAV
  release used): {"epoch", "state_dict" with DDP's "module." prefix, ResNet-50 + projection head +
  prototypes, "optimizer" with momentum buffers};
- rn18_half.pt: the ResNet-18 state dict in float16 (checkpoints shipped in half precision);
- reference.pt: 224x224 inputs and what PyTorch computes from them (pooled backbone features, the SwAV
  projection, prototype argmax).

BatchNorm running statistics are randomised so that eval-mode BN is part of what is compared.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

out = sys.argv[1]
torch.manual_seed(0)


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


class Swav(nn.Module):
    """The reference's ResNet-50 with projection_head (Linear-BN-ReLU-Linear) and prototypes."""

    def __init__(self, hidden=256, out_dim=32, k=30):
        super().__init__()
        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.fc = nn.Identity()
        self.projection_head = nn.Sequential(
            nn.Linear(2048, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )
        self.prototypes = nn.Linear(out_dim, k, bias=False)

    def state_dict_like_reference(self):
        # the reference's ResNet has the head as attributes of the ResNet itself: no "backbone." level
        sd = {}
        for k, v in self.state_dict().items():
            sd["module." + k.removeprefix("backbone.")] = v
        return sd


rn18 = torchvision.models.resnet18(weights=None)
randomise_bn(rn18)
rn18.eval()
torch.save(rn18.state_dict(), f"{out}/resnet18.pth")
half = {k: v.half() if v.is_floating_point() else v for k, v in rn18.state_dict().items()}
torch.save(half, f"{out}/rn18_half.pt")
# the half-precision weights as float32: what an f32 model loaded from rn18_half.pt computes
rn18_half = torchvision.models.resnet18(weights=None)
rn18_half.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
rn18_half.eval()

swav = Swav()
randomise_bn(swav)
# one SGD step so the optimizer state holds momentum buffers, as a real checkpoint does
opt = torch.optim.SGD(swav.parameters(), lr=1e-6, momentum=0.9)
swav.train()
swav.prototypes(F.normalize(swav.projection_head(swav.backbone(torch.randn(2, 3, 64, 64))), dim=1)).sum().backward()
opt.step()
swav.eval()
torch.save(
    {"epoch": 3, "state_dict": swav.state_dict_like_reference(), "optimizer": opt.state_dict()},
    f"{out}/swav_rn50.pth.tar",
    _use_new_zipfile_serialization=False,
)

x = torch.randn(3, 3, 224, 224)
with torch.no_grad():
    rn18.fc = nn.Identity()
    rn18_half.fc = nn.Identity()
    f18 = rn18(x)
    f18_half = rn18_half(x)
    f50 = swav.backbone(x)
    z = F.normalize(swav.projection_head(f50), dim=1)
    codes = swav.prototypes(z).argmax(1)
torch.save({"inputs": x, "rn18": f18, "rn18_half": f18_half, "rn50": f50, "rn50_projection": z, "rn50_codes": codes}, f"{out}/reference.pt")
