//! The write-ahead log: checksummed records in numbered segment files.
//!
//! A record holds the rows of one export (one Arrow IPC stream, see [`format`]). Records
//! are appended by a single writer thread that groups every record waiting in its queue
//! into one write and one `fdatasync` (group commit); an export is acknowledged only
//! after the fsync of its group returned. A segment whose write or fsync failed is never
//! appended to again (see [`segment`]).
//!
//! Segments are named `{id:012}.wal`. The writer starts a new segment at every flush of
//! the head, so a segment whose rows are all in Parquet files can be deleted whole. On
//! start-up every segment newer than the catalog's `flushed_upto` is replayed. A torn
//! tail is skipped; corruption in the middle of a segment skips only the damaged bytes.
//! A segment that had anything skipped is first linked into `wal/quarantine/`, so the
//! deletion after the next flush never destroys the evidence (or the damaged records,
//! for a repair by hand); an all-zero tail is no damage and ends the segment quietly.

mod format;
mod segment;

use std::fs;
use std::path::{Path, PathBuf};

use crate::durability::sync_dir;
use crate::error::{Error, Result};

#[cfg(test)]
pub(crate) use format::tests::legacy_record;
pub(crate) use format::{FORMAT, Replayed, encode_record, encode_wire_record};
pub(crate) use segment::Log;
#[cfg(test)]
pub(crate) use segment::{Segment, tests::inject_fault};

/// Where segments with skipped records are kept, inside the WAL directory.
pub(crate) const QUARANTINE: &str = "quarantine";

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

/// Reads every intact record of a segment (see [`format`]).
///
/// # Errors
/// When the file cannot be read, is in a format this version cannot read, or holds rows
/// that cannot be converted to today's schema.
pub(crate) fn replay_segment(path: &Path, decoder: Option<crate::WireDecoder>) -> Result<Replayed> {
    let data = fs::read(path).map_err(Error::io("read WAL segment", path))?;
    format::replay(path, &data, decoder)
}

