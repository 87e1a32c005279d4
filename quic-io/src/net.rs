//! A worker's UDP I/O: receiving datagrams (GRO batches split by stride, destination address
//! and ECN from cmsgs), sending quinn-proto transmits (GSO batches), and waiting for the next
//! event with a timeout. Two backends: io_uring (multishot RecvMsg over a provided-buffer ring,
//! SendMsg batches submitted together with the wait) and poll(2) with quinn-udp syscalls. It
//! owns the socket and its buffers; it must never interpret QUIC beyond what steering needs and
//! never block except in `wait`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use quinn_proto::EcnCodepoint;
use tracing::{debug, trace, warn};

use crate::server::{Waker, WorkerStats};

/// One GRO batch can be up to 64 KiB of coalesced datagrams.
const RECV_PAYLOAD: usize = 64 * 1024;
/// poll backend: receive buffers per recvmmsg; 16 × 64 KiB = 1 MiB drains a burst.
const POLL_RECV_BUFS: usize = 16;
/// poll backend: recvmmsg calls per `recv` before timers and sends get a turn.
const POLL_RECV_CALLS: usize = 8;
/// uring: provided receive buffers (a power of two, as the buffer ring requires). 32 × 64 KiB
/// = 2 MiB per worker holds 32 GRO batches in flight.
const URING_RECV_BUFS: u16 = 32;
/// uring: name + control space ahead of the payload in each provided buffer.
const URING_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_storage>();
const URING_CONTROL_LEN: usize = 256;
/// uring: the `io_uring_recvmsg_out` header the kernel writes first in each buffer (four u32).
const URING_RECVMSG_OUT_LEN: usize = 16;
const URING_RECV_BUF_SIZE: usize =
    URING_RECVMSG_OUT_LEN + URING_NAME_LEN + URING_CONTROL_LEN + RECV_PAYLOAD;
/// uring: sends in flight. 64 GSO batches of up to 40 datagrams is ~3.7 MB queued, more than a
/// socket buffer holds; more would only add latency.
const URING_SEND_SLOTS: usize = 64;
/// uring: submission queue size: all send slots plus the receive and wake-up SQEs.
const URING_ENTRIES: u32 = 128;
/// uring: completions handled per `recv` before the loop moves on.
const URING_CQES_PER_RECV: usize = 512;
const BUF_GROUP: u16 = 0;
// The kernel requires a power-of-two buffer ring, and `entry()` masks with
// `URING_RECV_BUFS - 1`.
const _: () = assert!(URING_RECV_BUFS.is_power_of_two());
// Every send slot plus the multishot receive and the wake-up poll fit the submission queue.
const _: () = assert!(URING_ENTRIES.is_power_of_two());
const _: () = assert!(URING_SEND_SLOTS + 2 <= URING_ENTRIES as usize);
// A provided buffer's length is a u32 in its ring entry.
const _: () = assert!(URING_RECV_BUF_SIZE <= u32::MAX as usize);
// Send slot indices live in the user_data bits below the tag.
const _: () = assert!((URING_SEND_SLOTS as u64) < (1 << 62));

const TAG_RECV: u64 = 1 << 62;
const TAG_WAKE: u64 = 2 << 62;
const TAG_SEND: u64 = 3 << 62;
const TAG_MASK: u64 = 3 << 62;

/// One received datagram.
pub(crate) struct RxDatagram {
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
    pub data: BytesMut,
}

pub(crate) enum Net {
    Poll(Box<PollNet>),
    Uring(Box<UringNet>),
}

