//! The bytes of a WAL segment, and reading them back.
//!
//! Format 2 (written since the segment header exists):
//!
//! ```text
//! segment = header record*
//! header  = "PSCPWAL\n" | format: u32 LE (= 2) | schema: u32 LE (schema::SCHEMA_VERSION)
//! record  = "PSCR" | len: u32 LE | crc32(len bytes ‖ payload): u32 LE | payload
//! payload = signal tag: u8 | one Arrow IPC stream
//!         | (signal tag | 0x80): u8 | the export request as it arrived (the decoder's
//!           format: an OTLP spans export; for metrics a format byte, then an OTLP export
//!           or a snappy remote-write body)
//! ```
//!
//! A request logged as it arrived is turned into rows again on replay by the store's
//! [`crate::WireDecoder`] (the same conversion that made the acknowledged rows, so the
//! same rows come back); a segment holding such records cannot be replayed without one,
//! which is an error, never a skip.
//!
//! The record marker lets replay find the next intact record after a damaged one, so
//! that corruption in the middle of a segment costs only the damaged bytes. Format 1
//! (segments without a header, records `len | crc32(payload) | payload`) is still read,
//! stopping at its first damaged record as it always did. A newer format is refused with
//! a clear error rather than guessed at. Replayed rows whose columns differ from today's
//! table schema (written by an older version) are converted by column name.
//!
//! What replay tells apart:
//! - an all-zero tail (what some file systems leave after a power cut): the end, quietly;
//! - a torn tail (a damaged record with no intact one after it: a write cut short by a
//!   crash, never acknowledged): skipped with one warning;
//! - corruption (damaged bytes followed by intact records, or an intact record that does
//!   not decode): skipped, and the records after it are recovered.

use std::io::Cursor;
use std::path::Path;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::schema::{self, Signal};

/// First bytes of every format-2 segment.
const FILE_MAGIC: &[u8; 8] = b"PSCPWAL\n";
/// Length of the segment header.
pub(crate) const FILE_HEADER: usize = 16;
/// The format this version writes.
pub(crate) const FORMAT: u32 = 2;
/// First bytes of every format-2 record.
const RECORD_MAGIC: &[u8; 4] = b"PSCR";
/// Length of a format-2 record header.
const RECORD_HEADER: usize = 12;
/// Length of a format-1 record header.
const LEGACY_HEADER: usize = 8;

/// The header every new segment starts with.
pub(crate) fn file_header() -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[..8].copy_from_slice(FILE_MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&schema::SCHEMA_VERSION.to_le_bytes());
    h
}

/// Whether `data` (a whole file) is at most a segment header cut short, or zeros: what a
/// segment creation that failed halfway leaves.
pub(crate) fn is_unfinished_header(data: &[u8]) -> bool {
    data.len() <= FILE_HEADER && (file_header().starts_with(data) || data.iter().all(|b| *b == 0))
}

/// The tag bit of a payload that holds an export request as it arrived.
const WIRE_FLAG: u8 = 0x80;

