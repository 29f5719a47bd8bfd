//! A query engine over an empty store, shared by the PromQL and SQL targets.
use std::sync::OnceLock;

use periscope_query::{QueryConfig, QueryEngine};
use periscope_storage::{Store, StoreConfig};

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub engine: QueryEngine,
    _dir: tempfile::TempDir,
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = rt.block_on(async {
            let store = Store::open(StoreConfig::new(dir.path())).expect("store");
            QueryEngine::new(store, QueryConfig::default()).expect("engine")
        });
        Env { rt, engine, _dir: dir }
    })
}