impl Net {
    pub fn new(
        socket: std::net::UdpSocket,
        uring: bool,
        max_segments: usize,
        gso: bool,
        gro: bool,
        stats: Arc<WorkerStats>,
        waker: &Waker,
    ) -> io::Result<Net> {
        // quinn-udp sets GRO, PKTINFO, RECVTOS and friends and probes GSO support.
        let udp = quinn_udp::UdpSocketState::new((&socket).into())?;
        if !gro {
            set_int(&socket, libc::SOL_UDP, libc::UDP_GRO, 0);
        }
        let max_segments = if gso {
            max_segments.clamp(1, udp.max_gso_segments().max(1))
        } else {
            1
        };
        if uring {
            Ok(Net::Uring(Box::new(UringNet::new(
                socket,
                udp,
                max_segments,
                stats,
                waker,
            )?)))
        } else {
            Ok(Net::Poll(Box::new(PollNet {
                socket,
                udp,
                max_segments,
                blocked: None,
                tx: Vec::with_capacity(max_segments * 1500),
                stats,
                bufs: (0..POLL_RECV_BUFS.min(quinn_udp::BATCH_SIZE.max(1)))
                    .map(|_| vec![0u8; RECV_PAYLOAD])
                    .collect(),
                metas: vec![
                    quinn_udp::RecvMeta::default();
                    POLL_RECV_BUFS.min(quinn_udp::BATCH_SIZE.max(1))
                ],
            })))
        }
    }

    pub fn max_segments(&self) -> usize {
        match self {
            Net::Poll(p) => p.max_segments,
            Net::Uring(u) => u.max_segments,
        }
    }

    /// Queues one (possibly GSO) batch. `false` means the socket or the send slots are full:
    /// try again after `wait`.
    pub fn send(&mut self, t: &quinn_proto::Transmit, buf: &[u8]) -> bool {
        match self {
            Net::Poll(p) => p.send(t, buf),
            Net::Uring(u) => u.send(t, buf),
        }
    }

    /// A cleared buffer to build the next send in (for `poll_transmit`), or None when no send
    /// can be queued until the socket drains. Follow it with `send_built`.
    pub fn tx_buffer(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Net::Poll(p) => p.tx_buffer(),
            Net::Uring(u) => u.tx_buffer(),
        }
    }

    /// Queues the batch just built in `tx_buffer()`; `false` as for `send`.
    pub fn send_built(&mut self, t: &quinn_proto::Transmit) -> bool {
        match self {
            Net::Poll(p) => p.send_built(t),
            Net::Uring(u) => u.send_built(t),
        }
    }

    /// Nothing more can be sent until the socket drains.
    pub fn blocked(&self) -> bool {
        match self {
            Net::Poll(p) => p.blocked.is_some(),
            Net::Uring(u) => u.free.is_empty(),
        }
    }

    /// Retries a send parked on EAGAIN (poll backend).
    pub fn unblock(&mut self) {
        if let Net::Poll(p) = self
            && let Some((t, buf)) = p.blocked.take()
        {
            p.send(&t, &buf);
        }
    }

    /// Appends received datagrams to `out`; true if more are probably waiting.
    pub fn recv(&mut self, out: &mut Vec<RxDatagram>) -> bool {
        match self {
            Net::Poll(p) => p.recv(out),
            Net::Uring(u) => u.recv(out),
        }
    }

    /// Submits queued sends and sleeps until a datagram, a wake-up or the timeout.
    pub fn wait(&mut self, timeout: Duration, waker: &Waker) {
        match self {
            Net::Poll(p) => p.wait(timeout, waker),
            Net::Uring(u) => u.wait(timeout),
        }
    }
}

fn count_tx(stats: &WorkerStats, size: usize, segment: Option<usize>) {
    let segs = match segment {
        Some(s) if s > 0 => size.div_ceil(s),
        _ => 1,
    } as u64;
    stats.tx_sends.fetch_add(1, Ordering::Relaxed);
    stats.tx_datagrams.fetch_add(segs, Ordering::Relaxed);
    stats.tx_bytes.fetch_add(size as u64, Ordering::Relaxed);
    stats.tx_max_segments.fetch_max(segs, Ordering::Relaxed);
    stats.tx_segments.record(segs);
}

