//! moq-relay 0.14's mesh gossip (`[cluster] mesh = true` with `node`, spec `cluster.md`
//! 3.4): every relay announces an empty broadcast `.internal/origins/<node>`, which
//! travels the mesh like any broadcast; a relay with peers of its own to dial watches
//! that prefix and dials each node it learns of whose identity key sorts after its own
//! (the other node dials the other way, so a pair makes one link). A node that stops
//! being announced is let go after 60 s, so a re-announce (a route change is an end and
//! a start) does not drop its link.
//!
//! The watching runs on the control runtime: it asks a worker for the announced paths
//! once a second through the bounded request queue, resolves hosts off the runtime, and
//! hands the list to the upstream core like `connect_api`'s ([`super::api::Inbox`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, info};

use super::api::{Inbox, MAX_API_PEERS};
use super::peer::Peer;
use crate::relay::{ControlRequest, WorkerLink};

/// Where every node's marker broadcast lives.
pub const ORIGINS: &str = ".internal/origins";
/// How often the announced nodes are read.
const CHECK: Duration = Duration::from_secs(1);
/// A node no longer announced is dialed on for this long (moq-relay: marked, swept
/// every 30 s, released after 60 s).
const RELEASE_AFTER: Duration = Duration::from_secs(60);
/// How long a worker may take to list the paths.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// This relay's marker path: `node` under [`ORIGINS`], with `//` collapsed as moq-relay's
/// path normalisation does (`https://relay-b.example/` is `https:/relay-b.example`).
pub fn origin_path(node: &str) -> String {
    proto::path::normalize(&format!("{ORIGINS}/{node}"))
}

/// The URL a marker path's entry (the part below [`ORIGINS`]) stands for: a first
/// segment ending in `:` is a scheme; otherwise a bare `host[:port]` means `https://`.
pub fn node_url(entry: &str) -> String {
    match entry.split_once('/') {
        Some((scheme, rest)) if scheme.ends_with(':') => format!("{scheme}//{rest}"),
        _ => format!("https://{entry}/"),
    }
}

/// What the watcher needs: this relay's identity key (only nodes sorting after it are
/// dialed), the `[cluster] token`, and the inbox the upstream core reads.
#[derive(Debug, Clone)]
pub struct Watcher {
    pub own_key: String,
    pub token: Option<String>,
    pub inbox: Arc<Inbox>,
}

/// Watches the announced nodes for as long as the runtime runs.
pub async fn run(watcher: Watcher, links: Vec<WorkerLink>) {
    let Some(worker) = links.first().cloned() else {
        return;
    };
    // Node URL → when it was last seen announced.
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut last: Option<Vec<String>> = None;
    loop {
        tokio::time::sleep(CHECK).await;
        let Some(paths) = announced(&worker).await else {
            continue;
        };
        let now = Instant::now();
        for path in paths {
            if let Some(entry) = proto::path::strip_prefix(&path, ORIGINS).filter(|e| !e.is_empty())
            {
                seen.insert(node_url(entry), now);
            }
        }
        seen.retain(|_, at| now.duration_since(*at) < RELEASE_AFTER);
        let mut urls: Vec<String> = seen.keys().cloned().collect();
        urls.sort();
        if last.as_ref() == Some(&urls) {
            continue;
        }
        last = Some(urls.clone());
        let (own, token) = (watcher.own_key.clone(), watcher.token.clone());
        let peers = tokio::task::spawn_blocking(move || to_dial(&urls, &own, token.as_deref()))
            .await
            .unwrap_or_default();
        info!(peers = peers.len(), "mesh: nodes to dial");
        watcher.inbox.put(peers);
    }
}

/// The nodes this relay dials: those whose identity key sorts after `own_key`, at most
/// `MAX_API_PEERS`. An entry that does not parse or resolve is skipped.
fn to_dial(urls: &[String], own_key: &str, token: Option<&str>) -> Vec<Peer> {
    urls.iter()
        .filter_map(|url| match Peer::parse(url, token) {
            Ok(peer) => Some(peer),
            Err(err) => {
                debug!(%url, %err, "mesh: node entry skipped");
                None
            }
        })
        .filter(|peer| peer.key.as_str() > own_key)
        .take(MAX_API_PEERS)
        .collect()
}

async fn announced(worker: &WorkerLink) -> Option<Vec<String>> {
    let (reply, answer) = oneshot::channel();
    worker
        .request(ControlRequest::Announced {
            prefix: ORIGINS.to_owned(),
            reply,
        })
        .ok()?;
    let paths = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .ok()?
        .ok()?;
    Some(paths.iter().map(|path| path.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_makes_a_marker_path_and_back() {
        for (node, path, url) in [
            (
                "https://relay-b.example/",
                ".internal/origins/https:/relay-b.example",
                "https://relay-b.example",
            ),
            (
                "https://relay-b.example:4443/?cost=7",
                ".internal/origins/https:/relay-b.example:4443/?cost=7",
                "https://relay-b.example:4443/?cost=7",
            ),
            (
                "relay-c.example:4443",
                ".internal/origins/relay-c.example:4443",
                "https://relay-c.example:4443/",
            ),
        ] {
            assert_eq!(origin_path(node), path);
            let entry = proto::path::strip_prefix(path, ORIGINS).unwrap();
            assert_eq!(node_url(entry), url);
        }
    }

    #[test]
    fn only_nodes_sorting_after_this_one_are_dialed() {
        let urls = [
            "https://127.0.0.1:4001/".to_owned(),
            "https://127.0.0.1:4002/".to_owned(),
            "https://127.0.0.1:4003/".to_owned(),
            "ftp://nowhere/".to_owned(),
        ];
        let peers = to_dial(&urls, "https://127.0.0.1:4002/", Some("t0k"));
        let keys: Vec<&str> = peers.iter().map(|peer| peer.key.as_str()).collect();
        assert_eq!(keys, ["https://127.0.0.1:4003/"]);
        assert_eq!(peers[0].path_and_query, "/?jwt=t0k");
    }
}
