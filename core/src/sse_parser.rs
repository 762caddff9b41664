//! A small, spec-following `text/event-stream` parser (the WHATWG "event stream interpretation"),
//! used as the test oracle for ssehub's framing. Chunk boundaries may fall anywhere, even between
//! a CR and its LF, or inside a UTF-8 sequence.
//!
//! # Example
//!
//! ```
//! use ssehub_core::sse_parser::SseParser;
//!
//! let mut p = SseParser::new();
//! p.feed(b"id: 1\nevent: greet\ndata: a\r");
//! p.feed(b"\ndata: b\n\n");
//! let events = p.take_events();
//! assert_eq!(events.len(), 1);
//! assert_eq!(events[0].event, "greet");
//! assert_eq!(events[0].data, "a\nb");
//! assert_eq!(events[0].id.as_deref(), Some("1"));
//! ```

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The event type (`message` when the stream set none).
    pub event: String,
    /// The last event id in force when it was dispatched; `None` when it is empty.
    pub id: Option<String>,
    /// The data, lines joined with LF.
    pub data: String,
}

/// An incremental event-stream parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    skip_lf: bool,
    started: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    retry: Option<u64>,
    events: Vec<ParsedEvent>,
    comments: usize,
}

impl SseParser {
    /// A parser at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut chunk = chunk;
        if self.skip_lf && !chunk.is_empty() {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            self.skip_lf = false;
        }
        self.buf.extend_from_slice(chunk);
        if !self.started {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return;
            }
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
            self.started = true;
        }
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                self.line(&line);
                if b == b'\r' {
                    if i + 1 < self.buf.len() {
                        if self.buf[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.skip_lf = true;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.buf.drain(..start);
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_owned();
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        self.event_type.clear();
        self.events.push(ParsedEvent {
            event,
            id: (!self.last_event_id.is_empty()).then(|| self.last_event_id.clone()),
            data: std::mem::take(&mut self.data),
        });
    }

    /// Events dispatched so far, removed from the parser.
    pub fn take_events(&mut self) -> Vec<ParsedEvent> {
        std::mem::take(&mut self.events)
    }

    /// The last valid `retry:` value seen, in milliseconds.
    #[must_use]
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id buffer (what a browser would send as `Last-Event-ID`).
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// How many comment lines (keep-alives) were seen.
    #[must_use]
    pub fn comments(&self) -> usize {
        self.comments
    }
}

/// Parse a whole stream at once.
#[must_use]
pub fn parse_all(wire: &[u8]) -> (Vec<ParsedEvent>, Option<u64>) {
    let mut p = SseParser::new();
    p.feed(wire);
    (p.take_events(), p.retry())
}
