# Embeddings of an ImageFolder tree (folder/<label>/<image>) from a torchvision model, as biaslab reads them.
import sys, polars as pl, torch, torchvision, torchvision.transforms as T
folder, out = sys.argv[1], sys.argv[2]
data = torchvision.datasets.ImageFolder(folder, T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor()]))
model = torchvision.models.resnet18(weights=None).eval()  # weights="DEFAULT" for ImageNet features
model.fc = torch.nn.Identity()  # pooled backbone features, 512-d
with torch.no_grad():
    emb = torch.cat([model(x) for x, _ in torch.utils.data.DataLoader(data, batch_size=32)])
ids = [p for p, _ in data.samples]
pl.DataFrame({"id": ids, "image_id": ids, "dataset": [folder] * len(ids), "embedding": emb.tolist(),
              "label": [data.classes[c] for _, c in data.samples]}).write_parquet(out)
