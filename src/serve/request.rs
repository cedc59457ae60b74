//! Reading a request: its query parameters (unknown or repeated ones refused), its body (capped
//! as it arrives, and at once when the declared length is too large), an image in it (the raw
//! body or a multipart field `image`), decoded off the async runtime. Every failure is an
//! [`ApiError`]: a status and a JSON `{"error": "..."}` that says what was wrong.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::App;
use crate::imagery::DecodeOptions;

/// An error answer: a status and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "this server needs its token: send the header `Authorization: Bearer TOKEN`",
        )
    }

    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at capacity (its queue is full); retry in a second",
        )
    }

    /// A failure of ours, not the request's: logged, and answered with its message.
    pub fn internal(e: &anyhow::Error) -> Self {
        super::log(&format!("internal error: {e:#}"));
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 § 11.6.1: a 401 names the scheme it wants.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"skyscribe\""),
            );
        }
        r
    }
}

/// Query parameters, taken one by one by the handler; what is left over is refused.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(query.unwrap_or(""))
            .map(Self)
            .map_err(|e| ApiError::bad(format!("unreadable query string: {e}")))
    }

    /// Every value of `key`, in order.
    pub fn all(&mut self, key: &str) -> Vec<String> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.0.drain(..).partition(|(k, _)| k == key);
        self.0 = rest;
        mine.into_iter().map(|(_, v)| v).collect()
    }

    /// The value of `key`, if given; given twice is an error.
    pub fn one(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        let mut v = self.all(key);
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(ApiError::bad(format!("{key} is given {} times", v.len()))),
        }
    }

    /// A whole number from 1 to `max`, `default` when absent.
    pub fn count(&mut self, key: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one(key)? {
            None => Ok(default),
            Some(s) => match s.trim().parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(format!(
                    "{key}={s:?}: give a whole number from 1 to {max}"
                ))),
            },
        }
    }

    /// Refuses parameters nobody took (a typo would otherwise be ignored silently).
    pub fn done(self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::bad(format!(
                "unknown parameter {k:?} (this endpoint takes: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))),
        }
    }
}

/// The Content-Type as sent. Its type is compared lower-cased, but its parameters are kept as
/// they are: a multipart boundary is case-sensitive (browsers send `----WebKitFormBoundary…`).
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Whether `content_type` is of type `mime` (case-insensitive, parameters ignored).
fn is_type(content_type: &str, mime: &str) -> bool {
    content_type
        .get(..mime.len())
        .is_some_and(|t| t.eq_ignore_ascii_case(mime))
}

/// Reads the body up to `limit` bytes: a declared length past it is refused before reading.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "the body is larger than the server's limit of {:.1} MB (--max-body-mb)",
            limit as f64 / (1 << 20) as f64
        ))
    };
    if let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && declared > limit as u64
    {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad(format!("cannot read the request body: {e}"))),
    }
}

/// A request body that is JSON.
pub fn is_json(headers: &HeaderMap) -> bool {
    is_type(content_type(headers), "application/json")
}

/// The image of a request: the body itself (any image type, or none given), or the field
/// `image` of a multipart form.
pub async fn image_bytes(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let ct = content_type(headers);
    // (application/x-www-form-urlencoded is let through: it is what `curl --data-binary`
    // sends unless told otherwise, and the bytes say what they are.)
    if is_type(ct, "application/json") || is_type(ct, "text/") {
        return Err(ApiError::bad(format!(
            "a body of type {ct} where an image was expected: send the image's bytes, or a \
             multipart form with a field named image"
        )));
    }
    let bytes = read_body(headers, body, app.config.max_body_bytes).await?;
    let bytes = if is_type(ct, "multipart/form-data") {
        multipart_image(ct, bytes).await?
    } else {
        bytes
    };
    if bytes.is_empty() {
        return Err(ApiError::bad("an empty body: send an image"));
    }
    Ok(bytes)
}

/// The field `image` of a multipart form already read whole (the body cap applied). Other
/// fields are refused, as unknown query parameters are (a misnamed field would otherwise be
/// ignored silently), and so is `image` given twice.
async fn multipart_image(content_type: &str, body: Bytes) -> Result<Bytes, ApiError> {
    let bad = |e: multer::Error| ApiError::bad(format!("malformed multipart form: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut image = None;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("image") if image.is_none() => image = Some(field.bytes().await.map_err(bad)?),
            Some("image") => return Err(ApiError::bad("the multipart form has two fields image")),
            other => {
                return Err(ApiError::bad(format!(
                    "the multipart form has a field {:?}: it takes one field, image",
                    other.unwrap_or("")
                )));
            }
        }
    }
    image.ok_or_else(|| ApiError::bad("the multipart form has no field named image"))
}

