//! A reader of Server-Sent Events (the `text/event-stream` format of the HTML standard, section
//! "Server-sent events"), fed bytes as they arrive.
//!
//! Pure: [`SseParser::feed`] takes any slice of the stream (a chunk may end mid-line, even
//! between a `\r` and its `\n`) and returns the items complete so far. Lines end with `\r\n`,
//! `\n` or `\r`; a line starting with `:` is a comment; `field: value` (one space after the
//! colon dropped) sets `data` (lines joined with `\n`), `event`, `id` (ignored when it holds a
//! NUL) or `retry` (digits only); an empty line dispatches the event. As the standard says, an
//! `id` sets the last event id even when no event is dispatched, and a block without data
//! dispatches nothing. Unknown fields are ignored.
//!
//! Limits: a line longer than [`SSE_LINE_BYTES_MAX`] is an error (a stream that never ends a
//! line would otherwise grow the buffer without bound).

/// Longest line accepted, in bytes: far above any event stockraft sends (an event's JSON is a
/// few hundred bytes).
pub const SSE_LINE_BYTES_MAX: usize = 1 << 20;

/// One complete item of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event. `id` is the last event id at its dispatch (None if never set).
    Event {
        id: Option<String>,
        /// `message` when the block named no event type.
        event: String,
        data: String,
    },
    /// A comment line, without its `:` (and one leading space dropped).
    Comment(String),
    /// A reconnection delay, in ms.
    Retry(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a Server-Sent Events line exceeds {SSE_LINE_BYTES_MAX} bytes")]
pub struct LineTooLong;

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` first in the next one ends nothing.
    after_cr: bool,
    data: String,
    /// Whether any `data` field came in this block (an empty `data:` counts).
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event id seen, dispatched or not.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Consumes `bytes`; returns the items they complete.
    ///
    /// Finds line ends a slice at a time and keeps one line buffer for the stream (a reader of
    /// a busy stream parses every event it receives: the bench's subscribers are such readers).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseItem>, LineTooLong> {
        let mut items = Vec::new();
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&bytes[..end])?;
            let mut line = std::mem::take(&mut self.line);
            // Valid UTF-8 (every stockraft line) is checked by the fast path; lossy otherwise.
            match std::str::from_utf8(&line) {
                Ok(text) => self.line_done(text, &mut items),
                Err(_) => self.line_done(&String::from_utf8_lossy(&line), &mut items),
            }
            line.clear();
            self.line = line;
            // A `\r` and the `\n` right after it end one line, even split between chunks.
            let mut ending = 1;
            if bytes[end] == b'\r' {
                match bytes.get(end + 1) {
                    Some(b'\n') => ending = 2,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            bytes = &bytes[end + ending..];
        }
        self.extend_line(bytes)?;
        Ok(items)
    }

    fn extend_line(&mut self, part: &[u8]) -> Result<(), LineTooLong> {
        if self.line.len() + part.len() > SSE_LINE_BYTES_MAX {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn line_done(&mut self, line: &str, items: &mut Vec<SseItem>) {
        if line.is_empty() {
            self.dispatch(items);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            items.push(SseItem::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    items.push(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, items: &mut Vec<SseItem>) {
        let event = self.event.take();
        if !std::mem::replace(&mut self.has_data, false) {
            return;
        }
        items.push(SseItem::Event {
            id: self.last_id.clone(),
            event: event
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "message".into()),
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, event: &str, data: &str) -> SseItem {
        SseItem::Event {
            id: id.map(str::to_owned),
            event: event.into(),
            data: data.into(),
        }
    }

    /// Feeds `text` cut into pieces of `piece` bytes.
    fn parse_in_pieces(text: &str, piece: usize) -> Vec<SseItem> {
        let mut parser = SseParser::new();
        let mut items = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            items.extend(parser.feed(chunk).unwrap());
        }
        items
    }

    #[test]
    fn frames_of_a_stockraft_stream_parse_whatever_the_chunking() {
        let text = "retry: 1000\n\nid: 1\nevent: created\ndata: {\"seq\":1}\n\n: head 1\n\n\
                    id: 2\r\nevent: held\r\ndata: {\"seq\":2}\r\n\r\n";
        let expected = vec![
            SseItem::Retry(1000),
            event(Some("1"), "created", "{\"seq\":1}"),
            SseItem::Comment("head 1".into()),
            event(Some("2"), "held", "{\"seq\":2}"),
        ];
        for piece in [1, 2, 3, 7, text.len()] {
            assert_eq!(parse_in_pieces(text, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn the_standards_edge_cases_hold() {
        // Multi-line data, a bare CR as line end, no space after the colon, a field without a
        // colon, an unknown field, a bad retry.
        let text = "data:a\rdata: b\ndata\nfoo: bar\nretry: 1x\n\n";
        assert_eq!(
            parse_in_pieces(text, 1),
            vec![event(None, "message", "a\nb\n")]
        );
        // An id without data dispatches nothing but is remembered; an id with NUL is ignored.
        let mut parser = SseParser::new();
        assert!(parser.feed(b"id: 7\n\n").unwrap().is_empty());
        assert_eq!(parser.last_id(), Some("7"));
        assert!(parser.feed(b"id: 8\0\n\n").unwrap().is_empty());
        assert_eq!(parser.last_id(), Some("7"));
        assert_eq!(
            parser.feed(b"data: x\n\n").unwrap(),
            vec![event(Some("7"), "message", "x")]
        );
        // An event type lasts one block only.
        assert_eq!(
            parse_in_pieces("event: a\ndata: 1\n\ndata: 2\n\n", 4),
            vec![event(None, "a", "1"), event(None, "message", "2")]
        );
        // An unfinished block is not dispatched.
        assert!(parse_in_pieces("id: 3\ndata: x\n", 1).is_empty());
    }

    #[test]
    fn a_line_that_never_ends_is_refused() {
        let mut parser = SseParser::new();
        let long = vec![b'a'; SSE_LINE_BYTES_MAX];
        assert!(parser.feed(&long).unwrap().is_empty());
        assert_eq!(parser.feed(b"a"), Err(LineTooLong));
    }
}
