"""torchvision side of the loader benchmark: SwAV's multi-crop pipeline (2x224 + 6x96) in a DataLoader with
num_workers=2 over an image folder; prints images/s. The transforms follow facebookresearch/swav
src/multicropdataset.py (MultiCropDataset, PILRandomGaussianBlur, get_color_distortion) and main_swav.py.

usage: loader_bench.py DIR [--epochs N] [--batch-size B] [--workers W] [--max-images N]
"""
import argparse
import os
import random
import sys
import time

import numpy as np
import torch
import torchvision.transforms as transforms
from PIL import Image, ImageFilter

# Same extension list as biaslab's data::source::IMAGE_EXTENSIONS.
EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico")


class PILRandomGaussianBlur:
    """src/multicropdataset.py: blur with p 0.5, radius ~ U[0.1, 2]."""

    def __init__(self, p=0.5, radius_min=0.1, radius_max=2.0):
        self.prob, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img):
        if not np.random.rand() <= self.prob:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


def get_color_distortion(s=1.0):
    color_jitter = transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    rnd_color_jitter = transforms.RandomApply([color_jitter], p=0.8)
    rnd_gray = transforms.RandomGrayscale(p=0.2)
    return transforms.Compose([rnd_color_jitter, rnd_gray])


class MultiCropDataset(torch.utils.data.Dataset):
    def __init__(self, files, size_crops=(224, 96), nmb_crops=(2, 6), min_scale=(0.14, 0.05), max_scale=(1.0, 0.14)):
        self.files = files
        mean, std = [0.485, 0.456, 0.406], [0.228, 0.224, 0.225]  # main_swav.py
        self.trans = []
        for i in range(len(size_crops)):
            t = transforms.Compose([
                transforms.RandomResizedCrop(size_crops[i], scale=(min_scale[i], max_scale[i])),
                transforms.RandomHorizontalFlip(p=0.5),
                get_color_distortion(),
                PILRandomGaussianBlur(),
                transforms.ToTensor(),
                transforms.Normalize(mean=mean, std=std),
            ])
            self.trans.extend([t] * nmb_crops[i])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            img = Image.open(f).convert("RGB")  # torchvision's pil_loader, as ImageFolder
        return [t(img) for t in self.trans]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-images", type=int, default=0, help="first N files by path (0: all), as benches/loader.rs")
    a = ap.parse_args()
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.dir) for f in fs
                   if f.lower().endswith(EXTS) and not f.startswith("."))
    if not files:
        sys.exit(f"no images under {a.dir}")
    if a.max_images > 0:
        files = files[: a.max_images]
    torch.set_num_threads(1)
    loader = torch.utils.data.DataLoader(MultiCropDataset(files), batch_size=a.batch_size, shuffle=True,
                                         num_workers=a.workers, drop_last=False, persistent_workers=False)
    n, t0 = 0, time.perf_counter()
    for _ in range(a.epochs):
        for crops in loader:
            n += crops[0].shape[0]
    dt = time.perf_counter() - t0
    print(f"torchvision: {n} images in {dt:.2f} s = {n / dt:.1f} images/s (workers {a.workers}, batch {a.batch_size})")


if __name__ == "__main__":
    main()
