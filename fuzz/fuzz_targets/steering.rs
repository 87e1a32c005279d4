//! The datagram path's first look at a packet (quic-io `steer::packet_owner`, the parser
//! the reuseport program mirrors): long and short headers, any length, with the default
//! connection-ID layout and QUIC-LB's. A packet is never given to a worker that does not
//! exist, and a too-short one to none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quic_io::CidLayout;
use quic_io::steer::packet_owner;

fuzz_target!(|data: &[u8]| {
    let Some((&workers, datagram)) = data.split_first() else {
        return;
    };
    let workers = usize::from(workers % 64) + 1;
    static LAYOUTS: std::sync::OnceLock<[CidLayout; 2]> = std::sync::OnceLock::new();
    let layouts = LAYOUTS.get_or_init(|| {
        [
            CidLayout::default(),
            CidLayout::quic_lb(&[0x12, 0x34], 8).expect("a valid QUIC-LB layout"),
        ]
    });
    for layout in layouts {
        if let Some(owner) = packet_owner(datagram, layout, workers) {
            assert!(owner < workers, "worker {owner} of {workers}");
            assert!(datagram.len() > layout.cid_len(), "owner of a packet shorter than a CID");
        }
    }
});
