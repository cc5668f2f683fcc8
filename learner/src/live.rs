//! The live page: what a run is doing, in a browser, from the learner's
//! metrics port. `/` is one HTML page (embedded, no CDN: it works offline)
//! that polls `/api/status` every two seconds and draws the progress, the
//! throughput, the connected actors, the learning curve and the last
//! checkpoint; `/metrics` stays Prometheus's.
//!
//! The numbers come from the run's [`Counters`] and their [`Board`], which
//! the ingest gate and the trainer fill as they go; nothing here is on the
//! training path beyond a short lock per accepted chunk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flotilla_common::Snapshot;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::train::recorder::Counters;

/// The page, as served.
const PAGE: &str = include_str!("live.html");

/// Rows kept for actors whose streams have ended, and for how long.
const MAX_ROWS: usize = 256;
const GONE_AFTER: Duration = Duration::from_secs(120);
/// Points of the learning curve kept; past it every other one is dropped.
const MAX_POINTS: usize = 2048;

/// Per-actor rows, the learning curve, the evaluations and the last
/// checkpoint of one run.
#[derive(Default)]
pub struct Board {
    actors: Mutex<BTreeMap<u32, ActorRow>>,
    curve: Mutex<Curve>,
    evals: Mutex<Curve>,
    checkpoint: Mutex<Option<(PathBuf, u64)>>,
}

struct ActorRow {
    name: String,
    peer: Option<SocketAddr>,
    streams: u32,
    samples: u64,
    lag: u64,
    last_seen: Instant,
    rate: Rate,
}

