//! Fuzzes the QUIC header parser and connection-id decoding: no panic, no read outside the
//! datagram, a DCID never longer than 20 bytes nor past the datagram's end, zero padding past
//! its length, and an id encoded for a layout decodes back to its server id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_common::{
    consts::QUIC_MAX_CID_LEN,
    quic::{encode_cid, parse_quic, quic_identity, CidLayout},
};

fuzz_target!(|input: (u8, u8, u32, &[u8])| {
    let (rotation, sid_len, server, datagram) = input;
    let layout = CidLayout {
        rotation: rotation % 8,
        server_id_len: sid_len % 6,
    };
    if let Ok(h) = parse_quic(datagram, 0, datagram.len()) {
        assert!(h.dcid_len <= QUIC_MAX_CID_LEN);
        assert!(h.dcid_len <= datagram.len());
        assert!(h.dcid.bytes()[h.dcid_len..].iter().all(|&b| b == 0));
        let id = quic_identity(datagram, 0, datagram.len(), layout).expect("parsed once");
        assert_eq!(id.key, h.cid_hash(), "the identity is deterministic");
    }
    let mut cid = [0u8; QUIC_MAX_CID_LEN];
    let nonce = &datagram[..datagram.len().min(8)];
    if let Some(len) = encode_cid(layout, server, nonce, &mut cid) {
        // A short header carrying this DCID, with the bytes a decryptable packet has after it.
        let mut packet = vec![0x40];
        packet.extend_from_slice(&cid[..len]);
        packet.extend_from_slice(&[0u8; 24]);
        let h = parse_quic(&packet[..], 0, packet.len()).expect("a well-formed short header");
        assert_eq!(h.server_id(layout), Some(server));
    }
});
