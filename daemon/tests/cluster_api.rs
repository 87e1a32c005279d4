//! `[cluster] connect_api` through the real binary (spec `cluster.md` 3.3): the peers a
//! watched file or an HTTP endpoint lists are dialed, a list that cannot be read keeps
//! the links, and a peer taken off the list is let go.

mod common;

use std::time::Duration;

use common::cluster::{ANY_PORT, next_frame, payload, relay, relay_config, session, subscriber};
use common::http::{Ops, get, start, wait_until};
use interop::ConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A leaf relay (id 2) that dials whatever `source` lists, trusting `origin`'s
/// certificate; `node` is its `[cluster] node`.
fn leaf(origin: &Ops, source: &str, node: &str) -> Ops {
    start(&format!(
        "{}connect_api = {source:?}\nnode = {node:?}\n[client.tls]\nfingerprint = [\"{}\"]\n",
        relay_config(2, &[], ANY_PORT),
        origin.fingerprint
    ))
}

fn nodes(ops: &Ops) -> String {
    get(ops.internal, "/nodes").body
}

/// A broadcast published on `origin` reaches a subscriber on `leaf`.
async fn crosses(origin: &Ops, leaf: &Ops, broadcast: &str) {
    let publisher = session(origin, ConnectOptions::publish_only).await;
    let (_broadcast, mut tracks) = publisher.publish(broadcast, &["video"]).expect("publish");
    let track = tracks.pop().unwrap();
    let (_subscriber, mut sub) = subscriber(leaf, broadcast).await;
    let writer = tokio::spawn(async move {
        for group in 0..40 {
            track.write_group([payload(group, 0)]).expect("group");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    next_frame(&mut sub).await;
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_adds_keeps_and_removes_links() {
    let origin = relay(1, &[]);
    let dir = tempfile::TempDir::new().unwrap();
    let list = dir.path().join("peers.json");
    std::fs::write(&list, "[]").unwrap();
    let leaf = leaf(&origin, &list.display().to_string(), "https://leaf.test/");
    leaf.relay.wait_for_line("connect_api: new peer list");
    assert_eq!(nodes(&leaf), r#"{"nodes":[]}"#);

    let peer = format!("https://{}/", origin.quic);
    std::fs::write(&list, format!("[{peer:?}]")).unwrap();
    leaf.relay.wait_for_line("cluster link established");
    assert!(nodes(&leaf).contains(&peer), "{}", nodes(&leaf));
    crosses(&origin, &leaf, "demo/api").await;

    // A list that does not parse changes nothing.
    std::fs::write(&list, "[\"https://").unwrap();
    leaf.relay.wait_for_line("connect_api: list kept");
    assert!(nodes(&leaf).contains(&peer));

    std::fs::write(&list, "[]").unwrap();
    leaf.relay
        .wait_for_line("connect_api no longer lists this peer; link closed");
    wait_until(|| (nodes(&leaf) == r#"{"nodes":[]}"#).then_some(()));
    let metrics = common::scrape::scrape(&leaf);
    assert!(
        !metrics.keys().any(|name| name.contains(&peer)),
        "the peer's link rows went with it"
    );
}

/// Serves `body` as the peer list on every request, and hands each request's head to
/// the test.
async fn list_server(body: String) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, seen) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        // Bounded by the test: the relay asks every 30 s.
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).await.unwrap_or(0);
            let _ = heads
                .send(String::from_utf8_lossy(&head[..n]).into_owned())
                .await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: \"v1\"\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_list_is_asked_for_with_the_node_and_its_peers_dialed() {
    let origin = relay(1, &[]);
    let (api, mut heads) = list_server(format!("[\"https://{}/\"]", origin.quic)).await;
    let leaf = leaf(
        &origin,
        &format!("http://{api}/peers"),
        "https://leaf.test:4443/",
    );
    let head = tokio::time::timeout(Duration::from_secs(10), heads.recv())
        .await
        .expect("asked in time")
        .expect("a request");
    assert!(
        head.starts_with("GET /peers?node=https%3A%2F%2Fleaf.test%3A4443%2F HTTP/1.1"),
        "{head}"
    );
    leaf.relay.wait_for_line("cluster link established");
    crosses(&origin, &leaf, "demo/http").await;
}