/// Encodes one batch as a complete WAL record (header included).
pub(crate) fn encode_record(signal: Signal, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(RECORD_HEADER + 1 + schema::batch_bytes(batch) as usize);
    buf.extend_from_slice(&[0u8; RECORD_HEADER]);
    buf.push(signal.tag());
    {
        let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    seal(buf)
}

/// Encodes an export request, as it arrived, as a complete WAL record: cheaper to log
/// than its rows, and turned into the same rows on replay (see the module docs).
pub(crate) fn encode_wire_record(signal: Signal, wire: &[u8]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(RECORD_HEADER + 1 + wire.len());
    buf.extend_from_slice(&[0u8; RECORD_HEADER]);
    buf.push(signal.tag() | WIRE_FLAG);
    buf.extend_from_slice(wire);
    seal(buf)
}

/// Fills in the header of a record whose payload follows it in `buf`.
fn seal(mut buf: Vec<u8>) -> Result<Vec<u8>> {
    let payload_len = u32::try_from(buf.len() - RECORD_HEADER).map_err(|_| {
        Error::Arrow(arrow::error::ArrowError::InvalidArgumentError(
            "one export is larger than 4 GiB and cannot be logged".into(),
        ))
    })?;
    let len = payload_len.to_le_bytes();
    let crc = record_crc(len, &buf[RECORD_HEADER..]);
    buf[0..4].copy_from_slice(RECORD_MAGIC);
    buf[4..8].copy_from_slice(&len);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

fn record_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// The payload and whole length of the intact format-2 record at the start of `rest`.
fn intact_record(rest: &[u8]) -> Option<(&[u8], usize)> {
    if rest.len() < RECORD_HEADER || &rest[..4] != RECORD_MAGIC {
        return None;
    }
    let len: [u8; 4] = rest[4..8].try_into().ok()?;
    let crc = u32::from_le_bytes(rest[8..12].try_into().ok()?);
    let end = RECORD_HEADER.checked_add(u32::from_le_bytes(len) as usize)?;
    let payload = rest.get(RECORD_HEADER..end)?;
    (record_crc(len, payload) == crc).then_some((payload, end))
}

/// The offset of the next intact format-2 record at or after `from`.
fn next_intact(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER <= data.len() {
        let found = data[at..]
            .windows(RECORD_MAGIC.len())
            .position(|w| w == RECORD_MAGIC)?;
        at += found;
        if intact_record(&data[at..]).is_some() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Why a payload could not be decoded.
enum Undecodable {
    /// The bytes are damaged: the record is skipped.
    Damaged(String),
    /// The record holds a request as it arrived and no decoder was given: replay stops.
    NoDecoder(Signal),
}

/// Decodes a record payload (tag + IPC stream, or tag + request) into its signal and
/// rows.
fn decode_payload(
    payload: &[u8],
    decoder: Option<crate::WireDecoder>,
) -> std::result::Result<(Signal, Vec<RecordBatch>), Undecodable> {
    let (&tag, body) = payload
        .split_first()
        .ok_or_else(|| Undecodable::Damaged("empty payload".into()))?;
    let signal = Signal::from_tag(tag & !WIRE_FLAG)
        .ok_or_else(|| Undecodable::Damaged(format!("unknown signal tag {tag}")))?;
    if tag & WIRE_FLAG != 0 {
        let decode = decoder.ok_or(Undecodable::NoDecoder(signal))?;
        return decode(signal, body)
            .map(|batch| (signal, vec![batch]))
            .map_err(Undecodable::Damaged);
    }
    decode_ipc(signal, body).map_err(Undecodable::Damaged)
}

/// The rows of an Arrow IPC stream.
fn decode_ipc(
    signal: Signal,
    ipc: &[u8],
) -> std::result::Result<(Signal, Vec<RecordBatch>), String> {
    let reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(|e| e.to_string())?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((signal, batches))
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Rows by signal, in log order.
    pub batches: Vec<(Signal, RecordBatch)>,
    /// Damaged stretches or undecodable records that intact records followed.
    pub corrupt: usize,
    /// Whether the segment ended in damaged bytes (a torn write).
    pub torn: bool,
    /// Records skipped in all: `corrupt`, plus one for a torn tail.
    pub skipped: usize,
    /// Intact records read after the first damaged one.
    pub recovered: usize,
    /// The segment's format.
    pub format: u32,
    /// Turns records holding a request as it arrived back into rows.
    decoder: Option<crate::WireDecoder>,
}

impl Replayed {
    fn decode(&mut self, payload: &[u8], offset: usize, path: &Path) -> Result<()> {
        match decode_payload(payload, self.decoder) {
            Ok((signal, batches)) => {
                for batch in batches {
                    let batch = schema::conform(signal, batch).map_err(|message| {
                        Error::WalFormat {
                            path: path.to_path_buf(),
                            message: format!(
                                "holds {signal} rows that cannot be converted to this version's schema ({message})"
                            ),
                        }
                    })?;
                    self.batches.push((signal, batch));
                }
                if self.skipped > 0 {
                    self.recovered += 1;
                }
            }
            Err(Undecodable::NoDecoder(signal)) => {
                return Err(Error::WalFormat {
                    path: path.to_path_buf(),
                    message: format!(
                        "holds {signal} exports logged as they arrived (OTLP protobuf), which only a store opened with a decoder (the server) can replay"
                    ),
                });
            }
            Err(Undecodable::Damaged(error)) => {
                tracing::debug!(path = %path.display(), offset, %error, "WAL record cannot be decoded.");
                self.corrupt += 1;
                self.skipped += 1;
            }
        }
        Ok(())
    }
}

/// Reads every intact record of a segment (see the module documentation).
///
/// # Errors
/// When the file cannot be read, was written in a format this version does not know, or
/// holds rows that cannot be converted to today's schema.
pub(crate) fn replay(
    path: &Path,
    data: &[u8],
    decoder: Option<crate::WireDecoder>,
) -> Result<Replayed> {
    if is_unfinished_header(data) {
        return Ok(Replayed {
            format: FORMAT,
            ..Replayed::default()
        });
    }
    if !data.starts_with(FILE_MAGIC) {
        return replay_legacy(path, data);
    }
    let word = |at: usize| {
        data.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let (format, schema_version) = (word(8), word(12));
    if format != FORMAT || schema_version > schema::SCHEMA_VERSION {
        return Err(Error::WalFormat {
            path: path.to_path_buf(),
            message: format!(
                "was written in WAL format {format} with schema {schema_version}, which this version (format {FORMAT}, schema {}) cannot read; start the version that wrote it to flush it, or move the segment out of the wal directory",
                schema::SCHEMA_VERSION
            ),
        });
    }
    let mut out = Replayed {
        format,
        decoder,
        ..Replayed::default()
    };
    let mut pos = FILE_HEADER;
    while pos < data.len() {
        if let Some((payload, len)) = intact_record(&data[pos..]) {
            out.decode(payload, pos, path)?;
            pos += len;
            continue;
        }
        if data[pos..].iter().all(|b| *b == 0) {
            break;
        }
        match next_intact(data, pos + 1) {
            Some(next) => {
                out.corrupt += 1;
                out.skipped += 1;
                pos = next;
            }
            None => {
                out.torn = true;
                out.skipped += 1;
                break;
            }
        }
    }
    Ok(out)
}

/// Replays a format-1 segment: records until the first damaged one.
fn replay_legacy(path: &Path, data: &[u8]) -> Result<Replayed> {
    let mut out = Replayed {
        format: 1,
        ..Replayed::default()
    };
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let intact = rest.get(..LEGACY_HEADER).and_then(|h| {
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let payload = rest.get(LEGACY_HEADER..LEGACY_HEADER.checked_add(len)?)?;
            (crc32fast::hash(payload) == crc).then_some((payload, len))
        });
        let Some((payload, len)) = intact else {
            out.torn = true;
            out.skipped += 1;
            break;
        };
        out.decode(payload, pos, path)?;
        pos += LEGACY_HEADER + len;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A format-1 record, as versions before the segment header wrote them.
    pub(crate) fn legacy_record(signal: Signal, batch: &RecordBatch) -> Vec<u8> {
        let mut payload = vec![signal.tag()];
        {
            let mut writer = StreamWriter::try_new(&mut payload, &batch.schema()).unwrap();
            writer.write(batch).unwrap();
            writer.finish().unwrap();
        }
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }
}
