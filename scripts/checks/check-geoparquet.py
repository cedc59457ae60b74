#!/usr/bin/env python3
"""Opens every GeoParquet file skyscribe wrote with GeoPandas (pyarrow + shapely read the `geo`
metadata) and checks each against the GeoJSON of the same scan: the same rows, properties and
polygons, and the CRS GeoPandas takes (WGS 84 unless the file says undefined).

Not in CI (needs geopandas from PyPI):

    python3 -m venv /tmp/gpq && /tmp/gpq/bin/pip install geopandas pyarrow shapely
    skyscribe scan SCENE --labels … --out OUT.geojson
    skyscribe scan SCENE --labels … --out OUT.parquet
    /tmp/gpq/bin/python scripts/checks/check-geoparquet.py OUT.parquet OUT.geojson [more pairs …]
"""

import json
import sys

import geopandas as gpd
import shapely.geometry


def check(pq_path, geojson_path):
    df = gpd.read_parquet(pq_path)
    fc = json.load(open(geojson_path))
    feats = fc["features"]
    assert len(df) == len(feats), (len(df), len(feats))
    undefined = fc["skyscribe"].get("datum_note") is not None or fc["skyscribe"]["coordinates"].startswith("pixels")
    if undefined:
        assert df.crs is None, df.crs
    else:
        assert df.crs is not None and df.crs.to_epsg() in (4326, None) and df.crs.is_geographic, df.crs
    worst = 0.0
    for (_, row), f in zip(df.iterrows(), feats):
        p = f["properties"]
        assert row["label"] == p["label"] and abs(row["score"] - p["score"]) < 1e-6
        assert json.loads(row["tile"]) == p["tile"]
        g = shapely.geometry.shape(f["geometry"])
        worst = max(worst, row.geometry.symmetric_difference(g).area)
        assert row.geometry.geom_type == "Polygon"
    print(f"{pq_path}: {len(df)} rows, crs={df.crs and df.crs.to_string()}, polygons agree "
          f"(largest symmetric difference {worst:.3g})")


if __name__ == "__main__":
    args = sys.argv[1:]
    assert args and len(args) % 2 == 0, __doc__
    for i in range(0, len(args), 2):
        check(args[i], args[i + 1])
