//! The upstream core: one thread, its own client QUIC endpoint, and every link this
//! relay dials to another relay. It runs the same `RelayWorker` as the accepting cores,
//! in link mode, on its own router shard, so a broadcast a peer announces is routed to
//! every worker like a local one and each track in demand is subscribed once, on the
//! link, whatever the number of workers and subscribers (spec `cluster.md` 8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quic_io::{Application, Event, Io};
use tracing::{debug, info, warn};

use super::api::{Inbox, MAX_API_PEERS};
use super::link::{Link, Owner, Schedule, State};
use super::origins::{PeerOrigins, yields_to};
use super::peer::Peer;
use super::table::LinkTable;
use crate::relay::{LinkTarget, RelayWorker};

/// Links dialed per loop iteration; the rest are dialed on the next one.
const MAX_DIALS_PER_POLL: usize = 16;

/// How soon a new `connect_api` or gossip list, or a peer's own dial, is acted on: the
/// core looks this often even when nothing else wakes it.
const API_CHECK: Duration = Duration::from_secs(1);

/// The client TLS and version offers every dial uses.
pub struct Dialer {
    /// ALPN `h3`: WebTransport peers.
    pub webtransport: quic_io::ClientConfig,
    /// The moq-lite ALPNs: raw QUIC peers.
    pub raw: quic_io::ClientConfig,
    /// What a WebTransport CONNECT offers, in preference order.
    pub versions: Vec<String>,
}

pub struct UpstreamCore {
    relay: RelayWorker,
    /// The configured links, then those `connect_api` lists (at most `MAX_API_PEERS`).
    links: Vec<Link>,
    dialer: Dialer,
    schedule: Schedule,
    /// What the control side reads (`/nodes`, `/metrics`); written on link events.
    table: Arc<LinkTable>,
    /// `connect_api`'s newest list, when it is configured.
    api: Option<Arc<Inbox>>,
    /// Mesh gossip's newest list of nodes to dial, when it is on.
    gossip: Option<Arc<Inbox>>,
    /// Relays that dialed this one (by their origin id), and this relay's own id: a link
    /// to a relay that also dials us is yielded when its id is the smaller.
    inbound: Option<(Arc<PeerOrigins>, u64)>,
    next_yield_check: Instant,
    last_poll: Instant,
}

impl UpstreamCore {
    /// `relay` must be in link mode (`RelayWorker::set_link_mode`).
    pub fn new(relay: RelayWorker, peers: Vec<Peer>, dialer: Dialer, schedule: Schedule) -> Self {
        let now = Instant::now();
        let table = Arc::new(LinkTable::new(peers.iter().map(|peer| peer.key.clone())));
        Self {
            relay,
            links: peers
                .into_iter()
                .map(|peer| Link::new(peer, schedule, now))
                .collect(),
            dialer,
            schedule,
            table,
            api: None,
            gossip: None,
            inbound: None,
            next_yield_check: now,
            last_poll: now,
        }
    }

    /// Links also come and go with the lists `connect_api` puts in `inbox`.
    pub fn follow_api(&mut self, inbox: Arc<Inbox>) {
        self.api = Some(inbox);
    }

    /// Keeps one link per pair of relays that dial each other: `origins` says which
    /// relays hold a session accepted here, `own_id` is this relay's origin id.
    pub fn yield_to_inbound(&mut self, origins: Arc<PeerOrigins>, own_id: u64) {
        self.inbound = Some((origins, own_id));
    }

    /// Closes a link whose peer also dialed us and keeps that dial (the smaller id's),
    /// and redials a yielded link once the peer's own dial is gone.
    fn yield_links<T: quic_io::SessionIo>(&mut self, now: Instant, io: &mut T) {
        let Some((origins, own_id)) = &self.inbound else {
            return;
        };
        if now < self.next_yield_check {
            return;
        }
        self.next_yield_check = now + API_CHECK;
        for link in &mut self.links {
            match link.state {
                State::Up { session, .. } => {
                    let peer = self.relay.link_peer_origin(session);
                    if yields_to(*own_id, peer) && origins.has(peer) {
                        info!(peer = %link.peer.key, "the peer dials this relay too; its link is kept and this one closed");
                        self.relay.forget_link(session);
                        self.relay
                            .close_link(session, "the peer's own link is kept", io);
                        self.table.update(&link.peer.key, |row| row.session = None);
                        link.state = State::Yielded { peer };
                    }
                }
                State::Yielded { peer } if !origins.has(peer) => {
                    info!(peer = %link.peer.key, "the peer's own link is gone; dialing it again");
                    link.state = State::Waiting { due: now };
                }
                _ => {}
            }
        }
    }

    /// Links also come and go with the nodes mesh gossip puts in `inbox`.
    pub fn follow_gossip(&mut self, inbox: Arc<Inbox>) {
        self.gossip = Some(inbox);
    }

    /// Makes the links `owner` wants match `listed`: a peer it no longer lists, or lists
    /// with another URL, cost or token, is closed; a new one is dialed, unless another
    /// source already has it (`[cluster] connect` first, then whichever came first).
    fn reconcile<T: quic_io::SessionIo>(
        &mut self,
        owner: Owner,
        listed: Vec<Peer>,
        now: Instant,
        io: &mut T,
    ) {
        let mut dropped = Vec::new();
        self.links.retain(|link| {
            let keep = link.owner != owner || listed.contains(&link.peer);
            if !keep {
                dropped.push((link.peer.key.clone(), link.session()));
            }
            keep
        });
        for (key, session) in dropped {
            info!(peer = %key, ?owner, "no longer listed; link closed");
            self.table.remove(&key);
            if let Some(session) = session {
                self.relay.forget_link(session);
                self.relay.close_link(session, "peer no longer listed", io);
            }
        }
        for peer in listed {
            if self.links.iter().any(|link| link.peer.key == peer.key) {
                continue;
            }
            let owned = self.links.iter().filter(|link| link.owner == owner).count();
            if owned >= MAX_API_PEERS {
                warn!(peer = %peer.key, ?owner, "more than {MAX_API_PEERS} listed peers; not dialed");
                continue;
            }
            info!(peer = %peer.key, ?owner, "listed: a new peer; dialing");
            self.table.add(&peer.key);
            let mut link = Link::new(peer, self.schedule, now);
            link.owner = owner;
            self.links.push(link);
        }
    }

