//! The hot path: `COPY ... TO STDOUT (FORMAT binary)` read from the socket
//! straight into pool buffers.
//!
//! The socket (or TLS stream) is read with large reads directly into a chunk
//! buffer; CopyData messages are framed in place and each row is recorded as
//! a (start, end) offset pair. Row bytes are never copied, except the one
//! partial message at the end of a full buffer, which moves to the start of
//! the next buffer.
//!
//! Rows are exactly the CopyData messages: PostgreSQL's COPY TO sends one
//! tuple per message. The binary file header arrives at the start of the
//! first message (before the first tuple, or before the trailer of an empty
//! result) and the trailer (int16 -1) as the payload of its own message.

use gpupg_format::copy::{is_trailer, parse_header};
use gpupg_format::CopyChunk;

use crate::conn::Connection;
use crate::error::SourceError;
use crate::pool::BufferPool;
use crate::protocol::{self, tag, HEADER_LEN};

/// Totals of one `copy_out`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyOutStats {
    /// Rows (tuples) received.
    pub rows: u64,
    /// Bytes of row data, without protocol framing, header and trailer.
    pub row_bytes: u64,
    /// Bytes received from the server during the COPY data phase.
    pub wire_bytes: u64,
}

/// Where the framing of the COPY stream stands.
struct Framer {
    header_done: bool,
    trailer_seen: bool,
}

impl Connection {
    /// Runs `sql`, which must be a `COPY ... TO STDOUT (FORMAT binary)`,
    /// and hands its rows to `on_chunk` in chunks of pool buffers.
    ///
    /// The consumer must give each chunk's `data` back to `pool` when done
    /// with it; `copy_out` blocks in [`BufferPool::take`] until it does.
    /// Chunks of one call come in order; `partition` and the running row
    /// index are recorded in each chunk for messages.
    ///
    /// An error from `on_chunk` abandons the COPY and leaves the connection
    /// unusable (`Broken`), as does a lost connection; a server error
    /// during the COPY leaves it usable.
    pub fn copy_out(
        &mut self,
        sql: &str,
        pool: &BufferPool,
        partition: u32,
        on_chunk: &mut dyn FnMut(CopyChunk) -> Result<(), SourceError>,
    ) -> Result<CopyOutStats, SourceError> {
        let context = format!("COPY of partition {partition}");
        // The extended protocol: the statement may carry a user's --where,
        // and Parse refuses a second statement smuggled in with it. The
        // COPY data then comes exactly as after a simple Query.
        self.send_statement(sql, &[], protocol::format::BINARY, &context)?;
        self.expect_copy_out(&context)?;
        let stats = self.stream_rows(pool, partition, &context, on_chunk)?;
        self.finish_copy(&context)?;
        Ok(stats)
    }

    /// Waits for CopyOutResponse (after ParseComplete and BindComplete) and
    /// checks the format is binary.
    fn expect_copy_out(&mut self, context: &str) -> Result<(), SourceError> {
        let mut msg = self.next_message(context)?;
        while matches!(msg.tag, tag::PARSE_COMPLETE | tag::BIND_COMPLETE) {
            msg = self.next_message(context)?;
        }
        match msg.tag {
            tag::COPY_OUT_RESPONSE => {
                let (format, _) = protocol::parse_copy_out_response(&msg.body)
                    .map_err(|v| self.violation(context, v))?;
                if format != 1 {
                    // The text data would arrive next; the session
                    // cannot be resynchronized cheaply.
                    self.broken = true;
                    return Err(self.protocol_error(
                        context,
                        "the COPY is in text format; gpupgparser needs (FORMAT binary)",
                    ));
                }
                Ok(())
            }
            tag::ERROR_RESPONSE => {
                let f = protocol::parse_error(&msg.body).map_err(|v| self.violation(context, v))?;
                let err = self.server_error(f, context.to_string());
                if !self.broken {
                    self.wait_ready(context)?;
                }
                Err(err)
            }
            tag::ROW_DESCRIPTION
            | tag::DATA_ROW
            | tag::COMMAND_COMPLETE
            | tag::EMPTY_QUERY_RESPONSE => {
                self.wait_ready(context)?;
                Err(self.protocol_error(context, "the statement is not a COPY ... TO STDOUT"))
            }
            other => {
                self.broken = true;
                Err(self.protocol_error(
                    context,
                    &format!("expected CopyOutResponse, got {:?}", char::from(other)),
                ))
            }
        }
    }

