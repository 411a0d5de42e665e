//! # SPDY/3.1 frames (mirrors `moby/spdystream`, which client-go uses under port-forward)
//!
//! SPDY was Google's forerunner of HTTP/2: one TCP connection carries many **streams**, each
//! a pair of byte pipes, opened and closed independently. Kubernetes adopted it in 2014 for
//! `exec` and `port-forward`, and port-forward still speaks it: since kubectl 1.31 the SPDY
//! bytes travel *inside* a WebSocket ([`super`]), but the frames are the same.
//!
//! A frame starts with 8 bytes. If the first bit is set it is a **control frame**:
//!
//! ```text
//! |1| version (15) = 3 | type (16) |  flags (8) | length (24) | payload ...
//! ```
//!
//! otherwise a **data frame** of one stream:
//!
//! ```text
//! |0| stream id (31)              |  flags (8) | length (24) | data ...
//! ```
//!
//! | control frame | payload | what it does |
//! |---------------|---------|--------------|
//! | `SYN_STREAM` (1) | stream id, associated id, priority, header block | opens a stream (client: odd ids) |
//! | `SYN_REPLY` (2) | stream id, header block | accepts it |
//! | `RST_STREAM` (3) | stream id, status | aborts it |
//! | `SETTINGS` (4) | id/value pairs | tunes the connection (ignored here) |
//! | `PING` (6) | id | asks for an echo (client-go pings every 10 s) |
//! | `GOAWAY` (7) | last stream id, status | ends the connection |
//! | `HEADERS` (8) | stream id, header block | more headers for a stream |
//! | `WINDOW_UPDATE` (9) | stream id, delta | flow control (spdystream ignores it, so does kulisse) |
//!
//! The flag `FIN` (1) on a data frame or a `SYN_*` frame half-closes the stream: the sender
//! will send nothing more on it. A stream is done when both sides have sent `FIN`.
//!
//! **Header blocks** are name/value pairs (`u32` count, then `u32` length + bytes for each
//! name and value; several values of a name are joined by NUL), **compressed with zlib**
//! using a fixed dictionary of common HTTP words ([`dictionary`]), as one zlib stream per
//! direction per connection: each block ends with a sync flush, and the next block goes on
//! where it stopped. Losing one block therefore breaks the connection; a [`HeaderCodec`] is
//! kept for the connection's whole life.
//!
//! kulisse writes the framing itself: no maintained Rust crate speaks SPDY (the web moved to
//! HTTP/2), and port-forward needs only this part of it. See ARCHITECTURE.md.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The SPDY version spoken.
pub const VERSION: u16 = 3;
/// `FIN`: the sender closes its half of the stream.
pub const FLAG_FIN: u8 = 0x01;
/// Data frames may carry up to 2^24 - 1 bytes; kulisse sends at most this much per frame.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
/// The largest decompressed header block accepted (a header bomb is an error, not a crash).
const MAX_HEADER_BLOCK: usize = 256 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// `RST_STREAM` status: protocol error.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// `RST_STREAM` status: the stream is refused.
pub const RST_REFUSED_STREAM: u32 = 3;
/// `RST_STREAM` status: cancelled.
pub const RST_CANCEL: u32 = 5;

/// Name/value pairs of a header block, names in lower case.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (lower case), if present.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// A control frame of a type SPDY/3 does not define: ignored, as the spec asks.
    Unknown {
        frame_type: u16,
    },
}

/// What went wrong on a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("the connection broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol(message: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(message.into())
}

/// The dictionary's words, each written after its length (4 bytes, big-endian).
const WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
/// The dictionary's tail, written as it is.
const TAIL: [&str; 9] = [
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    "",
];

