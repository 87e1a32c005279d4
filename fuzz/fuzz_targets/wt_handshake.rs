//! The WebTransport over HTTP/3 server handshake (quic-io `wt::Handshake`: SETTINGS on
//! the control stream, the extended CONNECT's QPACK-encoded HEADERS, capsules on the
//! CONNECT stream) and the stream-header and datagram parsers, fed arbitrary bytes in
//! arbitrary chunks. Nothing may panic; every output names a stream that exists; a
//! stream header parsed never claims more bytes than it was given.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quic_io::wt::{self, Handshake, Output};

/// The client's request stream and control stream, as a client opens them.
const REQUEST: u64 = 0;
const CONTROL: u64 = 2;

fuzz_target!(|data: &[u8]| {
    if let Some((_, used)) = wt::parse_uni_header(data) {
        assert!(used <= data.len());
    }
    if let Some((_, used)) = wt::parse_bi_header(data) {
        assert!(used <= data.len());
    }
    let _ = wt::decode_datagram(0, Bytes::copy_from_slice(data));

    let mut handshake = Handshake::new(vec!["moq-lite-05".into(), "moq-lite-04".into()]);
    let mut rest = data;
    let mut control_open = false;
    // Each step: a selector byte (stream, fin, reset), a chunk length, the chunk.
    while let [selector, len, tail @ ..] = rest {
        let take = (*len as usize).min(tail.len());
        let (chunk, after) = tail.split_at(take);
        rest = after;
        let fin = selector & 0x10 != 0;
        let result = match selector & 0x03 {
            0 => handshake.on_request_data(REQUEST, chunk, fin),
            1 => {
                if !control_open {
                    control_open = true;
                    if handshake.on_control_opened(CONTROL).is_err() {
                        return;
                    }
                }
                handshake.on_control_data(chunk, fin)
            }
            2 => {
                handshake.on_request_reset(REQUEST);
                Ok(())
            }
            // Another client-initiated bidirectional stream (IDs 4, 8, ...).
            _ => handshake.on_request_data(4 * (1 + u64::from(*selector >> 2)), chunk, fin),
        };
        while let Some(output) = handshake.poll_output() {
            if let Output::Send { stream, .. } = output {
                assert!(
                    stream == REQUEST || stream % 4 == 0,
                    "an answer on stream {stream}, which no client opened"
                );
            }
        }
        if result.is_err() {
            return;
        }
    }
});
