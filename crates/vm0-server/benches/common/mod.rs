//! What the request-rate benchmarks share: one timed round of clients, and the median
//! of several.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a round measures, after its warm-up.
const ROUND: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(500);

/// Requests per second that `connections` clients get in one round, each sending the
/// requests `request` builds on its connection pool, one after another; `check` asserts
/// on each answer's status and body.
pub(crate) async fn round(
    connections: usize,
    request: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
    check: fn(reqwest::StatusCode, &[u8]),
) -> f64 {
    let http = reqwest::Client::builder().pool_max_idle_per_host(connections).build().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + WARM_UP;
    let end = measure_from + ROUND;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (http, request, done) = (http.clone(), request.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let response = request(&http).send().await.unwrap();
                    let status = response.status();
                    check(status, &response.bytes().await.unwrap());
                    if Instant::now() >= measure_from {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / ROUND.as_secs_f64()
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}
