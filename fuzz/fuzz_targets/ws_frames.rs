//! Any bytes a WebSocket client sends after the handshake, arriving in two reads.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ovation::ws::codec::{Decoder, Event};

const MAX: usize = 1024;

fuzz_target!(|input: (u16, &[u8])| {
    let (split, bytes) = input;
    let split = usize::from(split).min(bytes.len());
    let mut decoder = Decoder::new(MAX);
    let mut received = BytesMut::new();
    for part in [&bytes[..split], &bytes[split..]] {
        received.extend_from_slice(part);
        loop {
            let before = received.len();
            match decoder.decode(&mut received) {
                Ok(Some(event)) => {
                    assert!(received.len() < before, "an event consumes bytes");
                    if let Event::Text(text) = event {
                        assert!(text.len() <= MAX, "a message over the limit got through");
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
