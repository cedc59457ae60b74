#!/usr/bin/env python3
"""`skyscribe scan` over a corpus of GeoTIFFs nobody here wrote (GDAL's own test files), judged
by GDAL itself: which files are "ordinary" (GDAL opens and reads them; not complex samples,
CIELab/CMYK/LogLuv, CCITT/SGILog/JPEG-XL/old-JPEG, odd bit depths or subsampled non-JPEG
YCbCr), which of those scan, and whether every georeferenced scan puts its tiles where GDAL +
OSR put them (each corner of every tile within 1e-7 degrees, on WGS 84, or on the
CRS's own datum where skyscribe says so with datum_note). No panic is ever acceptable.

    apt-get install gdal-bin python3-gdal          # Debian's GDAL
    cargo build [--features gdal]
    /usr/bin/python3 scripts/checks/check-gdal-corpus.py CORPUS_DIR [--reader native|gdal] [--jsonl F]

Prints one line per file that is ordinary and does not scan or lands elsewhere, then a summary.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

from osgeo import gdal, osr

gdal.UseExceptions()
BIN = os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "skyscribe")
ODD_COMPRESSION = {2: "CCITT RLE", 3: "CCITT fax3", 4: "CCITT fax4", 6: "old-style JPEG",
                   32766: "NeXT", 32809: "ThunderScan", 34676: "SGILog",
                   34677: "SGILog24", 50002: "JPEG-XL", 52546: "JPEG-XL"}
ODD_PHOTOMETRIC = {5: "CMYK", 8: "CIELab", 9: "ICCLab", 10: "ITULab", 32844: "LogL",
                   32845: "LogLuv"}


def first_ifd_tags(path):
    """Compression, photometric and YCbCr subsampling of the first IFD (classic or BigTIFF)."""
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return {}
        e = "<" if head[:2] == b"II" else ">"
        magic = struct.unpack(e + "H", head[2:4])[0]
        big = magic == 43
        off = struct.unpack(e + "Q", head[8:16])[0] if big else struct.unpack(e + "I", head[4:8])[0]
        f.seek(off)
        n = struct.unpack(e + ("Q" if big else "H"), f.read(8 if big else 2))[0]
        tags = {}
        for _ in range(min(n, 1000)):
            entry = f.read(20 if big else 12)
            if len(entry) < (20 if big else 12):
                break
            tag, typ = struct.unpack(e + "HH", entry[:4])
            value = entry[12:] if big else entry[8:]
            if typ == 3:
                tags[tag] = struct.unpack(e + "HH", value[:4])
            elif typ == 4:
                tags[tag] = struct.unpack(e + "I", value[:4])
        return tags


def ordinary(path):
    """(True, None), or (False, why) as the testers classified files."""
    try:
        ds = gdal.Open(path)
        b = ds.GetRasterBand(1)
        if b is None:
            return False, "no bands"
        if gdal.DataTypeIsComplex(b.DataType):
            return False, "complex"
        ds.ReadRaster()
    except Exception as ex:  # GDAL cannot open or read it
        return False, f"GDAL cannot read it: {str(ex)[:60]}"
    tags = first_ifd_tags(path)
    comp = tags.get(259, (1,))[0]
    photo = tags.get(262, (1,))[0]
    if comp in ODD_COMPRESSION:
        return False, ODD_COMPRESSION[comp]
    if photo in ODD_PHOTOMETRIC:
        return False, ODD_PHOTOMETRIC[photo]
    if photo == 6 and comp != 7 and tags.get(530, (1, 1)) != (1, 1):
        return False, "subsampled YCbCr without JPEG"
    nbits = b.GetMetadataItem("NBITS", "IMAGE_STRUCTURE")
    if nbits and int(nbits) not in (1, 2, 4, 8, 16, 32, 64):
        return False, f"{nbits}-bit"
    return True, None


def gdal_corners(ds, rect, own):
    srs = ds.GetSpatialRef()
    gt = ds.GetGeoTransform()
    src = srs.Clone()
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if own:
        dst = srs.CloneGeogCS()
    else:
        dst = osr.SpatialReference()
        dst.ImportFromEPSG(4326)
    dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    x, y, w, h = rect
    out = []
    for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
        cx = gt[0] + px * gt[1] + py * gt[2]
        cy = gt[3] + px * gt[4] + py * gt[5]
        try:
            lon, lat, _ = ct.TransformPoint(cx, cy)
        except Exception:  # off the projection's domain
            lon, lat = float("inf"), float("inf")
        out.append((lon, lat))
    return out


def gdal_georeferenced(ds):
    return ds.GetSpatialRef() is not None and ds.GetGeoTransform(can_return_null=True) is not None


def scan(path, reader, out, pixel):
    args = [BIN, "scan", path, "--labels", "forest,water", "--tile", "32", "--stride", "32",
            "--out", out, "--reader", reader]
    if pixel:
        args.append("--pixel-coords")
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--reader", default="native")
    ap.add_argument("--jsonl")
    a = ap.parse_args()
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.corpus) for f in fs
                   if f.lower().endswith((".tif", ".tiff")))
    tally = {"files": len(files), "ordinary": 0, "scanned": 0, "exact": 0,
             "pixel_coords_only": 0, "misplaced": 0, "panics": 0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            ok, why = ordinary(path)
            out = os.path.join(tmp, "out.geojson")
            r = scan(path, a.reader, out, False)
            if r.returncode != 0 and "no georeferencing" in r.stderr:
                r = scan(path, a.reader, out, True)
            panicked = "panicked" in r.stderr or r.returncode not in (0, 1, 2)
            tally["panics"] += panicked
            row = {"file": os.path.relpath(path, a.corpus), "ordinary": ok, "why": why,
                   "code": r.returncode,
                   "error": [l for l in r.stderr.splitlines()
                             if l.startswith("skyscribe: ") and "templates" not in l][:1]
                   if r.returncode else []}
            if ok:
                tally["ordinary"] += 1
            if r.returncode == 0 and os.path.exists(out):
                fc = json.load(open(out))
                info = fc["skyscribe"]
                ds = gdal.Open(path)
                if ok:
                    tally["scanned"] += 1
                if info["coordinates"].startswith("pixels"):
                    row["placed"] = "pixels"
                    if ok and gdal_georeferenced(ds):
                        tally["pixel_coords_only"] += 1
                        row["problem"] = "GDAL georeferences it; scanned in pixels"
                    elif ok:
                        tally["exact"] += 1  # in pixels, as GDAL has no georeferencing either
                elif fc["features"]:
                    own = info.get("datum_note") is not None
                    worst = 0.0
                    for feat in fc["features"]:
                        want = gdal_corners(ds, feat["properties"]["tile"], own)
                        off_earth = not all(abs(v) < 1e30 for p in want for v in p)
                        if feat["geometry"] is None or off_earth:
                            # Off the Earth both must say so: null here, infinity from OSR.
                            if (feat["geometry"] is None) != off_earth:
                                worst = float("inf")
                            continue
                        ring = feat["geometry"]["coordinates"][0][:4]
                        for wl, wa in want:
                            worst = max(worst, min(max(abs(p[0] - wl), abs(p[1] - wa)) for p in ring))
                    row["worst_deg"] = worst
                    row["placed"] = "own datum" if own else "WGS 84"
                    if worst < 1e-7:
                        tally["exact"] += ok
                    else:
                        tally["misplaced"] += 1
                        row["problem"] = f"{worst:.3g} degrees from GDAL"
                if ok and not fc["features"]:
                    row["placed"] = "no valid tiles"
                    tally["exact"] += 1
            if (ok and (r.returncode != 0 or row.get("problem"))) or panicked or row.get("problem"):
                print(f"{row['file']}: {row.get('problem') or (row['error'] or ['?'])[0]}")
            rows.append(row)
            if os.path.exists(out):
                os.remove(out)
    if a.jsonl:
        with open(a.jsonl, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    o = max(tally["ordinary"], 1)
    print(json.dumps(tally))
    print(f"reader {a.reader}: {tally['scanned']} of {tally['ordinary']} ordinary files scan "
          f"({100 * tally['scanned'] / o:.1f} %); {tally['exact']} placed within 1e-7 degrees of "
          f"GDAL or in pixels where GDAL has no georeferencing; {tally['misplaced']} misplaced; "
          f"{tally['panics']} panics")


if __name__ == "__main__":
    sys.exit(main())
