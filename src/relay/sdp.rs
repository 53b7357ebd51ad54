//! What the relay reads from an SDP offer before handing it to webrtc-rs.

/// The audio and video sections an offer sends media in (`sendonly` or `sendrecv`,
/// the default, and not rejected with port 0): the tracks a publisher will send.
pub fn sending_media(offer: &str) -> usize {
    sending_sections(offer).filter(|s| s.sending).count()
}

/// The tracks an answer of our own relay sends: sending sections that name their
/// track (`a=msid` or `a=ssrc`). A section the relay had no track for may still
/// say `sendonly`, but it carries nothing.
pub fn sent_tracks(answer: &str) -> usize {
    sending_sections(answer)
        .filter(|s| s.sending && s.names_track)
        .count()
}

/// One audio or video section, as far as these counts need.
#[derive(Default)]
struct Section {
    sending: bool,
    names_track: bool,
}

fn sending_sections(sdp: &str) -> impl Iterator<Item = Section> + '_ {
    let mut sections = Vec::new();
    let mut current: Option<Section> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            sections.extend(current.take());
            let mut fields = media.split(' ');
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or("0");
            current = (matches!(kind, "audio" | "video") && port != "0").then_some(Section {
                sending: true,
                names_track: false,
            });
        } else if let Some(section) = current.as_mut() {
            if matches!(line, "a=recvonly" | "a=inactive") {
                section.sending = false;
            } else if line.starts_with("a=msid:") || line.starts_with("a=ssrc:") {
                section.names_track = true;
            }
        }
    }
    sections.extend(current);
    sections.into_iter()
}

#[cfg(test)]
mod tests {
    use super::{sending_media, sent_tracks};

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

    #[test]
    fn an_answer_sends_only_the_sections_with_a_track() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
                      a=msid:ovation-cam video-0\r\na=ssrc:1 cname:x\r\n\
                      m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
                      m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\na=ssrc:2 cname:x\r\n";
        assert_eq!(sending_media(answer), 2);
        assert_eq!(sent_tracks(answer), 1);
    }
}
