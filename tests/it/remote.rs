//! Scenes over HTTP: a loopback server in the test (Range requests, HEAD, faults on request:
//! a 503 every few requests, connections dropped mid-body, a slow body) serves the fixture
//! GeoTIFFs; a scan over it writes what the scan of the local file writes, and a window reads
//! only its tiles' bytes plus the header.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use skyscribe::scene::{Scene, SceneOptions};

use crate::common::{fixtures, read_json, scratch, skyscribe};

/// Faults the server injects.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Every Nth GET answers 503.
    unavailable_every: u64,
    /// Every Nth GET sends half its body and drops the connection.
    drop_every: u64,
    /// Milliseconds between the body's 4 KiB pieces.
    slow_ms: u64,
}

/// Answers a request (method, path, body) with a JSON document, or `None` to serve a file.
pub type Api = Arc<dyn Fn(&str, &str, &str) -> Option<String> + Send + Sync>;

pub struct Server {
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
}

impl Server {
    /// Serves the files of `dir` on 127.0.0.1 until the test process ends.
    pub fn start(dir: PathBuf, faults: Faults) -> Self {
        Self::start_with_api(dir, faults, None)
    }

    /// [`Server::start`], with `api` answering the requests it knows first (a STAC API).
    pub fn start_with_api(dir: PathBuf, faults: Faults, api: Option<Api>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (r, b) = (requests.clone(), bytes.clone());
        std::thread::spawn(move || {
            let gets = Arc::new(AtomicU64::new(0));
            for conn in listener.incoming().flatten() {
                let (dir, r, b, gets) = (dir.clone(), r.clone(), b.clone(), gets.clone());
                let api = api.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &dir, faults, &r, &b, &gets, api.as_ref());
                });
            }
        });
        Self {
            port,
            requests,
            bytes,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

fn serve(
    conn: TcpStream,
    dir: &Path,
    faults: Faults,
    requests: &AtomicU64,
    bytes: &AtomicU64,
    gets: &AtomicU64,
    api: Option<&Api>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut content_length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                let (a, z) = v.split_once('-').unwrap();
                range = Some((a.parse::<u64>().unwrap(), z.parse::<u64>().unwrap()));
            }
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let mut body = vec![0u8; content_length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        if let Some(json) = api.and_then(|f| f(method, path, &String::from_utf8_lossy(&body))) {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/geo+json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )?;
            continue;
        }
        let Ok(data) = std::fs::read(dir.join(path.trim_start_matches('/'))) else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let len = data.len() as u64;
        if method == "HEAD" {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n\r\n"
            )?;
            continue;
        }
        let n = gets.fetch_add(1, Ordering::SeqCst) + 1;
        if faults.unavailable_every > 0 && n.is_multiple_of(faults.unavailable_every) {
            out.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let (a, z) = range.unwrap_or((0, len - 1));
        let z = z.min(len - 1);
        let body = &data[a as usize..=z as usize];
        write!(
            out,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{z}/{len}\r\nAccept-Ranges: bytes\r\n\r\n",
            body.len()
        )?;
        if faults.drop_every > 0 && n.is_multiple_of(faults.drop_every) {
            out.write_all(&body[..body.len() / 2])?;
            bytes.fetch_add(body.len() as u64 / 2, Ordering::SeqCst);
            return Ok(()); // the connection drops mid-body
        }
        for piece in body.chunks(4096) {
            out.write_all(piece)?;
            if faults.slow_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(faults.slow_ms));
            }
        }
        bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
        out.flush()?;
    }
}

const LABELS: &str = "forest,sea,river,buildings,fields";

/// The features of a scan's GeoJSON without the `scene` property (a URL or a path).
pub fn features(geojson: &Path) -> Vec<serde_json::Value> {
    let mut fc = read_json(geojson);
    let mut fs = fc["features"].as_array_mut().unwrap().clone();
    for f in &mut fs {
        f["properties"].as_object_mut().unwrap().remove("scene");
    }
    fs
}

