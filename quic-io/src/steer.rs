//! Steering of packets to the worker that owns their connection: the connection-ID
//! generator that encodes the worker in the first CID byte, the classic BPF reuseport program
//! that reads that byte in the kernel, and the user-space check that catches the rest.
//! It must never decide anything from a long-header packet's client-chosen CID, and never
//! let a packet for another worker reach this worker's endpoint (that would provoke a
//! stateless reset that kills a live connection elsewhere).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

/// Server CIDs without QUIC-LB are 8 bytes: one steering byte and 7 random ones (56 bits
/// is ample to be unguessable for a connection's lifetime).
pub const CID_LEN: usize = 8;

/// Workers are steered by one byte, so there can be at most 256 of them.
pub const MAX_WORKERS: usize = 256;

/// QUIC-LB bounds (draft-ietf-quic-load-balancers, as moq-relay checks them): a server ID
/// of 1..=15 bytes, a nonce of at least 4 random bytes, and 20 bytes in all.
pub const LB_SERVER_ID_MAX: usize = 15;
pub const LB_NONCE_MIN: usize = 4;
pub const MAX_CID_LEN: usize = 20;

/// How the server's CIDs are laid out: a fixed prefix, then the steering byte, then
/// random bytes. Without QUIC-LB the prefix is empty; with it, the prefix is QUIC-LB's
/// first octet (config rotation 0, the length of what follows) and the plaintext server
/// ID, so a QUIC-LB load balancer routes on the ID and our kernel program steers on the
/// nonce's first byte, as moq-relay lays out the first two parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidLayout {
    prefix: Vec<u8>,
    len: usize,
}

/// A QUIC-LB server ID or nonce length outside the bounds above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadBalancerError {
    #[error("the QUIC-LB server id is {0} bytes; it must be 1..={LB_SERVER_ID_MAX}")]
    ServerIdLength(usize),
    #[error("the QUIC-LB nonce must be at least {LB_NONCE_MIN} bytes, not {0}")]
    NonceTooShort(usize),
    #[error("a {0}-byte connection id exceeds the maximum of {MAX_CID_LEN}")]
    TooLong(usize),
}

impl Default for CidLayout {
    fn default() -> Self {
        Self {
            prefix: Vec::new(),
            len: CID_LEN,
        }
    }
}

impl CidLayout {
    /// QUIC-LB plaintext CIDs: `1 + server_id.len() + nonce_len` bytes.
    pub fn quic_lb(server_id: &[u8], nonce_len: usize) -> Result<Self, LoadBalancerError> {
        if !(1..=LB_SERVER_ID_MAX).contains(&server_id.len()) {
            return Err(LoadBalancerError::ServerIdLength(server_id.len()));
        }
        if nonce_len < LB_NONCE_MIN {
            return Err(LoadBalancerError::NonceTooShort(nonce_len));
        }
        let len = 1 + server_id.len() + nonce_len;
        if len > MAX_CID_LEN {
            return Err(LoadBalancerError::TooLong(len));
        }
        let mut prefix = Vec::with_capacity(1 + server_id.len());
        // Config rotation 0 in the top 3 bits; the length self-description below them.
        prefix.push((len - 1) as u8);
        prefix.extend_from_slice(server_id);
        Ok(Self { prefix, len })
    }

    /// Bytes in each CID.
    pub fn cid_len(&self) -> usize {
        self.len
    }

    /// Where in the CID the steering byte sits.
    pub fn steer_offset(&self) -> usize {
        self.prefix.len()
    }

    /// The QUIC-LB server ID, if the layout carries one.
    pub fn server_id(&self) -> Option<&[u8]> {
        self.prefix.get(1..)
    }
}

/// Generates CIDs in `layout` with `steering byte % workers == worker`.
#[derive(Debug)]
pub struct WorkerCidGenerator {
    worker: usize,
    workers: usize,
    layout: CidLayout,
    rng: ring::rand::SystemRandom,
}