fn split_gro(
    out: &mut Vec<RxDatagram>,
    stats: &WorkerStats,
    payload: &[u8],
    stride: usize,
    remote: SocketAddr,
    local_ip: Option<IpAddr>,
    ecn: Option<EcnCodepoint>,
) {
    let stride = if stride == 0 { payload.len() } else { stride }.max(1);
    let segs = payload.len().div_ceil(stride) as u64;
    stats.rx_batches.fetch_add(1, Ordering::Relaxed);
    stats.rx_datagrams.fetch_add(segs, Ordering::Relaxed);
    stats.rx_max_segments.fetch_max(segs, Ordering::Relaxed);
    stats
        .rx_bytes
        .fetch_add(payload.len() as u64, Ordering::Relaxed);
    stats.rx_segments.record(segs);
    for d in payload.chunks(stride) {
        // One allocation per datagram, not one per GRO batch shared by views: quinn-proto
        // hands stream data out as slices of the datagram, and a relay may cache such a
        // slice for seconds — it must not pin a whole 64 KiB batch.
        out.push(RxDatagram {
            remote,
            local_ip,
            ecn,
            data: BytesMut::from(d),
        });
    }
}

pub(crate) struct PollNet {
    socket: std::net::UdpSocket,
    udp: quinn_udp::UdpSocketState,
    max_segments: usize,
    /// A send that hit EAGAIN, retried when the socket is writable again.
    blocked: Option<(quinn_proto::Transmit, Vec<u8>)>,
    /// Where `poll_transmit` builds the next batch.
    tx: Vec<u8>,
    stats: Arc<WorkerStats>,
    bufs: Vec<Vec<u8>>,
    metas: Vec<quinn_udp::RecvMeta>,
}

impl PollNet {
    fn tx_buffer(&mut self) -> Option<&mut Vec<u8>> {
        if self.blocked.is_some() {
            return None;
        }
        self.tx.clear();
        Some(&mut self.tx)
    }

    fn send_built(&mut self, t: &quinn_proto::Transmit) -> bool {
        let buf = std::mem::take(&mut self.tx);
        let r = self.send(t, &buf);
        self.tx = buf;
        r
    }

