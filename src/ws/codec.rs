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
    Close,
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
    fragmented: Option<Vec<u8>>,
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
                Opcode::Text => self.fragmented = Some(payload.into()),
                Opcode::Continuation => {
                    let message = self.fragmented.as_mut().ok_or(Violation::Malformed)?;
                    message.extend_from_slice(&payload);
                    if head.fin {
                        let message = self.fragmented.take().unwrap_or_default();
                        return Ok(Some(Event::Text(utf8(message)?)));
                    }
                }
                Opcode::Ping => return Ok(Some(Event::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Event::Pong)),
                // A close payload is empty or starts with a two-byte code.
                Opcode::Close if payload.len() == 1 => return Err(Violation::Malformed),
                Opcode::Close => return Ok(Some(Event::Close)),
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
            let so_far = self.fragmented.as_ref().map_or(0, Vec::len);
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
                Event::Close,
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