/// Keeps a copy of segment `path` in the quarantine directory beside it (a hard link,
/// so it costs no space while the segment itself exists). Returns the copy's path.
///
/// # Errors
/// When the directory cannot be created or the segment neither linked nor copied.
pub(crate) fn quarantine(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from(QUARANTINE), |p| p.join(QUARANTINE));
    fs::create_dir_all(&dir).map_err(Error::io("create WAL quarantine directory", &dir))?;
    let target = dir.join(path.file_name().unwrap_or_default());
    match fs::hard_link(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => {
            fs::copy(path, &target)
                .map_err(Error::io("copy WAL segment to quarantine", &target))?;
        }
    }
    sync_dir(&dir)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::format::FILE_HEADER;
    use super::*;
    use crate::schema::Signal;
    use arrow::record_batch::RecordBatch;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::io::Write;

    /// Two spans named after `n`.
    fn batch(n: i64) -> RecordBatch {
        let spans = (0..2)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: vec![i + 1; 8],
                name: format!("op{n}"),
                start_time_unix_nano: 1_700_000_000_000_000_000 + n as u64,
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        periscope_otlp::spans(&req).unwrap().batch.unwrap()
    }

    /// A format-2 segment file holding `records` after its header.
    fn segment_with(dir: &Path, id: u64, records: &[Vec<u8>]) -> PathBuf {
        let path = segment_path(dir, id);
        let mut data = format::file_header().to_vec();
        for r in records {
            data.extend_from_slice(r);
        }
        fs::write(&path, data).unwrap();
        path
    }

    fn names(out: &Replayed) -> Vec<String> {
        out.batches
            .iter()
            .map(|(_, b)| {
                arrow::array::AsArray::as_string::<i32>(b.column_by_name("name").unwrap())
                    .value(0)
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new(dir.path(), 0);
        let r1 = encode_record(Signal::Spans, &batch(1)).unwrap();
        let r2 = encode_record(Signal::Spans, &batch(10)).unwrap();
        log.append(&r1).unwrap();
        log.append(&r2).unwrap();
        // A third record torn halfway by a crash.
        let r3 = encode_record(Signal::Metrics, &batch(100)).unwrap();
        log.append(&r3[..r3.len() / 2]).unwrap();

        let out = replay_segment(&segment_path(dir.path(), 1), None).unwrap();
        assert_eq!(out.skipped, 1);
        assert!(out.torn);
        assert_eq!(out.corrupt, 0);
        assert_eq!(out.batches.len(), 2);
        assert_eq!(out.batches[0].0, Signal::Spans);
        assert_eq!(out.batches[0].1, batch(1));
        assert_eq!(out.batches[1].1, batch(10));
    }

    #[test]
    fn corruption_mid_segment_skips_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (1..=4)
            .map(|n| encode_record(Signal::Spans, &batch(n)).unwrap())
            .collect();
        let mut damaged = records.clone();
        let middle = damaged[1].len() / 2;
        damaged[1][middle] ^= 0xff;
        let path = segment_with(dir.path(), 7, &damaged);
        let out = replay_segment(&path, None).unwrap();
        assert_eq!(names(&out), ["op1", "op3", "op4"]);
        assert_eq!((out.corrupt, out.skipped, out.recovered), (1, 1, 2));
        assert!(!out.torn);

        // A damaged length field: the same.
        let mut damaged = records.clone();
        damaged[0][5] ^= 0x7f;
        let path = segment_with(dir.path(), 8, &damaged);
        let out = replay_segment(&path, None).unwrap();
        assert_eq!(names(&out), ["op2", "op3", "op4"]);
        assert_eq!((out.corrupt, out.skipped), (1, 1));
    }

    #[test]
    fn an_all_zero_tail_ends_a_segment_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let r1 = encode_record(Signal::Spans, &batch(1)).unwrap();
        let path = segment_with(dir.path(), 1, &[r1, vec![0; 4096]]);
        let out = replay_segment(&path, None).unwrap();
        assert_eq!(names(&out), ["op1"]);
        assert_eq!((out.skipped, out.corrupt, out.torn), (0, 0, false));
        // A segment of zeros only (its header never reached the disk) is empty.
        fs::write(&path, vec![0u8; 8192]).unwrap();
        let out = replay_segment(&path, None).unwrap();
        assert_eq!((out.batches.len(), out.skipped), (0, 0));
    }

    #[test]
    fn a_segment_of_the_old_format_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 3);
        let mut data = legacy_record(Signal::Spans, &batch(1));
        data.extend(legacy_record(Signal::Spans, &batch(2)));
        fs::write(&path, &data).unwrap();
        let out = replay_segment(&path, None).unwrap();
        assert_eq!(out.format, 1);
        assert_eq!(names(&out), ["op1", "op2"]);
        assert_eq!(out.skipped, 0);
    }

    #[test]
    fn a_segment_of_a_newer_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 3);
        let mut data = format::file_header().to_vec();
        data[8..12].copy_from_slice(&9u32.to_le_bytes());
        data.extend(encode_record(Signal::Spans, &batch(1)).unwrap());
        fs::write(&path, &data).unwrap();
        let error = replay_segment(&path, None).unwrap_err().to_string();
        assert!(error.contains("WAL format 9"), "{error}");
        assert!(error.contains("000000000003.wal"), "{error}");
    }

    #[test]
    fn rows_of_an_older_schema_are_converted_to_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let current = batch(1);
        // Written before `events` existed.
        let keep: Vec<usize> = (0..current.num_columns())
            .filter(|i| current.schema().field(*i).name() != "events")
            .collect();
        let old = current.project(&keep).unwrap();
        let path = segment_with(
            dir.path(),
            1,
            &[encode_record(Signal::Spans, &old).unwrap()],
        );
        let out = replay_segment(&path, None).unwrap();
        let replayed = &out.batches[0].1;
        assert_eq!(replayed.schema(), Signal::Spans.schema());
        assert_eq!(replayed.num_rows(), 2);
        assert_eq!(replayed.column_by_name("events").unwrap().null_count(), 2);
        assert_eq!(
            replayed.column_by_name("name").unwrap(),
            current.column_by_name("name").unwrap()
        );
    }

    #[test]
    fn creating_a_segment_again_after_a_half_failed_creation_works() {
        let dir = tempfile::tempdir().unwrap();
        // A creation that made the file but failed before (or while) writing its header.
        fs::write(segment_path(dir.path(), 5), b"").unwrap();
        Segment::create(dir.path(), 5).unwrap();
        fs::write(segment_path(dir.path(), 6), &format::file_header()[..5]).unwrap();
        Segment::create(dir.path(), 6).unwrap();
        let mut log = Log::new(dir.path(), 6);
        log.append(&encode_record(Signal::Spans, &batch(1)).unwrap())
            .unwrap();
        // A segment with records is never taken over.
        let error = Segment::create(dir.path(), 7).err().unwrap();
        assert!(
            error.to_string().contains("already holds records"),
            "{error}"
        );
        assert_eq!(
            names(&replay_segment(&segment_path(dir.path(), 7), None).unwrap()),
            ["op1"]
        );
    }

    #[test]
    fn after_a_failed_write_the_segment_is_never_appended_to_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new(dir.path(), 0);
        log.append(&encode_record(Signal::Spans, &batch(1)).unwrap())
            .unwrap();
        let first = segment_path(dir.path(), 1);
        inject_fault(&first);
        assert!(
            log.append(&encode_record(Signal::Spans, &batch(2)).unwrap())
                .is_err()
        );
        let garbage_len = fs::metadata(&first).unwrap().len();
        log.append(&encode_record(Signal::Spans, &batch(3)).unwrap())
            .unwrap();
        assert_eq!(fs::metadata(&first).unwrap().len(), garbage_len);
        assert_eq!(list_segments(dir.path()).unwrap(), [1, 2]);
        assert_eq!(names(&replay_segment(&first, None).unwrap()), ["op1"]);
        assert_eq!(
            names(&replay_segment(&segment_path(dir.path(), 2), None).unwrap()),
            ["op3"]
        );
        // A rotation says every segment so far is covered, and starts the next one.
        assert_eq!(log.rotate(), 2);
        assert_eq!(list_segments(dir.path()).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn a_quarantined_segment_outlives_its_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_with(
            dir.path(),
            4,
            &[encode_record(Signal::Spans, &batch(1)).unwrap()],
        );
        let kept = quarantine(&path).unwrap();
        quarantine(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(names(&replay_segment(&kept, None).unwrap()), ["op1"]);
        assert_eq!(list_segments(dir.path()).unwrap(), Vec::<u64>::new());
    }

    proptest::proptest! {
        #[test]
        fn any_truncation_replays_exactly_the_complete_records(cut in proptest::prelude::any::<proptest::sample::Index>()) {
            let dir = tempfile::tempdir().unwrap();
            let mut all = format::file_header().to_vec();
            let mut ends = Vec::new();
            for i in 0..5 {
                all.extend(encode_record(Signal::Spans, &batch(i)).unwrap());
                ends.push(all.len());
            }
            // Every length from empty to whole (untorn) included.
            let cut = cut.index(all.len() + 1);
            let path = segment_path(dir.path(), 1);
            let mut file = fs::File::create(&path).unwrap();
            file.write_all(&all[..cut]).unwrap();
            let out = replay_segment(&path, None).unwrap();
            let complete = ends.iter().filter(|end| **end <= cut).count();
            let torn = cut > FILE_HEADER && !ends.contains(&cut);
            proptest::prop_assert_eq!(out.batches.len(), complete);
            proptest::prop_assert_eq!(out.skipped, usize::from(torn));
            proptest::prop_assert_eq!(out.torn, torn);
            for (i, (_, b)) in out.batches.iter().enumerate() {
                proptest::prop_assert_eq!(b, &batch(i as i64));
            }
        }
    }
}
