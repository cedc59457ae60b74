//! Scenes named by STAC: `stac:ITEM` (an item's JSON as a file or a URL, or a saved
//! ItemCollection of items) and `stac-search:API` (a STAC API's item search: bbox, datetime,
//! collections, paged through its `next` links up to a number of items). Each item becomes a
//! [`StacScene`]: the hrefs of the assets to read — the `visual` asset (Sentinel-2 L2A's true
//! colour COG), or the assets named (`red,green,blue`: Sentinel-2's B04/B03/B02, Landsat's
//! bands), each a band of one scene on one grid — with the item's id and datetime, which a
//! scan's features carry.
//!
//! The `stac` crate (stac-utils' rustac) parses items, item collections and links; requests go
//! through `ureq` (items and searches are small JSON documents) or, for `s3://`, `gs://` and
//! `az://` items, through the same `object_store` client the scene reader uses.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value, json};

use super::source::{self, RemoteOptions};

/// One item's scene: what to read and what to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StacScene {
    /// The item's id (outputs are named after it).
    pub id: String,
    pub collection: Option<String>,
    /// The item's `datetime` as written (or its `start_datetime` when `datetime` is null).
    pub datetime: Option<String>,
    /// Where the item came from (a file, a URL, or the search that found it).
    pub item: String,
    /// The asset keys read, in band order.
    pub assets: Vec<String>,
    /// Their hrefs, absolute (relative ones resolved against the item's location).
    pub hrefs: Vec<String>,
}

/// What a STAC input asks for.
#[derive(Debug, Clone, Default)]
pub struct StacQuery {
    /// Asset keys (or band common names) to read as bands; default: the `visual` asset.
    pub assets: Option<Vec<String>>,
    /// West, south, east, north in degrees.
    pub bbox: Option<[f64; 4]>,
    /// An RFC 3339 instant or interval (`2024-06-01/2024-06-30`, `../2024-01-01`).
    pub datetime: Option<String>,
    pub collections: Vec<String>,
    /// The most items a search returns.
    pub max_items: usize,
    pub remote: RemoteOptions,
}

/// Whether an input names STAC rather than a file.
pub fn is_stac(input: &str) -> bool {
    input.starts_with("stac:") || input.starts_with("stac-search:")
}

/// The scenes an input names (`stac:…` or `stac-search:…`), with notes for people (an asset
/// chosen for a missing `visual`, a search cut at `max_items`).
pub fn resolve(input: &str, q: &StacQuery) -> Result<(Vec<StacScene>, Vec<String>)> {
    let mut notes = Vec::new();
    let scenes = if let Some(api) = input.strip_prefix("stac-search:") {
        search(api, q, &mut notes).with_context(|| input.to_string())?
    } else if let Some(loc) = input.strip_prefix("stac:") {
        let doc = fetch_json(loc, &q.remote).with_context(|| loc.to_string())?;
        let items = match doc.get("type").and_then(Value::as_str) {
            Some("FeatureCollection") => doc["features"].as_array().cloned().unwrap_or_default(),
            Some("Feature") => vec![doc],
            other => bail!(
                "{loc}: not a STAC item or item collection (type {other:?}; a catalog or \
                 collection lists items by links: name an item, or search an API with \
                 stac-search:)"
            ),
        };
        items
            .into_iter()
            .map(|v| scene_of(v, loc, q, &mut notes))
            .collect::<Result<_>>()
            .with_context(|| loc.to_string())?
    } else {
        bail!("{input}: not a STAC input (stac:ITEM or stac-search:API_URL)");
    };
    if scenes.is_empty() {
        bail!("{input}: no STAC items");
    }
    Ok((scenes, notes))
}

