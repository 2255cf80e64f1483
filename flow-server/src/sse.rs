//! Server-Sent Events framing, exactly as upstream writes it, and an incremental parser.
//!
//! PURE. A frame is `event: <type>\nid: <seq>\ndata: <one-line JSON>\n\n`; heartbeats are
//! `event: heartbeat\ndata: {}\n\n` (no `id:`, so they never move a client's cursor); the stream
//! opens with a `retry: <ms>\n\n` hint. Frames are encoded once per event and shared by every
//! subscriber.
//!
//! [`Parser`] is the client side (WHATWG event-stream rules, for our tests, `flow-loadgen` and
//! other Rust consumers): feed it bytes as they arrive, take complete [`Event`]s out.

use bytes::{BufMut, Bytes, BytesMut};

/// The heartbeat frame.
pub const HEARTBEAT: &[u8] = b"event: heartbeat\ndata: {}\n\n";

/// `event: <kind>\nid: <seq>\ndata: <json>\n\n`. `json` must be one line (compact JSON is).
pub fn frame(kind: &str, seq: u64, json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + kind.len() + 40);
    b.put_slice(b"event: ");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\nid: ");
    b.put_slice(seq.to_string().as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// `retry: <ms>\n\n`: how long a client waits before it reconnects.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// One dispatched event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `event:` (empty means `message`).
    pub event: String,
    /// `id:` of this event, if the block had one.
    pub id: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `retry:` if the block had one.
    pub retry: Option<u64>,
}

impl Event {
    /// The id parsed as a seq.
    pub fn seq(&self) -> Option<u64> {
        self.id.as_deref().and_then(|s| s.parse().ok())
    }
}

/// Incremental event-stream parser.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    cur: Event,
    has_data: bool,
}

impl Parser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns every event completed by them. Blocks with neither `data:` nor
    /// `retry:` (comments, blank keep-alives) are not returned.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.cur);
            if self.has_data || ev.retry.is_some() {
                out.push(ev);
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.cur.event = value.to_owned(),
            "id" => self.cur.id = Some(value.to_owned()),
            "retry" => self.cur.retry = value.parse().ok(),
            "data" => {
                if self.has_data {
                    self.cur.data.push('\n');
                }
                self.cur.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_byte_exact_upstream_framing() {
        assert_eq!(
            &frame("upsert-nodes", 42, br#"{"type":"upsert-nodes"}"#)[..],
            b"event: upsert-nodes\nid: 42\ndata: {\"type\":\"upsert-nodes\"}\n\n"
        );
        assert_eq!(&retry(3000)[..], b"retry: 3000\n\n");
    }

    #[test]
    fn parser_handles_split_input_and_every_field() {
        let mut p = Parser::new();
        let mut all = Vec::new();
        let input = b"retry: 3000\n\n: comment\nevent: snapshot\nid: 7\ndata: {\"a\":1}\n\nevent: heartbeat\r\ndata: {}\r\n\r\n";
        for chunk in input.chunks(5) {
            all.extend(p.feed(chunk));
        }
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].retry, Some(3000));
        assert_eq!(
            (all[1].event.as_str(), all[1].seq(), all[1].data.as_str()),
            ("snapshot", Some(7), "{\"a\":1}")
        );
        assert_eq!(
            (all[2].event.as_str(), all[2].id.as_deref()),
            ("heartbeat", None)
        );
    }
}