/// A rate over at least [`RATE_WINDOW`] of wall time, measured when read:
/// the page shows the server's rates, whatever the browser's clock does.
#[derive(Default)]
struct Rate {
    mark: Option<(Instant, u64)>,
    per_second: Option<f64>,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Rate {
    fn read(&mut self, count: u64) -> Option<f64> {
        let now = Instant::now();
        match self.mark {
            Some((then, seen)) if now.duration_since(then) >= RATE_WINDOW => {
                let dt = now.duration_since(then).as_secs_f64();
                self.per_second = Some(count.saturating_sub(seen) as f64 / dt);
                self.mark = Some((now, count));
            }
            Some(_) => {}
            None => self.mark = Some((now, count)),
        }
        self.per_second
    }
}

impl ActorRow {
    fn new(name: &str) -> Self {
        ActorRow {
            name: name.to_owned(),
            peer: None,
            streams: 0,
            samples: 0,
            lag: 0,
            last_seen: Instant::now(),
            rate: Rate::default(),
        }
    }
}

/// (env steps trained, wall seconds, mean return) per recorded update (or
/// evaluation), thinned to at most [`MAX_POINTS`] evenly spaced ones.
#[derive(Default)]
struct Curve {
    points: Vec<[f64; 3]>,
    stride: u64,
    seen: u64,
}

impl Curve {
    fn push(&mut self, point: [f64; 3]) {
        self.stride = self.stride.max(1);
        self.seen += 1;
        if !(self.seen - 1).is_multiple_of(self.stride) {
            return;
        }
        self.points.push(point);
        if self.points.len() >= MAX_POINTS {
            self.points = self.points.iter().step_by(2).copied().collect();
            self.stride *= 2;
        }
    }
}

impl Board {
    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, ActorRow>> {
        self.actors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An actor said Hello: its session's id, name and address.
    pub fn hello(&self, actor_id: u32, name: &str, peer: Option<SocketAddr>) {
        let mut rows = self.rows();
        prune(&mut rows);
        let row = rows.entry(actor_id).or_insert_with(|| ActorRow::new(name));
        row.peer = peer.or(row.peer);
        row.last_seen = Instant::now();
    }

    /// A trajectory stream of `actor_id` opened (`true`) or ended.
    pub fn stream(&self, actor_id: u32, name: &str, open: bool) {
        let mut rows = self.rows();
        let row = rows.entry(actor_id).or_insert_with(|| ActorRow::new(name));
        if open {
            row.streams += 1;
        } else {
            row.streams = row.streams.saturating_sub(1);
        }
        row.last_seen = Instant::now();
    }

    /// A valid, new chunk of `samples` transitions acted `lag` versions ago.
    pub fn chunk(&self, actor_id: u32, name: &str, samples: u64, lag: u64) {
        let mut rows = self.rows();
        let row = rows.entry(actor_id).or_insert_with(|| ActorRow::new(name));
        row.samples += samples;
        row.lag = lag;
        row.last_seen = Instant::now();
    }

    /// One recorded update.
    pub fn point(&self, env_steps: u64, wall_seconds: f64, mean_return: Option<f64>) {
        if let Some(ret) = mean_return.filter(|r| r.is_finite()) {
            let mut c = self.curve.lock().unwrap_or_else(|e| e.into_inner());
            c.push([env_steps as f64, wall_seconds, ret]);
        }
    }

    /// One evaluation (`[eval]`): its mean return.
    pub fn evaluation(&self, env_steps: u64, wall_seconds: f64, mean_return: f64) {
        if mean_return.is_finite() {
            let mut c = self.evals.lock().unwrap_or_else(|e| e.into_inner());
            c.push([env_steps as f64, wall_seconds, mean_return]);
        }
    }

    /// A checkpoint was written.
    pub fn checkpoint(&self, path: &Path, version: u64) {
        *self.checkpoint.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((path.to_owned(), version));
    }
}

/// Drops rows of actors gone for [`GONE_AFTER`], then the oldest gone ones
/// past [`MAX_ROWS`] (Hello alone may come from anyone who can connect).
fn prune(rows: &mut BTreeMap<u32, ActorRow>) {
    rows.retain(|_, r| r.streams > 0 || r.last_seen.elapsed() < GONE_AFTER);
    while rows.len() >= MAX_ROWS {
        let oldest = rows
            .iter()
            .filter(|(_, r)| r.streams == 0)
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(&id, _)| id);
        match oldest {
            Some(id) => {
                rows.remove(&id);
            }
            None => break,
        }
    }
}

/// What the page shows of a started run.
pub struct LiveRun {
    pub run_id: String,
    pub env_id: String,
    pub algo: String,
    pub total_env_steps: u64,
    /// `run.frames_per_step` for a run on images (the page shows frames/s),
    /// `None` otherwise.
    pub frames_per_step: Option<u32>,
    pub run_dir: PathBuf,
    pub started: Instant,
    pub counters: Arc<Counters>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// The handle the binary creates before the run and the run fills in once
/// it has started (until then the page says it is starting).
#[derive(Default)]
pub struct Live {
    run: OnceLock<LiveRun>,
    /// Env steps received and trained per second.
    rates: Mutex<(Rate, Rate)>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("started", &self.run.get().is_some())
            .finish()
    }
}

impl Live {
    pub fn new() -> Arc<Self> {
        Arc::new(Live::default())
    }

    /// Called once, when the run has started; later calls are ignored.
    pub fn start(&self, run: LiveRun) {
        let _ = self.run.set(run);
    }