    fn send(&mut self, t: &quinn_proto::Transmit, buf: &[u8]) -> bool {
        let tx = quinn_udp::Transmit {
            destination: t.destination,
            ecn: t
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents: &buf[..t.size],
            segment_size: t.segment_size.filter(|&s| s < t.size),
            src_ip: t.src_ip,
        };
        match self.udp.try_send((&self.socket).into(), &tx) {
            Ok(()) => {
                count_tx(&self.stats, t.size, tx.segment_size);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let parked = quinn_proto::Transmit {
                    destination: t.destination,
                    ecn: t.ecn,
                    size: t.size,
                    segment_size: t.segment_size,
                    src_ip: t.src_ip,
                };
                self.blocked = Some((parked, buf[..t.size].to_vec()));
                false
            }
            Err(e) => {
                // quinn-udp turns GSO off for the socket on EIO/EINVAL; follow it. The lost
                // batch is resent by QUIC's loss recovery. EMSGSIZE is expected for MTU probes.
                let gso = self.udp.max_gso_segments().max(1);
                if gso < self.max_segments {
                    warn!(error = %e, "GSO send failed; GSO off for this socket");
                    self.max_segments = gso;
                    self.stats.gso_disabled.store(1, Ordering::Relaxed);
                }
                debug!(error = %e, "send failed");
                self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    fn recv(&mut self, out: &mut Vec<RxDatagram>) -> bool {
        for _ in 0..POLL_RECV_CALLS {
            let mut iov: Vec<io::IoSliceMut<'_>> = self
                .bufs
                .iter_mut()
                .map(|b| io::IoSliceMut::new(b))
                .collect();
            match self
                .udp
                .recv((&self.socket).into(), &mut iov, &mut self.metas)
            {
                Ok(n) => {
                    drop(iov);
                    for (meta, buf) in self.metas.iter().zip(self.bufs.iter()).take(n) {
                        let ecn = meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
                        split_gro(
                            out,
                            &self.stats,
                            &buf[..meta.len],
                            meta.stride,
                            meta.addr,
                            meta.dst_ip,
                            ecn,
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // ICMP errors and the like surface here; per-packet, not fatal.
                    trace!(error = %e, "recv error");
                    return false;
                }
            }
        }
        true
    }

    fn wait(&mut self, timeout: Duration, waker: &Waker) {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fds = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN
                    | if self.blocked.is_some() {
                        libc::POLLOUT
                    } else {
                        0
                    },
                revents: 0,
            },
            libc::pollfd {
                fd: waker.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        waker.drain();
    }
}

/// A send in flight: everything the kernel reads must live here until the completion.
struct SendSlot {
    buf: Vec<u8>,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    control: [u64; SEND_CONTROL_WORDS],
    hdr: libc::msghdr,
    segments: usize,
}

/// Page-aligned memory of the provided-buffer ring.
struct RingMem {
    ptr: *mut u8,
    layout: Layout,
}

impl Drop for RingMem {
    fn drop(&mut self) {
        // SAFETY: allocated in UringNet::new with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

pub(crate) struct UringNet {
    ring: IoUring,
    socket: std::net::UdpSocket,
    udp: quinn_udp::UdpSocketState,
    max_segments: usize,
    stats: Arc<WorkerStats>,
    /// Template for multishot RecvMsg: name and control lengths only.
    recv_hdr: Box<libc::msghdr>,
    recv_armed: bool,
    ring_mem: RingMem,
    bufs: Vec<u8>,
    tail: u16,
    slots: Vec<SendSlot>,
    free: Vec<usize>,
    wake_fd: i32,
    wake_armed: bool,
    wake_buf: Box<u64>,
}

impl UringNet {
    fn new(
        socket: std::net::UdpSocket,
        udp: quinn_udp::UdpSocketState,
        max_segments: usize,
        stats: Arc<WorkerStats>,
        waker: &Waker,
    ) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .build(URING_ENTRIES)
            .or_else(|_| IoUring::builder().build(URING_ENTRIES))?;
        let entries = URING_RECV_BUFS as usize;
        let layout =
            Layout::from_size_align(entries * std::mem::size_of::<types::BufRingEntry>(), 4096)
                .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::other("buffer ring allocation failed"));
        }
        let ring_mem = RingMem { ptr, layout };
        // SAFETY: the ring memory lives in self (ring_mem) as long as the ring does; the ring is
        // dropped first (field order) and unregisters with it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ptr as u64,
                URING_RECV_BUFS,
                BUF_GROUP,
                0,
            )?;
        }
        // SAFETY: msghdr is plain data; zero is a valid empty header.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = URING_NAME_LEN as u32;
        recv_hdr.msg_controllen = URING_CONTROL_LEN;
        let slot_cap = max_segments.max(1) * 1500;
        let slots = (0..URING_SEND_SLOTS)
            .map(|_| SendSlot {
                buf: Vec::with_capacity(slot_cap),
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                // SAFETY: plain data.
                name: unsafe { std::mem::zeroed() },
                control: [0; SEND_CONTROL_WORDS],
                // SAFETY: plain data.
                hdr: unsafe { std::mem::zeroed() },
                segments: 1,
            })
            .collect();
        let mut net = UringNet {
            ring,
            socket,
            udp,
            max_segments,
            stats,
            recv_hdr,
            recv_armed: false,
            ring_mem,
            bufs: vec![0u8; entries * URING_RECV_BUF_SIZE],
            tail: 0,
            slots,
            free: (0..URING_SEND_SLOTS).rev().collect(),
            wake_fd: waker.fd(),
            wake_armed: false,
            wake_buf: Box::new(0),
        };
        for bid in 0..URING_RECV_BUFS {
            net.provide(bid);
        }
        net.arm();
        Ok(net)
    }

    fn entry(&mut self, idx: u16) -> &mut types::BufRingEntry {
        let base = self.ring_mem.ptr as *mut types::BufRingEntry;
        // SAFETY: idx is masked to the ring size; the memory is ours and page-aligned.
        unsafe { &mut *base.add((idx & (URING_RECV_BUFS - 1)) as usize) }
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn provide(&mut self, bid: u16) {
        let addr = self.bufs.as_ptr() as u64 + bid as u64 * URING_RECV_BUF_SIZE as u64;
        let tail = self.tail;
        let e = self.entry(tail);
        e.set_addr(addr);
        e.set_len(URING_RECV_BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lives in the first entry of our ring; the kernel reads it
        // with acquire semantics.
        unsafe {
            let tail_ptr =
                types::BufRingEntry::tail(self.ring_mem.ptr as *const types::BufRingEntry)
                    as *const AtomicU16;
            (*tail_ptr).store(self.tail, Ordering::Release);
        }
    }

    fn push(&mut self, e: squeue::Entry) -> bool {
        // SAFETY: every SQE we push points at memory owned by self that outlives the op.
        if unsafe { self.ring.submission().push(&e) }.is_ok() {
            return true;
        }
        // Queue full: submit what is there and retry once. If the submit fails the retry
        // fails too, and the caller handles that (slot freed, receive re-armed next turn).
        if let Err(e) = self.ring.submit() {
            debug!(error = %e, "io_uring submit with a full queue");
        }
        // SAFETY: as above.
        unsafe { self.ring.submission().push(&e) }.is_ok()
    }

    fn arm(&mut self) {
        if !self.recv_armed {
            let e = opcode::RecvMsgMulti::new(
                types::Fd(self.socket.as_raw_fd()),
                &*self.recv_hdr as *const libc::msghdr,
                BUF_GROUP,
            )
            .build()
            .user_data(TAG_RECV);
            self.recv_armed = self.push(e);
        }
        if !self.wake_armed {
            let e = opcode::PollAdd::new(types::Fd(self.wake_fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(TAG_WAKE);
            self.wake_armed = self.push(e);
        }
    }

    fn send(&mut self, t: &quinn_proto::Transmit, buf: &[u8]) -> bool {
        let Some(slot) = self.tx_buffer() else {
            return false;
        };
        slot.extend_from_slice(&buf[..t.size]);
        self.send_built(t)
    }

    /// The buffer of the free slot `send_built` will use next.
    fn tx_buffer(&mut self) -> Option<&mut Vec<u8>> {
        let i = *self.free.last()?;
        let buf = &mut self.slots[i].buf;
        buf.clear();
        Some(buf)
    }

    fn send_built(&mut self, t: &quinn_proto::Transmit) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        let segment = t.segment_size.filter(|&s| s < t.size);
        let slot = &mut self.slots[i];
        if slot.buf.len() < t.size {
            // Not built by tx_buffer(): nothing valid to send.
            self.free.push(i);
            return false;
        }
        slot.iov = libc::iovec {
            iov_base: slot.buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: t.size,
        };
        let namelen = write_sockaddr(&mut slot.name, t.destination);
        slot.control = [0; SEND_CONTROL_WORDS];
        let mut ctl = CmsgWriter::new(&mut slot.control);
        if let Some(s) = segment {
            ctl.push(libc::SOL_UDP, libc::UDP_SEGMENT, &(s as u16).to_ne_bytes());
        }
        if let Some(ecn) = t.ecn {
            let v = (ecn as u8 as libc::c_int).to_ne_bytes();
            match t.destination {
                SocketAddr::V4(_) => ctl.push(libc::IPPROTO_IP, libc::IP_TOS, &v),
                SocketAddr::V6(_) => ctl.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &v),
            }
        }
        if let (Some(IpAddr::V4(src)), SocketAddr::V4(_)) = (t.src_ip, t.destination) {
            // in_pktinfo { ifindex, spec_dst, addr }: spec_dst picks the source address.
            let mut p = [0u8; 12];
            p[4..8].copy_from_slice(&src.octets());
            ctl.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &p);
        }
        let controllen = ctl.len();
        slot.segments = segment.map(|s| t.size.div_ceil(s)).unwrap_or(1);
        slot.hdr.msg_name = &mut slot.name as *mut _ as *mut libc::c_void;
        slot.hdr.msg_namelen = namelen;
        slot.hdr.msg_iov = &mut slot.iov;
        slot.hdr.msg_iovlen = 1;
        slot.hdr.msg_control = if controllen > 0 {
            slot.control.as_mut_ptr() as *mut libc::c_void
        } else {
            std::ptr::null_mut()
        };
        slot.hdr.msg_controllen = controllen;
        let e = opcode::SendMsg::new(types::Fd(self.socket.as_raw_fd()), &slot.hdr)
            .build()
            .user_data(TAG_SEND | i as u64);
        if !self.push(e) {
            self.free.push(i);
            return false;
        }
        count_tx(&self.stats, t.size, segment);
        true
    }

    fn recv(&mut self, out: &mut Vec<RxDatagram>) -> bool {
        let mut done = 0;
        let mut more = false;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            done += 1;
            let (tag, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            match tag & TAG_MASK {
                TAG_RECV => {
                    if !cqueue::more(flags) {
                        self.recv_armed = false;
                    }
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        if res > 0 {
                            self.on_recv(bid, res as usize, out);
                        }
                        self.provide(bid);
                    } else if res < 0 && res != -libc::ENOBUFS {
                        trace!(error = %io::Error::from_raw_os_error(-res), "recvmsg");
                    }
                }
                TAG_WAKE => {
                    if !cqueue::more(flags) {
                        self.wake_armed = false;
                    }
                    // SAFETY: reads 8 bytes into our own u64 from the non-blocking eventfd.
                    unsafe {
                        libc::read(
                            self.wake_fd,
                            &mut *self.wake_buf as *mut u64 as *mut libc::c_void,
                            8,
                        )
                    };
                }
                _ => {
                    let i = (tag & !TAG_MASK) as usize;
                    if res < 0 {
                        let err = -res;
                        self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                        if (err == libc::EIO || err == libc::EINVAL)
                            && self.slots.get(i).is_some_and(|s| s.segments > 1)
                            && self.max_segments > 1
                        {
                            warn!(errno = err, "GSO send failed; GSO off for this socket");
                            self.max_segments = 1;
                            self.stats.gso_disabled.store(1, Ordering::Relaxed);
                        } else {
                            debug!(errno = err, "sendmsg failed");
                        }
                    }
                    if i < self.slots.len() {
                        self.free.push(i);
                    }
                }
            }
            if done >= URING_CQES_PER_RECV {
                more = true;
                break;
            }
        }
        self.arm();
        more
    }

    fn on_recv(&mut self, bid: u16, len: usize, out: &mut Vec<RxDatagram>) {
        let start = bid as usize * URING_RECV_BUF_SIZE;
        let Some(buf) = self.bufs.get(start..start + len.min(URING_RECV_BUF_SIZE)) else {
            return;
        };
        let Ok(msg) = types::RecvMsgOut::parse(buf, &self.recv_hdr) else {
            return;
        };
        if msg.is_payload_truncated() {
            return;
        }
        let Some(remote) = read_sockaddr(msg.name_data()) else {
            return;
        };
        let mut stride = 0usize;
        let mut local_ip = None;
        let mut ecn = None;
        for (level, typ, data) in Cmsgs::new(msg.control_data()) {
            match (level, typ) {
                (libc::SOL_UDP, libc::UDP_GRO) if data.len() >= 4 => {
                    stride =
                        i32::from_ne_bytes([data[0], data[1], data[2], data[3]]).max(0) as usize;
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
                    local_ip = Some(IpAddr::V4(Ipv4Addr::new(
                        data[8], data[9], data[10], data[11],
                    )));
                }
                (libc::IPPROTO_IP, libc::IP_TOS) if !data.is_empty() => {
                    ecn = EcnCodepoint::from_bits(data[0] & 0b11);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 16 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&data[..16]);
                    local_ip = Some(IpAddr::V6(Ipv6Addr::from(a)));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) if !data.is_empty() => {
                    ecn = EcnCodepoint::from_bits(data[0] & 0b11);
                }
                _ => {}
            }
        }
        split_gro(
            out,
            &self.stats,
            msg.payload_data(),
            stride,
            remote,
            local_ip,
            ecn,
        );
    }

    fn wait(&mut self, timeout: Duration) {
        self.arm();
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => debug!(error = %e, "io_uring_enter"),
        }
        // Not a result: a read of the quinn-udp state this backend keeps only for its
        // socket setup and GSO probe, so the field is not flagged as unused.
        let _ = &self.udp;
    }
}

