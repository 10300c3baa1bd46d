//! Lets gRPC clients that name a Unix socket in `:authority` reach the Workload API.
//!
//! gRPC's C core (Python, Ruby, C++, PHP clients — py-spiffe among them) and grpc-java send
//! the socket's path, percent-encoded or not, as the HTTP/2 `:authority` of a call over a
//! Unix socket. That is no valid authority, and the h2 server under tonic resets such a
//! stream with PROTOCOL_ERROR before any handler runs (hyperium/h2#487, grpc/grpc#38142).
//! An authority means nothing on a local socket, so the connection's reader rewrites the
//! `:authority` of every request to `localhost` before h2 sees it: the client's HEADERS
//! (and CONTINUATION) frames are reassembled, and in their HPACK block each field that
//! names `:authority` by its static-table index gets the value `localhost`; everything else
//! passes byte for byte. A literal that is added to the dynamic table is rewritten as it is
//! added, so later references by index agree. A block this cannot parse passes unchanged
//! (h2 then refuses it as before). Only the client-to-server direction is touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server does not raise.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is passed on as it came (h2 limits it anyway).
const MAX_BLOCK: usize = 64 * 1024;
/// Static-table index of `:authority` (RFC 7541 Appendix A).
const AUTHORITY: u64 = 1;
const LOCALHOST: &[u8] = b"localhost";

/// A Workload API connection whose requests' `:authority` is rewritten on the way in.
pub struct Rewriting {
    io: UnixStream,
    info: UdsConnectInfo,
    machine: Machine,
    eof: bool,
}

impl Rewriting {
    pub fn new(io: UnixStream) -> Self {
        let info = io.connect_info();
        Self {
            io,
            info,
            machine: Machine::default(),
            eof: false,
        }
    }
}

/// The rewriting itself, apart from the socket: bytes in, bytes out.
struct Machine {
    preface_left: usize,
    input: BytesMut,
    output: BytesMut,
    /// A HEADERS frame waiting for its CONTINUATIONs.
    pending: Option<Pending>,
    /// After a frame larger than the server accepts, everything goes on as it comes (h2
    /// refuses it) rather than being held to the length the client announced.
    passthrough: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            input: BytesMut::with_capacity(4096),
            output: BytesMut::new(),
            pending: None,
            passthrough: false,
        }
    }
}

struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: BytesMut,
}

impl Machine {
    /// The input has ended: whatever is held goes on as it is, for h2 to judge.
    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.emit(pending, false);
        }
        let rest = self.input.split();
        self.output.extend_from_slice(&rest);
    }

    /// Moves every complete frame of `input` to `output`, rewriting header blocks.
    fn step(&mut self) {
        let preface = self.preface_left.min(self.input.len());
        if preface > 0 {
            self.output.extend_from_slice(&self.input.split_to(preface));
            self.preface_left -= preface;
        }
        if self.preface_left > 0 {
            return;
        }
        while !self.passthrough && self.input.len() >= FRAME_HEADER {
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            if len > MAX_FRAME {
                if let Some(pending) = self.pending.take() {
                    self.emit(pending, false);
                }
                self.passthrough = true;
                break;
            }
            if self.input.len() < FRAME_HEADER + len {
                return;
            }
            let mut frame = self.input.split_to(FRAME_HEADER + len);
            let (kind, flags) = (frame[3], frame[4]);
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            frame.advance(FRAME_HEADER);
            match kind {
                HEADERS => match headers_fragment(&frame, flags) {
                    Some((priority, fragment)) => {
                        // A block left open by an earlier HEADERS goes on as it came.
                        if let Some(open) = self.pending.take() {
                            self.emit(open, false);
                        }
                        let pending = Pending {
                            stream,
                            flags,
                            priority,
                            block: BytesMut::from(fragment),
                        };
                        self.continue_block(pending, flags);
                    }
                    None => put_frame(&mut self.output, kind, flags, stream, &frame),
                },
                CONTINUATION if self.pending.as_ref().is_some_and(|p| p.stream == stream) => {
                    if let Some(mut pending) = self.pending.take() {
                        pending.block.extend_from_slice(&frame);
                        self.continue_block(pending, flags);
                    }
                }
                _ => {
                    // Anything out of order goes on as it came: h2 judges it.
                    if let Some(pending) = self.pending.take() {
                        self.emit(pending, false);
                    }
                    put_frame(&mut self.output, kind, flags, stream, &frame);
                }
            }
        }
        if self.passthrough {
            let rest = self.input.split();
            self.output.extend_from_slice(&rest);
        }
    }

    fn continue_block(&mut self, pending: Pending, flags: u8) {
        if flags & END_HEADERS != 0 {
            self.emit(pending, true);
        } else if pending.block.len() > MAX_BLOCK {
            self.emit(pending, false);
        } else {
            self.pending = Some(pending);
        }
    }

    /// Writes a header block as HEADERS (+ CONTINUATION) frames, rewritten if `complete`.
    fn emit(&mut self, pending: Pending, complete: bool) {
        let block = if complete {
            rewrite_block(&pending.block).unwrap_or_else(|| pending.block.to_vec())
        } else {
            pending.block.to_vec()
        };
        let end_stream = pending.flags & 0x1;
        let mut first = Vec::with_capacity(5 + block.len().min(MAX_FRAME));
        let mut flags = end_stream;
        if let Some(priority) = pending.priority {
            first.extend_from_slice(&priority);
            flags |= PRIORITY;
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        let last = rest.is_empty() && complete;
        put_frame(
            &mut self.output,
            HEADERS,
            flags | if last { END_HEADERS } else { 0 },
            pending.stream,
            &first,
        );
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let end = if rest.is_empty() && complete {
                END_HEADERS
            } else {
                0
            };
            put_frame(&mut self.output, CONTINUATION, end, pending.stream, chunk);
        }
    }
}

