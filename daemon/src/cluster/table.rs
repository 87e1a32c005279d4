//! What the control side may know of the links (`/nodes`, `/metrics`): per peer, whether
//! its link is up, with which session, and how often it was dialed and lost. The upstream
//! core writes it on link events only (never per packet); the control thread reads it.

use std::sync::{Mutex, PoisonError};

use quic_io::SessionId;
use serde::Serialize;

/// One peer's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The peer's identity key (its URL without the query, so never a token).
    pub peer: String,
    /// The link's session while it is up.
    pub session: Option<SessionId>,
    /// Dials started (cumulative).
    pub dials: u64,
    /// Dials that never came up and links that went down (cumulative).
    pub failures: u64,
}

/// Every dialed peer's row: the configured ones in configuration order, then those
/// `connect_api` lists, in the order they came.
#[derive(Debug, Default)]
pub struct LinkTable {
    rows: Mutex<Vec<LinkStatus>>,
}

impl LinkTable {
    pub fn new(peers: impl IntoIterator<Item = String>) -> Self {
        Self {
            rows: Mutex::new(
                peers
                    .into_iter()
                    .map(|peer| LinkStatus {
                        peer,
                        session: None,
                        dials: 0,
                        failures: 0,
                    })
                    .collect(),
            ),
        }
    }

    pub fn snapshot(&self) -> Vec<LinkStatus> {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn update(&self, peer: &str, change: impl FnOnce(&mut LinkStatus)) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(row) = rows.iter_mut().find(|row| row.peer == peer) {
            change(row);
        }
    }

    /// A row for a peer dialed from now on.
    pub(super) fn add(&self, peer: &str) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.push(LinkStatus {
            peer: peer.to_owned(),
            session: None,
            dials: 0,
            failures: 0,
        });
    }

    /// A peer no longer dialed: its row (and its metrics) go.
    pub(super) fn remove(&self, peer: &str) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.retain(|row| row.peer != peer);
    }

    /// The `/nodes` document: moq-relay 0.17's (`node`, `connections[].id`, dialed peers
    /// with a live link, sorted) with 0.14's fields beside them (`origin_id` and
    /// `announced` unknown without gossip, `direction`).
    pub fn nodes_json(&self) -> String {
        #[derive(Serialize)]
        struct Connection {
            id: SessionId,
            direction: &'static str,
        }
        #[derive(Serialize)]
        struct Node {
            node: String,
            origin_id: Option<String>,
            announced: Option<()>,
            connections: Vec<Connection>,
        }
        #[derive(Serialize)]
        struct Nodes {
            nodes: Vec<Node>,
        }
        let mut nodes: Vec<Node> = self
            .snapshot()
            .into_iter()
            .filter_map(|row| {
                row.session.map(|id| Node {
                    node: row.peer,
                    origin_id: None,
                    announced: None,
                    connections: vec![Connection {
                        id,
                        direction: "outbound",
                    }],
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        serde_json::to_string(&Nodes { nodes }).unwrap_or_else(|_| "{\"nodes\":[]}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_lists_live_links_sorted_with_both_generations_fields() {
        let table = LinkTable::new(["https://b:1/".to_owned(), "https://a:1/".to_owned()]);
        assert_eq!(table.nodes_json(), r#"{"nodes":[]}"#);
        table.update("https://b:1/", |row| row.session = Some(7));
        table.update("https://a:1/", |row| row.session = Some(3));
        assert_eq!(
            table.nodes_json(),
            r#"{"nodes":[{"node":"https://a:1/","origin_id":null,"announced":null,"connections":[{"id":3,"direction":"outbound"}]},{"node":"https://b:1/","origin_id":null,"announced":null,"connections":[{"id":7,"direction":"outbound"}]}]}"#
        );
    }
}