fn set_int(socket: &impl AsRawFd, level: i32, name: i32, v: libc::c_int) {
    // SAFETY: a plain setsockopt with a c_int value on a socket we own.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn write_sockaddr(out: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large and aligned enough for either address type.
    unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let p = out as *mut _ as *mut libc::sockaddr_in;
                *p = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let p = out as *mut _ as *mut libc::sockaddr_in6;
                *p = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

fn read_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as i32;
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b.get(8..24)?);
            let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
            let ip = Ipv6Addr::from(a);
            // A v4-mapped peer on a dual-stack socket is reported as the v4 address.
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                None => Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))),
            }
        }
        _ => None,
    }
}

const CMSG_HDR: usize = std::mem::size_of::<libc::cmsghdr>();
// `Cmsgs` and `CmsgWriter` read and write the header by hand as the 64-bit Linux layout:
// an 8-byte length, then level and type as i32.
const _: () = assert!(CMSG_HDR == 16 && std::mem::size_of::<usize>() == 8);

/// CMSG_SPACE: the room one cmsg with `data` bytes takes in a control buffer.
const fn cmsg_space(data: usize) -> usize {
    cmsg_align(CMSG_HDR + data)
}

/// Send control buffer: room for everything `send_built` attaches at once — UDP_SEGMENT
/// (u16), IP_TOS or IPV6_TCLASS (c_int) and IP_PKTINFO (in_pktinfo) on a v4 GSO send with
/// ECN and a chosen source address. (64 bytes was 16 short: the PKTINFO was silently left
/// off such sends.)
const SEND_CONTROL_LEN: usize = cmsg_space(std::mem::size_of::<u16>())
    + cmsg_space(std::mem::size_of::<libc::c_int>())
    + cmsg_space(std::mem::size_of::<libc::in_pktinfo>());
