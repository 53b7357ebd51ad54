//! Recognising the first packet of a keyframe in VP8 and H.264 RTP payloads, so a new
//! viewer's video starts on a picture it can decode instead of on a broken delta.

use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_VP8};

/// Whether `payload` (an RTP payload of codec `mime`) begins a keyframe. Codecs this
/// does not know are never held back: every packet counts as a start.
pub fn starts_keyframe(mime: &str, payload: &[u8]) -> bool {
    if mime.eq_ignore_ascii_case(MIME_TYPE_VP8) {
        vp8_starts_keyframe(payload)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
        h264_starts_keyframe(payload)
    } else {
        true
    }
}

/// RFC 7741: the payload descriptor (start of partition 0), then the frame tag whose
/// lowest bit is 0 for a key frame.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&flags) = payload.get(1) else {
            return false;
        };
        at = 2;
        if flags & 0x80 != 0 {
            // Picture id: 7 bits, or 15 when its first bit is set.
            at += if payload.get(at).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if flags & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if flags & 0x30 != 0 {
            at += 1; // TID / KEYIDX
        }
    }
    payload.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184: an IDR slice or the SPS before it, alone, aggregated (STAP-A) or as the
/// first fragment (FU-A).
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
    match header & 0x1f {
        H264_STAP_A => {
            let mut at = 1;
            while let Some(size) = payload.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                match payload.get(at + 2) {
                    Some(nal) if is_key(nal & 0x1f) => return true,
                    Some(_) => at += 2 + size,
                    None => return false,
                }
            }
            false
        }
        H264_FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        single => is_key(single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_and_delta_frames_with_and_without_extensions() {
        assert!(starts_keyframe("video/VP8", &[0x10, 0x50]));
        assert!(!starts_keyframe("video/VP8", &[0x10, 0x51]));
        // Not the start of a partition, or a later partition.
        assert!(!starts_keyframe("video/VP8", &[0x00, 0x50]));
        assert!(!starts_keyframe("video/VP8", &[0x11, 0x50]));
        // X with a 15-bit picture id, TL0PICIDX and TID.
        assert!(starts_keyframe(
            "video/VP8",
            &[0x90, 0xe0, 0x81, 0x23, 0x07, 0x20, 0x50]
        ));
        assert!(!starts_keyframe(
            "video/VP8",
            &[0x90, 0xe0, 0x81, 0x23, 0x07, 0x20, 0x51]
        ));
        // X with a 7-bit picture id only.
        assert!(starts_keyframe("video/VP8", &[0x90, 0x80, 0x05, 0x50]));
        assert!(!starts_keyframe("video/VP8", &[0x90]));
        assert!(!starts_keyframe("video/VP8", &[]));
    }

    #[test]
    fn h264_idr_sps_in_every_packetization() {
        assert!(starts_keyframe("video/H264", &[0x65, 0x88]));
        assert!(starts_keyframe("video/H264", &[0x67, 0x42]));
        assert!(!starts_keyframe("video/H264", &[0x41, 0x9a]));
        // STAP-A with an SEI (6) then an SPS.
        assert!(starts_keyframe(
            "video/H264",
            &[0x78, 0x00, 0x02, 0x06, 0x00, 0x00, 0x02, 0x67, 0x42]
        ));
        assert!(!starts_keyframe(
            "video/H264",
            &[0x78, 0x00, 0x02, 0x06, 0x00]
        ));
        // FU-A: the first fragment of an IDR, then a middle one.
        assert!(starts_keyframe("video/H264", &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe("video/H264", &[0x7c, 0x05, 0x00]));
        assert!(!starts_keyframe("video/H264", &[0x7c, 0x81, 0x00]));
    }

    #[test]
    fn other_codecs_are_not_held_back() {
        assert!(starts_keyframe("audio/opus", &[0xfc]));
    }
}
