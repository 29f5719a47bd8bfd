//! A full disk, for real: the data directory on a small tmpfs. Ingest answers 503 with
//! Retry-After, queries keep working, nothing acknowledged is lost or corrupted (not
//! even by a `kill -9` after WAL writes failed), ingest resumes by itself when space
//! returns, and retention frees space on a disk that is 100 % full.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;

use crate::support::{Server, eventually, otlp, parquet_files};

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the disk-full test needs to mount a small tmpfs (root or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` until a write fails with "no space", leaving `keep`
/// bytes free by truncating back.
fn fill(path: &Path, keep: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
    f.set_len(written.saturating_sub(keep))
        .expect("truncate filler");
    f.sync_all().expect("sync filler");
}

/// Fills the file system of `path` to the last byte it takes.
fn fill_completely(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    for size in [64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
}

/// Spans per batch stored, by batch number (the first 8 bytes of the trace id).
async fn spans_by_batch(server: &Server) -> BTreeMap<u64, i64> {
    server
        .rows("SELECT substr(trace_id, 1, 16), count(DISTINCT span_id) FROM spans GROUP BY 1")
        .await
        .into_iter()
        .map(|r| {
            let batch = u64::from_str_radix(r[0].as_str().expect("hex"), 16).expect("batch");
            (batch, r[1].as_i64().expect("count"))
        })
        .collect()
}

fn export(batch: u64) -> Vec<u8> {
    let padding = "p".repeat(2048);
    let spans = (0..100u64)
        .map(|i| {
            let mut s = otlp::span(
                [batch.to_be_bytes(), (i + 1).to_be_bytes()].concat(),
                (i + 1).to_be_bytes().to_vec(),
                "disk",
            );
            s.attributes.push(otlp::kv("padding", &padding));
            s
        })
        .collect();
    otlp::traces("disk-full", spans).encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_keeps_queries_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).expect("mkdir");
    let _tmpfs = Tmpfs::mount(&mount, "16m");
    let data = mount.join("data");
    let mut server = Server::start(&data, &["--flush-interval", "500ms"]);
    let http = reqwest::Client::new();
    let post = |batch: u64| {
        http.post(format!("{}/v1/traces", server.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .body(export(batch))
            .send()
    };

    // Some rows in while there is space.
    let mut acked = 0u64;
    let mut acked_batches = Vec::new();
    let mut batch = 1u64;
    for _ in 0..5 {
        let r = post(batch).await.expect("post");
        assert_eq!(r.status(), 200);
        acked += 100;
        acked_batches.push(batch);
        batch += 1;
    }

    // Fill the disk, leaving 64 KiB: exports get 503 with Retry-After.
    let filler = mount.join("filler");
    fill(&filler, 64 << 10);
    let mut refused = None;
    for _ in 0..50 {
        let r = post(batch).await.expect("post");
        batch += 1;
        match r.status().as_u16() {
            200 => {
                acked += 100;
                acked_batches.push(batch - 1);
            }
            503 => {
                refused = Some(r.headers().get("retry-after").cloned());
                break;
            }
            other => panic!(
                "a full disk must answer 503, not {other}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    let retry_after = refused.expect("exports were refused once the disk filled");
    assert!(retry_after.is_some(), "503 carries Retry-After");

    // Queries keep working and see exactly what was acknowledged.
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans").await,
        acked as i64
    );
    let health = reqwest::get(format!("{}/healthz", server.api()))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    // Space returns: ingest resumes by itself.
    std::fs::remove_file(&filler).expect("free space");
    eventually("ingest to resume", 30, || async {
        let r = post(batch).await.expect("post");
        (r.status() == 200).then_some(())
    })
    .await;
    acked += 100;
    acked_batches.push(batch);
    batch += 1;
    // More acknowledged writes after the refused ones, then a crash: the WAL written
    // around the failed writes is replayed, not a clean shutdown's flushed files.
    for _ in 0..3 {
        let r = post(batch).await.expect("post");
        assert_eq!(r.status(), 200);
        acked += 100;
        acked_batches.push(batch);
        batch += 1;
    }
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans").await,
        acked as i64
    );
    server.kill9();

    // Nothing stored is corrupted: after a restart every acknowledged row is there once.
    let server = Server::start(&data, &[]);
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans").await,
        acked as i64
    );
    let stored = spans_by_batch(&server).await;
    let expected: BTreeMap<u64, i64> = acked_batches.iter().map(|b| (*b, 100)).collect();
    assert_eq!(stored, expected, "every acknowledged span, each once");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_frees_space_on_a_disk_that_is_completely_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).expect("mkdir");
    let _tmpfs = Tmpfs::mount(&mount, "16m");
    let data = mount.join("data");
    // Spans of a year ago, in files.
    let mut server = Server::start(&data, &[]);
    let http = reqwest::Client::new();
    for batch in 1..=10 {
        let r = http
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .body(export(batch))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
    }
    assert!(server.terminate().success());
    assert!(!parquet_files(&data.join("spans")).is_empty());

    // The disk fills to the last byte; the server starts with a retention that makes
    // every file expire. The catalog write that drops them needs space.
    let filler = mount.join("filler");
    fill_completely(&filler);
    let server = Server::start(
        &data,
        &[
            "--retention-traces",
            "1h",
            "--retention-check-interval",
            "200ms",
            "--query-timeout",
            "1s",
        ],
    );
    eventually("retention to delete the expired files", 60, || async {
        parquet_files(&data.join("spans")).is_empty().then_some(())
    })
    .await;
    assert_eq!(server.scalar("SELECT count(*) FROM spans").await, 0);
    // The space is there again for ingest.
    eventually("ingest to resume", 30, || async {
        let r = http
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .body(export(99))
            .send()
            .await
            .expect("post");
        (r.status() == 200).then_some(())
    })
    .await;
}
