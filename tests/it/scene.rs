//! Scenes read as GDAL reads them: the fixtures made by `tests/fixtures/scenes/make_scenes.py`
//! (several CRSs, layouts, sample types, compressions, nodata three ways) against GDAL's own
//! reading of them in `expected.json`; and damaged copies of them refused cleanly.

use std::path::PathBuf;

use skyscribe::scene::{ReaderChoice, Scene, SceneOptions};

use crate::common::{fixtures, integers, read_json, scratch};

pub fn scenes_dir() -> PathBuf {
    fixtures().join("scenes")
}

fn expected() -> Vec<serde_json::Value> {
    read_json(&scenes_dir().join("expected.json"))["scenes"]
        .as_array()
        .unwrap()
        .clone()
}

fn tile_of(t: &serde_json::Value) -> (u32, u32, u32, u32) {
    let v: Vec<u32> = integers(&t["tile"]);
    (v[0], v[1], v[2], v[3])
}

/// The scene at `path`, opened and checked against GDAL's size and band count in `gdal`.
fn open_as_gdal_says(path: &std::path::Path, gdal: &serde_json::Value) -> Scene {
    open_with_reader(path, gdal, ReaderChoice::Native)
}

/// [`open_as_gdal_says`] through the reader `reader`.
fn open_with_reader(
    path: &std::path::Path,
    gdal: &serde_json::Value,
    reader: ReaderChoice,
) -> Scene {
    let name = path.display();
    let opts = SceneOptions {
        reader,
        ..SceneOptions::default()
    };
    let scene = Scene::open(path, &opts).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(
        scene.width as u64,
        gdal["width"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        scene.height as u64,
        gdal["height"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        scene.band_count as u64,
        gdal["bands"].as_u64().unwrap(),
        "{name}"
    );
    scene
}

#[test]
fn scenes_read_as_gdal_reads_them() {
    let all = expected();
    assert!(all.len() >= 8);
    for s in &all {
        let name = s["file"].as_str().unwrap();
        let mut scene = open_as_gdal_says(&scenes_dir().join(name), s);
        assert_eq!(scene.nodata, s["nodata"].as_f64(), "{name}");
        match (&scene.georef, s["geotransform"].as_array()) {
            (Some(g), Some(gt)) => {
                for (a, b) in g.transform.iter().zip(gt) {
                    let b = b.as_f64().unwrap();
                    assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "{name}: {a} vs {b}"
                    );
                }
                assert_eq!(g.epsg.map(u64::from), s["epsg"].as_u64(), "{name}");
            }
            (None, None) => {}
            (g, gt) => panic!("{name}: georef {g:?} vs GDAL {gt:?}"),
        }
        let jpeg = name.contains("jpeg");
        let bands = scene.band_count;
        let mut checked = 0;
        for t in s["tiles"].as_array().unwrap() {
            let rect = tile_of(t);
            if let (Some(g), Some(corners)) = (&scene.georef, t["corners"].as_array()) {
                let (x, y, w, h) = rect;
                let ours = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)];
                for ((px, py), c) in ours.iter().zip(corners) {
                    let (lon, lat) = g.pixel_to_lon_lat(*px as f64, *py as f64).unwrap();
                    let (glon, glat) = (c[0].as_f64().unwrap(), c[1].as_f64().unwrap());
                    assert!(
                        (lon - glon).abs() < 1e-7 && (lat - glat).abs() < 1e-7,
                        "{name} tile {rect:?}: ({lon}, {lat}) vs GDAL ({glon}, {glat})"
                    );
                }
            }
            // Validity (nodata, alpha, internal mask) and the data under it.
            let rows = scene.rgb_rows(rect.1, rect.3, 1).unwrap();
            let (_, any_valid) = rows.tile(rect).unwrap();
            assert_eq!(
                !any_valid,
                t["nodata"].as_bool().unwrap(),
                "{name} {rect:?}"
            );
            if let Some(means) = t["means"].as_array() {
                let (values, _) = scene.values(rect.1, rect.3).unwrap();
                let mut sums = vec![0f64; bands];
                let mut n = 0usize;
                for r in 0..rect.3 {
                    for c in rect.0..rect.0 + rect.2 {
                        let p = (r * scene.width + c) as usize;
                        if rows.valid[p] {
                            n += 1;
                            for (b, s) in sums.iter_mut().enumerate() {
                                *s += values[p * bands + b] as f64;
                            }
                        }
                    }
                }
                for (b, m) in means.iter().enumerate() {
                    let (ours, gdal) = (sums[b] / n as f64, m.as_f64().unwrap());
                    // JPEG decoders may round differently (zune-jpeg here, libjpeg in GDAL).
                    let tol = if jpeg {
                        0.5
                    } else {
                        1e-4 * gdal.abs().max(1.0)
                    };
                    assert!(
                        (ours - gdal).abs() <= tol,
                        "{name} {rect:?} band {b}: {ours} vs {gdal}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "{name}: no tile compared");
    }
}

#[test]
fn damaged_copies_of_the_scenes_fail_cleanly() {
    // Many mutated copies of each fixture: flipped bytes, cut files, and offsets pointed past the
    // end. Each must open and read to the end, or fail with an error; a panic fails the test,
    // and the tiff reader's limits keep any one allocation bounded.
    let dir = scratch("damaged-scenes");
    let mut failures = 0;
    let mut reads = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for s in expected() {
        let name = s["file"].as_str().unwrap();
        let original = std::fs::read(scenes_dir().join(name)).unwrap();
        for k in 0..60 {
            let mut bytes = original.clone();
            match k % 3 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() % bytes.len() as u64) as usize;
                        bytes[i] ^= 1 << (next() % 8);
                    }
                }
                1 => bytes.truncate((next() % bytes.len() as u64) as usize),
                _ => {
                    // A 4-byte offset in the header's first kilobyte set past the end.
                    let i = 4 + (next() % 1000) as usize;
                    let past = (bytes.len() as u32 + (next() % 1000) as u32).to_le_bytes();
                    bytes[i..i + 4].copy_from_slice(&past);
                }
            }
            let path = dir.join(format!("{k}-{name}"));
            std::fs::write(&path, &bytes).unwrap();
            let result = std::panic::catch_unwind(|| -> anyhow::Result<()> {
                let mut scene = Scene::open(&path, &SceneOptions::default())?;
                let mut y = 0;
                while y < scene.height {
                    let h = 64.min(scene.height - y);
                    scene.rgb_rows(y, h, 1)?;
                    y += h;
                }
                Ok(())
            });
            match result {
                Ok(Ok(())) => reads += 1,
                Ok(Err(e)) => {
                    failures += 1;
                    let msg = format!("{e:#}");
                    assert!(
                        msg.contains(&format!("{k}-{name}")),
                        "error does not name the file: {msg}"
                    );
                }
                Err(_) => panic!(
                    "{name}: mutation {k} panicked (copy kept at {})",
                    path.display()
                ),
            }
            std::fs::remove_file(&path).ok();
        }
    }
    assert!(
        failures > 100,
        "only {failures} damaged copies were refused ({reads} read)"
    );
}