pub fn scan_to(scene: &str, out: &Path) {
    let r = skyscribe(&[
        "scan",
        scene,
        "--labels",
        LABELS,
        "--tile",
        "64",
        "--stride",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{scene}: {}", r.stderr);
}

#[test]
fn a_scan_over_http_writes_what_the_local_scan_writes_through_faults() {
    let dir = fixtures().join("gdal_cases");
    let name = "lzw-tiled-edge-tiles.tif";
    let work = scratch("remote-scan");
    let local = work.join("local.geojson");
    scan_to(dir.join(name).to_str().unwrap(), &local);
    let want = features(&local);
    assert!(want.len() >= 12, "{}", want.len());
    let mut baseline = None;
    for (what, faults) in [
        ("no faults", Faults::default()),
        (
            "a 503 every 3rd GET",
            Faults {
                unavailable_every: 3,
                ..Default::default()
            },
        ),
        (
            // (A scan of this file takes three GETs since the header's blocks are shared by
            // its decoders: every 2nd, so that one is dropped.)
            "every 2nd GET dropped mid-body",
            Faults {
                drop_every: 2,
                ..Default::default()
            },
        ),
        (
            "a slow body",
            Faults {
                slow_ms: 5,
                ..Default::default()
            },
        ),
    ] {
        let server = Server::start(dir.clone(), faults);
        let out = work.join("remote.geojson");
        scan_to(&server.url(name), &out);
        assert_eq!(features(&out), want, "{what}");
        let info = &read_json(&out)["skyscribe"];
        assert_eq!(info["scene"], server.url(name));
        let requests = server.requests.load(Ordering::SeqCst);
        // The file once (a scan needs every tile), the header's 16 KiB blocks, and what the
        // faults cost again.
        let size = std::fs::metadata(dir.join(name)).unwrap().len();
        let served = server.bytes.load(Ordering::SeqCst);
        assert!(
            served <= size + size / 10 + 2 * 16384 || faults.drop_every > 0,
            "{what}: {served} bytes"
        );
        match baseline {
            None => baseline = Some(requests),
            Some(b) if faults.unavailable_every + faults.drop_every > 0 => {
                assert!(
                    requests > b,
                    "{what}: {requests} requests, no retry seen ({b} without faults)"
                )
            }
            Some(_) => {}
        }
    }
}

#[test]
fn a_window_fetches_its_tiles_and_the_header_only() {
    let dir = fixtures().join("gdal_cases");
    let name = "lzw-tiled-edge-tiles.tif";
    let server = Server::start(dir.clone(), Faults::default());
    let url = server.url(name);
    let mut scene = Scene::open(Path::new(&url), &SceneOptions::default()).unwrap();
    let header = server.bytes.load(Ordering::SeqCst);
    let header_requests = server.requests.load(Ordering::SeqCst);
    // The tile byte counts, read here from the file itself.
    let mut d = tiff::decoder::Decoder::new(std::fs::File::open(dir.join(name)).unwrap()).unwrap();
    let counts = d.get_tag_u64_vec(tiff::tags::Tag::TileByteCounts).unwrap();
    let (tw, _) = d.chunk_dimensions();
    let across = scene.width.div_ceil(tw) as usize;
    // Rows 0..64 lie in the first row of tiles.
    let rows = scene.rgb_rows(0, 64, 1).unwrap();
    assert_eq!(rows.width, scene.width);
    let tiles: u64 = counts[..across].iter().sum();
    let fetched = server.bytes.load(Ordering::SeqCst) - header;
    let requests = server.requests.load(Ordering::SeqCst) - header_requests;
    assert!(
        fetched <= tiles + tiles / 10,
        "{fetched} bytes fetched for {tiles} bytes of tiles"
    );
    assert!(fetched >= tiles, "{fetched} < {tiles}");
    // The row's tiles lie side by side in the file: one request for all of them.
    assert_eq!(
        requests, 1,
        "{requests} requests for one row of {across} tiles"
    );
    // Opening took a HEAD and a few 16 KiB blocks of the header, as /vsicurl/ does.
    assert!(
        header <= 4 * 16384 && header_requests <= 4,
        "{header} bytes in {header_requests} requests"
    );
    // And the pixels are the file's.
    let mut local = Scene::open(&dir.join(name), &SceneOptions::default()).unwrap();
    assert_eq!(local.rgb_rows(0, 64, 1).unwrap().pixels, rows.pixels);
}

/// A COG's overviews make previews and heatmaps: the 128-px preview of a 512-px COG is GDAL's
/// 128-px overview itself (its means, to the last bit), reading it over HTTP fetches a fraction
/// of the file, and a scan with a heatmap fetches the file about once (its preview does not
/// read every full-resolution tile again).
#[test]
fn previews_and_heatmaps_read_a_cogs_overviews() {
    let dir = fixtures().join("cog");
    let want = read_json(&dir.join("expected.json"));
    let levels = want["levels"].as_array().unwrap();
    let level = |w: u64| levels.iter().find(|l| l["width"] == w).unwrap();
    let mut scene = Scene::open(&dir.join("overviews.tif"), &SceneOptions::default()).unwrap();
    let (img, step) = scene.preview(128).unwrap();
    assert_eq!((img.width, img.height, step), (128, 128, 4));
    for (b, m) in level(128)["means"].as_array().unwrap().iter().enumerate() {
        let sum: f64 = img
            .pixels
            .iter()
            .skip(b)
            .step_by(3)
            .map(|&v| v as f64)
            .sum();
        let ours = sum / (128.0 * 128.0);
        assert!(
            (ours - m.as_f64().unwrap()).abs() < 1e-9,
            "band {b}: {ours} vs {m}"
        );
    }
    // (Every 4th full-resolution pixel would have given other means.)
    let full = level(512)["means"][0].as_f64().unwrap();
    assert!((full - level(128)["means"][0].as_f64().unwrap()).abs() > 0.1);

    let size = std::fs::metadata(dir.join("overviews.tif")).unwrap().len();
    let server = Server::start(dir.clone(), Faults::default());
    let mut remote = Scene::open(
        Path::new(&server.url("overviews.tif")),
        &SceneOptions::default(),
    )
    .unwrap();
    let opened = server.bytes.load(Ordering::SeqCst);
    let (remote_img, _) = remote.preview(128).unwrap();
    assert_eq!(remote_img.pixels, img.pixels);
    let preview_bytes = server.bytes.load(Ordering::SeqCst) - opened;
    assert!(
        preview_bytes < size / 4,
        "the preview fetched {preview_bytes} of {size} bytes"
    );

    let work = scratch("cog-heatmap");
    let before = server.bytes.load(Ordering::SeqCst);
    let r = skyscribe(&[
        "scan",
        &server.url("overviews.tif"),
        "--labels",
        LABELS,
        "--tile",
        "128",
        "--stride",
        "128",
        "--heatmap-label",
        "forest",
        "--heatmap",
        work.join("h.png").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let scanned = server.bytes.load(Ordering::SeqCst) - before;
    // The file once, plus the header's 16 KiB blocks; a preview decimating the full-resolution
    // tiles would fetch every tile a second time (at least twice the file).
    assert!(
        scanned <= size + size / 10 + 2 * 16384,
        "a scan with a heatmap fetched {scanned} bytes of a {size}-byte COG"
    );
}