/// The SPDY/3 header dictionary: the words HTTP headers are made of, each as a `u32` length
/// and its bytes, then one run of status lines, dates and media types. Both ends preset it,
/// so that even the first header block compresses well.
pub fn dictionary() -> Vec<u8> {
    let mut out = Vec::with_capacity(1423);
    for word in WORDS {
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    for part in TAIL {
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The header compression of one connection: one zlib stream out, one in.
pub struct HeaderCodec {
    dictionary: Vec<u8>,
    compress: Compress,
    decompress: Decompress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        HeaderCodec::new()
    }
}

impl HeaderCodec {
    pub fn new() -> Self {
        let dictionary = dictionary();
        let mut compress = Compress::new(Compression::default(), true);
        // Cannot fail before the first byte is compressed.
        let _ = compress.set_dictionary(&dictionary);
        HeaderCodec {
            dictionary,
            compress,
            decompress: Decompress::new(true),
        }
    }

    /// Compress one header block (continuing this connection's stream).
    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                plain.extend_from_slice(&(part.len() as u32).to_be_bytes());
                plain.extend_from_slice(part);
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| protocol(format!("compressing headers failed: {e}")))?;
            input = &input[(self.compress.total_in() - before) as usize..];
            // The flush is complete when zlib left spare room in the output.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Decompress one header block (continuing this connection's stream) and parse it.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if plain.len() >= MAX_HEADER_BLOCK {
                return Err(protocol(format!(
                    "a header block decompresses to more than {MAX_HEADER_BLOCK} bytes"
                )));
            }
            plain.reserve(1024);
            let before = self.decompress.total_in();
            let status = match self.decompress.decompress_vec(input, &mut plain, FlushDecompress::Sync) {
                Ok(status) => status,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decompress
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| protocol(format!("the header dictionary was refused: {e}")))?;
                    Status::Ok
                }
                Err(e) => return Err(protocol(format!("a header block does not decompress: {e}"))),
            };
            input = &input[(self.decompress.total_in() - before) as usize..];
            if status == Status::StreamEnd {
                return Err(protocol("the header stream ended, which SPDY never does"));
            }
            if input.is_empty() && plain.len() < plain.capacity() {
                break;
            }
        }
        parse_block(&plain)
    }
}

/// Parse an uncompressed header block.
fn parse_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], SpdyError> {
        if b.len() < n {
            return Err(protocol("a header block ends in the middle of a field"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn u32_of(b: &mut &[u8]) -> Result<u32, SpdyError> {
        let bytes = take(b, 4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    let count = u32_of(&mut b)?;
    let mut headers = Headers::new();
    for _ in 0..count {
        let n = u32_of(&mut b)? as usize;
        let name = String::from_utf8_lossy(take(&mut b, n)?).to_ascii_lowercase();
        let n = u32_of(&mut b)? as usize;
        let value = take(&mut b, n)?;
        for v in value.split(|c| *c == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

fn be32(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| protocol("a control frame is shorter than its type needs"))
}

/// Read one frame; `Ok(None)` at a clean end of the connection (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, codec: &mut HeaderCodec) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; length];
    r.read_exact(&mut payload).await?;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Some(Frame::Data {
            stream_id,
            fin,
            data: payload,
        }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(protocol(format!(
            "SPDY version {version}; kulisse speaks version {VERSION}"
        )));
    }
    let frame_type = u16::from_be_bytes([head[2], head[3]]);
    let id = |at| be32(&payload, at).map(|v| v & 0x7fff_ffff);
    let frame = match frame_type {
        SYN_STREAM => {
            let block = payload.get(10..).ok_or_else(|| protocol("a SYN_STREAM is too short"))?;
            Frame::SynStream {
                stream_id: id(0)?,
                associated_to: id(4)?,
                priority: payload[8] >> 5,
                fin,
                headers: codec.decode(block)?,
            }
        }
        SYN_REPLY | HEADERS => {
            let block = payload
                .get(4..)
                .ok_or_else(|| protocol("a SYN_REPLY/HEADERS is too short"))?;
            let (stream_id, headers) = (id(0)?, codec.decode(block)?);
            if frame_type == SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    fin,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    fin,
                    headers,
                }
            }
        }
        RST_STREAM => Frame::RstStream {
            stream_id: id(0)?,
            status: be32(&payload, 4)?,
        },
        SETTINGS => Frame::Settings,
        PING => Frame::Ping { id: be32(&payload, 0)? },
        GOAWAY => Frame::GoAway {
            last_good_stream_id: id(0)?,
            status: be32(&payload, 4).unwrap_or(0),
        },
        WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: id(0)?,
            delta: id(4)?,
        },
        other => Frame::Unknown { frame_type: other },
    };
    Ok(Some(frame))
}

fn control(frame_type: u16, flags: u8, payload: &[u8]) -> Result<Vec<u8>, SpdyError> {
    if payload.len() >= 1 << 24 {
        return Err(protocol("a control frame longer than 2^24 - 1 bytes"));
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    Ok(out)
}

/// The bytes of `frame` (header blocks compressed with `codec`).
pub fn encode(frame: &Frame, codec: &mut HeaderCodec) -> Result<Vec<u8>, SpdyError> {
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data { stream_id, fin, data } => {
            if data.len() >= 1 << 24 {
                return Err(protocol("a data frame longer than 2^24 - 1 bytes"));
            }
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(fin_flag(*fin));
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            Ok(out)
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            fin,
            headers,
        } => {
            let mut p = Vec::new();
            p.extend_from_slice(&stream_id.to_be_bytes());
            p.extend_from_slice(&associated_to.to_be_bytes());
            p.push((priority & 0x07) << 5);
            p.push(0);
            p.extend(codec.encode(headers)?);
            control(SYN_STREAM, fin_flag(*fin), &p)
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        }
        | Frame::Headers {
            stream_id,
            fin,
            headers,
        } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend(codec.encode(headers)?);
            let t = if matches!(frame, Frame::SynReply { .. }) {
                SYN_REPLY
            } else {
                HEADERS
            };
            control(t, fin_flag(*fin), &p)
        }
        Frame::RstStream { stream_id, status } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(RST_STREAM, 0, &p)
        }
        Frame::Settings => control(SETTINGS, 0, &0u32.to_be_bytes()),
        Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut p = last_good_stream_id.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(GOAWAY, 0, &p)
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend_from_slice(&delta.to_be_bytes());
            control(WINDOW_UPDATE, 0, &p)
        }
        Frame::Unknown { frame_type } => control(*frame_type, 0, &[]),
    }
}

