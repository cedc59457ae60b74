#!/usr/bin/python3
"""Makes `eurosat-mosaic.tif`: a made-up 512 x 512 "scene" of 64 EuroSAT test-split chips laid
out as a map (forest to the west, a river down the middle, a lake in the north-east, a town in
the south-east, fields between), georeferenced at 10 m in UTM zone 32N (EPSG:32632). The place
is invented: the chips come from all over Europe. It gives `skyscribe scan` a scene whose
right answer can be seen.

    /usr/bin/python3 assets/samples/make_mosaic.py [DATA]   # DATA: default ../shared/data

Needs Debian's python3-gdal and the shared EuroSAT copy.
"""
import os
import sys

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../../shared/data")

# One letter a 64-pixel cell: F forest, R river, S sea/lake, T residential (town),
# I industrial, A annual crop, P pasture, H highway.
LAYOUT = [
    "FFFRAASS",
    "FFFRAASS",
    "FFRAAPSS",
    "FFRAPPHH",
    "FRAAPHTT",
    "FRAAHTTI",
    "FRAHTTII",
    "RAAHTTII",
]
CLASSES = {"F": "Forest", "R": "River", "S": "SeaLake", "T": "Residential", "I": "Industrial",
           "A": "AnnualCrop", "P": "Pasture", "H": "Highway"}


def main():
    test = [l.strip() for l in open(os.path.join(DATA, "eurosat/splits/test.txt"))]
    pools = {c: sorted(p for p in test if p.startswith(c + "/")) for c in CLASSES.values()}
    used = {c: 0 for c in CLASSES.values()}
    mosaic = np.zeros((3, 512, 512), np.uint8)
    for r, row in enumerate(LAYOUT):
        for c, letter in enumerate(row):
            cls = CLASSES[letter]
            name = pools[cls][used[cls]]
            used[cls] += 1
            chip = gdal.Open(os.path.join(DATA, "eurosat/images", name)).ReadAsArray()
            mosaic[:, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = chip[:3]
    out = os.path.join(HERE, "eurosat-mosaic.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        out, 512, 512, 3, gdal.GDT_Byte,
        ["COMPRESS=JPEG", "JPEG_QUALITY=92", "PHOTOMETRIC=RGB", "TILED=YES"])
    ds.SetGeoTransform([500000.0, 10.0, 0.0, 5300000.0, 0.0, -10.0])
    s = osr.SpatialReference()
    s.ImportFromEPSG(32632)
    ds.SetSpatialRef(s)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(mosaic[b])
    ds = None
    aux = out + ".aux.xml"
    if os.path.exists(aux):
        os.remove(aux)


if __name__ == "__main__":
    main()
