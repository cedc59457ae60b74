//! `skyscribe scan` end to end on the GDAL-made fixtures: tile polygons against GDAL's own
//! transformation of the tile corners, class maps on the scene's grid and CRS, nodata tiles
//! skipped and counted, bad input refused by name while the other scenes still run, shards,
//! and the two DOTA scenes in pixel coordinates.

use std::path::Path;

use skyscribe::scene::{Scene, SceneOptions};

use crate::common::{
    data_root, integers, json_lines, read_json, scratch, skyscribe, skyscribe_env,
};
use crate::scene::scenes_dir;

fn fixture(name: &str) -> String {
    scenes_dir().join(name).display().to_string()
}

fn expected(name: &str) -> serde_json::Value {
    read_json(&scenes_dir().join("expected.json"))["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"] == name)
        .unwrap()
        .clone()
}

const LABELS: &str = "forest,sea,river,buildings,fields";

/// `skyscribe scan SCENES --labels LABELS --tile T --stride S EXTRA...`.
fn scan(scenes: &[&str], (tile, stride): (u32, u32), extra: &[&str]) -> crate::common::Run {
    let (tile, stride) = (tile.to_string(), stride.to_string());
    let mut args = vec!["scan"];
    args.extend(scenes);
    args.extend(["--labels", LABELS, "--tile", &tile, "--stride", &stride]);
    args.extend(extra);
    skyscribe(&args)
}