/// Write one frame and flush it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    codec: &mut HeaderCodec,
) -> Result<(), SpdyError> {
    let bytes = encode(frame, codec)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// The writing half of a connection as a task: frames sent to the returned sender are
/// written in order, so that any task may send on any stream. The task ends when every
/// sender is dropped or the connection breaks.
pub fn spawn_writer<W: AsyncWrite + Unpin + Send + 'static>(
    mut w: W,
) -> (tokio::sync::mpsc::Sender<Frame>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(64);
    let task = tokio::spawn(async move {
        let mut codec = HeaderCodec::new();
        while let Some(frame) = rx.recv().await {
            if let Err(e) = write_frame(&mut w, &frame, &mut codec).await {
                tracing::debug!("spdy: writing a frame failed: {e}");
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dictionary is byte for byte the one of the SPDY/3 draft (its zlib checksum and
    /// length, as Go's `spdy` package computes them).
    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &d {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2, "adler32 of the dictionary");
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn frames_survive_a_round_trip_over_one_header_stream() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                headers: headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                fin: false,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: vec![],
            },
            Frame::Ping { id: 1 },
            Frame::RstStream {
                stream_id: 5,
                status: 5,
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 1000,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let (mut out_codec, mut in_codec) = (HeaderCodec::new(), HeaderCodec::new());
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f, &mut out_codec).unwrap());
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r, &mut in_codec).await.unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r, &mut in_codec).await.unwrap(), None);
    }

    #[test]
    fn several_values_of_one_name_are_split_at_nul() {
        let mut block = 1u32.to_be_bytes().to_vec();
        for part in [&b"Port"[..], &b"80\x00443"[..]] {
            block.extend_from_slice(&(part.len() as u32).to_be_bytes());
            block.extend_from_slice(part);
        }
        assert_eq!(
            parse_block(&block).unwrap(),
            headers(&[("port", "80"), ("port", "443")])
        );
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut codec = HeaderCodec::new();
        // A SYN_STREAM whose header block is not zlib.
        let mut wire = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e];
        wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        assert!(read_frame(&mut &wire[..], &mut codec).await.is_err());
        // A version 2 frame.
        let wire = [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        assert!(read_frame(&mut &wire[..], &mut HeaderCodec::new()).await.is_err());
        // A truncated block inside valid zlib.
        let mut codec = HeaderCodec::new();
        let mut other = HeaderCodec::new();
        let compressed = other.compress_raw(&[0, 0, 0, 5, 0, 0]);
        assert!(codec.decode(&compressed).is_err());
        // A truncated frame is the end of the connection's bytes, an I/O error.
        let wire = [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0];
        assert!(read_frame(&mut &wire[..], &mut HeaderCodec::new()).await.is_err());
    }

    impl HeaderCodec {
        fn compress_raw(&mut self, plain: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(1024);
            self.compress
                .compress_vec(plain, &mut out, FlushCompress::Sync)
                .unwrap();
            out
        }
    }
}
