"""GIFs written by Pillow, and the RGB pixels Pillow reads back: tests/fixtures/gif/.

Pillow 13 interlaces the GIFs it writes; the `gif` crate that `image` uses fails on some of
them ("image truncated"), so skyscribe decodes GIF frames itself. The images have a different
colour on every row, so that rows out of place show. Needs Pillow; CI reads only the files.

    python scripts/reference/make_gif_reference.py tests/fixtures/gif
"""
import base64
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
files = []
for w, h in [(81, 45), (17, 33), (64, 64)]:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(y * 37) % 256, (x * 5 + y) % 256, ((x // 8) * 60 + y * 3) % 256], -1)
    name = f"interlaced-{w}x{h}.gif"
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(out / name)  # quantised to a palette
    back = Image.open(out / name)
    data = (out / name).read_bytes()
    # The first image descriptor's packed byte: bit 0x40 is "interlaced".
    descriptor = data.index(b",", 13 + 3 * 256 if data[10] & 0x80 else 13)
    files.append(
        dict(
            file=name,
            interlaced=bool(data[descriptor + 9] & 0x40),
            rgb=base64.b64encode(back.convert("RGB").tobytes()).decode(),
        )
    )
json.dump(dict(source=f"Pillow {Image.__version__}", files=files), open(out / "pixels.json", "w"))
print([(f["file"], f["interlaced"]) for f in files], file=sys.stderr)