/// The scene of one item (its JSON), hrefs resolved against `base`.
fn scene_of(raw: Value, base: &str, q: &StacQuery, notes: &mut Vec<String>) -> Result<StacScene> {
    let item: stac::Item =
        serde_json::from_value(raw.clone()).map_err(|e| anyhow!("not a STAC item: {e}"))?;
    if item.id.is_empty() {
        bail!("a STAC item without an id");
    }
    // A self link is where the item says it lives: relative hrefs are relative to it.
    let base = item
        .links
        .iter()
        .find(|l| l.rel == "self")
        .map(|l| l.href.as_str())
        .filter(|h| is_absolute(h))
        .unwrap_or(base)
        .to_string();
    let props = &raw["properties"];
    let datetime = props["datetime"]
        .as_str()
        .or_else(|| props["start_datetime"].as_str())
        .map(str::to_string);
    let keys: Vec<String> = match &q.assets {
        Some(names) => names
            .iter()
            .map(|n| asset_key(&item, &raw, n))
            .collect::<Result<_>>()?,
        None if item.assets.contains_key("visual") => vec!["visual".into()],
        None => {
            // No true-colour asset (Landsat, many Sentinel-2 catalogues): red, green and blue
            // by their band common names, said, and refused when they are not all there.
            let rgb: Result<Vec<String>> = ["red", "green", "blue"]
                .iter()
                .map(|n| asset_key(&item, &raw, n))
                .collect();
            let keys = rgb.map_err(|_| {
                anyhow!(
                    "item {}: no `visual` asset and no red, green and blue bands; name the \
                     assets with --assets (it has: {})",
                    item.id,
                    item.assets.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            notes.push(format!(
                "item {}: no `visual` asset: reading {} as red, green, blue",
                item.id,
                keys.join(", ")
            ));
            keys
        }
    };
    let hrefs = keys
        .iter()
        .map(|k| resolve_href(&base, &item.assets[k].href))
        .collect::<Result<_>>()?;
    Ok(StacScene {
        id: item.id.clone(),
        collection: item.collection.clone(),
        datetime,
        item: base,
        assets: keys,
        hrefs,
    })
}

/// The key of the asset called `name`: the key itself, else the one asset whose band's common
/// name it is (`eo:bands[].common_name` of STAC 1.0, `bands[].eo:common_name` of 1.1).
fn asset_key(item: &stac::Item, raw: &Value, name: &str) -> Result<String> {
    if item.assets.contains_key(name) {
        return Ok(name.to_string());
    }
    let mut by_common: Vec<String> = Vec::new();
    if let Some(assets) = raw["assets"].as_object() {
        for (key, a) in assets {
            let named = ["eo:bands", "bands"].iter().any(|field| {
                a[*field].as_array().is_some_and(|bands| {
                    bands.len() == 1
                        && [&bands[0]["common_name"], &bands[0]["eo:common_name"]]
                            .iter()
                            .any(|c| c.as_str() == Some(name))
                })
            });
            if named {
                by_common.push(key.clone());
            }
        }
    }
    match by_common.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "item {}: no asset {name:?} (by key or band common name); it has: {}",
            item.id,
            item.assets.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        many => bail!(
            "item {}: several assets have the band common name {name:?} ({}): name one by key",
            item.id,
            many.join(", ")
        ),
    }
}

fn is_absolute(href: &str) -> bool {
    href.starts_with('/') || url::Url::parse(href).is_ok_and(|u| u.scheme().len() > 1)
}

/// An asset's href made absolute against the item's location (a URL or a file path).
fn resolve_href(base: &str, href: &str) -> Result<String> {
    if let Some(path) = href.strip_prefix("file://") {
        return Ok(path.to_string());
    }
    if is_absolute(href) {
        return Ok(href.to_string());
    }
    if let Ok(base_url) = url::Url::parse(base)
        && base_url.scheme().len() > 1
    {
        return Ok(base_url
            .join(href)
            .map_err(|e| anyhow!("asset href {href:?} against {base}: {e}"))?
            .to_string());
    }
    let dir = std::path::Path::new(base)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    Ok(dir
        .join(href.trim_start_matches("./"))
        .to_string_lossy()
        .into_owned())
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .build()
}

/// A JSON document from a file, an `http(s)://` URL, or an object store URL.
fn fetch_json(loc: &str, remote: &RemoteOptions) -> Result<Value> {
    let bytes = if loc.starts_with("http://") || loc.starts_with("https://") {
        return request(&agent(), "GET", loc, None);
    } else if source::is_remote(loc) {
        let src = source::open(loc, remote)?;
        let mut s = src.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.size();
        s.read_range(0..n)?
    } else {
        std::fs::read(loc).map_err(|e| anyhow!("cannot read: {e}"))?
    };
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("not JSON: {e}"))
}

/// A JSON request with retries (5xx, 429 and transport errors: 4 attempts, backoff from
/// 200 ms), as the scene reader retries its range requests.
fn request(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Result<Value> {
    let mut wait = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let req = agent
            .request(method, url)
            .set("Accept", "application/geo+json, application/json");
        let res = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        let retry = match res {
            Ok(r) => {
                let text = r
                    .into_string()
                    .map_err(|e| anyhow!("{method} {url}: reading the body: {e}"))?;
                return serde_json::from_str(&text)
                    .map_err(|e| anyhow!("{method} {url}: not JSON: {e}"));
            }
            Err(ureq::Error::Status(code, r)) if code >= 500 || code == 429 => {
                format!("HTTP {code} {}", r.status_text())
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                bail!(
                    "{method} {url}: HTTP {code}: {}",
                    text.chars().take(300).collect::<String>()
                );
            }
            Err(e) => e.to_string(),
        };
        if attempt == 4 {
            bail!("{method} {url}: {retry} (after {attempt} attempts)");
        }
        std::thread::sleep(wait);
        wait *= 2;
        attempt += 1;
    }
}

/// An item search (POST `API/search`, as the STAC API's item search asks servers to take),
/// followed through `next` links (GET, or POST with their body, merged when they say so) until
/// `max_items` items or the last page.
fn search(api: &str, q: &StacQuery, notes: &mut Vec<String>) -> Result<Vec<StacScene>> {
    if q.max_items == 0 {
        bail!("--max-items must be at least 1");
    }
    let url = if api.trim_end_matches('/').ends_with("/search") {
        api.to_string()
    } else {
        format!("{}/search", api.trim_end_matches('/'))
    };
    let mut body = Map::new();
    if let Some(b) = q.bbox {
        body.insert("bbox".into(), json!(b));
    }
    if let Some(d) = &q.datetime {
        body.insert("datetime".into(), json!(d));
    }
    if !q.collections.is_empty() {
        body.insert("collections".into(), json!(q.collections));
    }
    body.insert("limit".into(), json!(q.max_items.min(100)));
    let agent = agent();
    let mut page = request(&agent, "POST", &url, Some(&Value::Object(body.clone())))?;
    let mut scenes = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let collection: stac::api::ItemCollection = serde_json::from_value(page.clone())
            .map_err(|e| anyhow!("{url}: page {pages} is not an item collection: {e}"))?;
        let raw_items = page["features"].as_array().cloned().unwrap_or_default();
        for raw in raw_items {
            if scenes.len() == q.max_items {
                break;
            }
            let fallback = url.clone();
            scenes.push(scene_of(raw, &fallback, q, notes)?);
        }
        let next = collection.links.iter().find(|l| l.rel == "next");
        let Some(next) = next.filter(|_| scenes.len() < q.max_items) else {
            if next.is_some() {
                notes.push(match collection.number_matched {
                    Some(m) => format!(
                        "the search matched {m} items; stopped at --max-items {}",
                        q.max_items
                    ),
                    None => format!(
                        "the search has more items; stopped at --max-items {}",
                        q.max_items
                    ),
                });
            }
            break;
        };
        if pages >= 10_000 {
            bail!("{url}: more than 10,000 pages: the server's next links do not end");
        }
        let method = next.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        page = if method == "POST" {
            let merged = match &next.body {
                Some(b) if next.merge == Some(true) => {
                    let mut m = body.clone();
                    m.extend(b.clone());
                    m
                }
                Some(b) => b.clone(),
                None => body.clone(),
            };
            body = merged;
            request(
                &agent,
                "POST",
                &next.href,
                Some(&Value::Object(body.clone())),
            )?
        } else {
            request(&agent, "GET", &next.href, None)?
        };
    }
    Ok(scenes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_resolve_against_urls_and_paths() {
        let b = "https://example.test/catalog/items/S2A_1/S2A_1.json";
        assert_eq!(
            resolve_href(b, "./B04.tif").unwrap(),
            "https://example.test/catalog/items/S2A_1/B04.tif"
        );
        assert_eq!(
            resolve_href(b, "../B04.tif").unwrap(),
            "https://example.test/catalog/items/B04.tif"
        );
        assert_eq!(
            resolve_href(b, "s3://bucket/B04.tif").unwrap(),
            "s3://bucket/B04.tif"
        );
        assert_eq!(
            resolve_href("/data/item.json", "B04.tif").unwrap(),
            "/data/B04.tif"
        );
        assert_eq!(
            resolve_href("/data/item.json", "file:///x/B04.tif").unwrap(),
            "/x/B04.tif"
        );
    }
}
