//! `skyscribe serve` over loopback: every endpoint answers what the command of the same name
//! prints, each error status for its cause, batching shares forward passes, the queue sheds
//! load with 503, the token guards, bad input never takes the server down, and SIGTERM lets
//! requests in flight finish.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A server started on a free loopback port; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skyscribe"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap().to_string());
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start:\n{}", log.lock().unwrap());
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// SIGTERM, then the exit code and everything the server logged.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (code, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status, `Retry-After`, content type, body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The message of an error answer, which must be JSON `{"error": "..."}`.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", String::from_utf8_lossy(&self.body)))
            .to_string()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let retry_after = resp.header("retry-after").map(str::to_string);
    let content_type = resp.content_type().to_string();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    Reply {
        status,
        retry_after,
        content_type,
        body,
    }
}

pub fn get(url: &str, token: Option<&str>) -> Reply {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    finish(req.call())
}

pub fn post(url: &str, content_type: &str, body: &[u8]) -> Reply {
    finish(
        agent()
            .post(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    )
}

fn post_image(url: &str, path: &Path) -> Reply {
    post(url, "image/jpeg", &std::fs::read(path).unwrap())
}

fn multipart(field: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "skyscribe-test-boundary-7d1";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend(bytes);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Percent-encoding of a path segment (as the page's `encodeURIComponent`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sample() -> PathBuf {
    repo().join("assets/samples/eurosat-river.jpg")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn cli_json(args: &[&str]) -> Vec<Value> {
    let r = skyscribe(args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    json_lines(&r.stdout)
}

/// `GET /v1/search?text=a river&top_k=3` answers what `search --jsonl` prints; the answer.
fn search_like_the_cli(server: &Server, index: &Path) -> Value {
    let cli = cli_json(&[
        "search",
        "--index",
        s(index),
        "--text",
        "a river",
        "--top-k",
        "3",
        "--jsonl",
    ]);
    let api = get(&server.url("/v1/search?text=a%20river&top_k=3"), None).json();
    same_hits(&api, &cli);
    api
}

/// A search answer of the server is what `search --jsonl` printed (`cli`), but for paths.
fn same_hits(api: &Value, cli: &[Value]) {
    let results = api["results"].as_array().unwrap();
    assert_eq!(results.len(), cli.len());
    for (a, c) in results.iter().zip(cli) {
        // Everything the command line prints but the server's own folders: the served path is
        // the file's path relative to its input (the id without a chip), the CLI's absolute.
        let (mut a, mut c) = (a.clone(), c.clone());
        let (served, local) = (a["path"].take(), c["path"].take());
        assert_eq!(a, c, "search by text");
        let (served, local) = (served.as_str().unwrap(), local.as_str().unwrap());
        let id = c["id"].as_str().unwrap();
        assert_eq!(served, id.rsplit_once('#').map_or(id, |(p, _)| p), "{id}");
        assert!(
            !served.starts_with('/') && local.starts_with('/'),
            "{served} / {local}"
        );
        assert!(local.ends_with(&format!("/{served}")), "{served} / {local}");
    }
}

/// An index of the fixture images with the built-in CLIP.
pub fn fixture_index(dir: &Path) -> PathBuf {
    let index = dir.join("index");
    let images = fixtures().join("images");
    let r = skyscribe(&["index", "build", "--index", s(&index), s(&images)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    index
}

#[test]
fn every_endpoint_answers_what_the_command_line_prints() {
    let dir = scratch("serve-cli-equality");
    let index = fixture_index(&dir);
    let server = Server::start(&["--index", s(&index)]);
    let img = sample();
    let other = fixtures().join("images/wide.jpg");

    // /v1/labels = `labels --jsonl`, for the raw body and for a multipart form.
    for (image, labels, template) in [
        (&img, "eurosat", None),
        (
            &other,
            "forest,harbour,desert",
            Some("an aerial photo of {}."),
        ),
    ] {
        let mut args = vec!["labels", "--labels", labels, "--top-k", "5", "--jsonl"];
        let mut query = format!("labels={}&top_k=5", labels.replace(',', "%2C"));
        if let Some(t) = template {
            args.extend(["--template", t]);
            query.push_str("&template=an%20aerial%20photo%20of%20%7B%7D.");
        }
        args.push(s(image));
        let cli = cli_json(&args).remove(0);
        let url = server.url(&format!("/v1/labels?{query}"));
        let raw = post_image(&url, image);
        assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
        assert_eq!(raw.json()["labels"], cli["labels"], "{labels}");
        let (ct, body) = multipart("image", &std::fs::read(image).unwrap());
        let form = post(&url, &ct, &body);
        assert_eq!(form.json()["labels"], cli["labels"]);
    }

    // /v1/describe = `describe --jsonl`: the model's vocabulary and a greedy caption.
    let cli = cli_json(&["describe", "--jsonl", s(&img)]).remove(0);
    let api = post_image(&server.url("/v1/describe"), &img).json();
    assert_eq!(api["labels"], cli["labels"]);
    assert_eq!(api["caption"], cli["caption"]);
    assert!(!api["caption"].as_str().unwrap().trim().is_empty());

    // /v1/caption = `caption --jsonl`, greedy and beam.
    let greedy = cli_json(&["caption", "--jsonl", s(&img)]).remove(0);
    assert_eq!(
        post_image(&server.url("/v1/caption"), &img).json()["caption"],
        greedy["caption"]
    );
    let beam = cli_json(&[
        "caption",
        "--jsonl",
        "--decode",
        "beam",
        "--beam-size",
        "3",
        s(&img),
    ])
    .remove(0);
    assert_eq!(
        post_image(&server.url("/v1/caption?decode=beam&beam_size=3"), &img).json()["caption"],
        beam["caption"]
    );

    // /v1/embed = `embed --jsonl`, for an image and for texts.
    let cli = cli_json(&["embed", "--jsonl", s(&img)]).remove(0);
    let api = post_image(&server.url("/v1/embed"), &img).json();
    assert_eq!(api["embeddings"][0], cli["embedding"]);
    let cli = cli_json(&[
        "embed",
        "--jsonl",
        "--text",
        "a river",
        "--text",
        "a dense forest of pines",
    ]);
    let api = post(
        &server.url("/v1/embed"),
        "application/json",
        br#"{"texts": ["a river", "a dense forest of pines"]}"#,
    )
    .json();
    let got = rows(&api["embeddings"]);
    for (i, line) in cli.iter().enumerate() {
        let want = floats(&line["embedding"]);
        assert!(max_abs_diff(&got[i], &want) < 1e-5, "text {i}");
    }

    // /v1/search = `search --jsonl`, by text and by image.
    search_like_the_cli(&server, &index);
    let cli = cli_json(&[
        "search",
        "--index",
        s(&index),
        "--image",
        s(&img),
        "--top-k",
        "4",
        "--jsonl",
    ]);
    let api = post_image(&server.url("/v1/search?top_k=4"), &img).json();
    same_hits(&api, &cli);

    // Thumbnails by id only.
    let id = api["results"][0]["id"].as_str().unwrap().to_string();
    let thumb = get(
        &server.url(&format!("/v1/thumbnails/{}", encode(&id))),
        None,
    );
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.content_type, "image/jpeg");
    let decoded = image::load_from_memory(&thumb.body).unwrap();
    assert!(decoded.width().max(decoded.height()) <= 192);
    for bad in [
        "no-such-id",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
    ] {
        let r = get(&server.url(&format!("/v1/thumbnails/{bad}")), None);
        assert_eq!(r.status, 404, "{bad}");
        assert!(r.error().contains("no indexed item"), "{}", r.error());
    }

    // The rest.
    assert_eq!(get(&server.url("/healthz"), None).json()["status"], "ok");
    let models = get(&server.url("/v1/models"), None).json();
    assert_eq!(models["clip"]["model"], "skyscribe-mini");
    assert_eq!(models["indexes"][0]["items"], 5);
    let openapi = get(&server.url("/openapi.json"), None).json();
    for path in [
        "/v1/labels",
        "/v1/classify",
        "/v1/describe",
        "/v1/caption",
        "/v1/embed",
        "/v1/search",
        "/v1/thumbnails/{id}",
        "/v1/models",
        "/healthz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} not in openapi.json"
        );
    }
    let page = get(&server.url("/"), None);
    assert!(page.content_type.starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("<script src=\"/app.js\">"));
    assert_eq!(get(&server.url("/app.js"), None).status, 200);
    let metrics = String::from_utf8(get(&server.url("/metrics"), None).body).unwrap();
    assert!(
        metrics.contains(r#"skyscribe_http_requests_total{route="/v1/labels",status="200"} 4"#),
        "{metrics}"
    );
    assert!(metrics.contains("skyscribe_batch_size_count"), "{metrics}");

    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// A raw HTTP exchange: what the server answers to `request` (the status line's code), or
/// `None` when it closed the connection without an answer.
fn raw(addr: &str, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // (The server may answer and close before reading everything: a write error is no failure.)
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

#[test]
fn bad_input_gets_its_status_and_never_takes_the_server_down() {
    let dir = scratch("serve-bad-input");
    let server = Server::start(&[
        "--max-body-mb",
        "0.25",
        "--max-pixels",
        "1000000",
        "--request-timeout-s",
        "2",
        "--no-caption",
    ]);
    let labels = server.url("/v1/labels?labels=eurosat");
    let good = std::fs::read(sample()).unwrap();
    let want = post(&labels, "image/jpeg", &good).json();
    // Headers that never end: the connection is closed after the server's 10 s header timeout
    // (checked at the end; the other cases run meanwhile).
    let slow_headers = {
        let addr = server.addr();
        std::thread::spawn(move || {
            let start = Instant::now();
            let answer = raw(&addr, b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            (start.elapsed(), answer)
        })
    };

    // The command line's bad files, each a 400 naming the problem (or 413 past the cap).
    let truncated = &good[..good.len() / 2];
    let huge = dir.join("huge.png");
    crate::cli::huge_png_header(&huge, 100_000, 100_000);
    let huge = std::fs::read(&huge).unwrap();
    let over_cap = dir.join("over-cap.png");
    crate::cli::huge_png_header(&over_cap, 2000, 1000);
    let over_cap = std::fs::read(&over_cap).unwrap();
    let cases: [(&str, &str, &[u8], u16, &str); 7] = [
        (
            "text",
            "image/jpeg",
            b"these are field notes, not an image\n",
            400,
            "not an image",
        ),
        ("empty", "image/png", b"", 400, "empty body"),
        ("truncated", "image/jpeg", truncated, 400, "truncated JPEG"),
        ("huge header", "image/png", &huge, 413, "exceeds the limit"),
        (
            "over the pixel cap",
            "image/png",
            &over_cap,
            413,
            "exceeds the limit",
        ),
        (
            "json",
            "application/json",
            b"{\"image\": 1}",
            400,
            "where an image was expected",
        ),
        (
            "png garbage",
            "image/png",
            b"\x89PNG\r\n\x1a\nnonsense",
            400,
            "unreadable image",
        ),
    ];
    for (what, ct, body, status, message) in cases {
        let r = post(&labels, ct, body);
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.error().contains(message), "{what}: {}", r.error());
    }

    // Bad parameters.
    let img = std::fs::read(sample()).unwrap();
    for (query, message) in [
        ("/v1/labels", "give labels="),
        ("/v1/labels?labels=eurosat&top_k=0", "top_k"),
        ("/v1/labels?labels=eurosat&top_k=lots", "top_k"),
        (
            "/v1/labels?labels=eurosat&topk=3",
            "unknown parameter \"topk\"",
        ),
        ("/v1/labels?labels=eurosat&labels=xview", "given 2 times"),
        ("/v1/labels?labels=%2Fetc%2Fhostname", "not a label preset"),
        ("/v1/labels?labels=eurosat&template=no%20slot", "has no {}"),
        ("/v1/caption?decode=nucleus", "give greedy or beam"),
        ("/v1/caption?beam_size=3", "beam_size is for decode=beam"),
        ("/v1/caption", "no captioner"),
        ("/v1/describe?labels=a%2Cb&top_k=2&x=1", "unknown parameter"),
    ] {
        let r = post(&server.url(query), "image/jpeg", &img);
        assert_eq!(
            r.status,
            400,
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.error().contains(message), "{query}: {}", r.error());
    }
    // 200 labels × 12 templates: more text forward passes than one request may ask for.
    let many: Vec<String> = (0..200).map(|i| format!("thing{i}")).collect();
    let r = post(
        &server.url(&format!(
            "/v1/labels?labels={}&template=remote-sensing&template=satellite&template=aerial&template=eurosat",
            many.join("%2C")
        )),
        "image/jpeg",
        &img,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("2400 prompts"), "{}", r.error());
    for (body, message) in [
        (&br#"{"texts": []}"#[..], "give 1 to 256 texts"),
        (br#"{"texts": ["ok", " "]}"#, "texts[1] is empty"),
        (br#"{"text": ["a"]}"#, "must be {\"texts\""),
        (br#"{"texts": "#, "must be {\"texts\""),
    ] {
        let r = post(&server.url("/v1/embed"), "application/json", body);
        assert_eq!(r.status, 400);
        assert!(r.error().contains(message), "{}", r.error());
    }
    let r = get(&server.url("/v1/search?text=river"), None);
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no index is served"));
    assert_eq!(get(&server.url("/v2/labels"), None).status, 404);
    let r = get(&server.url("/v1/labels"), None);
    assert_eq!(r.status, 405);
    assert!(
        r.error().contains("GET is not allowed on /v1/labels"),
        "{}",
        r.error()
    );

    // Malformed multipart forms.
    let (ct, mut body) = multipart("image", &img);
    body.truncate(body.len() - 10);
    let r = post(&labels, &ct, &body);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("multipart"), "{}", r.error());
    let (ct, body) = multipart("picture", &img);
    let r = post(&labels, &ct, &body);
    assert!(
        r.error().contains("has a field \"picture\""),
        "{}",
        r.error()
    );
    let r = post(&labels, "multipart/form-data", &img);
    assert_eq!(r.status, 400, "no boundary");

    // A huge declared length is refused before any byte of the body is read.
    let addr = server.addr();
    let (code, text) = raw(
        &addr,
        b"POST /v1/labels?labels=eurosat HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n")
    .expect("an answer");
    assert_eq!(code, 413, "{text}");
    // So is a body past the cap (the server answers without reading it: only its start is sent
    // here, as a client that reads answers while sending would see).
    let mut request = b"POST /v1/labels?labels=eurosat HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 307200\r\nConnection: close\r\n\r\n".to_vec();
    request.extend(&good[..1000]);
    let (code, text) = raw(&addr, &request).expect("an answer");
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("larger than the server's limit"), "{text}");
    // A body that stops arriving is ended by the request timeout (2 s here).
    let start = Instant::now();
    let (code, text) = raw(
        &addr,
        b"POST /v1/labels?labels=eurosat HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n\xFF\xD8\xFF")
    .expect("an answer");
    assert_eq!(code, 408, "{text}");
    assert!(start.elapsed() < Duration::from_secs(30));
    // Garbage that is not HTTP at all.
    let _ = raw(&addr, b"\x16\x03\x01\x02\x00 not http\r\n\r\n");

    let (took, answer) = slow_headers.join().unwrap();
    assert!(answer.is_none(), "{answer:?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(40),
        "slow headers held the connection for {took:?}"
    );

    // Still up, and still right.
    assert_eq!(post(&labels, "image/jpeg", &good).json(), want);
    assert_eq!(get(&server.url("/healthz"), None).status, 200);
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A mid-grey PNG of `w × h` pixels, encoded by the `image` crate with its best compression (a
/// 1 × 1,000,000 one is a few kilobytes, like the testers' 2,991-byte file).
pub fn skinny_png(w: u32, h: u32) -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let pixels = vec![128u8; (w * h) as usize];
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::NoFilter)
        .write_image(&pixels, w, h, image::ExtendedColorType::L8)
        .unwrap();
    out
}

/// The most memory the process `pid` has held (VmHWM), in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// What outside testers broke, each answered now without taking the server down: a skinny
/// image (once a 49 GB resize), a 15 MB text, a browser's multipart boundary, errors that were
/// not JSON (axum's and hyper's own), and a 401 without its scheme.
#[test]
fn hostile_inputs_from_outside_testers_are_answered_within_bounded_memory() {
    let server = Server::start(&["--no-caption", "--max-body-mb", "32"]);
    let labels = server.url("/v1/labels?labels=eurosat");
    // 1 × 1,000,000 and 1,000,000 × 1 (far under the pixel cap) and 1 × 20,000.
    let tall = skinny_png(1, 1_000_000);
    assert!(tall.len() < 20_000, "{} bytes", tall.len());
    for (w, h) in [(1, 1_000_000), (1_000_000, 1), (1, 20_000)] {
        let r = post(&labels, "image/png", &skinny_png(w, h));
        assert_eq!(
            r.status,
            200,
            "{w}×{h}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["labels"].as_array().unwrap().len(), 5);
    }
    // The whole run, model included, in well under a gigabyte (the resize alone asked 49 GB).
    let peak = peak_mib(server.child.id());
    assert!(peak < 1024, "the server's peak memory: {peak} MiB");

    // A 15 MB text: refused at once (the body of texts is capped), as is one text past its cap.
    // (Answered before the body is read, so only its start is sent, as a client that reads
    // answers while sending would see.)
    let huge = format!(
        r#"{{"texts": ["{}"]}}"#,
        "a field of wheat ".repeat(900_000)
    );
    assert!(huge.len() > 15_000_000);
    let mut request = format!(
        "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        huge.len()
    )
    .into_bytes();
    request.extend(&huge.as_bytes()[..4096]);
    let (code, text) = raw(&server.addr(), &request).expect("an answer");
    assert_eq!(code, 413, "{text}");
    assert!(
        text.contains("a JSON body of texts larger than 4096 KiB"),
        "{text}"
    );
    let long = format!(r#"{{"texts": ["ok", "{}"]}}"#, "b".repeat(9000));
    let r = post(
        &server.url("/v1/embed"),
        "application/json",
        long.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("texts[1] is 9000 characters"),
        "{}",
        r.error()
    );
    let r = get(
        &server.url(&format!("/v1/search?text={}", "c".repeat(9000))),
        None,
    );
    assert_eq!(r.status, 404, "no index here: the index check comes first");
    // Up to the cap (2,048 characters, 6 KB of a three-byte script here), texts are embedded.
    let fits = format!(
        r#"{{"texts": ["{}", "{}"]}}"#,
        "a river ".repeat(256),
        "河".repeat(2048)
    );
    assert_eq!(
        post(
            &server.url("/v1/embed"),
            "application/json",
            fits.as_bytes()
        )
        .status,
        200
    );

    // A browser's multipart form: a mixed-case boundary, as Chrome and Safari write it.
    let img = std::fs::read(sample()).unwrap();
    let want = post(&labels, "image/jpeg", &img).json();
    let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"r.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend(&img);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = post(
        &labels,
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), want);

    // Every error is JSON: a path that is not UTF-8 (axum's rejection), and hyper's own
    // answers to a URI past 64 KiB, headers past its buffer and a malformed header.
    let addr = server.addr();
    let long_uri = format!(
        "GET /v1/search?text={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let big_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..120)
            .map(|i| format!("X-Filler-{i}: {}\r\n", "f".repeat(4000)))
            .collect::<String>()
    );
    for (what, request, status) in [
        (
            "non-UTF-8 path",
            b"GET /v1/thumbnails/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        ("URI past 64 KiB", long_uri.into_bytes(), 414),
        ("headers past the buffer", big_headers.into_bytes(), 431),
        (
            "malformed header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
            400,
        ),
    ] {
        let (code, text) = raw(&addr, &request).expect("an answer");
        assert_eq!(code, status, "{what}: {text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{what}: {head}"
        );
        let v: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body:?}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    }

    // Still up, still right, no panic logged.
    assert_eq!(post(&labels, "image/jpeg", &img).json(), want);
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// The memory the process `pid` holds now (VmRSS), in MiB.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// A burst of large uploads takes memory; once the server is idle it gives most of it back
/// (it used to hold its peak for good).
#[test]
fn memory_taken_by_a_burst_of_large_uploads_is_given_back() {
    let server = Server::start(&[
        "--no-caption",
        "--max-body-mb",
        "64",
        "--max-pixels",
        "20000000",
    ]);
    let labels = server.url("/v1/labels?labels=eurosat");
    // 3000 × 3000 noise: 27 MB of pixels a decode, a PNG that does not compress.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let noise = image::RgbImage::from_fn(3000, 3000, |_, _| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        image::Rgb([rng as u8, (rng >> 8) as u8, (rng >> 16) as u8])
    });
    let mut png = Vec::new();
    noise
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let pid = server.child.id();
    let start = resident_mib(pid);
    for _ in 0..2 {
        let senders: Vec<_> = (0..6)
            .map(|_| {
                let (url, body) = (labels.clone(), png.clone());
                std::thread::spawn(move || post(&url, "image/png", &body).status)
            })
            .collect();
        for s in senders {
            assert_eq!(s.join().unwrap(), 200);
        }
    }
    let peak = peak_mib(pid);
    assert!(peak > start + 100, "the burst took {start} → {peak} MiB");
    // Idle: back to within a third of what the burst took, in well under a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = resident_mib(pid);
    while now > start + (peak - start) / 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now = resident_mib(pid);
    }
    assert!(
        now <= start + (peak - start) / 3,
        "idle at {now} MiB after a peak of {peak} (start {start})"
    );
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Requests that time out (408) while their images decode: the decodes keep their slots (one
/// per core) until they stop, so no more images are decoded at once than there are cores, and
/// the memory stays that of a few decodes. (It used to free the slot at the 408, and six
/// skinny PNGs then resized at once, 6.3 GB.)
#[test]
fn timed_out_decodes_keep_their_slots_and_memory_stays_bounded() {
    let server = Server::start(&[
        "--no-caption",
        "--request-timeout-s",
        "0.05",
        "--max-pixels",
        "40000000",
    ]);
    let labels = server.url("/v1/labels?labels=eurosat");
    // 6,000 × 6,000 pixels (108 MB decoded) in a PNG of a few hundred kilobytes, so that the
    // bodies weigh nothing and the decodes are what takes memory.
    let (w, h) = (6000u32, 6000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x / 40) as u8, (y / 40) as u8, 90])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    drop(img);
    let decoded_mib = (w as u64 * h as u64 * 3) >> 20;
    let pid = server.child.id();
    let start = peak_mib(pid);
    // One request every 80 ms: each arrives after the ones before it have timed out (50 ms)
    // but while their decodes (hundreds of milliseconds each) still run. Had a 408 freed its
    // slot, every request would find one free and all six images would be decoding at once.
    let senders: Vec<_> = (0..6u64)
        .map(|k| {
            let (url, body) = (labels.clone(), png.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(80 * k));
                post(&url, "image/png", &body).status
            })
        })
        .collect();
    let statuses: Vec<u16> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 408), "{statuses:?}");
    // Wait for the decodes still running to stop: the server answers again once they have.
    std::thread::sleep(Duration::from_secs(3));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let grew = peak_mib(pid) - start;
    // One decoded image per slot, with room for the decoder's own buffers and the allocator's:
    // under what six decodes at once would take whenever there are fewer slots than requests.
    // (2 cores: the server grew by up to 354 MiB in 11 runs, 3.5 images, so cores + 1 failed
    // one run in several; with the slot freed at the 408 it grew by 551 MiB.)
    if cores < 6 {
        assert!(
            grew <= (cores + 2) * decoded_mib,
            "the server grew by {grew} MiB: more than {cores} decodes of {decoded_mib} MiB at once"
        );
    }
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn the_token_guards_everything_but_the_page_and_health() {
    let server = Server::start(&["--token", "correct-horse-battery", "--no-caption"]);
    let labels = server.url("/v1/labels?labels=eurosat");
    let img = std::fs::read(sample()).unwrap();
    let r = post(&labels, "image/jpeg", &img);
    assert_eq!(r.status, 401);
    assert!(r.error().contains("Authorization: Bearer"), "{}", r.error());
    // A 401 names the scheme it wants (RFC 9110 § 11.6.1).
    let (code, text) = raw(
        &server.addr(),
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("an answer");
    assert_eq!(code, 401);
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer realm=\"skyscribe\""),
        "{text}"
    );
    // The scheme's name is case-insensitive (RFC 9110 § 11.1).
    for (header, status) in [
        ("Bearer wrong-horse-battery", 401),
        ("Bearer correct-horse-batter", 401),
        ("Basic correct-horse-battery", 401),
        ("Bearer correct-horse-battery", 200),
        ("bearer correct-horse-battery", 200),
        ("BEARER correct-horse-battery", 200),
    ] {
        let req = agent()
            .post(&labels)
            .set("Content-Type", "image/jpeg")
            .set("Authorization", header);
        assert_eq!(finish(req.send_bytes(&img)).status, status, "{header}");
    }
    for (path, open) in [
        ("/", true),
        ("/app.js", true),
        ("/healthz", true),
        ("/metrics", false),
        ("/v1/models", false),
        ("/openapi.json", false),
    ] {
        let status = get(&server.url(path), None).status;
        assert_eq!(status, if open { 200 } else { 401 }, "{path}");
        assert_eq!(
            get(&server.url(path), Some("correct-horse-battery")).status,
            200,
            "{path}"
        );
    }
    drop(server);

    // Other addresses than loopback need a token, or saying that none is wanted.
    let r = skyscribe(&["serve", "--addr", "0.0.0.0:0"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--token"), "{}", r.stderr);
    let r = skyscribe(&["serve", "--token", "short"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("at least 8 characters"), "{}", r.stderr);
}

/// A request whose body is only half sent: it holds a place in the server's queue (taken
/// before the body is read) until [`HeldRequest::finish`] sends the rest.
struct HeldRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

fn hold(server: &Server, path: &str, body: &[u8]) -> HeldRequest {
    let depth = || queue_depth(server);
    let before = depth();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let half = body.len() / 2;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..half]).unwrap();
    let start = Instant::now();
    while depth() == before {
        assert!(start.elapsed() < Duration::from_secs(10), "never admitted");
        std::thread::sleep(Duration::from_millis(10));
    }
    HeldRequest {
        stream,
        rest: body[half..].to_vec(),
    }
}

impl HeldRequest {
    fn finish(mut self) -> u16 {
        self.stream.write_all(&self.rest).unwrap();
        let mut answer = Vec::new();
        self.stream.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// A number of `/metrics` (the value after `name `).
fn metric(server: &Server, name: &str) -> f64 {
    let text = String::from_utf8(get(&server.url("/metrics"), None).body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

fn queue_depth(server: &Server) -> usize {
    metric(server, "skyscribe_queue_depth") as usize
}

#[test]
fn concurrent_requests_share_forward_passes_and_get_their_own_answers() {
    let server = Server::start(&["--no-caption", "--max-batch", "8", "--max-wait-ms", "300"]);
    let images: Vec<PathBuf> = [
        "gray.png",
        "palette.png",
        "rgba.png",
        "river.webp",
        "wide.jpg",
    ]
    .iter()
    .map(|f| fixtures().join("images").join(f))
    .chain([sample()])
    .collect();
    let url = server.url("/v1/labels?labels=eurosat&top_k=10");
    let score = |p: &PathBuf| {
        scores(&post(&url, "application/octet-stream", &std::fs::read(p).unwrap()).json())
    };
    // One at a time: nobody else is admitted, so no batch waits (batches of one).
    let alone: Vec<Vec<f32>> = images.iter().map(score).collect();
    assert_eq!(metric(&server, "skyscribe_batch_size_count"), 6.0);
    // All at once, while a slow upload holds a place: the model thread waits up to 300 ms for
    // the requests admitted, and they share forward passes.
    let held = hold(
        &server,
        "/v1/labels?labels=eurosat",
        &std::fs::read(sample()).unwrap(),
    );
    let together: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = images.iter().map(|p| scope.spawn(|| score(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(held.finish(), 200);
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert!(max_abs_diff(a, t) < 1e-5, "image {i}: {a:?} vs {t:?}");
    }
    let sum = metric(&server, "skyscribe_batch_size_sum");
    let count = metric(&server, "skyscribe_batch_size_count");
    assert_eq!(sum, 13.0, "every image encoded once");
    assert!(
        count <= 6.0 + 3.0 + 1.0,
        "six concurrent requests took {} forward passes",
        count - 7.0
    );
}

/// Labels sorted by name, and their scores.
fn scores(answer: &Value) -> Vec<f32> {
    let mut l: Vec<(String, f32)> = answer["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap().to_string(),
                l["score"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    l.sort_by(|a, b| a.0.cmp(&b.0));
    l.into_iter().map(|(_, s)| s).collect()
}

#[test]
fn a_full_queue_sheds_load_with_503_and_recovers() {
    // One place in the queue, held by a slow upload: every other request is shed at once.
    let server = Server::start(&["--no-caption", "--max-queue", "1"]);
    let url = server.url("/v1/labels?labels=eurosat");
    let img = std::fs::read(sample()).unwrap();
    let held = hold(&server, "/v1/labels?labels=eurosat", &img);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| post(&url, "image/jpeg", &img)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 503);
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert!(r.error().contains("capacity"), "{}", r.error());
    }
    // The held request is answered, and the queue empties: the next request is answered.
    assert_eq!(held.finish(), 200);
    assert_eq!(post(&url, "image/jpeg", &img).status, 200);
    assert_eq!(queue_depth(&server), 0);
    assert!(
        metric(
            &server,
            "skyscribe_http_requests_total{route=\"/v1/labels\",status=\"503\"}"
        ) == 6.0
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let server = Server::start(&["--no-caption"]);
    let img = std::fs::read(sample()).unwrap();
    let held = hold(&server, "/v1/labels?labels=eurosat", &img);
    let addr = server.addr();
    let pid = server.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    // No new connections once the signal is handled...
    let start = Instant::now();
    while TcpStream::connect(&addr).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(10), "still accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the request in flight is answered.
    assert_eq!(held.finish(), 200);
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("finishing the requests in flight"), "{log}");
}

#[test]
fn scene_tiles_are_found_with_their_bounds_and_shown_cut_from_the_scene() {
    let dir = scratch("serve-scene-index");
    let index = dir.join("index");
    let mosaic = repo().join("assets/samples/eurosat-mosaic.tif");
    let r = skyscribe(&[
        "index",
        "build",
        "--index",
        s(&index),
        &format!("scene:{}", mosaic.display()),
        "--chip-size",
        "64",
        "--chip-stride",
        "64",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let server = Server::start(&["--index", s(&index), "--no-caption"]);
    let api = search_like_the_cli(&server, &index);
    let best = &api["results"][0];
    assert_eq!(best["bounds"].as_array().unwrap().len(), 4, "{best}");
    let chip: Vec<u32> = integers(&best["chip"]);
    let id = best["id"].as_str().unwrap();
    let thumb = get(&server.url(&format!("/v1/thumbnails/{}", encode(id))), None);
    assert_eq!(
        thumb.status,
        200,
        "{}",
        String::from_utf8_lossy(&thumb.body)
    );
    let thumb = image::load_from_memory(&thumb.body).unwrap().to_rgb8();
    assert_eq!((thumb.width(), thumb.height()), (chip[2], chip[3]));
    // The tile's own pixels (JPEG-compressed): near the scene's, far from elsewhere.
    let scene = image::open(&mosaic).unwrap().to_rgb8();
    let diff = |x0: u32, y0: u32| -> f64 {
        let mut d = 0.0;
        for (x, y, p) in thumb.enumerate_pixels() {
            let q = scene.get_pixel(x0 + x, y0 + y);
            d += (0..3)
                .map(|c| (p[c] as f64 - q[c] as f64).abs())
                .sum::<f64>();
        }
        d / (thumb.width() * thumb.height() * 3) as f64
    };
    let own = diff(chip[0], chip[1]);
    assert!(own < 6.0, "mean difference {own} from its own tile");
    let other = diff((chip[0] + 256) % 512, (chip[1] + 256) % 512);
    assert!(other > 2.0 * own, "{other} vs {own}");
}
