//! The endpoints (a contract: the book's Serving chapter and `web/openapi.json` list them). Each answers what
//! the command of the same name prints with `--jsonl`, for one image: the same preprocessing,
//! the same label sets and templates, the same decoding.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::batcher::Permit;
use super::request::{ApiError, Params, image_bytes, is_json, on_decoder, pixels, read_body};
use crate::caption::Decoding;
use crate::imagery::DecodeOptions;
use crate::labels::LabelSet;
use crate::zeroshot::{LabelScore, ZeroShotClassifier};

type Answer = Result<Response, ApiError>;

// Answers are typed structs, not `json!`: f32 values then print as f32, digit for digit what
// the command line prints (`json!` widens them to f64 digits).
#[derive(Serialize)]
struct LabelsAnswer {
    labels: Vec<LabelScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<String>,
}

#[derive(Serialize)]
struct CaptionAnswer {
    caption: String,
}

#[derive(Serialize)]
struct EmbedAnswer {
    embeddings: Vec<Vec<f32>>,
}

#[derive(Serialize)]
struct SearchAnswer {
    results: Vec<super::search::Hit>,
}

/// Labels, templates, prompts (labels × wordings × templates) and texts a request may ask for
/// at once: each prompt and text costs the model thread a text forward pass, which every other
/// request waits for.
const MAX_LABELS: usize = 512;
const MAX_TEMPLATES: usize = 32;
const MAX_PROMPTS: usize = 2048;
const MAX_TEXTS: usize = 256;
/// Characters of one text (a search text, a text to embed). CLIP reads 77 tokens, a few
/// hundred characters of English; the cap leaves room for any script while refusing a megabyte
/// of text at once (the tokenizer reads only a prefix of a long text anyway). Characters, not
/// bytes, so that the OpenAPI document's `maxLength` says exactly what is refused.
const MAX_TEXT_CHARS: usize = 2048;
/// Bytes of a `/v1/embed` JSON body of texts: 256 texts at their cap, with room for escapes.
const MAX_TEXTS_BODY: usize = 4 << 20;
/// Embedded label sets kept (by labels and templates as asked).
const CLASSIFIERS_KEPT: usize = 64;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/labels", axum::routing::post(labels))
        .route("/v1/describe", axum::routing::post(describe))
        .route("/v1/classify", axum::routing::post(classify))
        .route("/v1/caption", axum::routing::post(caption))
        .route("/v1/embed", axum::routing::post(embed))
        .route("/v1/search", get(search_text).post(search_image))
        .route("/v1/thumbnails/{*id}", get(thumbnail))
        .fallback(not_found)
}

fn page_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    page_asset("text/html; charset=utf-8", include_str!("web/index.html"))
}

async fn script() -> Response {
    page_asset("text/javascript; charset=utf-8", include_str!("web/app.js"))
}

async fn style() -> Response {
    page_asset("text/css; charset=utf-8", include_str!("web/style.css"))
}

async fn openapi() -> Response {
    page_asset("application/json", include_str!("web/openapi.json"))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {} (see /openapi.json)",
        req.method(),
        req.uri().path()
    ))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let clip = &app.models.clip;
    let (templates, _) = clip
        .defaults
        .templates(&[], &clip.source.spec)
        .unwrap_or_else(|_| (crate::labels::Templates(vec![]), String::new()));
    let indexes: Vec<Value> = app
        .indexes
        .served
        .iter()
        .map(|s| {
            json!({
                // The folder's name, not its place on the server.
                "name": s.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
                "items": s.index.len(),
                "dim": s.index.dim(),
                "engine": if s.ann.is_some() { "hnsw" } else { "exact" },
            })
        })
        .collect();
    Json(json!({
        "clip": {
            "model": clip.source.spec,
            "image_size": clip.model.image_size(),
            "dim": clip.model.config().projection_dim,
        },
        "captioner": app.models.captioner.as_ref().map(|c| json!({
            "clip_model": c.config.clip_model,
            "gpt2_model": c.config.gpt2_model,
        })),
        "describe_labels": clip.defaults.describe_labels.as_deref().unwrap_or("describe"),
        "classifiers": app.models.classifiers.iter().map(|(name, c)| json!({
            "name": name,
            "classes": c.classes(),
            "method": c.info.method.name(),
            "examples": c.info.training.examples,
        })).collect::<Vec<_>>(),
        "templates": templates.0,
        "indexes": indexes,
        "limits": {
            "max_batch": app.config.batch.max_batch,
            "max_wait_ms": app.config.batch.max_wait.as_millis() as u64,
            "max_body_bytes": app.config.max_body_bytes,
            "max_queue": app.config.max_queue,
            "max_pixels": app.config.max_pixels,
            "request_timeout_s": app.config.request_timeout.as_secs_f64(),
        },
    }))
}