/// The send control buffer in u64 words: cmsg headers must be 8-byte aligned.
const SEND_CONTROL_WORDS: usize = SEND_CONTROL_LEN / 8;
const _: () = assert!(SEND_CONTROL_WORDS * 8 == SEND_CONTROL_LEN);
// `send_built` writes in_pktinfo as 12 bytes by hand: ifindex, spec_dst, addr.
const _: () = assert!(std::mem::size_of::<libc::in_pktinfo>() == 12);
// Receive control space: UDP_GRO (c_int) plus, per family, PKTINFO and TOS/TCLASS (c_int;
// IP_TOS arrives as one byte, counted as an int to be safe).
const _: () = assert!(
    URING_CONTROL_LEN
        >= cmsg_space(std::mem::size_of::<libc::c_int>())
            + cmsg_space(std::mem::size_of::<libc::in6_pktinfo>())
            + cmsg_space(std::mem::size_of::<libc::c_int>())
);

const fn cmsg_align(n: usize) -> usize {
    (n + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1)
}

/// Iterates (level, type, data) over a received control buffer.
struct Cmsgs<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Cmsgs<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, off: 0 }
    }
}

impl<'a> Iterator for Cmsgs<'a> {
    type Item = (i32, i32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let h = self.buf.get(self.off..self.off + CMSG_HDR)?;
        let len = usize::from_ne_bytes(h[..8].try_into().ok()?);
        let level = i32::from_ne_bytes(h[8..12].try_into().ok()?);
        let typ = i32::from_ne_bytes(h[12..16].try_into().ok()?);
        if len < CMSG_HDR {
            return None;
        }
        let data = self.buf.get(self.off + CMSG_HDR..self.off + len)?;
        self.off += cmsg_align(len);
        Some((level, typ, data))
    }
}

