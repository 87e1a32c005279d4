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

/// Server CIDs are 8 bytes: one steering byte and 7 random ones (56 bits is ample to be
/// unguessable for a connection's lifetime).
pub const CID_LEN: usize = 8;

/// Workers are steered by one byte, so there can be at most 256 of them.
pub const MAX_WORKERS: usize = 256;

/// Generates CIDs with `cid[0] % workers == worker`.
#[derive(Debug)]
pub struct WorkerCidGenerator {
    worker: usize,
    workers: usize,
    rng: ring::rand::SystemRandom,
}

impl WorkerCidGenerator {
    /// `workers` must be in 1..=256 and `worker < workers`.
    pub fn new(worker: usize, workers: usize) -> Self {
        assert!((1..=MAX_WORKERS).contains(&workers) && worker < workers);
        Self {
            worker,
            workers,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    fn count(&self) -> usize {
        self.workers
    }
}

impl ConnectionIdGenerator for WorkerCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        if ring::rand::SecureRandom::fill(&self.rng, &mut bytes).is_err() {
            // The system RNG does not fail on Linux after boot; fall back to a
            // time-derived value rather than panic.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            bytes = t.to_le_bytes();
        }
        let n = self.count();
        // Pick a first byte uniformly among those that map to this worker.
        let slots = 256 / n;
        let k = bytes[0] as usize % slots;
        bytes[0] = (k * n + self.worker) as u8;
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() != CID_LEN || owner_of(cid[0], self.count()) != self.worker {
            return Err(InvalidCid);
        }
        Ok(())
    }

    fn cid_len(&self) -> usize {
        CID_LEN
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
pub fn packet_owner(datagram: &[u8], workers: usize) -> Option<usize> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        // Short header: flags, then our 8-byte DCID.
        if datagram.len() < 1 + CID_LEN {
            return None;
        }
        return Some(owner_of(datagram[1], workers));
    }
    // Long header: flags, version(4), dcid len, dcid. Type 2 = Handshake in QUIC v1.
    if (first >> 4) & 0x3 != 2 || datagram.len() < 6 + CID_LEN {
        return None;
    }
    if datagram[5] as usize != CID_LEN {
        return None;
    }
    Some(owner_of(datagram[6], workers))
}

/// Attaches the steering program to the reuseport group of `socket`: short-header packets
/// go to socket `dcid[0] % workers`; long-header ones get an out-of-range index, which makes
/// the kernel fall back to its 4-tuple hash. Needs no privileges.
pub fn attach_reuseport_cbpf(socket: &impl AsRawFd, workers: usize) -> io::Result<()> {
    // For UDP the kernel runs the program with the packet data starting at the UDP payload.
    let prog = [
        // A = first byte
        bpf(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 0),
        // long header? jump to the fallback return
        bpf(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 3, 0, 0x80),
        // A = dcid[0]
        bpf(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 1),
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
        for workers in [1usize, 2, 3, 7, 256] {
            for w in 0..workers.min(8) {
                let mut g = WorkerCidGenerator::new(w, workers);
                let other = (w + 1) % workers;
                for _ in 0..50 {
                    let cid = g.generate_cid();
                    assert_eq!(cid.len(), CID_LEN);
                    assert_eq!(owner_of(cid[0], workers), w);
                    assert!(g.validate(&cid).is_ok());
                    if other != w {
                        assert!(
                            WorkerCidGenerator::new(other, workers)
                                .validate(&cid)
                                .is_err()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packet_owner_reads_short_and_handshake_headers_only() {
        let mut short = vec![0x40u8, 5, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(packet_owner(&short, 2), Some(1));
        short.truncate(5);
        assert_eq!(packet_owner(&short, 2), None);
        // Initial (type 0): client-chosen CID, never steered.
        let initial = [0xc0u8, 0, 0, 0, 1, 8, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(packet_owner(&initial, 2), None);
        // Handshake (type 2) with an 8-byte DCID.
        let hs = [0xe0u8, 0, 0, 0, 1, 8, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(packet_owner(&hs, 2), Some(1));
        assert_eq!(packet_owner(&[], 2), None);
    }
}
