"""OpenCLIP's preprocessing of images with transparency or a palette:
tests/fixtures/openclip-preprocess/ (images and reference.json).

OpenCLIP's transform (open_clip.image_transform: Resize, CenterCrop, convert to RGB, ToTensor,
Normalize) resizes the image in its own mode, so Pillow resizes RGBA and LA with premultiplied
alpha and palette images with nearest neighbour, and the alpha is dropped after the crop.
transformers' CLIPImageProcessor converts to RGB first (alpha composited onto white). The
reference is OpenCLIP's output, every float; the transformers-order output's largest difference
from it is recorded too, to show what the order changes. Needs open_clip_torch and Pillow; CI
reads only the files.

    python scripts/reference/make_openclip_preprocess_reference.py tests/fixtures/openclip-preprocess
"""
import json
import sys
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

out = Path(sys.argv[1])
(out / "images").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(20)
SIZE = 24

y, x = np.mgrid[0:31, 0:47]
rgba = np.stack([x * 5 % 256, y * 8 % 256, (x * y) % 256, (x * 11 + y * 3) % 256], -1)
rgba[:, :5, 3] = 0  # fully transparent columns (colours kept in the file)
rgba[:, -5:, 3] = 255
Image.fromarray(rgba.astype(np.uint8), "RGBA").save(out / "images/rgba-47x31.png")

la = np.stack([(x[:, :29] * 9) % 256, (y[:, :29] * 7 + 40) % 256], -1)
la = np.concatenate([la, la[:10]], 0)  # 29 × 41
Image.fromarray(la.astype(np.uint8), "LA").save(out / "images/la-29x41.png")

indices = rng.integers(0, 16, size=(37, 50)).astype(np.uint8)
palette = rng.integers(0, 256, size=(16, 3)).astype(np.uint8)
p = Image.fromarray(indices, "P")
p.putpalette(palette.flatten().tolist())
p.save(out / "images/palette-50x37.png")
p.save(out / "images/palette-transparent-50x37.png", transparency=3)
p.save(out / "images/palette-50x37.gif")

transform = open_clip.image_transform(SIZE, is_train=False)
files = []
for name in sorted(f.name for f in (out / "images").iterdir()):
    img = Image.open(out / "images" / name)
    ours = transform(img)
    # transformers' order: RGB first (alpha composited onto white), then the same transform.
    rgba_img = img.convert("RGBA")
    white = Image.new("RGBA", rgba_img.size, (255, 255, 255))
    white.alpha_composite(rgba_img)
    other = transform(white.convert("RGB"))
    files.append(
        dict(
            file=f"images/{name}",
            mode=img.mode,
            size=list(img.size),
            pixels=ours.flatten().tolist(),
            rgb_first_max_difference=float((ours - other).abs().max()),
        )
    )
    print(name, img.mode, "rgb-first max difference", float((ours - other).abs().max()), file=sys.stderr)
json.dump(
    dict(
        source=f"open_clip {open_clip.__version__} image_transform({SIZE}, is_train=False), "
        f"torch {torch.__version__}, Pillow {Image.__version__}",
        size=SIZE,
        files=files,
    ),
    open(out / "reference.json", "w"),
)
