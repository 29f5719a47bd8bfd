//! Open formats: the Parquet files the server writes are read by an independent reader.

use std::fs::File;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use prost::Message;

use crate::support::{Server, otlp, parquet_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_parquet_files_are_read_by_the_parquet_crate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let spans: Vec<_> = (1..=300u64)
        .map(|i| {
            otlp::span(
                vec![9; 16],
                i.to_be_bytes().to_vec(),
                &format!("op-{}", i % 7),
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
            rows += batch.unwrap().num_rows();
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

    // DuckDB and pyarrow, as users query the files without Periscope.
    let glob = format!("{}/spans/*/*/*.parquet", dir.path().display());
    let script = format!(
        "import duckdb, pyarrow.dataset as ds\n\
         r = duckdb.sql(\"SELECT count(*), count(DISTINCT span_id), \
             count(*) FILTER (WHERE map_extract(attributes, 'http.route')[1] = '/cart') \
             FROM read_parquet('{glob}')\").fetchall()[0]\n\
         print(r[0], r[1], r[2], ds.dataset('{}', format='parquet').count_rows())\n",
        dir.path().join("spans").display()
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
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "300 300 300 300"
    );

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
