//! What the relay reads from an SDP offer before handing it to webrtc-rs.

/// The audio and video sections an offer sends media in (`sendonly` or `sendrecv`,
/// the default, and not rejected with port 0): the tracks a publisher will send.
pub fn sending_media(offer: &str) -> usize {
    let mut count = 0;
    let mut section: Option<bool> = None; // Some(sending) inside an audio/video section
    for line in offer.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            count += usize::from(section == Some(true));
            let mut fields = media.split(' ');
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or("0");
            section = (matches!(kind, "audio" | "video") && port != "0").then_some(true);
        } else if let Some(sending) = section.as_mut() {
            if matches!(line, "a=recvonly" | "a=inactive") {
                *sending = false;
            }
        }
    }
    count + usize::from(section == Some(true))
}

#[cfg(test)]
mod tests {
    use super::sending_media;

    #[test]
    fn counts_the_sections_that_send() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n\
                     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(sending_media(offer), 2);
    }

    #[test]
    fn skips_receiving_inactive_and_rejected_sections() {
        let offer = "v=0\r\nm=audio 9 RTP/AVP 0\r\na=recvonly\r\nm=video 0 RTP/AVP 96\r\n\
                     m=video 9 RTP/AVP 96\r\na=inactive\r\nm=video 9 RTP/AVP 96\r\n";
        assert_eq!(sending_media(offer), 1);
        assert_eq!(sending_media("not an sdp"), 0);
    }
}
