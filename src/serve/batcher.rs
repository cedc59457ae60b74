//! The model's own thread, and the queue in front of it. Requests' images wait here up to
//! `max_wait` to be encoded together in one forward pass of up to `max_batch` images (as
//! text-embeddings-inference batches requests); greedy captions are decoded together the same
//! way. The async runtime never runs a model: handlers send a [`Job`] and await its answer.
//!
//! Admission is counted in requests, not jobs: a request takes a [`Permit`] before it reads its
//! body, and holds it (as do the jobs it sends) until its answer is written or it is dropped.
//! Past `max_queue` permits the request is refused with 503 at once — the queue never grows
//! without bound, and the latency of accepted requests stays bounded by it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio::sync::oneshot;

use crate::caption::{Captioner, DecodeOptions, Decoding};
use crate::encoder::ClipEncoder;

use super::metrics::Metrics;

/// What the worker thread owns: the models.
pub struct Models {
    pub clip: ClipEncoder,
    pub captioner: Option<Captioner>,
    /// Learned classifiers of `/v1/classify`, by name (checked against `clip` by the caller).
    pub classifiers: Vec<(String, crate::classify::Classifier)>,
}

/// How requests are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Images (or greedy captions) per forward pass.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
}

/// Work for the model thread.
pub enum Job {
    /// One preprocessed image `(3, S, S)` → its projected embedding (batched).
    Image {
        pixels: Vec<f32>,
        reply: oneshot::Sender<Result<Vec<f32>>>,
        _permit: Permit,
    },
    /// A caption of one image embedding (greedy ones batched; beams one at a time).
    Caption {
        embedding: Vec<f32>,
        decoding: Decoding,
        reply: oneshot::Sender<Result<String>>,
        _permit: Permit,
    },
    /// Anything else that needs the models (text embeddings, label sets), run alone.
    Run(Box<dyn FnOnce(&Models) + Send>, Permit),
}

/// The sending side of the model thread's queue; dropping it (with every clone) ends the
/// thread once the queue is drained.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the model thread over `models`.
    pub fn start(
        models: Arc<Models>,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
        admission: Arc<Admission>,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("skyscribe-model".into())
            .spawn(move || work(&models, &rx, settings, &metrics, &admission))
            .expect("a thread can be started at start-up");
        (Self { tx }, handle)
    }

    fn send(&self, job: Job) -> Result<()> {
        self.tx
            .send(job)
            .map_err(|_| anyhow!("the model thread has stopped"))
    }

    /// The embedding of one preprocessed image.
    pub async fn image(&self, pixels: Vec<f32>, permit: &Permit) -> Result<Vec<f32>> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Image {
            pixels,
            reply,
            _permit: permit.clone(),
        })?;
        answer.await.map_err(|_| lost())?
    }

    /// A caption of one embedding.
    pub async fn caption(
        &self,
        embedding: Vec<f32>,
        decoding: Decoding,
        permit: &Permit,
    ) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Caption {
            embedding,
            decoding,
            reply,
            _permit: permit.clone(),
        })?;
        answer.await.map_err(|_| lost())?
    }

    /// Runs `f` on the model thread and returns what it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        permit: &Permit,
        f: impl FnOnce(&Models) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Run(
            Box::new(move |m| {
                if !reply.is_closed() {
                    let _ = reply.send(f(m));
                }
            }),
            permit.clone(),
        ))?;
        answer.await.map_err(|_| lost())?
    }
}

fn lost() -> anyhow::Error {
    anyhow!("the model failed on this batch (see the server's log)")
}

/// The model thread: take the first job, gather more until the batch is full or `max_wait`
/// has passed since the first, run them, repeat until every sender is gone. It waits only for
/// requests that exist: when every admitted request already has its job in the batch, the
/// batch runs at once (a lone client pays no `max_wait` per request).
fn work(
    models: &Models,
    rx: &mpsc::Receiver<Job>,
    s: BatchSettings,
    metrics: &Metrics,
    admission: &Admission,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + s.max_wait;
        while jobs.len() < s.max_batch {
            let others_coming = admission.depth() > jobs.len();
            let left = if others_coming {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match rx.recv_timeout(left) {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A panic inside a model must not end the thread: the jobs of this batch are dropped
        // (their requests answer 500) and the next batch runs.
        if std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(models, jobs, metrics))).is_err()
        {
            super::log("a batch failed with a panic; its requests answered 500");
        }
    }
}