/// Bodies up to this size are read before a 503 is sent (see [`enter`]).
const SHED_DRAIN: usize = 64 << 10;

/// A place in the queue, or 503. A refused request's small body is read first (for at most a
/// second): answering before it is read makes the server close the connection with unread
/// bytes, and the client's TCP stack may then lose the 503 to a reset.
async fn enter(app: &Arc<App>, req: &mut Request) -> Result<Permit, ApiError> {
    if let Some(p) = app.admission.try_enter() {
        return Ok(p);
    }
    let body = std::mem::take(req.body_mut());
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, SHED_DRAIN)),
    )
    .await;
    Err(ApiError::busy())
}

/// The label set and templates asked for, embedded once (then kept): `labels` `None` is the
/// model's describe vocabulary. Label sets come from presets or inline lists, never files.
async fn classifier(
    app: &Arc<App>,
    labels: Option<String>,
    templates: Vec<String>,
    permit: &Permit,
) -> Result<Arc<ZeroShotClassifier>, ApiError> {
    let key = (labels.clone(), templates.clone());
    if let Some(c) = app
        .classifiers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(c.clone());
    }
    let clip = &app.models.clip;
    let set = match &labels {
        Some(spec) => LabelSet::parse_inline(spec),
        // The operator's own choice (the model's skyscribe.json) may name a file.
        None => LabelSet::parse(
            clip.defaults
                .describe_labels
                .as_deref()
                .unwrap_or("describe"),
        ),
    }
    .map_err(|e| ApiError::bad(format!("labels: {e:#}")))?;
    if set.labels.len() > MAX_LABELS {
        return Err(ApiError::bad(format!(
            "{} labels: at most {MAX_LABELS} at once",
            set.labels.len()
        )));
    }
    if templates.len() > MAX_TEMPLATES {
        return Err(ApiError::bad(format!(
            "{} templates: at most {MAX_TEMPLATES} at once",
            templates.len()
        )));
    }
    let (templates, _) = clip
        .defaults
        .templates(&templates, &clip.source.spec)
        .map_err(|e| ApiError::bad(format!("template: {e:#}")))?;
    let prompts: usize = set.labels.iter().map(|l| templates.prompts(l).len()).sum();
    if prompts > MAX_PROMPTS {
        return Err(ApiError::bad(format!(
            "{prompts} prompts (labels × wordings × templates): at most {MAX_PROMPTS} at once"
        )));
    }
    let built = app
        .batcher
        .run(permit, move |m| {
            ZeroShotClassifier::new(&m.clip, set, templates).map(Arc::new)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut kept = app.classifiers.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= CLASSIFIERS_KEPT {
        kept.clear();
    }
    kept.insert(key, built.clone());
    Ok(built)
}

/// The embedding of the request's image, decoded with `decode`.
async fn image_embedding(
    app: &Arc<App>,
    req: Request,
    permit: &Permit,
    decode: &DecodeOptions,
) -> Result<Vec<f32>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = image_bytes(app, &parts.headers, body).await?;
    let pixels = pixels(app, bytes, decode).await?;
    app.batcher
        .image(pixels, permit)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// Characters of a `labels` value and of one template: far past any real label list (512
/// labels of 15 characters) or template, and short enough that a request within the caps fits
/// in a URI (32 templates and a label list stay under 30 KB).
const MAX_LABELS_CHARS: usize = 8192;
const MAX_TEMPLATE_CHARS: usize = 512;

/// `labels`, `template` (repeatable) and `top_k` of `/v1/labels` and `/v1/describe`.
fn label_params(params: &mut Params) -> Result<(Option<String>, Vec<String>, usize), ApiError> {
    let labels = params.one("labels")?;
    if let Some(l) = &labels
        && l.chars().count() > MAX_LABELS_CHARS
    {
        return Err(ApiError::bad(format!(
            "labels is {} characters: at most {MAX_LABELS_CHARS}",
            l.chars().count()
        )));
    }
    let templates = params.all("template");
    if let Some(t) = templates
        .iter()
        .find(|t| t.chars().count() > MAX_TEMPLATE_CHARS)
    {
        return Err(ApiError::bad(format!(
            "a template of {} characters: at most {MAX_TEMPLATE_CHARS}",
            t.chars().count()
        )));
    }
    let top_k = params.count("top_k", 5, MAX_LABELS)?;
    Ok((labels, templates, top_k))
}

const LABEL_PARAMS: &[&str] = &["labels", "template", "top_k"];

async fn labels(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    let mut params = Params::parse(req.uri().query())?;
    let (labels, templates, top_k) = label_params(&mut params)?;
    params.done(LABEL_PARAMS)?;
    let Some(labels) = labels else {
        return Err(ApiError::bad(
            "give labels=… (a preset such as eurosat, or labels separated by commas)",
        ));
    };
    let permit = enter(&app, &mut req).await?;
    let classifier = classifier(&app, Some(labels), templates, &permit).await?;
    let e = image_embedding(&app, req, &permit, &app.decode).await?;
    Ok(Json(LabelsAnswer {
        labels: classifier.ranked(&e, Some(top_k)),
        caption: None,
    })
    .into_response())
}

#[derive(Serialize)]
struct ClassifyAnswer<'a> {
    classifier: &'a str,
    labels: Vec<LabelScore>,
}

