//! Open formats: the Parquet files the server writes are read by an independent reader.

use std::collections::BTreeSet;
use std::fs::File;

use arrow::array::AsArray;
use arrow::datatypes::TimestampNanosecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use prost::Message;

use crate::support::{Server, otlp, parquet_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_parquet_files_are_read_by_the_parquet_crate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let base = 1_764_000_000_000_000_000u64;
    let spans: Vec<_> = (1..=300u64)
        .map(|i| {
            let mut s = otlp::span(
                vec![9; 16],
                i.to_be_bytes().to_vec(),
                &format!("op-{}", i % 7),
            );
            // Distinct times, so that a reader mixing up rows or times is caught.
            s.start_time_unix_nano = base + i * 1_000_003;
            s.end_time_unix_nano = s.start_time_unix_nano + 500;
            s
        })
        .collect();
    // (span id, start time in ns, name) of every span sent.
    let sent: BTreeSet<(String, i64, String)> = (1..=300u64)
        .map(|i| {
            (
                hex::encode(i.to_be_bytes()),
                (base + i * 1_000_003) as i64,
                format!("op-{}", i % 7),
            )
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(otlp::traces("files", spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A clean shutdown flushes the head to Parquet.
    assert!(server.terminate().success());

    let files = parquet_files(&dir.path().join("spans"));
    assert!(!files.is_empty(), "a flush wrote files");
    let mut read = BTreeSet::new();
    let mut rows = 0;
    for path in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let schema = reader.schema().clone();
        for col in ["trace_id", "span_id", "start_time", "attributes", "events"] {
            assert!(
                schema.field_with_name(col).is_ok(),
                "{col} in {}",
                path.display()
            );
        }
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            rows += batch.num_rows();
            let ids = batch.column_by_name("span_id").unwrap().as_string::<i32>();
            let names = batch.column_by_name("name").unwrap().as_string::<i32>();
            let times = batch
                .column_by_name("start_time")
                .unwrap()
                .as_primitive::<TimestampNanosecondType>();
            for i in 0..batch.num_rows() {
                read.insert((
                    ids.value(i).to_string(),
                    times.value(i),
                    names.value(i).to_string(),
                ));
            }
        }
        // Plain files: zstd, sorted, with a bloom filter on trace_id.
        let meta = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let rg = meta.metadata().row_group(0);
        let trace_col = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "trace_id")
            .unwrap();
        assert!(
            trace_col.bloom_filter_offset().is_some(),
            "bloom filter on trace_id"
        );
        assert!(format!("{:?}", trace_col.compression()).starts_with("ZSTD"));
    }
    assert_eq!(rows, 300);
    assert_eq!(read, sent, "the parquet crate reads back the spans sent");

    // DuckDB and pyarrow, as users query the files without Periscope.
    let glob = format!("{}/spans/*/*/*.parquet", dir.path().display());
    let spans_dir = dir.path().join("spans");
    let script = format!(
        r#"import duckdb, pyarrow as pa, pyarrow.dataset as ds
r = duckdb.sql("SELECT count(*), count(DISTINCT span_id), count(*) FILTER (WHERE map_extract(attributes, 'http.route')[1] = '/cart') FROM read_parquet('{glob}')").fetchall()[0]
print(r[0], r[1], r[2], ds.dataset('{spans}', format='parquet').count_rows())
for row in duckdb.sql("SELECT span_id, epoch_ns(start_time), name FROM read_parquet('{glob}')").fetchall():
    print('duckdb', *row)
t = ds.dataset('{spans}', format='parquet').to_table(columns=['span_id', 'start_time', 'name'])
times = t.column('start_time').cast(pa.int64()).to_pylist()
for s, ts, n in zip(t.column('span_id').to_pylist(), times, t.column('name').to_pylist()):
    print('pyarrow', s, ts, n)
"#,
        spans = spans_dir.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("300 300 300 300"));
    // Each reader gives back exactly the ids, times and names sent.
    for reader in ["duckdb", "pyarrow"] {
        let got: BTreeSet<(String, i64, String)> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(reader).map(str::trim))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 3, "{reader}: {l:?}");
                (
                    f[0].to_string(),
                    f[1].parse().expect("ns"),
                    f[2].to_string(),
                )
            })
            .collect();
        assert_eq!(got, sent, "{reader} reads back the spans sent");
    }

    // After a restart the rows are read from the files, once.
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.scalar("SELECT count(*) FROM spans").await, 300);
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM spans WHERE name = 'op-3'")
            .await,
        43
    );
}