    /// The link table the control side reads.
    pub fn table(&self) -> Arc<LinkTable> {
        self.table.clone()
    }

    fn dial_due(&mut self, now: Instant, io: &mut Io<'_>) {
        let versions: Vec<&str> = self.dialer.versions.iter().map(String::as_str).collect();
        let mut dialed = 0;
        for link in &mut self.links {
            if dialed == MAX_DIALS_PER_POLL {
                return;
            }
            if link.due().is_none_or(|due| due > now) {
                continue;
            }
            dialed += 1;
            self.table.update(&link.peer.key, |row| row.dials += 1);
            let peer = &link.peer;
            let result = if peer.webtransport {
                io.connect_webtransport(
                    self.dialer.webtransport.clone(),
                    peer.addr,
                    &peer.server_name,
                    &peer.authority,
                    &peer.path_and_query,
                    &versions,
                )
            } else {
                io.connect(self.dialer.raw.clone(), peer.addr, &peer.server_name)
            };
            match result {
                Ok(session) => {
                    debug!(peer = %peer.key, session, "dialing cluster peer");
                    let setup_path = (!peer.webtransport).then(|| peer.path_and_query.clone());
                    let cost = peer.cost.unwrap_or(0);
                    self.relay
                        .expect_link(session, LinkTarget { setup_path, cost });
                    link.state = State::Dialing { session };
                }
                Err(err) => {
                    self.table.update(&link.peer.key, |row| row.failures += 1);
                    let wait = link.ended(now, spread());
                    warn!(peer = %link.peer.key, %err, ?wait, "cannot dial cluster peer; retrying");
                }
            }
        }
    }

    /// Links whose session ended: the transport said so (`SessionClosed`), or the relay
    /// closed it itself (which raises no event).
    fn reap(&mut self, now: Instant, closed: Option<(quic_io::SessionId, u64, &str)>) {
        for link in &mut self.links {
            let Some(session) = link.session() else {
                continue;
            };
            let ended = match closed {
                Some((gone, code, reason)) if gone == session => Some((code, reason.to_owned())),
                _ if matches!(link.state, State::Up { .. }) && !self.relay.has_session(session) => {
                    Some((0, "closed by this relay".to_owned()))
                }
                _ => None,
            };
            let Some((code, reason)) = ended else {
                continue;
            };
            self.relay.forget_link(session);
            self.table.update(&link.peer.key, |row| {
                row.session = None;
                row.failures += 1;
            });
            let was_up = matches!(link.state, State::Up { .. });
            let wait = link.ended(now, spread());
            if was_up {
                info!(peer = %link.peer.key, code, %reason, ?wait, "cluster link down; redialing");
            } else {
                warn!(peer = %link.peer.key, code, %reason, ?wait, "cluster peer not reached; redialing");
            }
        }
    }
}

impl Application<Io<'_>> for UpstreamCore {
    fn on_event(&mut self, now: Instant, event: Event, io: &mut Io<'_>) {
        let mut stray = None;
        let closed = match &event {
            Event::SessionReady(info) => {
                match self
                    .links
                    .iter_mut()
                    .find(|link| link.state == State::Dialing { session: info.id })
                {
                    Some(link) => {
                        info!(peer = %link.peer.key, session = info.id, "cluster link established");
                        self.table
                            .update(&link.peer.key, |row| row.session = Some(info.id));
                        link.state = State::Up {
                            session: info.id,
                            since: now,
                        };
                    }
                    None => stray = Some(info.id),
                }
                None
            }
            Event::SessionClosed {
                session,
                code,
                reason,
            } => Some((*session, *code, reason.clone())),
            _ => None,
        };
        self.relay.on_event(now, event, io);
        if let Some(session) = stray {
            // Dialed for a peer connect_api has taken back since.
            self.relay.close_link(session, "peer no longer listed", io);
        }
        self.reap(
            now,
            closed
                .as_ref()
                .map(|(session, code, reason)| (*session, *code, reason.as_str())),
        );
    }

    fn poll(&mut self, now: Instant, io: &mut Io<'_>) {
        self.last_poll = now;
        if let Some(listed) = self.api.as_ref().and_then(|inbox| inbox.take()) {
            self.reconcile(Owner::Api, listed, now, io);
        }
        if let Some(listed) = self.gossip.as_ref().and_then(|inbox| inbox.take()) {
            self.reconcile(Owner::Gossip, listed, now, io);
        }
        self.yield_links(now, io);
        self.dial_due(now, io);
        self.relay.poll(now, io);
        self.reap(now, None);
    }

    fn timeout(&self) -> Option<Instant> {
        let relay = Application::<Io<'_>>::timeout(&self.relay);
        let dials = self.links.iter().filter_map(Link::due);
        let periodic = self.api.is_some() || self.gossip.is_some() || self.inbound.is_some();
        let checks = periodic.then_some(self.last_poll + API_CHECK);
        relay.into_iter().chain(dials).chain(checks).min()
    }
}

/// A fresh draw in [0, 1) for the redial jitter.
fn spread() -> f64 {
    (crate::random::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}