/// A learned classifier's classes for the image: `classifier=NAME` (optional when the server
/// serves one), `top_k`.
async fn classify(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    let mut params = Params::parse(req.uri().query())?;
    let name = params.one("classifier")?;
    let top_k = params.count("top_k", 5, MAX_LABELS)?;
    params.done(&["classifier", "top_k"])?;
    let served = &app.models.classifiers;
    let names = || {
        served
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index = match (&name, served.len()) {
        (_, 0) => {
            return Err(ApiError::not_found(
                "this server serves no classifier (start it with --classifier FILE)",
            ));
        }
        (None, 1) => 0,
        (None, _) => {
            return Err(ApiError::bad(format!(
                "give classifier=… (one of {})",
                names()
            )));
        }
        (Some(n), _) => served.iter().position(|(s, _)| s == n).ok_or_else(|| {
            ApiError::bad(format!("no classifier named {n:?} (served: {})", names()))
        })?,
    };
    let permit = enter(&app, &mut req).await?;
    let e = image_embedding(&app, req, &permit, &app.decode).await?;
    let (name, c) = &app.models.classifiers[index];
    Ok(Json(ClassifyAnswer {
        classifier: name,
        labels: c.ranked(&e, Some(top_k)),
    })
    .into_response())
}

async fn describe(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    let mut params = Params::parse(req.uri().query())?;
    let (labels, templates, top_k) = label_params(&mut params)?;
    params.done(LABEL_PARAMS)?;
    let permit = enter(&app, &mut req).await?;
    let classifier = classifier(&app, labels, templates, &permit).await?;
    let e = image_embedding(&app, req, &permit, &app.decode).await?;
    let labels = classifier.ranked(&e, Some(top_k));
    let caption = match app.models.captioner {
        Some(_) => Some(
            app.batcher
                .caption(e, Decoding::Greedy, &permit)
                .await
                .map_err(|e| ApiError::internal(&e))?,
        ),
        None => None,
    };
    Ok(Json(LabelsAnswer { labels, caption }).into_response())
}

async fn caption(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    let mut params = Params::parse(req.uri().query())?;
    let decoding = match params.one("decode")?.as_deref().unwrap_or("greedy") {
        "greedy" => Decoding::Greedy,
        "beam" => Decoding::Beam {
            size: params.count("beam_size", 5, 32)?,
        },
        other => {
            return Err(ApiError::bad(format!(
                "decode={other:?}: give greedy or beam"
            )));
        }
    };
    if decoding == Decoding::Greedy && params.one("beam_size")?.is_some() {
        return Err(ApiError::bad("beam_size is for decode=beam"));
    }
    params.done(&["decode", "beam_size"])?;
    if app.models.captioner.is_none() {
        return Err(ApiError::bad(
            "this server has no captioner (start it with --captioner, or without --model)",
        ));
    }
    let permit = enter(&app, &mut req).await?;
    let e = image_embedding(&app, req, &permit, &app.decode).await?;
    let caption = app
        .batcher
        .caption(e, decoding, &permit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(CaptionAnswer { caption }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Texts {
    texts: Vec<String>,
}

async fn embed(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    Params::parse(req.uri().query())?.done(&[])?;
    let permit = enter(&app, &mut req).await?;
    if !is_json(req.headers()) {
        let e = image_embedding(&app, req, &permit, &app.decode).await?;
        return Ok(Json(EmbedAnswer {
            embeddings: vec![e],
        })
        .into_response());
    }
    let (parts, body) = req.into_parts();
    let limit = app.config.max_body_bytes.min(MAX_TEXTS_BODY);
    let bytes = read_body(&parts.headers, body, limit).await.map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "a JSON body of texts larger than {} KiB: send at most {MAX_TEXTS} texts of \
                 at most {MAX_TEXT_CHARS} characters each",
                limit >> 10
            ))
        } else {
            e
        }
    })?;
    let Texts { texts } = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad(format!(
            "a JSON body must be {{\"texts\": [\"...\", ...]}}: {e}"
        ))
    })?;
    if texts.is_empty() || texts.len() > MAX_TEXTS {
        return Err(ApiError::bad(format!(
            "give 1 to {MAX_TEXTS} texts, not {}",
            texts.len()
        )));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::bad(format!("texts[{i}] is empty")));
    }
    if let Some((i, n)) = texts
        .iter()
        .map(|t| t.chars().count())
        .enumerate()
        .find(|&(_, n)| n > MAX_TEXT_CHARS)
    {
        return Err(text_too_long(&format!("texts[{i}]"), n));
    }
    let embeddings = app
        .batcher
        .run(&permit, move |m| m.clip.embed_texts(&texts, 32))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(EmbedAnswer { embeddings }).into_response())
}

