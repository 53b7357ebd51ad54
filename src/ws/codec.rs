//! RFC 6455 framing, the server's side, as a sans-IO codec: bytes in, events out, and
//! frames appended to a buffer. Client frames are masked, ours are not; messages are
//! text only and no extension is negotiated. The connection module does the I/O.

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::close;

const FIN: u8 = 0x80;
const RESERVED_BITS: u8 = 0x70;
const MASKED: u8 = 0x80;
/// Control frames carry at most this much payload and are never fragmented.
const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        self as u8 >= 0x8
    }
}

/// What a client sent, one complete message or control frame at a time.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Ping(Bytes),
    Pong,
    /// The client closes, with this status code (none when its close frame had none).
    Close(Option<u16>),
}

/// A frame the protocol does not allow; the connection closes with `close_code()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A message over the size limit, refused from its header alone.
    TooBig,
    Binary,
    /// Not a valid client frame: unmasked, reserved bits or opcodes, a fragmented or
    /// oversized control frame, a continuation of nothing.
    Malformed,
    InvalidUtf8,
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooBig => close::MESSAGE_TOO_BIG,
            Violation::Binary => close::UNSUPPORTED_DATA,
            Violation::Malformed => close::PROTOCOL_ERROR,
            Violation::InvalidUtf8 => close::INVALID_DATA,
        }
    }
}

struct FrameHead {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

/// Turns the bytes a client sends into events. It keeps only a text message whose
/// later fragments have not arrived; the caller owns the receive buffer.
pub struct Decoder {
    max_message_bytes: usize,
    fragmented: Option<Fragmented>,
}

/// A text message whose last fragment has not arrived, checked as UTF-8 as far as it
/// goes, so that invalid text fails at the fragment that holds it.
struct Fragmented {
    text: Vec<u8>,
    /// The prefix known to be valid UTF-8 (what follows is an incomplete character).
    valid: usize,
}

impl Fragmented {
    /// Adds a fragment; the last one (`fin`) must leave no incomplete character.
    fn push(&mut self, fragment: &[u8], fin: bool) -> Result<(), Violation> {
        self.text.extend_from_slice(fragment);
        match std::str::from_utf8(&self.text[self.valid..]) {
            Ok(_) => self.valid = self.text.len(),
            Err(error) if error.error_len().is_none() && !fin => self.valid += error.valid_up_to(),
            Err(_) => return Err(Violation::InvalidUtf8),
        }
        Ok(())
    }
}

impl Decoder {
    pub fn new(max_message_bytes: usize) -> Decoder {
        Decoder {
            max_message_bytes,
            fragmented: None,
        }
    }

    /// Takes the next event off the front of `received`; `Ok(None)` until enough bytes
    /// have arrived for one. A message over the limit is refused from its header, before
    /// its payload is buffered.
    pub fn decode(&mut self, received: &mut BytesMut) -> Result<Option<Event>, Violation> {
        loop {
            let Some(head) = self.parse_head(received)? else {
                return Ok(None);
            };
            if received.len() < head.header_len + head.payload_len {
                return Ok(None);
            }
            received.advance(head.header_len);
            let mut payload = received.split_to(head.payload_len);
            unmask(&mut payload, head.mask);
            match head.opcode {
                Opcode::Text if head.fin => return Ok(Some(Event::Text(utf8(payload.into())?))),
                Opcode::Text => {
                    let mut message = Fragmented {
                        text: Vec::new(),
                        valid: 0,
                    };
                    message.push(&payload, false)?;
                    self.fragmented = Some(message);
                }
                Opcode::Continuation => {
                    let message = self.fragmented.as_mut().ok_or(Violation::Malformed)?;
                    message.push(&payload, head.fin)?;
                    if head.fin {
                        let message = self.fragmented.take().map(|m| m.text).unwrap_or_default();
                        return Ok(Some(Event::Text(utf8(message)?)));
                    }
                }
                Opcode::Ping => return Ok(Some(Event::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Event::Pong)),
                Opcode::Close => return close_event(&payload).map(Some),
                Opcode::Binary => unreachable!("refused by parse_head"),
            }
        }
    }

