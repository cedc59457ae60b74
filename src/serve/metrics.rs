//! `GET /metrics`: requests by route and status, a latency histogram by route, the sizes of
//! the model's batches and the queue's depth, in the Prometheus text format (OpenMetrics) via
//! the `prometheus-client` crate.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::batcher::Admission;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

type Histograms = Family<Route, Histogram, fn() -> Histogram>;

/// The server's counters; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Histograms,
    batch_sizes: Histogram,
    queue_depth: Gauge,
    admission: Arc<Admission>,
}

fn latency_buckets() -> Histogram {
    // 1 ms … 32 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new(admission: Arc<Admission>) -> Self {
        let mut registry = Registry::with_prefix("skyscribe");
        let requests = Family::<RouteStatus, Counter>::default();
        let latency: Histograms = Family::new_with_constructor(latency_buckets);
        let batch_sizes = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let queue_depth = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            latency.clone(),
        );
        registry.register(
            "batch_size",
            "Images per forward pass of the model thread",
            batch_sizes.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests admitted and not yet answered (503 past --max-queue)",
            queue_depth.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            batch_sizes,
            queue_depth,
            admission,
        }
    }

    /// One answered request.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// One forward pass of `n` images.
    pub fn batch(&self, n: usize) {
        self.batch_sizes.observe(n as f64);
    }

    /// The text `GET /metrics` answers.
    pub fn render(&self) -> String {
        self.queue_depth.set(self.admission.depth() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status_and_batch_sizes() {
        let m = Metrics::new(Admission::new(4));
        m.request("/v1/labels", 200, Duration::from_millis(3));
        m.request("/v1/labels", 200, Duration::from_millis(5));
        m.request("/v1/labels", 503, Duration::from_millis(1));
        m.batch(3);
        let text = m.render();
        assert!(
            text.contains(r#"skyscribe_http_requests_total{route="/v1/labels",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skyscribe_http_requests_total{route="/v1/labels",status="503"} 1"#),
            "{text}"
        );
        assert!(text.contains("skyscribe_batch_size_sum 3.0"), "{text}");
        assert!(text.contains("skyscribe_batch_size_count 1"), "{text}");
        assert!(text.contains("skyscribe_queue_depth 0"), "{text}");
        assert!(
            text.contains(r#"skyscribe_http_request_duration_seconds_count{route="/v1/labels"} 3"#),
            "{text}"
        );
    }
}