#[test]
fn a_header_claiming_a_gigantic_scene_is_refused_before_anything_is_allocated() {
    let dir = scratch("gigantic-scene");
    // A striped scene: its strip count follows the height, so only the width gives it away.
    let mut bytes = std::fs::read(scenes_dir().join("plain-u8-no-georef.tif")).unwrap();
    // ImageWidth (256): made a LONG of three billion pixels.
    let ifd = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let entries = u16::from_le_bytes([bytes[ifd], bytes[ifd + 1]]) as usize;
    let at = (0..entries)
        .map(|e| ifd + 2 + 12 * e)
        .find(|&at| u16::from_le_bytes([bytes[at], bytes[at + 1]]) == 256)
        .unwrap();
    bytes[at + 2..at + 4].copy_from_slice(&4u16.to_le_bytes());
    bytes[at + 8..at + 12].copy_from_slice(&3_000_000_000u32.to_le_bytes());
    let path = dir.join("gigantic.tif");
    std::fs::write(&path, &bytes).unwrap();
    let err = format!(
        "{:#}",
        Scene::open(&path, &SceneOptions::default())
            .err()
            .expect("refused")
    );
    assert!(
        err.contains("gigantic.tif") && err.contains("scenes up to"),
        "{err}"
    );
}

/// The files of `tests/fixtures/gdal_cases` (one per way ordinary GeoTIFFs broke the reader,
/// written by `make_gdal_cases.py` with GDAL) read as GDAL reads them: size, bands, each band's
/// mean, nodata, and where georeferenced the corners and centre within 1e-7° of OSR — on WGS 84,
/// or, where the datum shift needs grids, on the CRS's own datum with the note that says so.
#[test]
fn gdal_cases_read_as_gdal_reads_them() {
    check_gdal_cases(ReaderChoice::Native);
}

