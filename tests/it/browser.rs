//! The web page in a real browser (Debian's chromium + chromium-driver, driven over WebDriver
//! by fantoccini): upload the sample image, wait for the labels and the caption, run a search,
//! and save screenshots under `target/screenshots/` for people to look at. Skipped (loudly)
//! without chromedriver; under `CI=true` that is a failure (`.ci/run` installs it).

use crate::common;
use crate::serve::{Server, fixture_index, get};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{ClientBuilder, Locator};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "no chromedriver: install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!(
            "SKIPPED the browser test: no chromedriver (apt-get install chromium chromium-driver)"
        );
    }
    found
}

/// How long the page may take to show what is waited for.
const WAIT: Duration = Duration::from_secs(60);

/// Waits until an element `what` locates is on the page; `what_for` says what in the failure.
async fn appears(client: &fantoccini::Client, what: Locator<'_>, what_for: &str) {
    client
        .wait()
        .at_most(WAIT)
        .for_element(what)
        .await
        .unwrap_or_else(|e| panic!("{what_for}: {e}"));
}

/// The text of the first element `what` locates.
async fn text_of(client: &fantoccini::Client, what: Locator<'_>) -> String {
    client.find(what).await.unwrap().text().await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_page_labels_captions_and_searches_in_a_real_browser() {
    let Some(driver_bin) = chromedriver() else {
        return;
    };
    let dir = scratch("serve-browser");
    let index = fixture_index(&dir);
    let classifier = crate::classify::mosaic_classifier(&dir);
    let server = Server::start(&[
        "--index",
        index.to_str().unwrap(),
        "--classifier",
        classifier.to_str().unwrap(),
    ]);
    let sample = repo().join("assets/samples/eurosat-river.jpg");
    let api = crate::serve::post(
        &server.url("/v1/describe"),
        "image/jpeg",
        &std::fs::read(&sample).unwrap(),
    )
    .json();
    let eurosat = crate::serve::post(
        &server.url("/v1/labels?labels=eurosat"),
        "image/jpeg",
        &std::fs::read(&sample).unwrap(),
    )
    .json();

    let port = free_port();
    let driver = Driver(
        Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let shots = repo().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-background-networking",
                         "--window-size=1280,860"],
            }),
        );
        // chromedriver takes a moment to listen.
        let start = Instant::now();
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if start.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start a browser session: {e}"),
            }
        };
        client.goto(&server.url("/")).await.unwrap();
        appears(
            &client,
            Locator::XPath("//span[@id='model'][contains(., 'CLIP')]"),
            "the page shows the model",
        )
        .await;

        // Describe: choose the sample; labels as bars and the caption appear.
        let file = client.find(Locator::Id("file")).await.unwrap();
        file.send_keys(sample.to_str().unwrap()).await.unwrap();
        appears(&client, Locator::Css("#labels .label-row"), "labels appear").await;
        appears(
            &client,
            Locator::XPath("//p[@id='caption'][string-length(normalize-space(.)) > 3]"),
            "the caption appears",
        )
        .await;
        let rows = client.find_all(Locator::Css("#labels .label-row")).await.unwrap();
        assert_eq!(rows.len(), 5);
        let first = text_of(&client, Locator::Css("#labels .label-row .label-name")).await;
        assert_eq!(first, api["labels"][0]["label"].as_str().unwrap());
        let caption = text_of(&client, Locator::Id("caption")).await;
        assert_eq!(caption, api["caption"].as_str().unwrap().trim());
        std::fs::write(
            shots.join("serve-describe.png"),
            client.screenshot().await.unwrap(),
        )
        .unwrap();

        // The learned classifier: chosen in the options, its classes replace the labels.
        let learned = crate::serve::post(
            &server.url("/v1/classify"),
            "image/jpeg",
            &std::fs::read(&sample).unwrap(),
        )
        .json();
        client
            .execute(
                "const s = document.getElementById('classifier');\
                 document.getElementById('options').open = true;\
                 s.value = 'mosaic';\
                 s.dispatchEvent(new Event('change'));",
                vec![],
            )
            .await
            .unwrap();
        let want = learned["labels"][0]["label"].as_str().unwrap().to_string();
        appears(
            &client,
            Locator::XPath(&format!(
                "//ol[@id='labels']/li[1]//*[contains(@class,'label-name')][.='{want}']"
            )),
            "the classifier's best class appears first",
        )
        .await;
        let shown = client
            .execute(
                "return [...document.querySelectorAll('#labels .label-name')].map(e => e.textContent);",
                vec![],
            )
            .await
            .unwrap();
        let wanted: Vec<&serde_json::Value> = learned["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["label"])
            .collect();
        assert_eq!(shown.as_array().unwrap().iter().collect::<Vec<_>>(), wanted);
        std::fs::write(
            shots.join("serve-classify.png"),
            client.screenshot().await.unwrap(),
        )
        .unwrap();
        // Back to zero-shot for what follows.
        client
            .execute(
                "const s = document.getElementById('classifier');\
                 s.value = '';\
                 s.dispatchEvent(new Event('change'));",
                vec![],
            )
            .await
            .unwrap();

        // The browser's own multipart upload: FormData with the chosen file, sent by fetch
        // (Chrome writes its `----WebKitFormBoundary…` boundary, mixed case and all).
        let answer = client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 const file = document.getElementById('file').files[0];\
                 if (!file) { done({error: 'no file in the input'}); return; }\
                 const form = new FormData();\
                 form.append('image', file);\
                 fetch('/v1/labels?labels=eurosat', {method: 'POST', body: form})\
                   .then(r => r.json().then(j => done({status: r.status, body: j})))\
                   .catch(e => done({error: String(e)}));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(answer["body"], eurosat, "FormData gives the raw upload's answer");

        // Search: a grid of thumbnails with scores.
        let query = client.find(Locator::Id("query")).await.unwrap();
        query.send_keys("a river").await.unwrap();
        client
            .find(Locator::Css("#search-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        appears(&client, Locator::Css("#results figure img"), "results appear").await;
        // Every thumbnail loaded (the page asks the server for them by id).
        let start = Instant::now();
        loop {
            let loaded = client
                .execute(
                    "const imgs = [...document.querySelectorAll('#results img')];\
                     return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.length : 0;",
                    vec![],
                )
                .await
                .unwrap();
            if loaded.as_u64().unwrap_or(0) == 5 {
                break;
            }
            assert!(start.elapsed() < WAIT, "thumbnails did not load: {loaded}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::write(
            shots.join("serve-search.png"),
            client.screenshot().await.unwrap(),
        )
        .unwrap();
        client.close().await.unwrap();
    });
    drop(driver);
    // The page's requests were counted like any other.
    let metrics = String::from_utf8(get(&server.url("/metrics"), None).body).unwrap();
    assert!(
        metrics.contains(
            r#"skyscribe_http_requests_total{route="/v1/thumbnails/{*id}",status="200"} 5"#
        ),
        "{metrics}"
    );
}
