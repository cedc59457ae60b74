"""skyscribe from Python, notebook style: EuroSAT images as numpy arrays → embeddings and
zero-shot labels → a linear probe from your own labels → a scene scanned into GeoPandas.

    pip install ./python geopandas        # from the repository's root (needs Rust)
    python examples/python/quickstart.py

Runs offline with the built-in skyscribe-mini model; EuroSAT from $SKYSCRIBE_DATA (default
../shared/data), the scene from assets/samples.
"""

import os
from pathlib import Path

import numpy as np

import skyscribe

repo = Path(__file__).resolve().parents[2]
data = Path(os.environ.get("SKYSCRIBE_DATA", repo.parent / "shared" / "data"))
eurosat = data / "eurosat" / "images"

# 1. Images as a numpy batch (N×H×W×3 uint8; N×3×H×W floats in [0, 1] as torchgeo yields work
#    too), embedded by CLIP: float32 (N, dim), the numbers `skyscribe embed` prints.
classes = sorted(p.name for p in eurosat.iterdir())
paths = [eurosat / c / f"{c}_{i}.jpg" for c in classes for i in range(1, 21)]
truth = [p.parent.name for p in paths]
batch = np.stack([skyscribe.read_image(p) for p in paths])
clip = skyscribe.Clip()  # or Clip("openai/clip-vit-base-patch32"), or a model folder
x = clip.embed_images(batch)
print(f"embeddings {x.shape} {x.dtype}")

# 2. Zero-shot labels from a label set (a preset, a file, "a,b,c" or a list).
labels = clip.labels(batch[:3], "eurosat", top_k=3)
for path, best in zip(paths[:3], labels):
    print(path.name, [(label, round(score, 3)) for label, score in best])
zero_shot = [ranked[0][0] for ranked in clip.labels(batch, "eurosat", top_k=1)]
print(f"zero-shot top-1 on {len(paths)} images: {np.mean([a == b for a, b in zip(zero_shot, truth)]):.1%}")

# 3. A linear probe from your own labels (train on half, test on the other half).
train = np.arange(len(paths)) % 2 == 0
probe = skyscribe.Classifier.train(x[train], [t for t, k in zip(truth, train) if k], clip)
predicted = probe.predict(x[~train])
held_out = [t for t, k in zip(truth, train) if not k]
print(f"linear probe on {len(held_out)} held-out images: {np.mean([a == b for a, b in zip(predicted, held_out)]):.1%}")
probe.save("eurosat-probe.safetensors")  # `skyscribe labels --classifier` reads it too

# 4. A GeoTIFF scene tiled and labelled: GeoJSON features for GeoPandas, the class map as
#    numpy with its geotransform and CRS (rasterio.Affine.from_gdal(*scan.transform)).
scan = skyscribe.scan(repo / "assets" / "samples" / "eurosat-mosaic.tif", "eurosat", tile=64, stride=32)
assert scan.transform is not None  # None only for scenes scanned with pixel_coords=True
print(f"class map {scan.class_map.shape} on {scan.crs}, cells of {scan.transform[1]:.0f} m")
try:
    import geopandas

    tiles = geopandas.GeoDataFrame.from_features(scan.features, crs="EPSG:4326")
    print(tiles[["label", "score", "geometry"]].head())
    print(tiles["label"].value_counts().head(3))
except ImportError:
    print("(pip install geopandas to see the tiles as a GeoDataFrame)")
