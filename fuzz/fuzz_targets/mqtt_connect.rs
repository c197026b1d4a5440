//! The first packet of a connection, as the server reads it: `read_connect` on arbitrary bytes
//! must never panic; it waits for more, reads a packet, or gives a typed error. A CONNECT it
//! reads names a version, and the rest of the stream is then read in that version.
#![no_main]

use bytes::BytesMut;
use fleetmon_server::mqtt::codec::{In, read, read_connect};
use libfuzzer_sys::fuzz_target;

/// The server's limit for a default configuration is 1 MiB + 64 KiB; a smaller one here lets
/// the fuzzer reach the "too large" path with short inputs.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let before = buf.len();
    match read_connect(&mut buf, MAX) {
        Ok(None) => assert_eq!(buf.len(), before, "waiting for more must not consume"),
        Ok(Some(In::Connect(c))) => {
            assert!(buf.len() < before, "a packet was read but nothing consumed");
            for _ in 0..64 {
                match read(c.version, &mut buf, MAX) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        Ok(Some(_)) => assert!(buf.len() < before, "a packet was read but nothing consumed"),
        Err(_) => {}
    }
});