    /// The head of the frame at the front of `received`, checked against the rules
    /// that need no payload.
    fn parse_head(&self, received: &[u8]) -> Result<Option<FrameHead>, Violation> {
        let [first, second, ..] = *received else {
            return Ok(None);
        };
        if first & RESERVED_BITS != 0 || second & MASKED == 0 {
            return Err(Violation::Malformed);
        }
        let fin = first & FIN != 0;
        let opcode = Opcode::from_bits(first & 0x0F).ok_or(Violation::Malformed)?;
        let (length_len, short_len) = match second & 0x7F {
            126 => (2, None),
            127 => (8, None),
            len => (0, Some(len as usize)),
        };
        let header_len = 2 + length_len + 4;
        if received.len() < header_len {
            return Ok(None);
        }
        let payload_len = match short_len {
            Some(len) => len,
            None => {
                let mut extended = &received[2..2 + length_len];
                let len = extended.get_uint(length_len);
                // The shortest form MUST be used, and a 64-bit length has its top bit
                // clear (RFC 6455 §5.2).
                let shortest = if length_len == 2 { 126 } else { 65_536 };
                if len < shortest || len >> 63 != 0 {
                    return Err(Violation::Malformed);
                }
                usize::try_from(len).unwrap_or(usize::MAX)
            }
        };
        if opcode.is_control() {
            if !fin || payload_len > MAX_CONTROL_PAYLOAD {
                return Err(Violation::Malformed);
            }
        } else {
            let continues = opcode == Opcode::Continuation;
            if continues != self.fragmented.is_some() {
                return Err(Violation::Malformed);
            }
            let so_far = self.fragmented.as_ref().map_or(0, |m| m.text.len());
            if so_far.saturating_add(payload_len) > self.max_message_bytes {
                return Err(Violation::TooBig);
            }
            if opcode == Opcode::Binary {
                return Err(Violation::Binary);
            }
        }
        let mask = received[header_len - 4..header_len]
            .try_into()
            .expect("four bytes");
        Ok(Some(FrameHead {
            fin,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A client's close: empty, or a status code a peer may send and a UTF-8 reason
/// (RFC 6455 §5.5.1, §7.4).
fn close_event(payload: &[u8]) -> Result<Event, Violation> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => Ok(Event::Close(None)),
            _one_byte => Err(Violation::Malformed),
        };
    };
    let code = u16::from_be_bytes(*code);
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !sendable {
        return Err(Violation::Malformed);
    }
    std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
    Ok(Event::Close(Some(code)))
}

fn utf8(message: Vec<u8>) -> Result<String, Violation> {
    String::from_utf8(message).map_err(|_| Violation::InvalidUtf8)
}

/// Appends one unfragmented, unmasked frame to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.push(FIN | opcode as u8);
    match payload.len() {
        len if len < 126 => out.push(len as u8),
        len if len <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and a short reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload.truncate(MAX_CONTROL_PAYLOAD);
    encode(out, Opcode::Close, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    /// A frame as a client sends it: masked.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = Vec::new();
        encode(&mut frame, Opcode::Text, payload);
        frame[0] = first;
        frame[1] |= MASKED;
        let payload_at = frame.len() - payload.len();
        frame.splice(payload_at..payload_at, mask);
        unmask(&mut frame[payload_at + 4..], mask);
        frame
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, Violation> {
        let mut received = BytesMut::from(bytes);
        let mut events = Vec::new();
        while let Some(event) = decoder.decode(&mut received)? {
            events.push(event);
        }
        Ok(events)
    }

    #[test]
    fn text_in_all_three_length_forms_arrives_whole_however_it_is_split() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let frame = client_frame(FIN | 0x1, text.as_bytes());
            let mut decoder = Decoder::new(usize::MAX);
            let mut received = BytesMut::new();
            // Byte by byte for the header, then the rest: nothing until it is complete.
            for (i, byte) in frame.iter().enumerate().take(14) {
                received.extend_from_slice(&[*byte]);
                if i + 1 < frame.len() {
                    assert_eq!(decoder.decode(&mut received), Ok(None), "len {len}");
                }
            }
            received.extend_from_slice(frame.get(14..).unwrap_or_default());
            assert_eq!(decoder.decode(&mut received), Ok(Some(Event::Text(text))));
            assert!(received.is_empty());
        }
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut bytes = client_frame(0x1, "ça ".as_bytes());
        bytes.extend(client_frame(FIN | 0x9, b"hi"));
        // A UTF-8 character split across fragments is still valid.
        let euro = "€".as_bytes();
        bytes.extend(client_frame(0x0, &[b"va ".as_slice(), &euro[..1]].concat()));
        bytes.extend(client_frame(FIN /* continuation */, &euro[1..]));
        bytes.extend(client_frame(FIN | 0xA, b""));
        bytes.extend(client_frame(FIN | 0x8, &1000u16.to_be_bytes()));
        let events = decode_all(&mut Decoder::new(MAX), &bytes).unwrap();
        assert_eq!(
            events,
            [
                Event::Ping(Bytes::from_static(b"hi")),
                Event::Text("ça va €".into()),
                Event::Pong,
                Event::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        let mut decoder = Decoder::new(MAX);
        let header_only = &client_frame(FIN | 0x1, &vec![b'a'; MAX + 1])[..8];
        assert_eq!(
            decode_all(&mut decoder, header_only),
            Err(Violation::TooBig)
        );
        let exactly = client_frame(FIN | 0x1, &vec![b'a'; MAX]);
        assert_eq!(
            decode_all(&mut Decoder::new(MAX), &exactly).unwrap().len(),
            1
        );
        // Fragments count together.
        let mut fragments = client_frame(0x1, &vec![b'a'; MAX / 2]);
        fragments.extend(client_frame(
            FIN, /* continuation */
            &vec![b'a'; MAX / 2 + 1],
        ));
        let refused = decode_all(&mut Decoder::new(MAX), &fragments);
        assert_eq!(refused, Err(Violation::TooBig));
    }

    #[test]
    fn frames_the_protocol_forbids_are_violations() {
        let cases: [(&str, Vec<u8>, Violation); 9] = [
            (
                "binary",
                client_frame(FIN | 0x2, b"\x00"),
                Violation::Binary,
            ),
            (
                "reserved bit",
                client_frame(FIN | 0x40 | 0x1, b"a"),
                Violation::Malformed,
            ),
            (
                "reserved opcode",
                client_frame(FIN | 0x3, b"a"),
                Violation::Malformed,
            ),
            (
                "lone continuation",
                client_frame(FIN, b"a"),
                Violation::Malformed,
            ),
            (
                "fragmented ping",
                client_frame(0x9, b""),
                Violation::Malformed,
            ),
            (
                "long ping",
                client_frame(FIN | 0x9, &[0; 126]),
                Violation::Malformed,
            ),
            (
                "one-byte close",
                client_frame(FIN | 0x8, b"\x03"),
                Violation::Malformed,
            ),
            (
                "bad UTF-8",
                client_frame(FIN | 0x1, b"\xff"),
                Violation::InvalidUtf8,
            ),
            ("unmasked", vec![FIN | 0x1, 1, b'a'], Violation::Malformed),
        ];
        for (case, bytes, violation) in cases {
            let decoded = decode_all(&mut Decoder::new(MAX), &bytes);
            assert_eq!(decoded, Err(violation), "{case}");
        }
        let mut interrupted = client_frame(0x1, b"a");
        interrupted.extend(client_frame(FIN | 0x1, b"b"));
        let decoded = decode_all(&mut Decoder::new(MAX), &interrupted);
        assert_eq!(
            decoded,
            Err(Violation::Malformed),
            "a new message mid-message"
        );
    }

    /// A masked frame whose length is written in the `form` (126 or 127) header
    /// field, whatever its size.
    fn with_length_form(form: u8, length: u64, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![FIN | 0x1, MASKED | form];
        match form {
            126 => frame.extend_from_slice(&(length as u16).to_be_bytes()),
            _ => frame.extend_from_slice(&length.to_be_bytes()),
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn lengths_must_use_the_shortest_form_and_64_bits_keep_their_top_bit_clear() {
        for (form, length) in [(126, 5), (127, 5), (127, 65_535)] {
            let frame = with_length_form(form, length, &vec![b'a'; length as usize]);
            let decoded = decode_all(&mut Decoder::new(usize::MAX), &frame);
            assert_eq!(decoded, Err(Violation::Malformed), "{form} {length}");
        }
        let top_bit = with_length_form(127, 1 << 63, b"");
        let decoded = decode_all(&mut Decoder::new(MAX), &top_bit);
        assert_eq!(decoded, Err(Violation::Malformed));
        let right = with_length_form(126, 126, &[b'a'; 126]);
        assert_eq!(decode_all(&mut Decoder::new(MAX), &right).unwrap().len(), 1);
    }

    #[test]
    fn a_close_carries_a_code_a_peer_may_send_and_a_utf8_reason() {
        let close =
            |payload: &[u8]| decode_all(&mut Decoder::new(MAX), &client_frame(FIN | 0x8, payload));
        assert_eq!(close(b""), Ok(vec![Event::Close(None)]));
        for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Ok(vec![Event::Close(Some(code))])
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        ] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Err(Violation::Malformed),
                "{code}"
            );
        }
        let bad_reason = [&1000u16.to_be_bytes()[..], b"\xff"].concat();
        assert_eq!(close(&bad_reason), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn invalid_text_fails_at_the_fragment_that_holds_it() {
        let mut decoder = Decoder::new(MAX);
        // A character cut at the end of a fragment waits for the next one...
        let euro = "€".as_bytes();
        let start = client_frame(0x1, &euro[..2]);
        assert_eq!(decode_all(&mut decoder, &start), Ok(vec![]));
        // ...but bytes that can never be UTF-8 fail at once, before the message ends.
        let bad = client_frame(0x0, b"\xff");
        assert_eq!(decode_all(&mut decoder, &bad), Err(Violation::InvalidUtf8));
        let cut_at_the_end = client_frame(FIN, &euro[..2]);
        let mut decoder = Decoder::new(MAX);
        decode_all(&mut decoder, &client_frame(0x1, b"a")).unwrap();
        assert_eq!(
            decode_all(&mut decoder, &cut_at_the_end),
            Err(Violation::InvalidUtf8)
        );
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        let mut out = Vec::new();
        encode(&mut out, Opcode::Text, b"hey");
        assert_eq!(out, b"\x81\x03hey");
        for (len, header) in [
            (125, &[0x81, 125][..]),
            (126, &[0x81, 126, 0, 126]),
            (65_536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            out.clear();
            encode(&mut out, Opcode::Text, &vec![0; len]);
            assert_eq!(&out[..header.len()], header, "len {len}");
            assert_eq!(out.len(), header.len() + len);
        }
        out.clear();
        encode_close(&mut out, 4008, "slow");
        assert_eq!(out, b"\x88\x06\x0f\xa8slow");
    }
}