fn run_batch(models: &Models, jobs: Vec<Job>, metrics: &Metrics) {
    let mut images = Vec::new();
    let mut greedy = Vec::new();
    let mut others = Vec::new();
    for job in jobs {
        match job {
            // Requests that gave up (timed out, disconnected) are not computed.
            Job::Image { reply, .. } if reply.is_closed() => {}
            Job::Caption { reply, .. } if reply.is_closed() => {}
            Job::Image { pixels, reply, .. } => images.push((pixels, reply)),
            Job::Caption {
                embedding,
                decoding: Decoding::Greedy,
                reply,
                ..
            } => greedy.push((embedding, reply)),
            other => others.push(other),
        }
    }
    if !images.is_empty() {
        metrics.batch(images.len());
        let (pixels, replies): (Vec<_>, Vec<_>) = images.into_iter().unzip();
        answer_all(replies, models.clip.embed_pixels(&pixels));
    }
    if !greedy.is_empty() {
        let (embeds, replies): (Vec<_>, Vec<_>) = greedy.into_iter().unzip();
        let captions = match &models.captioner {
            Some(c) => c.captions(&embeds, Decoding::Greedy, &DecodeOptions::default(), 0),
            None => Err(no_captioner()),
        };
        answer_all(replies, captions);
    }
    for job in others {
        match job {
            Job::Caption {
                embedding,
                decoding,
                reply,
                ..
            } => {
                let caption = match &models.captioner {
                    Some(c) => c
                        .captions(&[embedding], decoding, &DecodeOptions::default(), 0)
                        .map(|mut v| v.remove(0)),
                    None => Err(no_captioner()),
                };
                let _ = reply.send(caption);
            }
            Job::Run(f, _permit) => f(models),
            Job::Image { .. } => unreachable!("images are batched above"),
        }
    }
}

fn no_captioner() -> anyhow::Error {
    anyhow!("this server has no captioner (start it with --captioner, or without --model)")
}

/// Sends each job its row of a batch's result, or the batch's error to all of them.
fn answer_all<T>(replies: Vec<oneshot::Sender<Result<T>>>, result: Result<Vec<T>>) {
    match result {
        Ok(rows) => {
            for (reply, row) in replies.into_iter().zip(rows) {
                let _ = reply.send(Ok(row));
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            for reply in replies {
                let _ = reply.send(Err(anyhow!("{message}")));
            }
        }
    }
}

/// Requests admitted and not yet answered, against the cap.
pub struct Admission {
    inflight: AtomicUsize,
    max: usize,
}

/// A request's place in the queue; released when the request and every job it sent are done.
#[derive(Clone)]
pub struct Permit(#[allow(dead_code)] Arc<PermitInner>);

struct PermitInner(Arc<Admission>);

impl Drop for PermitInner {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            inflight: AtomicUsize::new(0),
            max,
        })
    }

    /// A permit, or `None` when `max` requests are already waiting or running.
    pub fn try_enter(self: &Arc<Self>) -> Option<Permit> {
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::new(PermitInner(self.clone()))))
    }

    /// Requests admitted and not yet answered.
    pub fn depth(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_capped_and_released_when_every_holder_is_done() {
        let a = Admission::new(2);
        let p1 = a.try_enter().expect("first");
        let p2 = a.try_enter().expect("second");
        assert!(a.try_enter().is_none(), "a third is refused");
        assert_eq!(a.depth(), 2);
        let job_copy = p1.clone();
        drop(p1);
        assert_eq!(a.depth(), 2, "a job still holds the first request's place");
        drop(job_copy);
        assert_eq!(a.depth(), 1);
        assert!(a.try_enter().is_some());
        drop(p2);
        assert_eq!(a.depth(), 0);
    }
}
