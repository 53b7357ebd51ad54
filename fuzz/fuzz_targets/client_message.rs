//! Any text a WebSocket client sends: the envelope, then every message type's fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovation::protocol::{
    AckRequest, ChatRequest, Envelope, GiftRequest, GrabRequest, JoinRequest, QuestionRequest,
    RedPacketRequest, RoomRequest,
};

fuzz_target!(|text: &str| {
    let Ok(envelope) = Envelope::parse(text) else {
        return;
    };
    macro_rules! each {
        ($($t:ty),*) => {$(
            if let Ok(envelope) = Envelope::parse(text) { let _ = envelope.fields::<$t>(); }
        )*};
    }
    drop(envelope);
    each!(
        JoinRequest,
        RoomRequest,
        ChatRequest,
        GiftRequest,
        QuestionRequest,
        AckRequest,
        RedPacketRequest,
        GrabRequest
    );
    let _ = ovation::protocol::checked_text(text, 500, "text");
});
