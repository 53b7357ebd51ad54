//! The webrtc-rs `API` every peer connection is made from: codecs, interceptors
//! (NACK responder and generator, RTCP reports, TWCC) and where ICE may listen.

use std::net::{IpAddr, SocketAddr};

use std::time::Duration;

use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::registry::Registry;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::RTCPFeedback;

use crate::config::RtcSettings;

/// Phones rotate: the orientation travels in this header extension and must reach
/// the viewers.
const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";

/// H.264 Main profile, which some encoders offer alone (the defaults cover Baseline,
/// Constrained Baseline and High).
const H264_MAIN: (&str, u8) = (
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
    110,
);

/// Builds the API for a server listening on `listen`. With a loopback `listen`, ICE
/// offers loopback candidates only, so no media ever leaves the machine.
pub async fn build(listen: SocketAddr, settings: &RtcSettings) -> anyhow::Result<API> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let feedback = ["goog-remb", "ccm fir", "nack", "nack pli", "transport-cc"]
        .map(|fb| {
            let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
            RTCPFeedback {
                typ: typ.into(),
                parameter: parameter.into(),
            }
        })
        .to_vec();
    media.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: H264_MAIN.0.into(),
                rtcp_feedback: feedback,
            },
            payload_type: H264_MAIN.1,
            ..Default::default()
        },
        RTPCodecType::Video,
    )?;
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: VIDEO_ORIENTATION.into(),
        },
        RTPCodecType::Video,
        None,
    )?;
    let interceptors = register_default_interceptors(Registry::new(), &mut media)?;

    let mut ice = SettingEngine::default();
    // Notice a vanished peer within seconds, not the default half minute.
    ice.set_ice_timeouts(
        Some(Duration::from_secs(4)),
        Some(Duration::from_secs(8)),
        Some(Duration::from_secs(1)),
    );
    ice.set_network_types(vec![NetworkType::Udp4, NetworkType::Udp6]);
    // No mDNS socket per peer connection: browsers that hide their address behind an
    // mDNS name still connect, as peer-reflexive candidates found by their checks.
    ice.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    let ip = listen.ip();
    if ip.is_loopback() {
        ice.set_include_loopback_candidate(true);
        ice.set_ip_filter(Box::new(|candidate: IpAddr| candidate.is_loopback()));
    } else if !ip.is_unspecified() {
        ice.set_ip_filter(Box::new(move |candidate: IpAddr| candidate == ip));
    }
    if let Some(public) = settings.public_ip {
        ice.set_nat_1to1_ips(vec![public.to_string()], RTCIceCandidateType::Host);
    }
    if settings.udp_port_min != 0 {
        let range = EphemeralUDP::new(settings.udp_port_min, settings.udp_port_max)?;
        ice.set_udp_network(UDPNetwork::Ephemeral(range));
    }
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(interceptors)
        .with_setting_engine(ice)
        .build())
}
