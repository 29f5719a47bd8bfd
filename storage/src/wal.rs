//! The write-ahead log: checksummed records in numbered segment files.
//!
//! A record is `len: u32 LE | crc32: u32 LE | payload`, where the payload is a one-byte
//! signal tag followed by one Arrow IPC stream holding the rows of one export. Records
//! are appended by a single writer thread that groups every record waiting in its queue
//! into one write and one `fdatasync` (group commit); an export is acknowledged only
//! after the fsync of its group returned.
//!
//! Segments are named `{id:012}.wal`. The writer starts a new segment at every flush of
//! the head, so a segment whose rows are all in Parquet files can be deleted whole. On
//! start-up every segment newer than the catalog's `flushed_upto` is replayed; a record
//! that is cut short or fails its checksum (a write torn by a crash) ends the replay of
//! its segment with a warning, never a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use tracing::warn;

use crate::error::{Error, Result};
use crate::schema::Signal;

const HEADER: usize = 8;

/// Encodes one batch as a complete WAL record (header included).
pub(crate) fn encode_record(signal: Signal, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(HEADER + 1 + batch.get_array_memory_size() / 2);
    buf.extend_from_slice(&[0u8; HEADER]);
    buf.push(signal.tag());
    {
        let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let payload_len = u32::try_from(buf.len() - HEADER).map_err(|_| {
        Error::Arrow(arrow::error::ArrowError::InvalidArgumentError(
            "one export is larger than 4 GiB and cannot be logged".into(),
        ))
    })?;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Decodes a record payload (tag + IPC stream) back into its signal and rows.
fn decode_payload(payload: &[u8]) -> std::result::Result<(Signal, Vec<RecordBatch>), String> {
    let (&tag, ipc) = payload.split_first().ok_or("empty payload")?;
    let signal = Signal::from_tag(tag).ok_or_else(|| format!("unknown signal tag {tag}"))?;
    let reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(|e| e.to_string())?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((signal, batches))
}

/// Path of segment `id` in `dir`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}.wal"))
}

/// The ids of all segments in `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes a directory entry (a new or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Rows by signal, in log order.
    pub batches: Vec<(Signal, RecordBatch)>,
    /// Records that were skipped because they were torn or corrupt.
    pub skipped: usize,
}

/// Reads every intact record of a segment.
pub(crate) fn replay_segment(path: &Path) -> Result<Replayed> {
    let data = fs::read(path).map_err(Error::io("read WAL segment", path))?;
    let mut out = Replayed::default();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < HEADER {
            warn!(path = %path.display(), offset = pos, "Torn WAL record header at the end of a segment, skipping it.");
            out.skipped += 1;
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            warn!(path = %path.display(), offset = pos, len, "Torn WAL record at the end of a segment, skipping it.");
            out.skipped += 1;
            break;
        };
        if crc32fast::hash(payload) != crc {
            warn!(path = %path.display(), offset = pos, "WAL record fails its checksum, skipping the rest of the segment.");
            out.skipped += 1;
            break;
        }
        match decode_payload(payload) {
            Ok((signal, batches)) => {
                out.batches.extend(batches.into_iter().map(|b| (signal, b)));
            }
            Err(error) => {
                warn!(path = %path.display(), offset = pos, %error, "WAL record cannot be decoded, skipping it.");
                out.skipped += 1;
            }
        }
        pos += HEADER + len;
    }
    Ok(out)
}

/// The segment being appended to.
pub(crate) struct Segment {
    dir: PathBuf,
    id: u64,
    file: File,
    len: u64,
}

impl Segment {
    /// Creates segment `id` (which must not exist yet) and makes its entry durable.
    pub fn create(dir: &Path, id: u64) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("create WAL segment", &path))?;
        sync_dir(dir)?;
        Ok(Segment {
            dir: dir.to_path_buf(),
            id,
            file,
            len: 0,
        })
    }

    /// This segment's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Writes `data` (whole records) and fsyncs. On failure the segment is cut back to its
    /// previous length, so a later replay never sees a half-written, unacknowledged group.
    pub fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        let path = segment_path(&self.dir, self.id);
        let result = self
            .file
            .write_all(data)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += data.len() as u64;
                Ok(())
            }
            Err(source) => {
                if let Err(error) = self.file.set_len(self.len) {
                    warn!(%error, path = %path.display(), "Could not cut a failed WAL write back.");
                }
                Err(Error::Io {
                    op: "append to WAL segment",
                    path,
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("b", arrow::datatypes::DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![n, n + 1])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 1).unwrap();
        let r1 = encode_record(Signal::Spans, &batch(1)).unwrap();
        let r2 = encode_record(Signal::Logs, &batch(10)).unwrap();
        seg.append_durable(&r1).unwrap();
        seg.append_durable(&r2).unwrap();
        // A third record torn halfway by a crash.
        let r3 = encode_record(Signal::Metrics, &batch(100)).unwrap();
        seg.append_durable(&r3[..r3.len() / 2]).unwrap();

        let out = replay_segment(&segment_path(dir.path(), 1)).unwrap();
        assert_eq!(out.skipped, 1);
        assert_eq!(out.batches.len(), 2);
        assert_eq!(out.batches[0].0, Signal::Spans);
        assert_eq!(out.batches[0].1, batch(1));
        assert_eq!(out.batches[1].0, Signal::Logs);
        assert_eq!(out.batches[1].1, batch(10));
    }

    #[test]
    fn a_corrupt_record_stops_replay_of_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 7).unwrap();
        let mut r1 = encode_record(Signal::Spans, &batch(1)).unwrap();
        let last = r1.len() - 1;
        r1[last] ^= 0xff;
        seg.append_durable(&r1).unwrap();
        let out = replay_segment(&segment_path(dir.path(), 7)).unwrap();
        assert_eq!(out.batches.len(), 0);
        assert_eq!(out.skipped, 1);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
    }

    proptest::proptest! {
        #[test]
        fn any_truncation_replays_a_prefix(cut in 0usize..2000) {
            let dir = tempfile::tempdir().unwrap();
            let mut seg = Segment::create(dir.path(), 1).unwrap();
            let mut all = Vec::new();
            for i in 0..5 {
                all.extend(encode_record(Signal::Spans, &batch(i)).unwrap());
            }
            let cut = cut.min(all.len());
            seg.append_durable(&all[..cut]).unwrap();
            let out = replay_segment(&segment_path(dir.path(), 1)).unwrap();
            for (i, (_, b)) in out.batches.iter().enumerate() {
                proptest::prop_assert_eq!(b, &batch(i as i64));
            }
        }
    }
}