impl WorkerCidGenerator {
    /// `workers` must be in 1..=256 and `worker < workers`.
    pub fn new(worker: usize, workers: usize, layout: CidLayout) -> Self {
        assert!((1..=MAX_WORKERS).contains(&workers) && worker < workers);
        Self {
            worker,
            workers,
            layout,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    fn count(&self) -> usize {
        self.workers
    }
}

impl ConnectionIdGenerator for WorkerCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; MAX_CID_LEN];
        let offset = self.layout.steer_offset();
        let random = &mut bytes[offset..self.layout.len];
        if ring::rand::SecureRandom::fill(&self.rng, random).is_err() {
            // The system RNG does not fail on Linux after boot; fall back to a
            // time-derived value rather than panic.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            for (byte, t) in random.iter_mut().zip(t.to_le_bytes().iter().cycle()) {
                *byte = *t;
            }
        }
        bytes[..offset].copy_from_slice(&self.layout.prefix);
        let n = self.count();
        // Pick a steering byte uniformly among those that map to this worker.
        let slots = 256 / n;
        let k = bytes[offset] as usize % slots;
        bytes[offset] = (k * n + self.worker) as u8;
        ConnectionId::new(&bytes[..self.layout.len])
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        let offset = self.layout.steer_offset();
        if cid.len() != self.layout.len
            || cid[..offset] != self.layout.prefix[..]
            || owner_of(cid[offset], self.count()) != self.worker
        {
            return Err(InvalidCid);
        }
        Ok(())
    }

    fn cid_len(&self) -> usize {
        self.layout.len
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The worker that owns a CID whose first byte is `b`.
pub fn owner_of(b: u8, workers: usize) -> usize {
    b as usize % workers
}

/// The worker a datagram belongs to, if the datagram says so: short-header packets by their
/// DCID, Handshake packets by theirs (both carry a CID we generated). Initial and 0-RTT
/// packets carry a client-chosen DCID and belong to whoever the kernel hash picked.
pub fn packet_owner(datagram: &[u8], layout: &CidLayout, workers: usize) -> Option<usize> {
    let first = *datagram.first()?;
    let steer = layout.steer_offset();
    if first & 0x80 == 0 {
        // Short header: flags, then our DCID.
        if datagram.len() < 1 + layout.cid_len() {
            return None;
        }
        return Some(owner_of(datagram[1 + steer], workers));
    }
    // Long header: flags, version(4), dcid len, dcid. Type 2 = Handshake in QUIC v1.
    if (first >> 4) & 0x3 != 2 || datagram.len() < 6 + layout.cid_len() {
        return None;
    }
    if datagram[5] as usize != layout.cid_len() {
        return None;
    }
    Some(owner_of(datagram[6 + steer], workers))
}

/// Attaches the steering program to the reuseport group of `socket`: short-header packets
/// go to socket `steering byte % workers`; long-header ones get an out-of-range index,
/// which makes the kernel fall back to its 4-tuple hash. Needs no privileges.
pub fn attach_reuseport_cbpf(
    socket: &impl AsRawFd,
    layout: &CidLayout,
    workers: usize,
) -> io::Result<()> {
    // A packet too short for the load ends the program with 0: worker 0 gets it and
    // drops it, as it is no packet of ours.
    let steer = 1 + layout.steer_offset() as u32;
    // For UDP the kernel runs the program with the packet data starting at the UDP payload.
    let prog = [
        // A = first byte
        bpf(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 0),
        // long header? jump to the fallback return
        bpf(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 3, 0, 0x80),
        // A = the DCID's steering byte
        bpf(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, steer),
        // A %= workers
        bpf(
            libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
            0,
            0,
            workers as u32,
        ),
        bpf(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at a live array of sock_filter for the duration of the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cids_encode_their_worker_and_validate_only_there() {
        let lb = CidLayout::quic_lb(&[0xab, 0xcd], 8).unwrap();
        for layout in [CidLayout::default(), lb] {
            for workers in [1usize, 2, 3, 7, 256] {
                for w in 0..workers.min(8) {
                    let mut g = WorkerCidGenerator::new(w, workers, layout.clone());
                    let other = (w + 1) % workers;
                    for _ in 0..50 {
                        let cid = g.generate_cid();
                        assert_eq!(cid.len(), layout.cid_len());
                        assert_eq!(owner_of(cid[layout.steer_offset()], workers), w);
                        assert!(g.validate(&cid).is_ok());
                        if other != w {
                            assert!(
                                WorkerCidGenerator::new(other, workers, layout.clone())
                                    .validate(&cid)
                                    .is_err()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quic_lb_cids_carry_the_length_octet_and_server_id_as_moq_relay_writes_them() {
        let layout = CidLayout::quic_lb(&[0x0a, 0x0b, 0x0c], 8).unwrap();
        assert_eq!(layout.cid_len(), 12);
        assert_eq!(layout.server_id(), Some(&[0x0a, 0x0b, 0x0c][..]));
        let mut g = WorkerCidGenerator::new(1, 2, layout.clone());
        let cids: Vec<ConnectionId> = (0..20).map(|_| g.generate_cid()).collect();
        for cid in &cids {
            assert_eq!(cid[..4], [11, 0x0a, 0x0b, 0x0c]);
        }
        // The nonce is random: 20 CIDs are 20 different ones.
        let distinct: std::collections::HashSet<_> = cids.iter().map(|c| c.to_vec()).collect();
        assert_eq!(distinct.len(), cids.len());
        // Another relay's server ID is not ours, even on the right worker.
        let mut theirs =
            WorkerCidGenerator::new(1, 2, CidLayout::quic_lb(&[0x0a, 0x0b, 0x0d], 8).unwrap());
        assert!(g.validate(&theirs.generate_cid()).is_err());
        assert_eq!(
            CidLayout::quic_lb(&[], 8),
            Err(LoadBalancerError::ServerIdLength(0))
        );
        assert_eq!(
            CidLayout::quic_lb(&[1], 3),
            Err(LoadBalancerError::NonceTooShort(3))
        );
        assert_eq!(
            CidLayout::quic_lb(&[1; 12], 8),
            Err(LoadBalancerError::TooLong(21))
        );
        assert!(CidLayout::quic_lb(&[1; 15], 4).is_ok());
    }

    #[test]
    fn packet_owner_reads_short_and_handshake_headers_only() {
        let plain = CidLayout::default();
        let mut short = vec![0x40u8, 5, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(packet_owner(&short, &plain, 2), Some(1));
        short.truncate(5);
        assert_eq!(packet_owner(&short, &plain, 2), None);
        // Initial (type 0): client-chosen CID, never steered.
        let initial = [0xc0u8, 0, 0, 0, 1, 8, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(packet_owner(&initial, &plain, 2), None);
        // Handshake (type 2) with an 8-byte DCID.
        let hs = [0xe0u8, 0, 0, 0, 1, 8, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(packet_owner(&hs, &plain, 2), Some(1));
        assert_eq!(packet_owner(&[], &plain, 2), None);
    }

    #[test]
    fn packet_owner_steers_quic_lb_cids_on_the_nonce_not_the_server_id() {
        // 1 length octet, server id 0x02 (even), then the steering byte 3 (odd).
        let lb = CidLayout::quic_lb(&[0x02], 4).unwrap();
        let short = [0x40u8, 5, 0x02, 3, 0, 0, 0, 9];
        assert_eq!(packet_owner(&short, &lb, 2), Some(1));
        assert_eq!(packet_owner(&short[..5], &lb, 2), None);
        let hs = [0xe0u8, 0, 0, 0, 1, 6, 5, 0x02, 3, 0, 0, 0];
        assert_eq!(packet_owner(&hs, &lb, 2), Some(1));
        // A Handshake DCID of the plain length is not one of ours under QUIC-LB.
        let plain_hs = [0xe0u8, 0, 0, 0, 1, 8, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(packet_owner(&plain_hs, &lb, 2), None);
    }
}
