//! A TCP proxy for fault drills: it forwards each connection to one target, and on demand
//! cuts every open connection at the socket (a reset, as when a network path fails) or
//! stays down for a while, resetting new connections as soon as they arrive (an outage as a
//! client sees it). Clients are pointed at [`TcpProxy::addr`] instead of the service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    /// Bumped by every cut: connection tasks watch it and reset their sockets.
    cuts: watch::Sender<u64>,
    down: AtomicBool,
    resets: AtomicU64,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`. Needs a Tokio runtime,
    /// which must keep running while clients use the proxy (a multi-threaded one when the
    /// test blocks its own thread).
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cuts, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            target,
            cuts,
            down: AtomicBool::new(false),
            resets: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(TcpProxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of [`Self::addr`].
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Resets every open connection; new ones are forwarded again.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|generation| *generation += 1);
    }

    /// While down, open connections are reset and new ones are reset on arrival.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    /// Connections reset by a cut or while down.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::warn!(%error, "test proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.down.load(Ordering::SeqCst) {
            reset(client, &shared);
            continue;
        }
        tokio::spawn(forward(client, shared.clone()));
    }
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    let mut cuts = shared.cuts.subscribe();
    let mut server = match TcpStream::connect(shared.target).await {
        Ok(server) => server,
        // The service is down: the client sees its connection reset.
        Err(_) => return reset(client, &shared),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cuts.changed() => {
            reset(server, &shared);
            reset(client, &shared);
        }
    }
}

/// Closes `stream` with a reset rather than an orderly FIN: SO_LINGER of zero.
fn reset(stream: TcpStream, shared: &Shared) {
    shared.resets.fetch_add(1, Ordering::SeqCst);
    // A failure here still closes the socket, with a FIN instead of a reset.
    let _ = stream.set_zero_linger();
    drop(stream);
}