/// The priority fields and the block fragment of a HEADERS payload, without padding.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    if flags & PADDED != 0 {
        let (&pad, rest) = body.split_first()?;
        body = rest.get(..rest.len().checked_sub(pad as usize)?)?;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = body.get(..5)?.try_into().ok()?;
        priority = Some(fields);
        body = &body[5..];
    }
    Some((priority, body))
}

fn put_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// The HPACK block with each `:authority` named by static index 1 set to `localhost`;
/// `None` if the block does not parse.
pub fn rewrite_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len());
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        let start = at;
        let prefix = match first {
            b if b & 0x80 != 0 => {
                at = integer(block, at, 7)?.1;
                out.extend_from_slice(&block[start..at]);
                continue;
            }
            b if b & 0xe0 == 0x20 => {
                at = integer(block, at, 5)?.1;
                out.extend_from_slice(&block[start..at]);
                continue;
            }
            b if b & 0xc0 == 0x40 => 6,
            _ => 4,
        };
        let (name_index, after_index) = integer(block, at, prefix)?;
        at = after_index;
        let mut authority = name_index == AUTHORITY;
        if name_index == 0 {
            let name_start = at;
            at = string_end(block, at)?;
            authority = is_authority(&block[name_start..at]);
        }
        let value_start = at;
        at = string_end(block, at)?;
        out.extend_from_slice(&block[start..value_start]);
        let value_len = at - integer(block, value_start, 7)?.1;
        if authority && value_len > 0 {
            // No longer than the value it replaces, so the entry a literal with indexing
            // adds to the decoder's table is never larger than the client's encoder counted
            // (which would evict entries the client still refers to). H = 0, 7-bit length.
            let with = &LOCALHOST[..LOCALHOST.len().min(value_len)];
            out.push(with.len() as u8);
            out.extend_from_slice(with);
        } else {
            out.extend_from_slice(&block[value_start..at]);
        }
    }
    Some(out)
}

/// Whether an HPACK string literal (length prefix included) is `:authority`, sent as it
/// is or Huffman-coded (RFC 7541 Appendix B codes; gRPC's C core sends the name as a new
/// literal rather than by its static index).
fn is_authority(literal: &[u8]) -> bool {
    const RAW: &[u8] = b":authority";
    const HUFFMAN: &[u8] = &[0xb8, 0x3b, 0x53, 0x39, 0xec, 0x32, 0x7d, 0x7f];
    match literal.split_first() {
        Some((&first, name)) if first & 0x80 == 0 => name == RAW,
        Some((_, name)) => name == HUFFMAN,
        None => false,
    }
}

