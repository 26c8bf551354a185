//! The HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /healthz` (liveness),
//! `GET /readyz` (readiness, see [`super::health`]).
//!
//! The Prometheus recorder is installed once per process, at the first [`serve`]; it is
//! the process-wide recorder of the `metrics` facade, so a program that installed its own
//! gets [`ServeError::Recorder`] instead of two recorders fighting.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::health::Health;
use super::names;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is taken or not allowed.
    #[error(
        "cannot listen on {listen} for /metrics: {source}; pick a free port in [metrics] listen"
    )]
    Bind {
        /// The address.
        listen: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's Prometheus recorder, installed at the first call.
pub(crate) fn recorder() -> Result<PrometheusHandle, ServeError> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::SINK_BATCH_ROWS.into()),
                        names::ROWS_BUCKETS,
                    )
                })
                .map_err(|e| e.to_string())?;
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            names::describe_all();
            metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Ok(handle)
        })
        .clone()
        .map_err(ServeError::Recorder)
}

/// A running endpoint; [`MetricsServer::stop`] ends it.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port is the real one when `:0` was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Installs the recorder and serves the three endpoints on `listen`, `/readyz` from
/// `health`.
pub async fn serve(listen: &str, health: Health) -> Result<MetricsServer, ServeError> {
    let handle = recorder()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            listen: listen.to_owned(),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServeError::Bind {
        listen: listen.to_owned(),
        source,
    })?;
    let render = handle.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        render.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || readyz(health.clone())));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Histograms keep their samples until upkeep folds them in.
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        upkeep.abort();
        if let Err(error) = served {
            tracing::warn!(%error, "the metrics endpoint stopped");
        }
    });
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    Ok(MetricsServer {
        address,
        stop: Some(stop),
        task,
    })
}

async fn readyz(health: Health) -> impl IntoResponse {
    let parts = health.parts();
    let status = if health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&parts).unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
