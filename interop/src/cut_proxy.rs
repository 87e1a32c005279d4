//! A loopback UDP forwarder that can be cut: the way to make a peer vanish without a
//! CONNECTION_CLOSE, as a crashed or unplugged host does, so the relay only learns of
//! it from its idle timeout. It owns one front socket and one upstream socket per
//! client address; after [`CutProxy::cut`] it drops every datagram in both directions.
//! It must never alter, reorder or delay a datagram while it forwards.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Distinct client addresses the proxy forwards for; a test needs one or two.
pub const MAX_FLOWS: usize = 64;

/// Largest UDP payload, so no datagram is ever truncated.
const MAX_DATAGRAM: usize = 65_535;

/// A running forwarder. Dropping it stops forwarding (like a cut).
pub struct CutProxy {
    local_addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Forward datagrams sent to [`CutProxy::local_addr`] (on 127.0.0.1) to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let local_addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(forward(front, upstream, cut.clone()));
        Ok(Self {
            local_addr,
            cut,
            task,
        })
    }

    /// Where clients should send: dial `https://{local_addr}/…` instead of the relay.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// From now on, drop every datagram both ways, silently.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(front: Arc<UdpSocket>, upstream: SocketAddr, cut: Arc<AtomicBool>) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match front.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                tracing::debug!(%err, "cut proxy front socket failed");
                return;
            }
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        let back = match flows.get(&client) {
            Some(back) => back.clone(),
            None => {
                if flows.len() >= MAX_FLOWS {
                    tracing::warn!(%client, MAX_FLOWS, "cut proxy full, dropping datagram");
                    continue;
                }
                let Ok(back) = open_back(upstream).await else {
                    continue;
                };
                flows.insert(client, back.clone());
                returns.spawn(back_to_front(
                    back.clone(),
                    front.clone(),
                    client,
                    cut.clone(),
                ));
                back
            }
        };
        let _ = back.send(&buf[..len]).await;
    }
}

async fn open_back(upstream: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let back = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    back.connect(upstream).await?;
    Ok(Arc::new(back))
}

async fn back_to_front(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok(len) = back.recv(&mut buf).await {
        if !cut.load(Ordering::SeqCst) {
            let _ = front.send_to(&buf[..len], client).await;
        }
    }
}
