//! GSO fallback: when the kernel refuses a GSO send (EIO/EINVAL), the worker switches GSO off
//! for its socket, transfers still complete, and the counters say so.
//!
//! How the kernel is made to refuse: `SO_NO_CHECK` (UDP checksums off) on the server's own
//! socket. Linux's `udp_send_skb` rejects every segmented send on such a socket with EINVAL,
//! while single datagrams still go out — the same answer a device without checksum offload
//! gives as EIO. (Switching off `lo`'s tx checksum in a private network namespace is not
//! possible: on this kernel `lo` reports it as fixed, SIOCETHTOOL returns EOPNOTSUPP.) The
//! test finds the socket among this process's descriptors by its bound port, so quic-io
//! needs no test hook.

mod common;

use std::os::fd::{AsRawFd, BorrowedFd};

use common::*;
use quic_io::{IoBackend, ServerHandle, StatsSnapshot};

/// Enough for congestion control to build GSO batches on loopback.
const DOWNLOAD: usize = 8 << 20;
/// This process has far fewer descriptors than this; the scan is bounded all the same.
const MAX_FDS_SCANNED: usize = 4096;

/// Sets SO_NO_CHECK on every UDP socket of this process bound to the server's port (one per
/// worker). Returns how many it changed.
fn refuse_gso_on_server_sockets(server: &ServerHandle) -> usize {
    let port = server.local_addr().port();
    let mut changed = 0;
    let entries = std::fs::read_dir("/proc/self/fd").expect("fd list");
    for e in entries.flatten().take(MAX_FDS_SCANNED) {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for two syscalls; if another thread closed
        // it meanwhile the calls fail harmlessly, and a reused number is filtered by the
        // address check below.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let s = socket2::SockRef::from(&b);
        let bound_here = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        if !bound_here || s.r#type().ok() != Some(socket2::Type::DGRAM) {
            continue;
        }
        let one: libc::c_int = 1;
        // SAFETY: a plain setsockopt with a c_int on a live socket descriptor.
        let r = unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
        changed += 1;
    }
    changed
}

async fn download(conn: &quinn::Connection) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(format!("BULK {DOWNLOAD}\n").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let got = recv.read_to_end(DOWNLOAD + 1).await.unwrap();
    assert_eq!(got.len(), DOWNLOAD);
}

fn delta(a: &StatsSnapshot, b: &StatsSnapshot) -> (u64, u64) {
    (b.tx_sends - a.tx_sends, b.tx_datagrams - a.tx_datagrams)
}

fn gso_refused_by_the_kernel_falls_back_to_single_datagrams(io: IoBackend) {
    let (server, _seen) = start(config(1, io));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let ep = client_endpoint();
            let conn = connect_moq05(&ep, &fp, addr).await;

            // 1. GSO works, and is used.
            download(&conn).await;
            let before = server.stats()[0];
            assert!(before.tx_max_segments > 1, "no GSO before: {before:?}");
            assert_eq!(before.gso_disabled, 0);

            // 2. The kernel starts refusing segmented sends mid-connection: the transfer
            //    still completes (the refused batches are lost and retransmitted).
            assert_eq!(refuse_gso_on_server_sockets(&server), 1);
            download(&conn).await;
            let fell_back = server.stats()[0];
            assert_eq!(fell_back.gso_disabled, 1, "{fell_back:?}");
            assert!(fell_back.tx_errors >= 1, "{fell_back:?}");

            // 3. The fallback sticks: every later send carries exactly one datagram, and
            //    nothing more is refused.
            download(&conn).await;
            let after = server.stats()[0];
            let (sends, datagrams) = delta(&fell_back, &after);
            assert!(sends > 0);
            assert_eq!(
                sends, datagrams,
                "a GSO batch after the fallback: {after:?}"
            );
            assert_eq!(after.tx_errors, fell_back.tx_errors, "{after:?}");
            conn.close(0u32.into(), b"");
        })
        .await
        .expect("test finished in time");
    });
}

#[test]
fn gso_refused_by_the_kernel_falls_back_and_transfers_complete() {
    gso_refused_by_the_kernel_falls_back_to_single_datagrams(IoBackend::Auto);
}

#[test]
fn gso_refused_by_the_kernel_falls_back_and_transfers_complete_with_poll_backend() {
    gso_refused_by_the_kernel_falls_back_to_single_datagrams(IoBackend::Poll);
}
