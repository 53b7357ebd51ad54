//! Any SDP offer handed to the relay, and any RTP payload it inspects for keyframes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovation::relay::keyframe::starts_keyframe;
use ovation::relay::sdp::sending_media;

fuzz_target!(|data: &[u8]| {
    let _ = starts_keyframe("video/VP8", data);
    let _ = starts_keyframe("video/H264", data);
    if let Ok(offer) = std::str::from_utf8(data) {
        let _ = sending_media(offer);
        // What webrtc-rs does with it first: parse the session description.
        let mut reader = std::io::Cursor::new(offer.as_bytes());
        let _ = webrtc::sdp::SessionDescription::unmarshal(&mut reader);
    }
});