/// Writes cmsgs into an 8-byte-aligned buffer.
struct CmsgWriter<'a> {
    buf: &'a mut [u64; SEND_CONTROL_WORDS],
    off: usize,
}

impl<'a> CmsgWriter<'a> {
    fn new(buf: &'a mut [u64; SEND_CONTROL_WORDS]) -> Self {
        Self { buf, off: 0 }
    }

    fn push(&mut self, level: i32, typ: i32, data: &[u8]) {
        let len = CMSG_HDR + data.len();
        let total = cmsg_align(len);
        let bytes: &mut [u8; SEND_CONTROL_LEN] = bytemuck_u64(self.buf);
        if self.off + total > bytes.len() {
            // SEND_CONTROL_LEN is sized for every cmsg `send_built` attaches.
            debug_assert!(
                false,
                "cmsg {level}/{typ} does not fit the send control buffer"
            );
            return;
        }
        let o = self.off;
        bytes[o..o + 8].copy_from_slice(&len.to_ne_bytes());
        bytes[o + 8..o + 12].copy_from_slice(&level.to_ne_bytes());
        bytes[o + 12..o + 16].copy_from_slice(&typ.to_ne_bytes());
        bytes[o + 16..o + 16 + data.len()].copy_from_slice(data);
        self.off += total;
    }

