//! gRPC facts for Istio's metrics: how many length-prefixed messages a body carries (counted
//! as the body streams by, nothing buffered), and the `grpc-status` a response ends with.
//! (Whether a request is gRPC, `content-type: application/grpc*`, is read with the rest of
//! its head: `http::request::RequestHead`.)

use http::HeaderMap;

/// Counts gRPC messages in a body from the 5-byte prefixes (1 flag byte, 4-byte big-endian
/// length): a message counts when its prefix is complete, its payload is skipped by length.
/// Frames may split prefixes and payloads anywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounter {
    /// Payload bytes of the current message still to skip.
    skip: u64,
    /// Prefix bytes seen of the next message (0..5).
    prefix_seen: u8,
    /// The length bytes of the prefix seen so far.
    len: u32,
}

impl MessageCounter {
    /// Feeds the next body bytes; the number of messages whose prefix completed in them.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            let (&b, rest) = match data.split_first() {
                Some(x) => x,
                None => break,
            };
            data = rest;
            // Byte 0 is the compressed flag; bytes 1..5 the length.
            if self.prefix_seen > 0 {
                self.len = (self.len << 8) | u32::from(b);
            }
            self.prefix_seen += 1;
            if self.prefix_seen == 5 {
                started += 1;
                self.skip = u64::from(self.len);
                self.prefix_seen = 0;
                self.len = 0;
            }
        }
        started
    }
}

/// The `grpc-status` in `headers` (trailers, or the headers of a trailers-only response).
pub fn status(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The gRPC status Envoy infers from an HTTP status when the response carried none
/// (`Grpc::Utility::httpToGrpcStatus`).
pub fn from_http(code: u16) -> u32 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn messages_are_counted_however_the_frames_split_them() {
        let mut body = message(b"hello");
        body.extend(message(b""));
        body.extend(message(&[7u8; 300]));
        let mut whole = MessageCounter::default();
        assert_eq!(whole.feed(&body), 3);
        assert_eq!(whole, MessageCounter::default(), "ends between messages");
        for split in 1..body.len() {
            let mut c = MessageCounter::default();
            let (a, b) = body.split_at(split);
            assert_eq!(c.feed(a) + c.feed(b), 3, "split at {split}");
        }
        let mut bytewise = MessageCounter::default();
        let n: u64 = body
            .iter()
            .map(|b| bytewise.feed(std::slice::from_ref(b)))
            .sum();
        assert_eq!(n, 3);
        // A prefix announcing more than arrives: one message started, its payload pending.
        let mut c = MessageCounter::default();
        assert_eq!(c.feed(&[0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2]), 1);
        assert_eq!(c.skip, 0xFFFF_FFFF - 2);
    }

    #[test]
    fn the_status_is_read_from_a_trailer_or_inferred_from_the_http_code() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(status(&h), Some(14));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status(&h), None);
        assert_eq!(from_http(503), 14);
        assert_eq!(from_http(403), 7);
        assert_eq!(from_http(200), 2);
    }
}
