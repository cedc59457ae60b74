//! STAC inputs of `scan`: GDAL-made COGs published as Sentinel-2 L2A items are (a `visual`
//! asset, one COG per band with `eo:bands` common names, relative hrefs; made by
//! `tests/fixtures/stac/make_stac_fixture.py`), read from a file, over loopback HTTP, and found
//! by a STAC API item search that pages through `next` links (POST with a merged body, then
//! GET). Every way gives the features of the plain scan of the same pixels, with the item's id
//! and datetime on each.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::{fixtures, read_json, scratch, skyscribe};
use crate::remote::{Faults, Server, features, scan_to};

const A: &str = "S2A_33UUP_20240601_0_L2A";
const B: &str = "S2B_33UUP_20240611_0_L2A";

fn stac_dir() -> PathBuf {
    fixtures().join("stac")
}

fn item_path(id: &str) -> PathBuf {
    stac_dir().join(id).join(format!("{id}.json"))
}

/// Features without what says where they came from (scene, and the item's own properties).
fn pixels_and_labels(geojson: &Path) -> Vec<serde_json::Value> {
    let mut fs = features(geojson);
    for f in &mut fs {
        let p = f["properties"].as_object_mut().unwrap();
        for k in ["stac_item", "datetime", "collection"] {
            p.remove(k);
        }
    }
    fs
}

/// The plain scan of the visual COG: what every STAC way of naming it must give.
fn reference(work: &Path) -> Vec<serde_json::Value> {
    let out = work.join("plain.geojson");
    scan_to(stac_dir().join(A).join("TCI.tif").to_str().unwrap(), &out);
    let want = pixels_and_labels(&out);
    assert!(want.len() >= 6, "{}", want.len());
    want
}

fn assert_item(geojson: &Path, id: &str, datetime: &str) {
    for f in read_json(geojson)["features"].as_array().unwrap() {
        assert_eq!(f["properties"]["stac_item"], id, "{}", geojson.display());
        assert_eq!(f["properties"]["datetime"], datetime);
        assert_eq!(f["properties"]["collection"], "sentinel-2-l2a");
    }
}

#[test]
fn a_stac_item_reads_its_visual_asset_or_its_bands_as_the_plain_scan_does() {
    let work = scratch("stac-file");
    let want = reference(&work);
    let item = format!("stac:{}", item_path(A).display());
    // The visual asset; the red, green and blue COGs by key; and the second item, which has no
    // visual asset and names its bands B04/B03/B02 (found by common name, and said).
    for (what, input, extra) in [
        ("visual", item.clone(), vec![]),
        (
            "bands by key",
            item.clone(),
            vec!["--assets", "red,green,blue"],
        ),
        (
            "bands by common name",
            format!("stac:{}", item_path(B).display()),
            vec![],
        ),
    ] {
        let out = work.join("item.geojson");
        let mut args = vec![
            "scan",
            &input,
            "--labels",
            "forest,sea,river,buildings,fields",
        ];
        args.extend([
            "--tile",
            "64",
            "--stride",
            "64",
            "--out",
            out.to_str().unwrap(),
        ]);
        args.extend(extra);
        let r = skyscribe(&args);
        assert_eq!(r.code, 0, "{what}: {}", r.stderr);
        assert_eq!(pixels_and_labels(&out), want, "{what}");
        let info = &read_json(&out)["skyscribe"]["stac"];
        if what == "bands by common name" {
            assert_item(&out, B, "2024-06-11T10:20:29.512000Z");
            assert_eq!(info["assets"], serde_json::json!(["B04", "B03", "B02"]));
            assert!(r.stderr.contains("no `visual` asset"), "{}", r.stderr);
        } else {
            assert_item(&out, A, "2024-06-01T10:20:31.024000Z");
        }
    }
}