    fn len(&self) -> usize {
        self.off
    }
}

fn bytemuck_u64(b: &mut [u64; SEND_CONTROL_WORDS]) -> &mut [u8; SEND_CONTROL_LEN] {
    // SAFETY: the two arrays have the same size (asserted at SEND_CONTROL_LEN); u8 has no
    // alignment requirement.
    unsafe { &mut *(b as *mut [u64; SEND_CONTROL_WORDS] as *mut [u8; SEND_CONTROL_LEN]) }
}

/// Whether this kernel lets us set up an io_uring (seccomp and `io_uring_disabled` may not).
pub(crate) fn uring_available() -> bool {
    IoUring::new(8).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmsg_writer_output_parses_back() {
        let mut buf = [0u64; SEND_CONTROL_WORDS];
        let mut w = CmsgWriter::new(&mut buf);
        w.push(libc::SOL_UDP, libc::UDP_SEGMENT, &1200u16.to_ne_bytes());
        w.push(libc::IPPROTO_IP, libc::IP_TOS, &2i32.to_ne_bytes());
        let n = w.len();
        let bytes = bytemuck_u64(&mut buf);
        let got: Vec<_> = Cmsgs::new(&bytes[..n])
            .map(|(l, t, d)| (l, t, d.to_vec()))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            (
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                1200u16.to_ne_bytes().to_vec()
            )
        );
        assert_eq!(got[1].2, 2i32.to_ne_bytes().to_vec());
    }

    #[test]
    fn send_control_buffer_holds_segment_tos_and_pktinfo_together() {
        let mut buf = [0u64; SEND_CONTROL_WORDS];
        let mut w = CmsgWriter::new(&mut buf);
        w.push(libc::SOL_UDP, libc::UDP_SEGMENT, &1200u16.to_ne_bytes());
        w.push(libc::IPPROTO_IP, libc::IP_TOS, &2i32.to_ne_bytes());
        w.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &[0u8; 12]);
        let n = w.len();
        assert_eq!(n, SEND_CONTROL_LEN);
        let bytes = bytemuck_u64(&mut buf);
        let types: Vec<_> = Cmsgs::new(&bytes[..n]).map(|(_, t, _)| t).collect();
        assert_eq!(types, [libc::UDP_SEGMENT, libc::IP_TOS, libc::IP_PKTINFO]);
    }

    #[test]
    fn sockaddrs_round_trip() {
        for a in ["127.0.0.1:4443", "[::1]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            // SAFETY: plain data.
            let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let n = write_sockaddr(&mut s, a) as usize;
            // SAFETY: s is at least n bytes of initialised plain data.
            let b = unsafe { std::slice::from_raw_parts(&s as *const _ as *const u8, n) };
            assert_eq!(read_sockaddr(b), Some(a));
        }
        assert_eq!(read_sockaddr(&[1, 2]), None);
    }
}