/// Decodes (with `decode`) and preprocesses an uploaded image on the blocking pool (a few at a
/// time, see [`on_decoder`]): the `(3, S, S)` floats the vision tower takes. Past the pixel cap:
/// 413; unreadable: 400.
pub async fn pixels(
    app: &Arc<App>,
    bytes: Bytes,
    decode: &DecodeOptions,
) -> Result<Vec<f32>, ApiError> {
    let (app2, decode) = (app.clone(), decode.clone());
    let decoded = on_decoder(&app.decoders, move |cancel| {
        let img = crate::imagery::decode_bytes(&bytes, &decode)?;
        drop(bytes);
        cancel.check()?;
        app2.models.clip.preprocessor.preprocess_decoded(img)
    })
    .await;
    match decoded {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) if e.is::<crate::imagery::TooManyPixels>() => {
            Err(ApiError::too_large(format!("{e:#}")))
        }
        Ok(Err(e)) => Err(ApiError::bad(format!("unreadable image: {e:#}"))),
        Err(_) => Err(ApiError::bad("unreadable image: the decoder failed")),
    }
}

/// Set when the request that started a decode is gone (timed out with 408, or its client
/// left): the decode stops at its next check instead of finishing work nobody reads.
pub struct Cancel(std::sync::atomic::AtomicBool);

impl Cancel {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.0.load(std::sync::atomic::Ordering::Relaxed) {
            anyhow::bail!("the request was cancelled");
        }
        Ok(())
    }
}

/// Sets the [`Cancel`] flag when the request's future is dropped before the work ended.
struct CancelOnDrop(Arc<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `work` on the blocking pool holding one of `slots` for as long as the work runs. The
/// slot travels with the work, not with the request: a request dropped at its timeout (408)
/// cancels the work (see [`Cancel`]) but its slot stays taken until the work has really
/// stopped, so no more images are decoded at once than there are slots — which is what bounds
/// the server's memory.
pub async fn on_decoder<T: Send + 'static>(
    slots: &Arc<tokio::sync::Semaphore>,
    work: impl FnOnce(&Cancel) -> anyhow::Result<T> + Send + 'static,
) -> Result<anyhow::Result<T>, tokio::task::JoinError> {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the decoder semaphore is never closed");
    let cancel = Arc::new(Cancel(false.into()));
    let _on_drop = CancelOnDrop(cancel.clone());
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work(&cancel)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_request_cancels_its_decode_and_keeps_its_slot_until_the_decode_ends() {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let request = on_decoder(&slots, move |cancel| {
            go_rx.recv().unwrap();
            seen_tx.send(cancel.check().is_err()).unwrap();
            Ok(())
        });
        // The request times out while its decode runs (its first poll took the slot and
        // handed the work to the blocking pool).
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(5), request).await;
        assert!(timed_out.is_err());
        // Answered (408), but the decode still holds the one slot.
        assert_eq!(slots.available_permits(), 0);
        go_tx.send(()).unwrap();
        assert!(
            tokio::task::spawn_blocking(move || seen_rx.recv().unwrap())
                .await
                .unwrap(),
            "the decode saw that its request was gone"
        );
        let slot = tokio::time::timeout(std::time::Duration::from_secs(10), slots.acquire())
            .await
            .expect("the slot comes back when the decode ends");
        drop(slot);
    }

    #[test]
    fn content_types_compare_without_case_and_keep_the_boundary() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Multipart/Form-Data; boundary=----WebKitFormBoundaryAbC"),
        );
        assert!(is_type(content_type(&h), "multipart/form-data"));
        assert_eq!(
            multer::parse_boundary(content_type(&h)).unwrap(),
            "----WebKitFormBoundaryAbC"
        );
        assert!(!is_type("image/png", "application/json"));
        assert!(!is_type("", "text/"));
    }

    #[test]
    fn parameters_are_taken_once_and_leftovers_refused() {
        let mut p = Params::parse(Some(
            "labels=a%2Cb&template=x+%7B%7D&template=y%20{}&top_k=3",
        ))
        .unwrap();
        assert_eq!(p.one("labels").unwrap().as_deref(), Some("a,b"));
        assert_eq!(p.all("template"), vec!["x {}", "y {}"]);
        assert_eq!(p.count("top_k", 5, 100).unwrap(), 3);
        assert!(p.done(&[]).is_ok());

        let mut p = Params::parse(Some("top_k=0")).unwrap();
        assert_eq!(p.count("top_k", 5, 100).unwrap_err().status, 400);
        let mut p = Params::parse(Some("top_k=2&top_k=3")).unwrap();
        assert!(p.count("top_k", 5, 100).is_err(), "given twice");
        let mut p = Params::parse(Some("top_k=2&topk=3")).unwrap();
        p.count("top_k", 5, 100).unwrap();
        let err = p.done(&["top_k"]).unwrap_err();
        assert!(err.message.contains("\"topk\""), "{}", err.message);
    }
}