/// The same files through GDAL itself (the `gdal` feature): the reader trait hands `Scene` the
/// same sizes, bands, values, nodata and corners. PROJ has a transformation to WGS 84 for every
/// datum here (a Helmert shift where the grids are absent), so every case is on WGS 84.
#[cfg(feature = "gdal")]
#[test]
fn gdal_cases_read_through_gdal_as_gdal_reads_them() {
    check_gdal_cases(ReaderChoice::Gdal);
}

fn check_gdal_cases(reader: ReaderChoice) {
    let dir = fixtures().join("gdal_cases");
    let all = read_json(&dir.join("expected.json"));
    let cases = all["cases"].as_array().unwrap();
    assert!(cases.len() >= 27, "{}", cases.len());
    for c in cases {
        let name = c["file"].as_str().unwrap();
        let mut scene = open_with_reader(&dir.join(name), c, reader);
        let nodata = match &c["nodata"] {
            serde_json::Value::String(s) => Some(s.parse::<f64>().unwrap()),
            v => v.as_f64(),
        };
        assert_eq!(scene.nodata, nodata, "{name}");
        let (values, _) = scene.values(0, scene.height).unwrap();
        let bands = scene.band_count;
        for (b, m) in c["means"].as_array().unwrap().iter().enumerate() {
            let (sum, n) = values
                .iter()
                .skip(b)
                .step_by(bands)
                .fold((0f64, 0usize), |(s, n), &v| (s + v as f64, n + 1));
            let (ours, gdal) = (sum / n as f64, m.as_f64().unwrap());
            // int64 and uint64 samples pass through f32 (24-bit mantissa).
            let tol = 1e-6 * gdal.abs().max(1.0) + if name.contains("int64") { 0.1 } else { 0.0 };
            assert!(
                (ours - gdal).abs() <= tol,
                "{name} band {b}: {ours} vs GDAL {gdal}"
            );
        }
        if !c["georeferenced"].as_bool().unwrap() {
            assert!(scene.georef.is_none(), "{name}: GDAL has no georeferencing");
            assert!(scene.no_georef.is_some(), "{name}: the reason is said");
            continue;
        }
        let g = scene
            .georef
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not georeferenced: {:?}", scene.no_georef));
        // The native reader flags datums whose shift it does not apply; GDAL's flags those PROJ
        // has only a ballpark (datum-ignoring) transformation for.
        let own_datum = match reader {
            ReaderChoice::Gdal => c["osr_ballpark_only"].as_bool().unwrap(),
            _ => c["datum_shift"] == "own",
        };
        assert_eq!(
            g.datum_note.is_some(),
            own_datum,
            "{name}: {:?}",
            g.datum_note
        );
        let want = if own_datum { &c["own"] } else { &c["wgs84"] };
        for (p, w) in c["points"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want.as_array().unwrap())
        {
            let (px, py) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            let ours = g.pixel_to_lon_lat(px, py);
            if w.is_null() {
                // Off the Earth: OSR has no position there, and neither may we.
                let e =
                    ours.expect_err(&format!("{name} at ({px}, {py}): a position off the Earth"));
                assert!(
                    e.is::<skyscribe::scene::georef::OutsideProjection>(),
                    "{name}: {e:#}"
                );
                continue;
            }
            let (lon, lat) = ours.unwrap();
            let (wl, wa) = (w[0].as_f64().unwrap(), w[1].as_f64().unwrap());
            assert!(
                (lon - wl).abs() < 1e-7 && (lat - wa).abs() < 1e-7,
                "{name} at pixel ({px}, {py}): ({lon}, {lat}) vs GDAL ({wl}, {wa}); {}",
                g.crs_name
            );
        }
    }
}