/// Every vertex of `ring` is one of GDAL's corners, and every corner is in the ring.
fn same_corners(ring: &[serde_json::Value], corners: &[serde_json::Value], what: &str) {
    assert_eq!(ring.len(), 5, "{what}: a closed ring of 4 corners");
    assert_eq!(ring[0], ring[4], "{what}: ring not closed");
    let pt = |v: &serde_json::Value| (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
    for c in corners {
        let (glon, glat) = pt(c);
        let hit = ring[..4]
            .iter()
            .map(pt)
            .any(|(lon, lat)| (lon - glon).abs() < 1e-7 && (lat - glat).abs() < 1e-7);
        assert!(
            hit,
            "{what}: GDAL's corner ({glon}, {glat}) not in {ring:?}"
        );
    }
}

#[test]
fn tiles_are_where_gdal_puts_them_and_nodata_tiles_are_skipped() {
    for name in [
        "utm33n-u8-tiled-deflate.tif",
        "utm56s-u16-strips-lzw-nodata.tif",
        "webmerc-u8-rgba-packbits.tif",
        "wgs84-i16-bigtiff-planar-point.tif",
        "laea-f32-mask.tif",
        "utm32n-u8-jpeg.tif",
        "utm33n-rotated-f32-none.tif",
    ] {
        let dir = scratch(&format!("scan-{name}"));
        let out = dir.join("tiles.geojson");
        let r = scan(
            &[&fixture(name)],
            (64, 48),
            &["--jsonl", "--out", out.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let want = expected(name);
        let tiles = want["tiles"].as_array().unwrap();
        let valid: Vec<&serde_json::Value> =
            tiles.iter().filter(|t| t["nodata"] == false).collect();
        let lines = json_lines(&r.stdout);
        assert_eq!(
            lines.len(),
            valid.len(),
            "{name}: one line per tile with data"
        );
        let fc: geojson::FeatureCollection =
            std::fs::read_to_string(&out).unwrap().parse().unwrap();
        assert_eq!(fc.features.len(), valid.len(), "{name}");
        let info = &fc.foreign_members.as_ref().unwrap()["skyscribe"];
        assert_eq!(info["coordinates"], "lon/lat (WGS 84)");
        assert_eq!(info["tiles"], tiles.len());
        assert_eq!(info["nodata_tiles"], tiles.len() - valid.len(), "{name}");
        for ((feature, line), t) in fc.features.iter().zip(&lines).zip(&valid) {
            let props = feature.properties.as_ref().unwrap();
            assert_eq!(props["tile"], t["tile"], "{name}");
            assert_eq!(line["tile"], t["tile"], "{name}");
            assert_eq!(props["scene"], fixture(name));
            assert_eq!(props["labels"].as_array().unwrap().len(), 5);
            // The best label flat, for GIS tools that cannot read nested values.
            assert!(props["label"].is_string() && props["score"].is_f64());
            assert_eq!(props["label"], props["labels"][0]["label"]);
            assert_eq!(props["score"], props["labels"][0]["score"]);
            assert_eq!(props["label"], line["labels"][0]["label"]);
            let geom = serde_json::to_value(feature.geometry.as_ref().unwrap()).unwrap();
            assert_eq!(geom["type"], "Polygon");
            let ring = geom["coordinates"][0].as_array().unwrap();
            same_corners(
                ring,
                t["corners"].as_array().unwrap(),
                &format!("{name} {}", t["tile"]),
            );
            // bounds = [west, south, east, north] of the corners.
            let lons: Vec<f64> = ring.iter().map(|p| p[0].as_f64().unwrap()).collect();
            let lats: Vec<f64> = ring.iter().map(|p| p[1].as_f64().unwrap()).collect();
            let b: Vec<f64> = line["bounds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = |v: &[f64]| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(
                b,
                vec![min(&lons), min(&lats), max(&lons), max(&lats)],
                "{name}"
            );
            // Counter-clockwise exterior ring (RFC 7946's right-hand rule).
            let area: f64 = (0..4)
                .map(|i| lons[i] * lats[i + 1] - lons[i + 1] * lats[i])
                .sum();
            assert!(area > 0.0, "{name}: ring is clockwise");
        }
    }
}

#[test]
fn the_class_map_lies_on_the_scenes_grid_and_crs() {
    for name in [
        "utm56s-u16-strips-lzw-nodata.tif",
        "utm33n-rotated-f32-none.tif",
    ] {
        let dir = scratch(&format!("classmap-{name}"));
        let map = dir.join("map.tif");
        let r = scan(
            &[&fixture(name)],
            (64, 32),
            &["--class-map", map.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(dir.join("map.argmax.tif").is_file());
        assert!(dir.join("map.argmax.tif.aux.xml").is_file());
        let want = expected(name);
        let gt: Vec<f64> = want["geotransform"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // Read back with skyscribe's own scene reader: one band per label, cells of 32 pixels.
        let mut m = Scene::open(
            &map,
            &SceneOptions {
                bands: Some(vec![1]),
                ..Default::default()
            },
        )
        .unwrap();
        let g = m.georef.clone().expect("the class map is georeferenced");
        assert_eq!(g.epsg.map(u64::from), want["epsg"].as_u64());
        let scaled = [
            gt[0],
            gt[1] * 32.0,
            gt[2] * 32.0,
            gt[3],
            gt[4] * 32.0,
            gt[5] * 32.0,
        ];
        for (a, b) in g.transform.iter().zip(scaled) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{name}: {:?} vs {scaled:?}",
                g.transform
            );
        }
        assert_eq!(
            (m.width, m.height),
            (200u32.div_ceil(32), 150u32.div_ceil(32))
        );
        assert_eq!(m.band_count, 5);
        let (values, _) = m.values(0, m.height).unwrap();
        for cell in values.chunks_exact(5) {
            if cell[0].is_nan() {
                assert!(cell.iter().all(|v| v.is_nan()));
                continue;
            }
            // Softmax probabilities, averaged: each cell's scores sum to one.
            let sum: f32 = cell.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "{cell:?}");
        }
        let nan_cells = values.chunks_exact(5).filter(|c| c[0].is_nan()).count();
        if name.contains("nodata") {
            // The top-left 100×70 pixels are nodata: cells whose centre only that tile holds.
            assert!(nan_cells > 0, "no empty cell under the nodata tile");
        } else {
            assert_eq!(nan_cells, 0);
        }
    }
}

#[test]
fn bad_scenes_are_refused_by_name_and_the_rest_still_run() {
    let dir = scratch("scan-bad");
    let good = fixture("utm33n-u8-tiled-deflate.tif");
    // A cut copy, a copy whose CRS code is changed to one proj4rs does not know, and a one-colour
    // scene written with skyscribe's own GeoTIFF writer.
    let bytes = std::fs::read(scenes_dir().join("utm33n-u8-tiled-deflate.tif")).unwrap();
    let cut = dir.join("cut.tif");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut recoded = bytes.clone();
    // ProjectedCSTypeGeoKey (3072) = 32633, as a little-endian GeoKey entry.
    let key = [0x00, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x79, 0x7F];
    let at = recoded
        .windows(8)
        .position(|w| w == key)
        .expect("the GeoKey entry");
    recoded[at + 6..at + 8].copy_from_slice(&9999u16.to_le_bytes());
    let odd_crs = dir.join("odd-crs.tif");
    std::fs::write(&odd_crs, &recoded).unwrap();
    let flat = dir.join("flat.tif");
    let place = skyscribe::scene::geotiff_write::Placement {
        transform: [500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0],
        geo_keys: vec![1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633],
        geo_doubles: vec![],
        geo_ascii: String::new(),
    };
    skyscribe::scene::geotiff_write::write_float_bands(
        &flat,
        96,
        80,
        &vec![vec![7.5f32; 96 * 80]; 3],
        &["a".into(), "b".into(), "c".into()],
        Some(&place),
    )
    .unwrap();
    let plain = fixture("plain-u8-no-georef.tif");
    let out = dir.join("out/");
    let r = scan(
        &[
            cut.to_str().unwrap(),
            &good,
            odd_crs.to_str().unwrap(),
            flat.to_str().unwrap(),
            &plain,
        ],
        (64, 48),
        &["--jsonl", "--out", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cut.tif"), "{}", r.stderr);
    assert!(
        r.stderr.contains("odd-crs.tif") && r.stderr.contains("EPSG:9999 is not in the EPSG table"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("plain-u8-no-georef.tif") && r.stderr.contains("--pixel-coords"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("flat.tif") && r.stderr.contains("constant"),
        "{}",
        r.stderr
    );
    // The good scene and the one-colour scene were scanned and written.
    assert!(out.join("utm33n-u8-tiled-deflate.geojson").is_file());
    assert!(out.join("flat.geojson").is_file());
    let lines = json_lines(&r.stdout);
    let scenes: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l["scene"].as_str().unwrap()).collect();
    assert_eq!(scenes.len(), 2, "{scenes:?}");
    for l in &lines {
        for s in l["labels"].as_array().unwrap() {
            assert!(s["score"].as_f64().unwrap().is_finite());
        }
    }

    // Options that make no sense, each refused with what is wrong.
    let r = skyscribe(&["scan", &good, "--stride", "0"]);
    assert_eq!(r.code, 2);
    // --tile without --stride: tiles every half tile, so they overlap and leave no gap (200 × 150
    // px at 64 every 32: 6 × 5 origins, the last of each row and column moved inward).
    let r = skyscribe(&["scan", &good, "--labels", LABELS, "--tile", "64", "--jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let origins: std::collections::BTreeSet<u64> = json_lines(&r.stdout)
        .iter()
        .map(|l| l["tile"][0].as_u64().unwrap())
        .collect();
    assert_eq!(
        origins.into_iter().collect::<Vec<_>>(),
        [0, 32, 64, 96, 128, 136]
    );
    // A tile larger than the scene: one tile, cut to the scene, and said.
    let r = skyscribe(&[
        "scan", &good, "--labels", LABELS, "--tile", "500", "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("utm33n-u8-tiled-deflate.tif")
            && r.stderr
                .contains("smaller than --tile 500: its tiles are 200×150 px"),
        "{}",
        r.stderr
    );
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(integers::<u32>(&lines[0]["tile"]), [0, 0, 200, 150]);
    let r = skyscribe(&["scan", &good, "--labels", LABELS, "--bands", "5,3,2"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("band 5 does not exist") && r.stderr.contains("utm33n"),
        "{}",
        r.stderr
    );
    let r = skyscribe(&[
        "scan",
        &good,
        &plain,
        "--out",
        dir.join("one.geojson").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "an option that cannot work stops the run");
    assert!(r.stderr.contains("need a folder"), "{}", r.stderr);
    let r = skyscribe(&[
        "scan",
        &good,
        "--labels",
        LABELS,
        "--heatmap",
        "x.png",
        "--heatmap-label",
        "lava",
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("\"lava\" is not in the label set"),
        "{}",
        r.stderr
    );
}

#[test]
fn shards_split_the_scenes_and_each_scene_gets_its_own_outputs() {
    let dir = scratch("scan-shards");
    let names = [
        "utm33n-u8-tiled-deflate.tif",
        "laea-f32-mask.tif",
        "utm32n-u8-jpeg.tif",
        "webmerc-u8-rgba-packbits.tif",
    ];
    let scenes: Vec<String> = names.iter().map(|n| fixture(n)).collect();
    let out = dir.join("geojson");
    std::fs::create_dir_all(&out).unwrap();
    let mut seen = Vec::new();
    for (task, count) in [("0", "2"), ("1", "2")] {
        let mut args = vec!["scan"];
        args.extend(scenes.iter().map(String::as_str));
        args.extend([
            "--labels", LABELS, "--tile", "64", "--stride", "64", "--jsonl",
        ]);
        args.extend(["--out", out.to_str().unwrap()]);
        // As a Slurm job array's task would see it.
        let (t, c) = (Path::new(task), Path::new(count));
        let r = skyscribe_env(
            &args,
            &[("SLURM_ARRAY_TASK_ID", t), ("SLURM_ARRAY_TASK_COUNT", c)],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("shard {task}/{count}")),
            "{}",
            r.stderr
        );
        let mine: std::collections::BTreeSet<String> = json_lines(&r.stdout)
            .iter()
            .map(|l| l["scene"].as_str().unwrap().to_string())
            .collect();
        seen.extend(mine);
    }
    seen.sort();
    let mut all = scenes.clone();
    all.sort();
    assert_eq!(seen, all, "every scene in exactly one shard");
    for n in names {
        let stem = n.trim_end_matches(".tif");
        assert!(out.join(format!("{stem}.geojson")).is_file(), "{stem}");
    }
}

#[test]
fn dota_scenes_scan_in_pixel_coordinates_with_a_heatmap() {
    let Some(data) = data_root("dota_scenes_scan_in_pixel_coordinates_with_a_heatmap") else {
        return;
    };
    let dir = scratch("scan-dota");
    let images = data.join("dota/images");
    let r = skyscribe(&[
        "scan",
        images.to_str().unwrap(),
        "--pixel-coords",
        "--labels",
        "harbor,ships,sea,parking lot,buildings,road,trees",
        "--out",
        dir.to_str().unwrap(),
        "--heatmap-label",
        "harbor",
        "--heatmap",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for (stem, w, h) in [("P0706", 1111u32, 1182u32), ("P1888", 712, 557)] {
        let fc: geojson::FeatureCollection =
            std::fs::read_to_string(dir.join(format!("{stem}.geojson")))
                .unwrap()
                .parse()
                .unwrap();
        let info = &fc.foreign_members.as_ref().unwrap()["skyscribe"];
        assert!(info["coordinates"].as_str().unwrap().starts_with("pixels"));
        let grid = skyscribe::data::cover_grid(w, h, 224, 112);
        assert_eq!(fc.features.len(), grid.len());
        // The tiles reach every edge.
        let right = grid.iter().map(|t| t.0 + t.2).max().unwrap();
        let bottom = grid.iter().map(|t| t.1 + t.3).max().unwrap();
        assert_eq!((right, bottom), (w, h));
        let png = image::open(dir.join(format!("{stem}.heatmap.png"))).unwrap();
        let step = w.max(h).div_ceil(1024);
        // The preview with a 62-pixel legend under it.
        assert_eq!(
            (png.width(), png.height()),
            (w.div_ceil(step).max(360), h.div_ceil(step) + 62)
        );
    }
}

#[test]
fn index_build_tiles_scenes_like_scan_with_their_wgs84_bounds() {
    let dir = scratch("index-scenes");
    let idx = dir.join("idx");
    let all = read_json(&scenes_dir().join("expected.json"))["scenes"]
        .as_array()
        .unwrap()
        .clone();
    // Every fixture scene as its own scene: input (the folder also holds the xView layout).
    let inputs: Vec<String> = all
        .iter()
        .map(|s| {
            format!(
                "scene:{}",
                scenes_dir().join(s["file"].as_str().unwrap()).display()
            )
        })
        .collect();
    let build = |extra: &[&str]| {
        let mut args = vec!["index", "build", "--index", idx.to_str().unwrap()];
        args.extend(inputs.iter().map(String::as_str));
        args.extend(["--chip-size", "64", "--chip-stride", "48", "--jsonl"]);
        args.extend(extra);
        let r = skyscribe(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        json_lines(&r.stdout).pop().unwrap()
    };
    let tiles: usize = all
        .iter()
        .map(|s| s["tiles"].as_array().unwrap().len())
        .sum();
    let nodata: usize = all
        .iter()
        .flat_map(|s| s["tiles"].as_array().unwrap())
        .filter(|t| t["nodata"] == true)
        .count();
    let first = build(&[]);
    assert_eq!(first["items"], tiles);
    assert_eq!(
        first["nodata"], nodata,
        "wholly nodata tiles are counted, not indexed"
    );
    assert_eq!(first["encoded"], tiles - nodata);
    // Unchanged scenes keep their rows, bounds included.
    let again = build(&[]);
    assert_eq!(again["encoded"], 0);
    let r = skyscribe(&[
        "search",
        "--index",
        idx.to_str().unwrap(),
        "--text",
        "a lake",
        "--top-k",
        "1000",
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hits = json_lines(&r.stdout);
    assert_eq!(hits.len(), tiles - nodata);
    let mut with_bounds = 0;
    for h in &hits {
        let (file, _) = h["id"].as_str().unwrap().split_once('#').unwrap();
        let scene = all.iter().find(|s| s["file"] == file).unwrap();
        let t = scene["tiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tile"] == h["chip"])
            .unwrap_or_else(|| panic!("{h}: not a tile scan lays"));
        let Some(corners) = t["corners"].as_array() else {
            assert!(
                h.get("bounds").is_none(),
                "{h}: bounds without georeferencing"
            );
            continue;
        };
        let lons: Vec<f64> = corners.iter().map(|c| c[0].as_f64().unwrap()).collect();
        let lats: Vec<f64> = corners.iter().map(|c| c[1].as_f64().unwrap()).collect();
        let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let want = [min(&lons), min(&lats), max(&lons), max(&lats)];
        let got: Vec<f64> = h["bounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{h}: {got:?} vs GDAL {want:?}");
        }
        with_bounds += 1;
    }
    assert!(with_bounds > 50, "{with_bounds}");
    // The parts are GeoParquet: `geo` metadata, and each row's bounds box as a WKB polygon.
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut geometries = 0;
    for e in std::fs::read_dir(idx.join("parts")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let geo = parquet_meta(&path, "geo");
        assert_eq!(geo["columns"]["geometry"]["encoding"], "WKB");
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let mut bounds = None;
            let mut wkb = None;
            for (name, field) in row.get_column_iter() {
                match (name.as_str(), field) {
                    ("bounds", parquet::record::Field::ListInternal(l)) => {
                        bounds = Some(
                            l.elements()
                                .iter()
                                .map(|v| match v {
                                    parquet::record::Field::Double(d) => *d,
                                    other => panic!("{other:?}"),
                                })
                                .collect::<Vec<f64>>(),
                        )
                    }
                    ("geometry", parquet::record::Field::Bytes(b)) => wkb = Some(b.data().to_vec()),
                    _ => {}
                }
            }
            match (bounds, wkb) {
                (Some(b), Some(w)) => {
                    let want =
                        skyscribe::geoparquet::wkb_polygon(&skyscribe::geoparquet::box_ring([
                            b[0], b[1], b[2], b[3],
                        ]));
                    assert_eq!(w, want);
                    geometries += 1;
                }
                (None, None) => {}
                (b, w) => panic!("bounds {b:?} but geometry {w:?}"),
            }
        }
    }
    assert_eq!(geometries, with_bounds);
}

#[test]
fn xview_layout_is_read_through_the_scene_reader_to_every_edge() {
    // tests/fixtures/scenes/xview: xView's layout (GeoTIFF in EPSG:4326 under train_images/,
    // features with xView's properties and lon/lat polygons), made by make_scenes.py.
    let root = scenes_dir().join("xview");
    let doc = read_json(&root.join("xView_train.geojson"));
    let tif = root.join("train_images/2355.tif");
    let mut scene = Scene::open(&tif, &SceneOptions::default()).unwrap();
    let g = scene.georef.clone().unwrap();
    assert_eq!(g.epsg, Some(4326));
    // Each feature's polygon is where the GeoTIFF's georeferencing puts its pixel box.
    for f in doc["features"].as_array().unwrap() {
        let b: Vec<f64> = f["properties"]["bounds_imcoords"]
            .as_str()
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
        for (corner, (px, py)) in
            ring.iter()
                .zip([(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3])])
        {
            let (lon, lat) = g.pixel_to_lon_lat(px, py).unwrap();
            assert!((lon - corner[0].as_f64().unwrap()).abs() < 1e-9);
            assert!((lat - corner[1].as_f64().unwrap()).abs() < 1e-9);
        }
    }
    // Chips reach every edge: the car in the bottom-right corner (290..318 × 200..238) is in one.
    let chips = skyscribe::data::ChipOptions {
        size: 128,
        stride: 128,
        ..Default::default()
    };
    let ds = skyscribe::data::open(&format!("xview:{}", root.display()), None, &chips).unwrap();
    let grid = skyscribe::data::cover_grid(320, 240, 128, 128);
    assert_eq!(ds.samples.len(), grid.len());
    let corner = ds
        .samples
        .iter()
        .find(|s| s.image.crop == Some((192, 112, 128, 128)))
        .unwrap();
    assert_eq!(corner.labels, vec!["Small Car"]);
    // The window read gives the pixels a whole-image decode gives (8-bit: no stretch).
    let whole = skyscribe::imagery::load_rgb(&tif, &Default::default()).unwrap();
    for &rect in &grid {
        let rows = scene.rgb_rows(rect.1, rect.3, 1).unwrap();
        let (tile, _) = rows.tile(rect).unwrap();
        assert_eq!(
            tile,
            skyscribe::imagery::crop(&whole, rect).unwrap(),
            "{rect:?}"
        );
    }
}

/// The file offset of the value of `tag` in the first IFD of a little-endian classic TIFF, and
/// the value's count.
fn ifd_entry(bytes: &[u8], tag: u16) -> (usize, usize) {
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..4], b"II*\0");
    let ifd = u32_at(4);
    for e in 0..u16_at(ifd) as usize {
        let at = ifd + 2 + 12 * e;
        if u16_at(at) == tag {
            let count = u32_at(at + 4);
            // LONG values: inline when one fits, else at the offset.
            return (if count == 1 { at + 8 } else { u32_at(at + 8) }, count);
        }
    }
    panic!("tag {tag} not in the first IFD");
}

#[test]
fn a_tile_pointing_past_the_end_stops_that_scene_by_name() {
    let dir = scratch("scan-tile-past-end");
    let mut bytes = std::fs::read(scenes_dir().join("utm33n-u8-tiled-deflate.tif")).unwrap();
    // TileOffsets (324): the last tile starts a megabyte past the end of the file.
    let (at, count) = ifd_entry(&bytes, 324);
    let past = (bytes.len() as u32 + (1 << 20)).to_le_bytes();
    let last = at + 4 * (count - 1);
    bytes[last..last + 4].copy_from_slice(&past);
    let bad = dir.join("past-end.tif");
    std::fs::write(&bad, &bytes).unwrap();
    let good = fixture("utm32n-u8-jpeg.tif");
    let r = scan(&[bad.to_str().unwrap(), &good], (64, 64), &["--jsonl"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("past-end.tif") && r.stderr.contains("strip/tile"),
        "{}",
        r.stderr
    );
    let scenes: std::collections::BTreeSet<String> = json_lines(&r.stdout)
        .iter()
        .map(|l| l["scene"].as_str().unwrap().to_string())
        .collect();
    // The good scene after it ran whole.
    assert!(scenes.contains(&good), "{scenes:?}");
}

#[test]
fn captions_ride_along_with_the_labels() {
    let dir = scratch("scan-captions");
    let out = dir.join("tiles.geojson");
    let r = scan(
        &[&fixture("utm33n-u8-tiled-deflate.tif")],
        (128, 128),
        &["--caption", "--jsonl", "--out", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 4);
    for l in &lines {
        let c = l["caption"].as_str().unwrap();
        assert!(c.split_whitespace().count() >= 3, "{c:?}");
    }
    let fc: geojson::FeatureCollection = std::fs::read_to_string(&out).unwrap().parse().unwrap();
    for (f, l) in fc.features.iter().zip(&lines) {
        assert_eq!(f.properties.as_ref().unwrap()["caption"], l["caption"]);
    }
}

/// `skyscribe ARGS` run to its end while its peak memory (VmHWM) is read: the run and the
/// peak in MiB.
fn run_with_peak(args: &[&str]) -> (crate::common::Run, u64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skyscribe"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        use std::io::Read;
        let t = std::thread::spawn(move || {
            err.read_to_string(&mut e).unwrap();
            e
        });
        out.read_to_string(&mut o).unwrap();
        (o, t.join().unwrap())
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        // VmHWM only grows: the last read before the exit holds the peak.
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb / 1024);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let (stdout, stderr) = reader.join().unwrap();
    (
        crate::common::Run {
            code,
            stdout,
            stderr,
        },
        peak,
    )
}

#[test]
fn memory_follows_the_batch_not_the_row_of_tiles() {
    // A 2,000 × 1 scene at tile 1: one row of 2,000 tiles. Preprocessed a row at a time (the
    // old way) they took 576 MiB; a batch at a time the whole run peaks near 190 MiB.
    let dir = scratch("scan-wide-row");
    let path = dir.join("wide.tif");
    let w = 2000u32;
    let band: Vec<f32> = (0..w).map(|x| (x % 251) as f32).collect();
    skyscribe::scene::geotiff_write::write_float_bands(
        &path,
        w,
        1,
        &[band.clone(), band.clone(), band],
        &["r".into(), "g".into(), "b".into()],
        None,
    )
    .unwrap();
    let p = path.display().to_string();
    let (r, peak) = run_with_peak(&[
        "scan",
        &p,
        "--labels",
        "forest,sea",
        "--tile",
        "1",
        "--stride",
        "1",
        "--pixel-coords",
        "--stretch",
        "none",
        "--jsonl",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout).len(), 2000);
    assert!(peak > 0 && peak < 350, "peak memory {peak} MiB");
}

#[test]
fn scenes_not_on_wgs84_say_so_and_class_maps_keep_their_crs() {
    // NAD27 (its shift to WGS 84 needs grids) and a PCS whose keys say US survey feet.
    let cases = crate::common::fixtures().join("gdal_cases");
    let out = scratch("scan-datums");
    let (nad27, feet) = (
        cases.join("nad27-utm11.tif").display().to_string(),
        cases.join("epsg2853-us-feet.tif").display().to_string(),
    );
    let r = scan(
        &[&nad27, &feet],
        (48, 48),
        &[
            "--out",
            out.to_str().unwrap(),
            "--class-map",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "nad27-utm11.tif: warning: longitude/latitude are on North American Datum 1927"
        ),
        "{}",
        r.stderr
    );
    let fc = read_json(&out.join("nad27-utm11.geojson"));
    let info = &fc["skyscribe"];
    assert!(
        info["datum_note"].as_str().unwrap().contains("needs grids"),
        "{info}"
    );
    assert_eq!(info["crs"], "EPSG:26711");
    let fc = read_json(&out.join("epsg2853-us-feet.geojson"));
    let info = &fc["skyscribe"];
    // Redefined by its keys, the CRS is no longer EPSG:2853 itself.
    assert!(info["crs"].is_null(), "{info}");
    assert!(
        info["crs_name"]
            .as_str()
            .unwrap()
            .contains("US survey foot"),
        "{info}"
    );
    // The class map carries the scene's own GeoKeys: read again, it lies where the scene does.
    let map = Scene::open(
        &out.join("epsg2853-us-feet.classmap.tif"),
        &SceneOptions::default(),
    )
    .unwrap();
    let scene = Scene::open(std::path::Path::new(&feet), &SceneOptions::default()).unwrap();
    let (a, b) = (map.georef.unwrap(), scene.georef.unwrap());
    let (lon, lat) = a.pixel_to_lon_lat(0.0, 0.0).unwrap();
    let (want_lon, want_lat) = b.pixel_to_lon_lat(0.0, 0.0).unwrap();
    assert!((lon - want_lon).abs() < 1e-9 && (lat - want_lat).abs() < 1e-9);
    assert_eq!(a.crs_name, b.crs_name);
}

#[test]
fn geoparquet_out_holds_the_geojsons_features_with_wkb_and_geo_metadata() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = scratch("scan-geoparquet");
    let scene = fixture("utm33n-u8-tiled-deflate.tif");
    let (json_out, pq_out) = (dir.join("tiles.geojson"), dir.join("tiles.parquet"));
    for out in [&json_out, &pq_out] {
        let r = scan(&[&scene], (64, 48), &["--out", out.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let fc = read_json(&json_out);
    let features = fc["features"].as_array().unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&pq_out).unwrap()).unwrap();
    let geo = parquet_meta(&pq_out, "geo");
    assert_eq!(geo["version"], "1.1.0");
    assert_eq!(geo["primary_column"], "geometry");
    let col = &geo["columns"]["geometry"];
    assert_eq!(col["encoding"], "WKB");
    assert!(
        col.get("crs").is_none(),
        "WGS 84 is GeoParquet's default CRS: {col}"
    );
    let info = parquet_meta(&pq_out, "skyscribe");
    assert_eq!(info, fc["skyscribe"]);
    // Row by row, the same properties and the same polygon.
    let rows: Vec<parquet::record::Row> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), features.len());
    for (row, f) in rows.iter().zip(features) {
        let mut label = None;
        let mut wkb = None;
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("label", parquet::record::Field::Str(s)) => label = Some(s.clone()),
                ("tile", parquet::record::Field::Str(s)) => {
                    assert_eq!(
                        serde_json::from_str::<serde_json::Value>(s).unwrap(),
                        f["properties"]["tile"]
                    )
                }
                ("score", parquet::record::Field::Double(v)) => {
                    assert!((v - f["properties"]["score"].as_f64().unwrap()).abs() < 1e-6)
                }
                ("geometry", parquet::record::Field::Bytes(b)) => wkb = Some(b.data().to_vec()),
                _ => {}
            }
        }
        assert_eq!(label.as_deref(), f["properties"]["label"].as_str());
        let wkb = wkb.unwrap();
        let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
        assert_eq!(
            &wkb[..13],
            &[1, 3, 0, 0, 0, 1, 0, 0, 0, ring.len() as u8, 0, 0, 0]
        );
        for (i, p) in ring.iter().enumerate() {
            let at = 13 + 16 * i;
            let x = f64::from_le_bytes(wkb[at..at + 8].try_into().unwrap());
            let y = f64::from_le_bytes(wkb[at + 8..at + 16].try_into().unwrap());
            // (serde_json's float parsing may differ from the written value in the last bit.)
            let (px, py) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            assert!(
                (x - px).abs() < 1e-12 && (y - py).abs() < 1e-12,
                "{x},{y} vs {px},{py}"
            );
        }
    }
    // A scene not on WGS 84 says its CRS is undefined rather than take the default.
    let nad27 = crate::common::fixtures().join("gdal_cases/nad27-utm11.tif");
    let out = dir.join("nad27.parquet");
    let r = scan(
        &[nad27.to_str().unwrap()],
        (48, 48),
        &["--out", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let geo = parquet_meta(&out, "geo");
    assert!(
        geo["columns"]["geometry"]["crs"].is_null()
            && geo["columns"]["geometry"].get("crs").is_some()
    );
    // A .geojson name with --out-format geoparquet is refused, as is --out-format alone.
    let r = scan(
        &[&scene],
        (64, 48),
        &[
            "--out",
            json_out.to_str().unwrap(),
            "--out-format",
            "geoparquet",
        ],
    );
    assert_eq!(r.code, 2, "a refused option: {}", r.stderr);
    assert!(r.stderr.contains("disagree"), "{}", r.stderr);
    let r = scan(&[&scene], (64, 48), &["--out-format", "geoparquet"]);
    assert_ne!(r.code, 0);
}

/// The value of `key` in a Parquet file's key-value metadata, parsed as JSON.
fn parquet_meta(path: &Path, key: &str) -> serde_json::Value {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned();
    let value = kv
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| e.value)
        .unwrap_or_else(|| panic!("{}: no {key} metadata", path.display()));
    serde_json::from_str(&value).unwrap()
}

/// A geostationary full disk (GDAL-made: user-defined keys and an ESRI PE string): the tiles
/// on the Earth are where OSR puts them; the disk's corner tiles have no footprint, so their
/// features carry a null geometry (GeoJSON and GeoParquet alike) and JSON Lines null bounds,
/// while the scan itself goes on.
#[test]
fn tiles_off_the_earth_have_no_footprint_and_the_rest_are_placed() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = scratch("scan-geostationary");
    let scene = crate::common::fixtures().join("gdal_cases/geostationary-esri-pe.tif");
    let (json_out, pq_out) = (dir.join("disk.geojson"), dir.join("disk.parquet"));
    let r = scan(
        &[scene.to_str().unwrap()],
        (24, 24),
        &["--out", json_out.to_str().unwrap(), "--jsonl"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fc = read_json(&json_out);
    let features = fc["features"].as_array().unwrap();
    assert_eq!(features.len(), 12, "a 96 × 72 disk in 24-px tiles");
    let null: Vec<&serde_json::Value> = features
        .iter()
        .filter(|f| f["geometry"].is_null())
        .map(|f| &f["properties"]["tile"])
        .collect();
    assert!(
        null.contains(&&serde_json::json!([0, 0, 24, 24])),
        "{null:?}"
    );
    assert!(null.len() < features.len(), "the centre tiles are placed");
    // The tile over the disk's centre: a small square around (0°, 0°).
    let centre = features
        .iter()
        .find(|f| f["properties"]["tile"] == serde_json::json!([24, 24, 24, 24]))
        .unwrap();
    let ring = centre["geometry"]["coordinates"][0].as_array().unwrap();
    assert!(ring.iter().all(|p| p[0].as_f64().unwrap().abs() < 30.0));
    let lines = json_lines(&r.stdout);
    let nulls = lines.iter().filter(|l| l["bounds"].is_null()).count();
    assert_eq!(nulls, null.len());
    // GeoParquet: the same rows, a null geometry where the GeoJSON has one.
    let r = scan(
        &[scene.to_str().unwrap()],
        (24, 24),
        &["--out", pq_out.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let reader = SerializedFileReader::new(std::fs::File::open(&pq_out).unwrap()).unwrap();
    let geometries: Vec<bool> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            row.get_column_iter()
                .any(|(n, f)| n == "geometry" && matches!(f, parquet::record::Field::Bytes(_)))
        })
        .collect();
    let want: Vec<bool> = features.iter().map(|f| !f["geometry"].is_null()).collect();
    assert_eq!(geometries, want);
}
