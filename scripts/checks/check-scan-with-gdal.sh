#!/usr/bin/env bash
# `skyscribe scan`'s outputs read by GDAL itself and checked by a GeoJSON validator: for every
# georeferenced fixture scene, the class map's CRS and geotransform (gdal), band descriptions,
# the argmax file's colour table and class names, and the GeoJSON (python3-geojson's is_valid,
# OGR's geometry validity, RFC 7946 winding). Run by hand; CI needs no Python (the Rust tests
# check the same geometry against GDAL-made expectations).
#
#   apt-get install gdal-bin python3-gdal python3-geojson   # Debian's packages
#   bash scripts/checks/check-scan-with-gdal.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet
BIN=target/debug/skyscribe
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
LABELS="forest,sea,river,buildings,fields"
for f in tests/fixtures/scenes/*.tif; do
  name=$(basename "$f" .tif)
  [ "$name" = plain-u8-no-georef ] && continue
  "$BIN" scan "$f" --labels "$LABELS" --tile 64 --stride 48 \
    --out "$OUT/$name.geojson" --class-map "$OUT/$name.tif" 2>/dev/null >/dev/null
  gdalinfo "$OUT/$name.tif" >/dev/null
done
/usr/bin/python3 - "$OUT" "$LABELS" <<'PY'
import glob, json, os, sys
import geojson
from osgeo import gdal, ogr, osr
gdal.UseExceptions()
out, labels = sys.argv[1], sys.argv[2].split(",")
checked = 0
for f in sorted(glob.glob("tests/fixtures/scenes/*.tif")):
    name = os.path.basename(f)[:-4]
    if name == "plain-u8-no-georef":
        continue
    scene, cmap = gdal.Open(f), gdal.Open(f"{out}/{name}.tif")
    s_srs, c_srs = scene.GetSpatialRef(), cmap.GetSpatialRef()
    assert c_srs.IsSame(s_srs), f"{name}: class map CRS differs"
    sg, cg = scene.GetGeoTransform(), cmap.GetGeoTransform()
    want = [sg[0], sg[1] * 48, sg[2] * 48, sg[3], sg[4] * 48, sg[5] * 48]
    assert all(abs(a - b) <= 1e-9 * max(1, abs(b)) for a, b in zip(cg, want)), (name, cg, want)
    assert (cmap.RasterXSize, cmap.RasterYSize) == (-(-scene.RasterXSize // 48), -(-scene.RasterYSize // 48))
    assert [cmap.GetRasterBand(i + 1).GetDescription() for i in range(cmap.RasterCount)] == labels
    am = gdal.Open(f"{out}/{name}.argmax.tif")
    assert am.GetSpatialRef().IsSame(s_srs) and am.GetGeoTransform() == cg
    band = am.GetRasterBand(1)
    assert band.GetColorTable() is not None and band.GetCategoryNames() == labels, name
    assert band.GetNoDataValue() == 255
    text = open(f"{out}/{name}.geojson").read()
    fc = geojson.loads(text)
    assert fc.is_valid, (name, fc.errors())
    ds = ogr.Open(f"{out}/{name}.geojson")
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == len(fc["features"]) > 0
    for feat in layer:
        g = feat.GetGeometryRef()
        assert g.IsValid(), (name, g.ExportToWkt())
    for feat in fc["features"]:
        ring = feat["geometry"]["coordinates"][0]
        area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:]))
        assert area > 0, f"{name}: a clockwise exterior ring"
    checked += 1
print(f"OK: {checked} scenes: class maps on the scene's CRS and grid (GDAL), argmax colour table "
      f"and class names, GeoJSON valid (python-geojson, OGR) with counter-clockwise rings")
PY