    /// The data phase, up to and including CopyDone.
    fn stream_rows(
        &mut self,
        pool: &BufferPool,
        partition: u32,
        context: &str,
        on_chunk: &mut dyn FnMut(CopyChunk) -> Result<(), SourceError>,
    ) -> Result<CopyOutStats, SourceError> {
        let mut stats = CopyOutStats::default();
        let mut framer = Framer {
            header_done: false,
            trailer_seen: false,
        };
        let mut buf = pool.take();
        // Bytes the message reader already pulled in belong to the stream.
        let pending = self.rend - self.rstart;
        pool.ensure_len(&mut buf, pending, 0);
        buf[..pending].copy_from_slice(&self.rbuf[self.rstart..self.rend]);
        self.rstart = 0;
        self.rend = 0;
        stats.wire_bytes += pending as u64;
        let mut filled = pending;
        let mut pos = 0usize;
        let mut starts: Vec<u32> = Vec::new();
        let mut ends: Vec<u32> = Vec::new();
        let mut first_row = 0u64;
        // Holds the partial message of a full buffer while that buffer is
        // handed on, so this reader never holds two pool buffers at once.
        let mut carry: Vec<u8> = Vec::new();

        loop {
            // Frame every complete message in buf[pos..filled].
            let mut done = false;
            while filled - pos >= HEADER_LEN {
                let (t, len) = protocol::header(&buf[pos..pos + HEADER_LEN]).map_err(|v| {
                    self.broken = true;
                    self.violation(context, v)
                })?;
                let end = pos + HEADER_LEN + len;
                if end > filled {
                    break;
                }
                let body = pos + HEADER_LEN;
                match t {
                    tag::COPY_DATA => {
                        if let Some(start) =
                            self.frame_copy_data(&buf, body, end, &mut framer, context)?
                        {
                            starts.push(start as u32);
                            ends.push(end as u32);
                            stats.row_bytes += (end - start) as u64;
                        }
                    }
                    tag::COPY_DONE => {
                        pos = end;
                        done = true;
                        break;
                    }
                    tag::ERROR_RESPONSE => {
                        let f = protocol::parse_error(&buf[body..end])
                            .map_err(|v| self.violation(context, v))?;
                        let after = buf[end..filled].to_vec();
                        pool.give(buf);
                        let err = self.server_error(f, context.to_string());
                        if !self.broken {
                            self.unread(&after);
                            self.wait_ready(context)?;
                        }
                        return Err(err);
                    }
                    tag::PARAMETER_STATUS => {
                        self.record_parameter_status(&buf[body..end], context)?;
                    }
                    // Notices (e.g. from a function in the query) are dropped.
                    tag::NOTICE_RESPONSE | tag::NOTIFICATION_RESPONSE => {}
                    other => {
                        self.broken = true;
                        pool.give(buf);
                        return Err(self.protocol_error(
                            context,
                            &format!("unexpected message {:?} during COPY", char::from(other)),
                        ));
                    }
                }
                pos = end;
            }
            if done {
                break;
            }

            if filled == buf.len() {
                if !starts.is_empty() {
                    // Full: hand the rows on, continue in a fresh buffer
                    // with the partial message at its start.
                    carry.clear();
                    carry.extend_from_slice(&buf[pos..filled]);
                    buf.truncate(pos);
                    let nrows = starts.len();
                    let chunk = CopyChunk {
                        data: buf,
                        row_starts: std::mem::replace(&mut starts, Vec::with_capacity(nrows)),
                        row_ends: std::mem::replace(&mut ends, Vec::with_capacity(nrows)),
                        partition,
                        first_row,
                    };
                    first_row += nrows as u64;
                    if let Err(e) = on_chunk(chunk) {
                        self.broken = true;
                        return Err(e);
                    }
                    buf = pool.take();
                    pool.ensure_len(&mut buf, carry.len(), 0);
                    buf[..carry.len()].copy_from_slice(&carry);
                    filled = carry.len();
                    pos = 0;
                } else if pos > 0 {
                    // Only framing (header, notices) before the partial
                    // message: slide it to the front of the same buffer.
                    buf.copy_within(pos..filled, 0);
                    filled -= pos;
                    pos = 0;
                }
                if filled == buf.len() {
                    // One message larger than the whole buffer (rows go up
                    // to 1 GB): grow this buffer to hold it.
                    let need = if filled >= HEADER_LEN {
                        let (_, len) = protocol::header(&buf[..HEADER_LEN])
                            .map_err(|v| self.violation(context, v))?;
                        HEADER_LEN + len
                    } else {
                        HEADER_LEN
                    };
                    pool.ensure_len(&mut buf, need.max(filled + 1), filled);
                }
            }

            let n = loop {
                match std::io::Read::read(&mut self.stream, &mut buf[filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.broken = true;
                        pool.give(buf);
                        return Err(self.lost(
                            &format!("{context} (after {} rows)", first_row + starts.len() as u64),
                            e,
                        ));
                    }
                }
            };
            if n == 0 {
                self.broken = true;
                pool.give(buf);
                return Err(self.lost(
                    &format!("{context} (after {} rows)", first_row + starts.len() as u64),
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ),
                ));
            }
            filled += n;
            stats.wire_bytes += n as u64;
        }