    /// `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        let Some(r) = self.run.get() else {
            return json!({ "state": "starting" });
        };
        let c = &r.counters;
        let board = &c.board;
        let (ret, len, lag) = c
            .recent
            .lock()
            .map(|x| (x.mean_return(), x.mean_length(), x.median_lag()))
            .unwrap_or((None, None, None));
        let actors: Vec<serde_json::Value> = {
            let mut rows = board.rows();
            prune(&mut rows);
            rows.iter_mut()
                .map(|(id, a)| {
                    json!({
                        "id": id,
                        "name": a.name,
                        "peer": a.peer.map(|p| p.to_string()),
                        "connected": a.streams > 0,
                        "samples": a.samples,
                        "env_steps_per_second": a.rate.read(a.samples),
                        "policy_lag": a.lag,
                        "seen_seconds_ago": a.last_seen.elapsed().as_secs_f64(),
                    })
                })
                .collect()
        };
        let curve = board
            .curve
            .lock()
            .map(|c| c.points.clone())
            .unwrap_or_default();
        let evals = board
            .evals
            .lock()
            .map(|c| c.points.clone())
            .unwrap_or_default();
        let checkpoint = board.checkpoint.lock().ok().and_then(|c| c.clone()).map(
            |(path, version)| json!({ "path": path.display().to_string(), "version": version }),
        );
        let (received, trained) = (
            c.samples_received.load(Ordering::Relaxed),
            c.env_steps.load(Ordering::Relaxed),
        );
        let (received_rate, trained_rate) = {
            let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            (r.0.read(received), r.1.read(trained))
        };
        json!({
            "state": "training",
            "run_id": r.run_id,
            "env_id": r.env_id,
            "algo": r.algo,
            "run_dir": r.run_dir.display().to_string(),
            "total_env_steps": r.total_env_steps,
            "env_steps_trained": trained,
            "samples_received": received,
            "env_steps_per_second": received_rate,
            "samples_trained_per_second": trained_rate,
            "frames_per_second": r
                .frames_per_step
                .and_then(|f| received_rate.map(|x| x * f64::from(f))),
            "stale_samples": c.stale_samples.load(Ordering::Relaxed),
            "episodes": c.episodes.load(Ordering::Relaxed),
            "policy_version": r.snapshots.borrow().version,
            "uptime_seconds": r.started.elapsed().as_secs_f64(),
            "episode_return_mean": ret,
            "episode_length_mean": len,
            "policy_lag_median": lag,
            "actors": actors,
            "curve": curve,
            "eval_return": evals.last().map(|p| p[2]),
            "evals": evals,
            "checkpoint": checkpoint,
        })
    }
}

/// Renders Prometheus's text exposition.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `/` (the page), `/api/status` and `/metrics` on `listener` until
/// the task is dropped. Plain HTTP/1.1 GET, one request per connection.
pub async fn serve(listener: TcpListener, live: Arc<Live>, metrics: RenderMetrics) {
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "metrics port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (live, metrics) = (live.clone(), metrics.clone());
        tokio::spawn(async move {
            let served =
                tokio::time::timeout(Duration::from_secs(10), answer(conn, &live, &metrics)).await;
            if !matches!(served, Ok(Ok(()))) {
                debug!(%peer, "metrics port: a request was not answered");
            }
            drop(slot);
        });
    }
}

async fn answer(mut conn: TcpStream, live: &Live, metrics: &RenderMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 * 1024 {
            return respond(
                &mut conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        )
        .await;
    }
    let (status, kind, body) = match path {
        "/" | "/index.html" => (
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.as_bytes().to_vec(),
        ),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics().into_bytes(),
        ),
        "/api/status" => (
            "200 OK",
            "application/json",
            live.status().to_string().into_bytes(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            b"not found: try / or /metrics\n".to_vec(),
        ),
    };
    let body = if method == "HEAD" { Vec::new() } else { body };
    respond(&mut conn, status, kind, &body).await
}

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_thins_evenly_and_keeps_its_ends_in_reach() {
        let b = Board::default();
        for i in 0..10_000u64 {
            b.point(i * 10, i as f64, Some(i as f64));
        }
        b.point(1, 1.0, None);
        b.point(1, 1.0, Some(f64::NAN));
        let c = b.curve.lock().unwrap();
        assert!(c.points.len() < MAX_POINTS && c.points.len() > MAX_POINTS / 4);
        let gaps: Vec<f64> = c.points.windows(2).map(|w| w[1][0] - w[0][0]).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "even spacing");
        assert_eq!(c.points[0][0], 0.0);
        assert!(c.points.last().unwrap()[0] >= 10.0 * (10_000.0 - gaps[0] / 10.0));
    }

    #[test]
    fn rows_follow_streams_and_gone_actors_are_bounded() {
        let b = Board::default();
        b.hello(1, "a", Some("127.0.0.1:5000".parse().unwrap()));
        b.stream(1, "a", true);
        b.chunk(1, "a", 64, 2);
        b.chunk(1, "a", 64, 0);
        {
            let rows = b.rows();
            assert_eq!(
                (rows[&1].samples, rows[&1].lag, rows[&1].streams),
                (128, 0, 1)
            );
        }
        b.stream(1, "a", false);
        for id in 2..1000 {
            b.hello(id, "x", None);
        }
        let rows = b.rows();
        assert!(rows.len() <= MAX_ROWS, "{}", rows.len());
    }
}