/// An HPACK integer with an N-bit prefix at `at` (RFC 7541 §5.1): its value and the offset
/// after it.
fn integer(block: &[u8], at: usize, prefix: u8) -> Option<(u64, usize)> {
    let max = (1u64 << prefix) - 1;
    let mut value = u64::from(*block.get(at)?) & max;
    let mut at = at + 1;
    if value < max {
        return Some((value, at));
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(at)?;
        at += 1;
        value = value.checked_add(u64::from(byte & 0x7f).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

/// The offset after the HPACK string literal at `at`.
fn string_end(block: &[u8], at: usize) -> Option<usize> {
    let (len, start) = integer(block, at, 7)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= block.len()).then_some(end)
}

impl AsyncRead for Rewriting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let output = &mut this.machine.output;
            if !output.is_empty() {
                let n = output.len().min(buf.remaining());
                buf.put_slice(&output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.eof = true;
                    this.machine.finish();
                }
                Poll::Ready(Ok(())) => {
                    this.machine.input.extend_from_slice(read.filled());
                    this.machine.step();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for Rewriting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for Rewriting {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_literals_become_localhost_and_the_rest_is_untouched() {
        // :method POST (indexed 3), :authority "tmp%2Fa.sock" with incremental indexing,
        // a new-name literal without indexing, then a table size update.
        let mut block = vec![0x83, 0x41, 12];
        block.extend_from_slice(b"tmp%2Fa.sock");
        block.extend_from_slice(&[0x00, 2, b'x', b'y', 1, b'z', 0x3f, 0xe1, 0x1f]);
        let out = rewrite_block(&block).expect("parses");
        let mut want = vec![0x83, 0x41, 9];
        want.extend_from_slice(b"localhost");
        want.extend_from_slice(&[0x00, 2, b'x', b'y', 1, b'z', 0x3f, 0xe1, 0x1f]);
        assert_eq!(out, want);
        // Never-indexed and without-indexing forms of :authority too.
        for first in [0x01u8, 0x11] {
            let out = rewrite_block(&[first, 3, b'/', b'a', b'b']).expect("parses");
            // Never longer than what it replaces (the decoder's table stays in step).
            assert_eq!(out, [first, 3, b'l', b'o', b'c']);
        }
        // An empty authority is left as it is.
        assert_eq!(rewrite_block(&[0x01, 0]).expect("parses"), [0x01, 0]);
        // The name as a new literal, raw (as gRPC's C core sends it) or Huffman-coded;
        // other names are left alone.
        let mut raw = vec![0x40, 10];
        raw.extend_from_slice(b":authority");
        raw.extend_from_slice(&[3, b'/', b'a', b'b']);
        let out = rewrite_block(&raw).expect("parses");
        assert_eq!(out, [&raw[..12], &[3], b"loc"].concat());
        let huffman = [
            0x40, 0x88, 0xb8, 0x3b, 0x53, 0x39, 0xec, 0x32, 0x7d, 0x7f, 1, b'x',
        ];
        let out = rewrite_block(&huffman).expect("parses");
        assert_eq!(out, [&huffman[..10], &[1], b"l"].concat());
        let mut other = vec![0x40, 10];
        other.extend_from_slice(b":authorit_");
        other.extend_from_slice(&[1, b'x']);
        assert_eq!(rewrite_block(&other).expect("parses"), other);
        // A Huffman-coded value is replaced the same way (H bit set, 2 bytes).
        let out = rewrite_block(&[0x41, 0x82, 0xaa, 0xbb]).expect("parses");
        assert_eq!(out, [0x41, 2, b'l', b'o']);
    }

    /// Feeds `wire` byte by byte through the machine; what comes out.
    fn run(wire: &[u8]) -> BytesMut {
        let mut machine = Machine::default();
        let mut out = BytesMut::new();
        for byte in wire {
            machine.input.put_u8(*byte);
            machine.step();
            out.extend_from_slice(&machine.output.split());
        }
        out
    }

    #[test]
    fn an_oversized_frame_is_not_held_but_passed_on() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        // A DATA frame announcing 16 MiB - 1: nothing is buffered waiting for it.
        wire.extend_from_slice(&[0xff, 0xff, 0xff, 0x0, 0x0, 0, 0, 0, 1]);
        wire.extend_from_slice(b"some bytes");
        assert_eq!(run(&wire), wire);
    }

    #[test]
    fn a_header_block_left_open_goes_on_as_it_came() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        put_frame(&mut wire, HEADERS, 0, 1, &[0x82]);
        put_frame(
            &mut wire,
            HEADERS,
            END_HEADERS,
            3,
            &[0x01, 3, b'/', b'a', b'b'],
        );
        let mut want = BytesMut::new();
        want.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        put_frame(&mut want, HEADERS, 0, 1, &[0x82]);
        put_frame(
            &mut want,
            HEADERS,
            END_HEADERS,
            3,
            &[0x01, 3, b'l', b'o', b'c'],
        );
        assert_eq!(run(&wire), want);
    }

    #[test]
    fn truncated_blocks_do_not_parse() {
        for block in [
            &[0x41u8, 12, b'a'][..],
            &[0x3f],
            &[0x00, 5, b'a'],
            &[0xff, 0xff],
        ] {
            assert_eq!(rewrite_block(block), None, "{block:?}");
        }
    }

    #[test]
    fn frames_are_reassembled_and_split() {
        let mut block = vec![0x41, 100];
        block.extend_from_slice(&[b'p'; 100]);
        let (a, b) = block.split_at(50);
        let mut wire = BytesMut::new();
        wire.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        put_frame(&mut wire, 0x4, 0, 0, &[]); // SETTINGS
        put_frame(
            &mut wire,
            HEADERS,
            PADDED,
            1,
            &[&[3u8][..], a, &[0, 0, 0]].concat(),
        );
        put_frame(&mut wire, CONTINUATION, END_HEADERS, 1, b);
        put_frame(&mut wire, 0x0, 0x1, 1, b"data");
        let mut out = BytesMut::new();
        // Fed byte by byte through the state machine the reader uses.
        let mut r = Machine::default();
        for byte in wire.iter() {
            r.input.put_u8(*byte);
            r.step();
            out.extend_from_slice(&r.output.split());
        }
        let mut want = BytesMut::new();
        want.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        put_frame(&mut want, 0x4, 0, 0, &[]);
        put_frame(
            &mut want,
            HEADERS,
            END_HEADERS,
            1,
            &[&[0x41u8, 9][..], LOCALHOST].concat(),
        );
        put_frame(&mut want, 0x0, 0x1, 1, b"data");
        assert_eq!(out, want);
    }
}
