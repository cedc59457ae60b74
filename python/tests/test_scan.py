"""scan: the FeatureCollection of `skyscribe scan --out` and the class map of `--class-map`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import skyscribe
from conftest import SAMPLES, run_cli

SCENE = SAMPLES / "eurosat-mosaic.tif"


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("scan")
    run_cli(
        "scan", SCENE, "--labels", "eurosat", "--tile", "64", "--stride", "32",
        "--out", out / "tiles.geojson", "--class-map", out / "map.tif",
    )
    ours = skyscribe.scan(SCENE, "eurosat", tile=64, stride=32)
    return ours, out


def test_the_features_are_the_clis(both):
    ours, out = both
    theirs = json.loads((out / "tiles.geojson").read_text())
    assert ours.features == theirs
    assert ours.features["type"] == "FeatureCollection"
    assert ours.features["skyscribe"]["coordinates"] == "lon/lat (WGS 84)"
    assert len(ours.features["features"]) == ours.features["skyscribe"]["tiles"] > 0


def test_the_class_map_is_the_clis(both):
    tifffile = pytest.importorskip("tifffile")
    ours, out = both
    with tifffile.TiffFile(out / "map.tif") as t:
        # Pixel-interleaved bands: rows × columns × labels; ours are labels × rows × columns
        # (rasterio's order).
        bands = np.moveaxis(t.asarray(), -1, 0)
        page = t.pages[0]
        scale = page.tags["ModelPixelScaleTag"].value
        tie = page.tags["ModelTiepointTag"].value
    assert ours.scores.dtype == np.float32
    assert ours.scores.shape == (len(ours.labels), *ours.class_map.shape) == bands.shape
    np.testing.assert_array_equal(ours.scores, bands)
    with tifffile.TiffFile(out / "map.argmax.tif") as t:
        argmax = t.asarray().astype(np.int16)
    argmax[argmax == 255] = -1
    np.testing.assert_array_equal(ours.class_map, argmax)
    # The grid's geotransform: origin at the tiepoint, cells of `stride` scene pixels.
    x0, dx, _, y0, _, dy = ours.transform
    assert (x0, y0) == (tie[3], tie[4])
    assert math.isclose(dx, scale[0]) and math.isclose(dy, -scale[1])
    assert ours.crs is not None and ours.crs.startswith("EPSG:")


def test_the_features_make_a_geodataframe(both):
    geopandas = pytest.importorskip("geopandas")
    ours, _ = both
    frame = geopandas.GeoDataFrame.from_features(ours.features, crs="EPSG:4326")
    assert len(frame) == len(ours.features["features"])
    assert set(frame["label"]) <= set(ours.labels)
    assert frame.geometry.is_valid.all()
    west, south, east, north = frame.total_bounds
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90


def test_a_scene_without_georeferencing_needs_pixel_coords(tmp_path):
    image = SAMPLES / "eurosat-river.jpg"
    with pytest.raises(skyscribe.Error, match="pixel_coords=True"):
        skyscribe.scan(image, "eurosat", tile=32, stride=32)
    r = skyscribe.scan(image, "eurosat", tile=32, stride=32, pixel_coords=True)
    assert r.transform is None and r.crs is None
    assert r.features["skyscribe"]["coordinates"].startswith("pixels")
