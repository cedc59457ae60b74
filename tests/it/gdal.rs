//! The `gdal` feature's reader end to end: formats the pure-Rust reader refuses (JPEG 2000
//! written by GDAL's OpenJPEG driver, a VRT), and a COG over loopback HTTP through GDAL's
//! /vsicurl/, each scanned to the features the native reader gives for the same pixels; class
//! maps of GDAL-read scenes keep the CRS. (The 27 GDAL-made cases are read through GDAL as well,
//! in `scene::gdal_cases_read_through_gdal_as_gdal_reads_them`.)

use std::path::Path;

use skyscribe::scene::{Scene, SceneOptions};

use crate::common::{fixtures, read_json, scratch, skyscribe};
use crate::remote::{Faults, Server};

const LABELS: &str = "forest,sea,river,buildings,fields";

fn source() -> std::path::PathBuf {
    fixtures().join("scenes/utm33n-u8-tiled-deflate.tif")
}

fn scan(scene: &str, out: &Path, extra: &[&str]) -> crate::common::Run {
    let mut args = vec![
        "scan", scene, "--labels", LABELS, "--tile", "64", "--stride", "48",
    ];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    let r = skyscribe(&args);
    assert_eq!(r.code, 0, "{scene}: {}", r.stderr);
    r
}

/// Two scans' features agree: the same tiles, labels and scores; rings within 1e-9° (OSR and
/// proj4rs each follow PROJ's formulas).
fn same_features(a: &Path, b: &Path, what: &str) {
    let (fa, fb) = (read_json(a), read_json(b));
    let (fa, fb) = (
        fa["features"].as_array().unwrap(),
        fb["features"].as_array().unwrap(),
    );
    assert!(fa.len() >= 6, "{what}: {}", fa.len());
    assert_eq!(fa.len(), fb.len(), "{what}");
    for (x, y) in fa.iter().zip(fb) {
        for k in ["tile", "label", "score", "labels"] {
            assert_eq!(x["properties"][k], y["properties"][k], "{what}: {k}");
        }
        let ring = |f: &serde_json::Value| -> Vec<f64> {
            f["geometry"]["coordinates"][0]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
                .collect()
        };
        for (p, q) in ring(x).iter().zip(ring(y)) {
            assert!((p - q).abs() < 1e-9, "{what}: {p} vs {q}");
        }
    }
}

#[test]
fn formats_only_gdal_reads_scan_to_the_native_scans_features() {
    let work = scratch("gdal-formats");
    let native = work.join("native.geojson");
    scan(source().to_str().unwrap(), &native, &["--reader", "native"]);

    // Lossless JPEG 2000, as Sentinel-2's SAFE products hold their bands.
    let jp2 = work.join("scene.jp2");
    let src = gdal::Dataset::open(source()).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("JP2OpenJPEG").unwrap();
    let opts = gdal::raster::RasterCreationOptions::from_iter(["REVERSIBLE=YES", "QUALITY=100"]);
    src.create_copy(&driver, &jp2, &opts).unwrap();
    let out = work.join("jp2.geojson");
    let r = scan(jp2.to_str().unwrap(), &out, &[]);
    same_features(&native, &out, "JPEG 2000");
    assert!(r.stdout.contains("EPSG:32633"), "{}", r.stdout);
    // The native reader alone cannot read it, and says so rather than guess.
    let r = skyscribe(&[
        "scan",
        jp2.to_str().unwrap(),
        "--labels",
        LABELS,
        "--reader",
        "native",
    ]);
    assert_ne!(r.code, 0);

    // A VRT that shows bands 3, 2, 1: the native scan with --bands 3,2,1.
    let vrt = work.join("bgr.vrt");
    let band = |i: usize, from: usize| {
        format!(
            "<VRTRasterBand dataType=\"Byte\" band=\"{i}\"><SimpleSource><SourceFilename \
             relativeToVRT=\"0\">{}</SourceFilename><SourceBand>{from}</SourceBand>\
             </SimpleSource></VRTRasterBand>",
            source().display()
        )
    };
    let gt = src.geo_transform().unwrap();
    let (w, h) = src.raster_size();
    std::fs::write(
        &vrt,
        format!(
            "<VRTDataset rasterXSize=\"{w}\" rasterYSize=\"{h}\"><SRS>EPSG:32633</SRS>\
             <GeoTransform>{}</GeoTransform>{}{}{}</VRTDataset>",
            gt.map(|v| format!("{v:.17e}")).join(", "),
            band(1, 3),
            band(2, 2),
            band(3, 1)
        ),
    )
    .unwrap();
    let swapped = work.join("native-321.geojson");
    scan(source().to_str().unwrap(), &swapped, &["--bands", "3,2,1"]);
    let out = work.join("vrt.geojson");
    scan(vrt.to_str().unwrap(), &out, &[]);
    same_features(&swapped, &out, "VRT");

    // Its class map is on the scene's CRS, named by EPSG code in its GeoKeys.
    let maps = work.join("maps/");
    scan(
        jp2.to_str().unwrap(),
        &work.join("x.geojson"),
        &["--class-map", maps.to_str().unwrap()],
    );
    let m = Scene::open(&maps.join("scene.classmap.tif"), &SceneOptions::default()).unwrap();
    assert_eq!(m.georef.as_ref().unwrap().epsg, Some(32633));
}

