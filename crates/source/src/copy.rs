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

/// The rows framed in the current buffer, not yet handed on.
struct PendingRows {
    starts: Vec<u32>,
    ends: Vec<u32>,
    /// Index of the first of them in the whole COPY.
    first_row: u64,
}

impl PendingRows {
    /// Rows framed so far, handed on or not.
    fn count(&self) -> u64 {
        self.first_row + self.starts.len() as u64
    }

    /// The pending rows as a chunk of `data`; the next chunk's row vectors
    /// start with the same capacity.
    fn take_chunk(&mut self, data: Vec<u8>, partition: u32) -> CopyChunk {
        let nrows = self.starts.len();
        let chunk = CopyChunk {
            data,
            row_starts: std::mem::replace(&mut self.starts, Vec::with_capacity(nrows)),
            row_ends: std::mem::replace(&mut self.ends, Vec::with_capacity(nrows)),
            partition,
            first_row: self.first_row,
        };
        self.first_row += nrows as u64;
        chunk
    }

    /// The last chunk of the COPY: the pending rows as a chunk of `data`.
    fn into_chunk(self, data: Vec<u8>, partition: u32) -> CopyChunk {
        CopyChunk {
            data,
            row_starts: self.starts,
            row_ends: self.ends,
            partition,
            first_row: self.first_row,
        }
    }
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
        let mut rows = PendingRows {
            starts: Vec::new(),
            ends: Vec::new(),
            first_row: 0,
        };
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
                            rows.starts.push(start as u32);
                            rows.ends.push(end as u32);
                            stats.row_bytes += (end - start) as u64;
                        }
                    }
                    tag::COPY_DONE => {
                        pos = end;
                        done = true;
                        break;
                    }
                    tag::ERROR_RESPONSE => {
                        return Err(self.copy_failed(pool, buf, body..end, filled, context)?);
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
                if !rows.starts.is_empty() {
                    // Full: hand the rows on, continue in a fresh buffer
                    // with the partial message at its start.
                    carry.clear();
                    carry.extend_from_slice(&buf[pos..filled]);
                    buf.truncate(pos);
                    if let Err(e) = on_chunk(rows.take_chunk(buf, partition)) {
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
                    self.grow_for_message(pool, &mut buf, filled, context)?;
                }
            }

            let n = match self.read_more(&mut buf[filled..], context, rows.count()) {
                Ok(n) => n,
                Err(e) => {
                    pool.give(buf);
                    return Err(e);
                }
            };
            filled += n;
            stats.wire_bytes += n as u64;
        }

        // CopyDone seen: what follows (CommandComplete, ReadyForQuery) goes
        // back to the message reader.
        self.unread(&buf[pos..filled]);
        buf.truncate(pos);
        stats.rows = rows.count();
        if !framer.trailer_seen {
            self.broken = true;
            pool.give(buf);
            return Err(self.protocol_error(context, "the COPY ended without the binary trailer"));
        }
        if rows.starts.is_empty() {
            pool.give(buf);
        } else {
            if let Err(e) = on_chunk(rows.into_chunk(buf, partition)) {
                // The server side of the COPY is finished; drain its last
                // messages so the session stays usable.
                self.finish_copy(context)?;
                return Err(e);
            }
        }
        Ok(stats)
    }

    /// Grows `buf`, full with the start of one message at its front, to
    /// hold that whole message (rows go up to 1 GB).
    fn grow_for_message(
        &self,
        pool: &BufferPool,
        buf: &mut Vec<u8>,
        filled: usize,
        context: &str,
    ) -> Result<(), SourceError> {
        let need = if filled >= HEADER_LEN {
            let (_, len) =
                protocol::header(&buf[..HEADER_LEN]).map_err(|v| self.violation(context, v))?;
            HEADER_LEN + len
        } else {
            HEADER_LEN
        };
        pool.ensure_len(buf, need.max(filled + 1), filled);
        Ok(())
    }

    /// Reads at least one byte of the stream into `into`; a lost
    /// connection, or one the server closed, is an error naming how many
    /// rows had come.
    fn read_more(
        &mut self,
        into: &mut [u8],
        context: &str,
        rows: u64,
    ) -> Result<usize, SourceError> {
        let result = loop {
            match std::io::Read::read(&mut self.stream, into) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) => {
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ))
                }
                other => break other,
            }
        };
        result.map_err(|e| {
            self.broken = true;
            self.lost(&format!("{context} (after {rows} rows)"), e)
        })
    }

    /// The error of an ErrorResponse at `body` in `buf`, which goes back to
    /// `pool`; the session is brought back to ReadyForQuery (through the
    /// bytes after the message, up to `filled`) unless it is broken.
    fn copy_failed(
        &mut self,
        pool: &BufferPool,
        buf: Vec<u8>,
        body: std::ops::Range<usize>,
        filled: usize,
        context: &str,
    ) -> Result<SourceError, SourceError> {
        let end = body.end;
        let f = protocol::parse_error(&buf[body]).map_err(|v| self.violation(context, v))?;
        let after = buf[end..filled].to_vec();
        pool.give(buf);
        let err = self.server_error(f, context.to_string());
        if !self.broken {
            self.unread(&after);
            self.wait_ready(context)?;
        }
        Ok(err)
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
