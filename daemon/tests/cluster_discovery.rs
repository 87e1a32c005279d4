//! Peers found at run time, through the real binary: `[cluster] connect_api` (spec
//! `cluster.md` 3.3: the peers a watched file or an HTTP endpoint lists are dialed, a
//! list that cannot be read keeps the links, a peer taken off the list is let go) and
//! 0.14's mesh gossip (3.4: relays learn of each other through a seed, and each pair
//! makes one link).

mod common;

use std::time::Duration;

use common::cluster::{ANY_PORT, crosses, fixed, relay, relay_config};
use common::http::{Ops, get, start, wait_until};
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
    // /nodes lists a link once its worker reports it up, just after the core's log line.
    wait_until(|| nodes(&leaf).contains(&peer).then_some(()));
    crosses(&origin, &leaf, "demo/api").await;

    // A list that does not parse changes nothing.
    std::fs::write(&list, "[\"https://").unwrap();
    leaf.relay.wait_for_line("connect_api: list kept");
    assert!(nodes(&leaf).contains(&peer));

    std::fs::write(&list, "[]").unwrap();
    leaf.relay.wait_for_line("no longer listed; link closed");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_relays_find_each_other_through_a_seed_and_pair_once() {
    // A is the seed: it only advertises itself. B and C dial A, learn of each other
    // from A's announcements, and the one whose URL sorts first dials the other.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::TempDir::new().unwrap()).collect();
    let sites: Vec<_> = dirs.iter().map(|dir| fixed(dir.path())).collect();
    let url = |i: usize| format!("https://127.0.0.1:{}/", sites[i].port);
    let pins: Vec<String> = sites
        .iter()
        .map(|s| format!("\"{}\"", s.fingerprint))
        .collect();
    let config = |i: usize| {
        let mut config = relay_config(i as u64 + 1, &[], &sites[i].server).replace(
            "linger = \"10s\"\n",
            &format!("linger = \"10s\"\nnode = {:?}\nmesh = true\n", url(i)),
        );
        if i > 0 {
            config.push_str(&format!(
                "connect = [{:?}]\n[client.tls]\nfingerprint = [{}]\n",
                url(0),
                pins.join(", ")
            ));
        }
        start(&config)
    };
    let a = config(0);
    let b = config(1);
    let c = config(2);
    let (first, second, dialer, dialed) = if url(1) < url(2) {
        (1, 2, &b, &c)
    } else {
        (2, 1, &c, &b)
    };
    // The dialer's links: A, then the other.
    dialer.relay.wait_for_line("cluster link established");
    dialer.relay.wait_for_line("cluster link established");
    let listed = wait_until(|| {
        let listed = nodes(dialer);
        listed.contains(&url(second)).then_some(listed)
    });
    assert!(listed.contains(&url(0)), "{listed}");
    let other = nodes(dialed);
    assert!(
        !other.contains(&url(first)),
        "relay {second} dialed back: {other}"
    );
    assert_eq!(nodes(&a), r#"{"nodes":[]}"#, "the seed dials nobody");

    // A broadcast crosses the new link (or through the seed).
    crosses(dialed, dialer, "demo/mesh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_that_dial_each_other_keep_one_link() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::TempDir::new().unwrap()).collect();
    let sites: Vec<_> = dirs.iter().map(|dir| fixed(dir.path())).collect();
    let addr = |i: usize| std::net::SocketAddr::from(([127, 0, 0, 1], sites[i].port));
    let config = |i: usize| {
        let other = 1 - i;
        let peer = (addr(other), sites[other].fingerprint.as_str(), 0);
        start(&relay_config(i as u64 + 1, &[peer], &sites[i].server))
    };
    let a = config(0);
    let b = config(1);
    // B, the larger id, closes its own link once it sees A's dial; A keeps its.
    b.relay
        .wait_for_line("the peer dials this relay too; its link is kept and this one closed");
    let a_url = format!("https://{}/", addr(0));
    let b_url = format!("https://{}/", addr(1));
    wait_until(|| (nodes(&b) == r#"{"nodes":[]}"#).then_some(()));
    wait_until(|| nodes(&a).contains(&b_url).then_some(()));
    // Broadcasts cross the one link both ways.
    crosses(&a, &b, "demo/ab").await;
    crosses(&b, &a, "demo/ba").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !nodes(&b).contains(&a_url),
        "B dialed again while A's link lived: {}",
        nodes(&b)
    );

    // A goes: B's yielded link is dialed again.
    drop(a);
    b.relay
        .wait_for_line("the peer's own link is gone; dialing it again");
}