#[test]
fn a_cog_over_http_through_gdal_gives_the_native_scans_features() {
    let work = scratch("gdal-vsicurl");
    let dir = fixtures().join("stac/S2A_33UUP_20240601_0_L2A");
    let native = work.join("native.geojson");
    scan(dir.join("TCI.tif").to_str().unwrap(), &native, &[]);
    let server = Server::start(dir, Faults::default());
    // A URL with --reader gdal goes through /vsicurl/; so does a /vsicurl/ path itself.
    for input in [
        server.url("TCI.tif"),
        format!("/vsicurl/{}", server.url("TCI.tif")),
    ] {
        let out = work.join("http.geojson");
        scan(&input, &out, &["--reader", "gdal"]);
        same_features(&native, &out, &input);
    }
}

#[test]
fn gdal_read_scenes_keep_the_native_readers_size_limit() {
    // A VRT that claims two million rows (GDAL's own test files hold a 2,048 × 1,073,741,824
    // TIFF): refused by name, as the native reader refuses such a TIFF, not read until the
    // memory runs out.
    let dir = scratch("gdal-huge");
    let vrt = dir.join("tall.vrt");
    std::fs::write(
        &vrt,
        "<VRTDataset rasterXSize=\"64\" rasterYSize=\"2000000\"><VRTRasterBand dataType=\"Byte\" \
         band=\"1\"/></VRTDataset>",
    )
    .unwrap();
    let r = skyscribe(&[
        "scan",
        vrt.to_str().unwrap(),
        "--labels",
        LABELS,
        "--pixel-coords",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("64×2000000 pixels"), "{}", r.stderr);
    assert!(r.stderr.contains("tall.vrt"), "{}", r.stderr);
}

#[test]
fn a_netcdf_subdataset_named_as_gdal_names_it_scans_like_its_band() {
    // GDAL's connection strings name subdatasets (NETCDF:file:variable, SENTINEL2_L2A:…): not
    // files, yet scenes. A netCDF copy of the scene (CF grid mapping, one variable a band),
    // variable Band2, scans to the native scan of band 2.
    let work = scratch("gdal-netcdf");
    let nc = work.join("scene.nc");
    let src = gdal::Dataset::open(source()).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("netCDF").unwrap();
    src.create_copy(&driver, &nc, &gdal::raster::RasterCreationOptions::new())
        .unwrap();
    let native = work.join("native.geojson");
    scan(source().to_str().unwrap(), &native, &["--bands", "2"]);
    let out = work.join("nc.geojson");
    let r = scan(&format!("NETCDF:{}:Band2", nc.display()), &out, &[]);
    same_features(&native, &out, "netCDF subdataset");
    assert!(r.stdout.contains("1 band(s)"), "{}", r.stdout);
}
