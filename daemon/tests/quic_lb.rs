//! QUIC-LB connection IDs through the real binary: what a client sends after the
//! handshake names the configured server ID in plaintext, as a QUIC-LB load balancer
//! needs, and the kernel program still steers every connection to its own worker by
//! the nonce's first byte. A preferred address in the same file is accepted and served.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::bare::{bare_client_config, idle_subscriber};
use common::http::start;
use common::scrape::wait_for;

/// Server ID 0x0a0b and a 6-byte nonce: 9-byte CIDs whose first octet is 8.
const CONFIG: &str = "[listen]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\npreferred_v4 = \"127.0.0.1:4433\"\nload_balancer = { id = \"0a0b\", nonce = 6 }\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"**\"\n";

const SERVER_CID_PREFIX: [u8; 3] = [8, 0x0a, 0x0b];
const SERVER_CID_LEN: usize = 9;

/// What the relay-bound side of a one-client UDP forwarder saw.
#[derive(Default)]
struct Seen {
    /// Client packets whose DCID is the server's (short header, or Handshake).
    server_cids: AtomicUsize,
    /// Those whose DCID does not start with the configured prefix.
    foreign: AtomicUsize,
}

/// Forwards one client's datagrams to `relay` and the answers back, reading the DCID of
/// every client packet that carries a server-chosen one, until `stop` or 30 s.
fn forwarder(relay: SocketAddr, seen: Arc<Seen>, stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let datagram = &buf[..n];
            if from == relay {
                if let Some(client) = client {
                    let _ = socket.send_to(datagram, client);
                }
                continue;
            }
            client = Some(from);
            let dcid = match datagram.first() {
                Some(first) if first & 0x80 == 0 => datagram.get(1..1 + SERVER_CID_LEN),
                // Handshake (type 2): DCID length at byte 5, DCID after it.
                Some(first) if (first >> 4) & 0x3 == 2 => {
                    let len = usize::from(*datagram.get(5).unwrap_or(&0));
                    datagram.get(6..6 + len)
                }
                _ => None,
            };
            if let Some(dcid) = dcid {
                seen.server_cids.fetch_add(1, Ordering::Relaxed);
                if dcid.len() != SERVER_CID_LEN || dcid[..3] != SERVER_CID_PREFIX {
                    seen.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = socket.send_to(datagram, relay);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_address_the_configured_server_id_and_each_worker_keeps_its_connections() {
    let ops = start(CONFIG);
    let config = bare_client_config(&ops.fingerprint);

    // One session through the forwarder: the wire shows the QUIC-LB layout.
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let through = forwarder(ops.quic, seen.clone(), stop.clone());
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let watched = idle_subscriber(&endpoint, config.clone(), through)
        .await
        .expect("a session through the forwarder");
    stop.store(true, Ordering::Relaxed);
    assert!(
        seen.server_cids.load(Ordering::Relaxed) > 0,
        "no client packet carried a server CID"
    );
    assert_eq!(
        seen.foreign.load(Ordering::Relaxed),
        0,
        "client packets addressed CIDs without the QUIC-LB prefix"
    );
    watched.connection.close(0u32.into(), b"done");

    // Sixteen sessions from sixteen ports: the kernel hashes their first packets over
    // both workers, and every later packet must reach the same worker by the nonce. A
    // program reading the wrong byte would send a share of them to the other worker.
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let session = idle_subscriber(&endpoint, config.clone(), ops.quic)
            .await
            .expect("a direct session");
        sessions.push((endpoint, session));
    }
    let metrics = wait_for(&ops, |m| {
        (0..2)
            .map(|w| {
                m.get(&format!("moq_relayd_connections{{worker=\"{w}\"}}"))
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
            >= 16.0
    });
    let per_worker = |name: &str| -> Vec<f64> {
        (0..2)
            .map(|w| {
                metrics
                    .get(&format!("{name}{{worker=\"{w}\"}}"))
                    .copied()
                    .unwrap_or_else(|| panic!("no {name} row for worker {w}"))
            })
            .collect()
    };
    let connections = per_worker("moq_relayd_connections");
    assert!(
        connections.iter().all(|&c| c > 0.0),
        "the kernel hash left a worker without connections: {connections:?}"
    );
    let missteered: f64 = per_worker("moq_relayd_missteered_total").iter().sum();
    assert_eq!(missteered, 0.0, "packets reached the wrong worker");
    for (_, session) in &sessions {
        session.connection.close(0u32.into(), b"done");
    }
}