/// A text past its cap: a bad parameter (400), as the OpenAPI document's `maxLength` says; 413
/// is for bodies past the server's byte caps.
fn text_too_long(what: &str, chars: usize) -> ApiError {
    ApiError::bad(format!(
        "{what} is {chars} characters: at most {MAX_TEXT_CHARS} a text (CLIP reads its first \
         77 tokens, a few hundred characters)"
    ))
}

fn no_index(app: &App) -> Result<(), ApiError> {
    if app.indexes.is_empty() {
        Err(ApiError::not_found(
            "no index is served (start the server with --index DIR)",
        ))
    } else {
        Ok(())
    }
}

/// Searches every index for the (unnormalised) embedding `e`.
async fn answer_search(app: Arc<App>, e: Vec<f32>, top_k: usize) -> Answer {
    let hits = tokio::task::spawn_blocking(move || {
        let q = crate::index::search::Query {
            positive: vec![(1.0, e)],
            negative: vec![],
        }
        .vector()?;
        app.indexes.search(&q, top_k)
    })
    .await
    .map_err(|e| ApiError::internal(&anyhow::anyhow!("search failed: {e}")))?
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(SearchAnswer { results: hits }).into_response())
}

const MAX_TOP_K: usize = 1000;

async fn search_text(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    let mut params = Params::parse(req.uri().query())?;
    let text = params.one("text")?.unwrap_or_default();
    let top_k = params.count("top_k", 10, MAX_TOP_K)?;
    params.done(&["text", "top_k"])?;
    no_index(&app)?;
    if text.trim().is_empty() {
        return Err(ApiError::bad("give text=… (what to look for)"));
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(text_too_long("text", chars));
    }
    let permit = enter(&app, &mut req).await?;
    let e = app
        .batcher
        .run(&permit, move |m| {
            Ok(m.clip.embed_texts(&[text], 1)?.remove(0))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    drop(permit);
    answer_search(app, e, top_k).await
}

async fn search_image(State(app): State<Arc<App>>, mut req: Request) -> Answer {
    let mut params = Params::parse(req.uri().query())?;
    let top_k = params.count("top_k", 10, MAX_TOP_K)?;
    params.done(&["top_k"])?;
    no_index(&app)?;
    let permit = enter(&app, &mut req).await?;
    let e = image_embedding(&app, req, &permit, &app.search_decode).await?;
    drop(permit);
    answer_search(app, e, top_k).await
}

async fn thumbnail(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer {
    no_index(&app)?;
    let Some(image) = app.indexes.image_of(&id) else {
        return Err(ApiError::not_found(format!(
            "no indexed item has the id {id:?}"
        )));
    };
    let app2 = app.clone();
    let jpeg = on_decoder(&app.decoders, move |_| app2.indexes.thumbnail(&image))
        .await
        .map_err(|e| ApiError::internal(&anyhow::anyhow!("thumbnail failed: {e}")))?
        .map_err(|e| ApiError::internal(&e.context(format!("the thumbnail of {id:?}"))))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        jpeg,
    )
        .into_response())
}
