//! Bulk transfer: the counters must show GSO batches on send and GRO batches on receive.

mod common;

use common::*;
use quic_io::IoBackend;

/// Big enough for congestion windows to open past one datagram per send.
const DOWNLOAD: usize = 32 << 20;
const UPLOAD: usize = 8 << 20;

fn bulk_transfer_batches(io: IoBackend) {
    let (server, _seen) = start(config(1, io));
    let addr = server.local_addr();
    let fp = server.fingerprint();
    runtime().block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let ep = client_endpoint();
            let conn = connect_moq05(&ep, &fp, addr).await;
            // Download: the echo app answers `BULK n` with n bytes.
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(format!("BULK {DOWNLOAD}\n").as_bytes())
                .await
                .unwrap();
            send.finish().unwrap();
            let got = recv.read_to_end(DOWNLOAD + 1).await.unwrap();
            assert_eq!(got.len(), DOWNLOAD);
            // Upload on a uni stream; the server echoes it on its own uni stream.
            let mut up = conn.open_uni().await.unwrap();
            let chunk = vec![7u8; 64 * 1024];
            let mut left = UPLOAD;
            while left > 0 {
                let n = left.min(chunk.len());
                up.write_all(&chunk[..n]).await.unwrap();
                left -= n;
            }
            up.finish().unwrap();
            let mut back = conn.accept_uni().await.unwrap();
            assert_eq!(back.read_to_end(UPLOAD + 1).await.unwrap().len(), UPLOAD);
            conn.close(0u32.into(), b"");
        })
        .await
        .expect("test finished in time");
    });
    let s = server.stats()[0];
    assert!(
        s.tx_max_segments > 1 && s.gso_segments_per_send() > 1.0,
        "no GSO batching: {s:?}"
    );
    assert!(
        s.rx_max_segments > 1 && s.gro_segments_per_recv() > 1.0,
        "no GRO batching: {s:?}"
    );
    eprintln!(
        "{io:?}: gso {:.1}/send (max {}), gro {:.1}/recv (max {})",
        s.gso_segments_per_send(),
        s.tx_max_segments,
        s.gro_segments_per_recv(),
        s.rx_max_segments
    );
}

#[test]
fn bulk_transfer_shows_gso_and_gro_batches() {
    bulk_transfer_batches(IoBackend::Auto);
}

#[test]
fn bulk_transfer_shows_gso_and_gro_batches_with_poll_backend() {
    bulk_transfer_batches(IoBackend::Poll);
}