        // CopyDone seen: what follows (CommandComplete, ReadyForQuery) goes
        // back to the message reader.
        self.unread(&buf[pos..filled]);
        buf.truncate(pos);
        stats.rows = first_row + starts.len() as u64;
        if !framer.trailer_seen {
            self.broken = true;
            pool.give(buf);
            return Err(self.protocol_error(context, "the COPY ended without the binary trailer"));
        }
        if starts.is_empty() {
            pool.give(buf);
        } else {
            let chunk = CopyChunk {
                data: buf,
                row_starts: starts,
                row_ends: ends,
                partition,
                first_row,
            };
            if let Err(e) = on_chunk(chunk) {
                // The server side of the COPY is finished; drain its last
                // messages so the session stays usable.
                self.finish_copy(context)?;
                return Err(e);
            }
        }
        Ok(stats)
    }

    /// The start of the row in the CopyData body `buf[body..end]`, or `None`
    /// when it carries no row (only the file header, or the trailer).
    #[inline]
    fn frame_copy_data(
        &mut self,
        buf: &[u8],
        body: usize,
        end: usize,
        framer: &mut Framer,
        context: &str,
    ) -> Result<Option<usize>, SourceError> {
        let mut start = body;
        if !framer.header_done {
            let h = parse_header(&buf[body..end]).map_err(|source| {
                self.broken = true;
                SourceError::Framing {
                    host: self.endpoint().to_string(),
                    during: context.to_string(),
                    source,
                }
            })?;
            start += h;
            framer.header_done = true;
            if start == end {
                return Ok(None);
            }
        }
        if framer.trailer_seen {
            self.broken = true;
            return Err(self.protocol_error(context, "COPY data after the binary trailer"));
        }
        if is_trailer(&buf[start..end]) {
            framer.trailer_seen = true;
            return Ok(None);
        }
        Ok(Some(start))
    }

    /// After CopyDone: CommandComplete and ReadyForQuery.
    fn finish_copy(&mut self, context: &str) -> Result<(), SourceError> {
        let mut error = None;
        loop {
            let msg = self.next_message(context)?;
            match msg.tag {
                tag::COMMAND_COMPLETE => {}
                tag::ERROR_RESPONSE => {
                    error = Some(
                        protocol::parse_error(&msg.body).map_err(|v| self.violation(context, v))?,
                    );
                }
                tag::READY_FOR_QUERY => break,
                other => {
                    self.broken = true;
                    return Err(self.protocol_error(
                        context,
                        &format!("unexpected message {:?} after CopyDone", char::from(other)),
                    ));
                }
            }
        }
        match error {
            Some(f) => Err(self.server_error(f, context.to_string())),
            None => Ok(()),
        }
    }
}