#[test]
fn stac_inputs_that_cannot_work_are_refused_by_name() {
    let item = format!("stac:{}", item_path(A).display());
    let tif = stac_dir().join(A).join("TCI.tif").display().to_string();
    let labels = ["--labels", "forest,sea"];
    for (args, says) in [
        (vec!["scan", &item, "--assets", "nir"], "no asset \"nir\""),
        (
            vec!["scan", &tif, "--assets", "red"],
            "--assets names a STAC item",
        ),
        (
            vec!["scan", &item, "--bbox", "10,50,11,51"],
            "--bbox filters a STAC API",
        ),
        (
            vec![
                "scan",
                "stac-search:http://127.0.0.1:9/",
                "--bbox",
                "10,95,11,51",
            ],
            "latitudes",
        ),
        (vec!["scan", &format!("stac:{tif}")], "not JSON"),
    ] {
        let mut a = args.clone();
        a.extend(labels);
        let r = skyscribe(&a);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // Bands that do not share a grid are refused, naming both files.
    let dir = scratch("stac-bad-grid");
    let mut item: serde_json::Value = read_json(&item_path(A));
    item["assets"]["blue"]["href"] = serde_json::json!(
        fixtures()
            .join("gdal_cases/lzw-tiled-edge-tiles.tif")
            .display()
            .to_string()
    );
    for k in ["red", "green"] {
        let h = item["assets"][k]["href"]
            .as_str()
            .unwrap()
            .trim_start_matches("./");
        item["assets"][k]["href"] =
            serde_json::json!(stac_dir().join(A).join(h).display().to_string());
    }
    let bad = dir.join("item.json");
    std::fs::write(&bad, item.to_string()).unwrap();
    let r = skyscribe(&[
        "scan",
        &format!("stac:{}", bad.display()),
        "--assets",
        "red,green,blue",
        "--labels",
        "forest,sea",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("must share one grid"), "{}", r.stderr);
}

/// A STAC API over the fixture folder: POST /api/search answers page 1 (item A) with a `next`
/// link to POST the same search with a token (merged), page 2 (item B) links to a GET page 3,
/// which is empty. Items get absolute `self` links, as APIs give them, so their relative asset
/// hrefs resolve against the item, not the search.
fn stac_api(
    server_port: Arc<Mutex<u16>>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
) -> crate::remote::Api {
    Arc::new(move |method: &str, path: &str, body: &str| {
        let port = *server_port.lock().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let item = |id: &str| {
            let mut v = read_json(&item_path(id));
            v["links"] = serde_json::json!([{
                "rel": "self",
                "href": format!("{base}/{id}/{id}.json"),
            }]);
            v
        };
        let page = |items: Vec<serde_json::Value>, next: Option<serde_json::Value>| {
            let mut links = vec![];
            links.extend(next);
            serde_json::json!({
                "type": "FeatureCollection",
                "features": items,
                "links": links,
                "numberMatched": 2,
            })
            .to_string()
        };
        match (method, path) {
            ("POST", "/api/search") => {
                let b: serde_json::Value = serde_json::from_str(body).unwrap();
                bodies.lock().unwrap().push(b.clone());
                Some(if b.get("token").is_none() {
                    page(
                        vec![item(A)],
                        Some(serde_json::json!({
                            "rel": "next", "href": format!("{base}/api/search"),
                            "method": "POST", "body": {"token": "2"}, "merge": true,
                        })),
                    )
                } else {
                    page(
                        vec![item(B)],
                        Some(
                            serde_json::json!({"rel": "next", "href": format!("{base}/api/page3")}),
                        ),
                    )
                })
            }
            ("GET", "/api/page3") => Some(page(vec![], None)),
            _ => None,
        }
    })
}

#[test]
fn stac_items_over_http_and_a_paged_search_give_the_plain_scans_features() {
    let work = scratch("stac-http");
    let want = reference(&work);
    let port = Arc::new(Mutex::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let server = Server::start_with_api(
        stac_dir(),
        Faults::default(),
        Some(stac_api(port.clone(), bodies.clone())),
    );
    *port.lock().unwrap() = server.port;

    // An item by URL: its relative hrefs are fetched from the server by range requests.
    let out = work.join("by-url.geojson");
    scan_to(
        &format!("stac:{}", server.url(&format!("{A}/{A}.json"))),
        &out,
    );
    assert_eq!(pixels_and_labels(&out), want);
    assert_item(&out, A, "2024-06-01T10:20:31.024000Z");
    let hrefs = &read_json(&out)["skyscribe"]["stac"]["hrefs"];
    assert_eq!(hrefs[0], server.url(&format!("{A}/TCI.tif")));

    // A search through every page: one output per item, named after it.
    let folder = work.join("search/");
    let api = format!("stac-search:{}", server.url("api"));
    let r = skyscribe(&[
        "scan",
        &api,
        "--bbox",
        "14.9,50.0,15.2,50.1",
        "--datetime",
        "2024-06-01/2024-06-30",
        "--collections",
        "sentinel-2-l2a",
        "--assets",
        "red,green,blue",
        "--labels",
        "forest,sea,river,buildings,fields",
        "--tile",
        "64",
        "--stride",
        "64",
        "--out",
        folder.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for (id, dt) in [
        (A, "2024-06-01T10:20:31.024000Z"),
        (B, "2024-06-11T10:20:29.512000Z"),
    ] {
        let f = folder.join(format!("{id}.geojson"));
        assert_eq!(pixels_and_labels(&f), want, "{id}");
        assert_item(&f, id, dt);
    }
    let sent = bodies.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["bbox"], serde_json::json!([14.9, 50.0, 15.2, 50.1]));
    assert_eq!(sent[0]["datetime"], "2024-06-01/2024-06-30");
    assert_eq!(
        sent[0]["collections"],
        serde_json::json!(["sentinel-2-l2a"])
    );
    // The next link's body merged into the search, as its `merge: true` asks.
    assert_eq!(sent[1]["token"], "2");
    assert_eq!(
        sent[1]["collections"],
        serde_json::json!(["sentinel-2-l2a"])
    );

    // --max-items stops on the first page and says the search had more.
    bodies.lock().unwrap().clear();
    let one = work.join("one/");
    let r = skyscribe(&[
        "scan",
        &api,
        "--max-items",
        "1",
        "--labels",
        "forest,sea",
        "--tile",
        "64",
        "--out",
        one.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("matched 2 items; stopped at --max-items 1"),
        "{}",
        r.stderr
    );
    assert!(one.join(format!("{A}.geojson")).exists());
    assert!(!one.join(format!("{B}.geojson")).exists());
    assert_eq!(bodies.lock().unwrap().len(), 1);
    assert_eq!(bodies.lock().unwrap()[0]["limit"], 1);
}

/// Every row of an index: id → (path, chip, bounds, embedding).
fn rows_of(index: &Path) -> Vec<skyscribe::index::parts::Row> {
    let meta = skyscribe::index::IndexMeta::read(index).unwrap();
    let mut rows = Vec::new();
    for i in 0..meta.shards {
        let (r, _) = skyscribe::index::parts::read_part(
            &index.join("parts"),
            i,
            meta.shards,
            &meta.model.key,
        )
        .unwrap();
        rows.extend(r);
    }
    rows.sort_by_key(|r| r.chip);
    rows
}

fn index_build(index: &Path, input: &str) -> serde_json::Value {
    let r = skyscribe(&[
        "index",
        "build",
        "--index",
        index.to_str().unwrap(),
        "--chip-size",
        "64",
        "--jsonl",
        input,
    ]);
    assert_eq!(r.code, 0, "{input}: {}", r.stderr);
    crate::common::json_lines(&r.stdout).pop().unwrap()
}

#[test]
fn index_build_takes_scene_urls_and_stac_items_as_the_local_scene() {
    let work = scratch("stac-index");
    let tci = stac_dir().join(A).join("TCI.tif");
    let local = work.join("local");
    index_build(&local, &format!("scene:{}", tci.display()));
    let want = rows_of(&local);
    assert_eq!(
        want.len(),
        12,
        "a 200×150 scene in 64-px chips to every edge"
    );

    let server = Server::start(stac_dir(), Faults::default());
    let url = server.url(&format!("{A}/TCI.tif"));
    let item = format!("stac:{}", server.url(&format!("{A}/{A}.json")));
    for (input, id) in [(format!("scene:{url}"), url.clone()), (item, A.to_string())] {
        let index = work.join(format!("i{}", id.len()));
        let summary = index_build(&index, &input);
        assert_eq!(summary["encoded"], 12, "{input}: {summary}");
        let rows = rows_of(&index);
        assert_eq!(rows.len(), want.len());
        for (r, w) in rows.iter().zip(&want) {
            assert_eq!(r.chip, w.chip);
            let [x, y, cw, ch] = r.chip.unwrap();
            assert_eq!(r.id, format!("{id}#{x},{y},{cw},{ch}"));
            assert_eq!(r.path, url, "rows point at the object itself");
            assert_eq!(r.bounds, w.bounds);
            assert_eq!(r.embedding, w.embedding, "{input} {:?}", r.chip);
        }
        // Built again: the object's version (size, ETag, modification) is unchanged, so every
        // row is reused, not embedded again.
        let again = index_build(&index, &input);
        assert_eq!(again["reused"], 12, "{input}: {again}");
        assert_eq!(again["encoded"], 0, "{input}: {again}");
    }
    // An item without a visual asset (its colour is three files) is refused, with the way out.
    let r = skyscribe(&[
        "index",
        "build",
        "--index",
        work.join("bands").to_str().unwrap(),
        &format!("stac:{}", item_path(B).display()),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--assets red,green,blue"), "{}", r.stderr);
}
