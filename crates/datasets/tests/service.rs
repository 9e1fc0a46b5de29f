//! The datasets service over a real SQLite file (or the PostgreSQL server named by
//! `TRAINYARD_TEST_DATABASE_URL`, a fresh database per test) and a real blob folder: the
//! two-phase commit, its refusals, and what a job's token may add to.

use bytes::Bytes;
use trainyard_data::{
    Column, ColumnType, DataError, Field, Lineage, Manifest, ShardSink, Table, VersionWriter,
};
use trainyard_datasets::{Caller, DatasetError, Datasets};
use trainyard_store::Store;

async fn open() -> (Datasets, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db_url = match std::env::var("TRAINYARD_TEST_DATABASE_URL") {
        Ok(admin) => {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            let name = format!("ty_datasets_{}", trainyard_core::new_id());
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
        Err(_) => trainyard_store::Db::sqlite_url(&dir.path().join("t.db")),
    };
    let blobs = format!("file://{}", dir.path().join("blobs").display());
    let store = Store::open(&db_url, &blobs).await.unwrap();
    let datasets = Datasets::new(store.db.clone(), store.blobs.clone());
    (datasets, store, dir)
}

/// Collects the shards a writer makes, to upload them as a client would.
#[derive(Default)]
struct Shards(Vec<(String, Vec<u8>)>);

impl ShardSink for Shards {
    fn put(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), DataError> {
        self.0.push((sha256.to_string(), bytes));
        Ok(())
    }
}

fn version(values: Vec<i64>) -> (Manifest, Shards) {
    let schema = vec![Field::new("x", ColumnType::Int64)];
    let mut shards = Shards::default();
    let mut writer = VersionWriter::new(schema.clone(), 2);
    writer
        .push(
            Table::new(schema, vec![Column::Int64(values)]).unwrap(),
            &mut shards,
        )
        .unwrap();
    let manifest = writer.finish(Lineage::default(), &mut shards).unwrap();
    (manifest, shards)
}

fn body(bytes: Vec<u8>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter([Ok(Bytes::from(bytes))])
}

const ALICE: Caller<'static> = Caller {
    name: "alice",
    is_job: false,
};

#[tokio::test]
async fn a_version_exists_only_once_every_shard_is_stored() {
    let (datasets, _store, _dir) = open().await;
    let (manifest, shards) = version(vec![1, 2, 3, 4, 5]);
    assert!(shards.0.len() >= 2, "several shards");
    let json = serde_json::to_value(&manifest).unwrap();

    let missing = datasets.commit(&ALICE, "numbers", json.clone()).await;
    assert!(
        matches!(missing, Err(DatasetError::ShardMissing { index: 0, .. })),
        "{missing:?}"
    );
    assert!(matches!(
        datasets.versions("numbers").await,
        Err(DatasetError::NotFound(_))
    ));

    for (sha, bytes) in &shards.0 {
        datasets.put_shard(sha, body(bytes.clone())).await.unwrap();
        assert!(datasets.has_shard(sha).await.unwrap());
        assert_eq!(datasets.get_shard(sha).await.unwrap(), bytes.as_slice());
    }
    let created = datasets
        .commit(&ALICE, "numbers", json.clone())
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.version, manifest.version_id());
    let again = datasets.commit(&ALICE, "numbers", json).await.unwrap();
    assert!(!again.created, "the same content is the same version");

    let latest = datasets.version("numbers", "latest").await.unwrap();
    assert_eq!(latest.rows, 5);
    assert_eq!(
        latest.reference(),
        format!("numbers:{}", manifest.version_id())
    );
    let read: Manifest = latest.manifest_as().unwrap();
    assert_eq!(read.version_id(), manifest.version_id());
    assert_eq!(datasets.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_uploads_and_manifests_are_refused_by_field_and_leave_nothing() {
    let (datasets, _store, dir) = open().await;
    let (manifest, shards) = version(vec![7, 8]);
    let (sha, bytes) = shards.0[0].clone();

    let wrong = datasets
        .put_shard(&"0".repeat(64), body(bytes.clone()))
        .await;
    assert!(
        matches!(wrong, Err(DatasetError::ChecksumMismatch { .. })),
        "{wrong:?}"
    );
    let garbage = b"not a shard at all".to_vec();
    let garbage_sha = trainyard_data::sha256_hex(&garbage);
    let refused = datasets.put_shard(&garbage_sha, body(garbage)).await;
    assert!(
        matches!(refused, Err(DatasetError::Invalid { ref field, .. }) if field == "body"),
        "{refused:?}"
    );
    let bad_sha = datasets
        .put_shard("../../etc/passwd", body(bytes.clone()))
        .await;
    assert!(matches!(bad_sha, Err(DatasetError::Invalid { ref field, .. }) if field == "sha256"));
    let staged = std::fs::read_dir(dir.path().join("blobs/datasets/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "refused uploads leave nothing staged");
    assert!(!datasets.has_shard(&sha).await.unwrap());

    let json = serde_json::to_value(&manifest).unwrap();
    for (name, field) in [("", "name"), (".hidden", "name"), ("a/b", "name")] {
        let r = datasets.commit(&ALICE, name, json.clone()).await;
        assert!(
            matches!(r, Err(DatasetError::Invalid { field: ref f, .. }) if f == field),
            "{name}: {r:?}"
        );
    }
    let mut lying = json.clone();
    lying["rows"] = serde_json::json!(3);
    let r = datasets.commit(&ALICE, "n", lying).await;
    assert!(matches!(r, Err(DatasetError::Invalid { ref field, .. }) if field == "manifest.rows"));
    let mut overflow = json.clone();
    overflow["shards"][0]["rows"] = serde_json::json!(u64::MAX);
    let r = datasets.commit(&ALICE, "n", overflow).await;
    assert!(matches!(r, Err(DatasetError::Invalid { ref field, .. }) if field == "manifest.rows"));
    let mut bad_digest = json.clone();
    bad_digest["shards"][0]["sha256"] = serde_json::json!("../x");
    let r = datasets.commit(&ALICE, "n", bad_digest).await;
    assert!(
        matches!(r, Err(DatasetError::Invalid { ref field, .. }) if field == "manifest.shards[0].sha256"),
        "{r:?}"
    );
    let r = datasets
        .commit(&ALICE, "n", serde_json::json!({"rows": "x"}))
        .await;
    assert!(matches!(r, Err(DatasetError::Invalid { ref field, .. }) if field == "manifest"));
}

#[tokio::test]
async fn a_job_adds_versions_only_to_datasets_it_created() {
    let (datasets, _store, _dir) = open().await;
    let (first, shards) = version(vec![1]);
    let (second, more) = version(vec![2]);
    for (sha, bytes) in shards.0.iter().chain(&more.0) {
        datasets.put_shard(sha, body(bytes.clone())).await.unwrap();
    }
    let job = Caller {
        name: "job:abc",
        is_job: true,
    };
    datasets
        .commit(&ALICE, "shared", serde_json::to_value(&first).unwrap())
        .await
        .unwrap();
    let r = datasets
        .commit(&job, "shared", serde_json::to_value(&second).unwrap())
        .await;
    assert!(
        matches!(r, Err(DatasetError::Forbidden { ref field, .. }) if field == "name"),
        "{r:?}"
    );
    assert_eq!(datasets.versions("shared").await.unwrap().len(), 1);
    // Its own output, under a new name, twice: fine.
    for m in [&first, &second] {
        datasets
            .commit(&job, "job-output", serde_json::to_value(m).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(datasets.versions("job-output").await.unwrap().len(), 2);
}

/// What a commit gets for `json`: the refused field, or `ok` for a stored version.
async fn refused_field(datasets: &Datasets, name: &str, json: serde_json::Value) -> String {
    match datasets.commit(&ALICE, name, json).await {
        Ok(_) => "ok".into(),
        Err(DatasetError::Invalid { field, .. }) => field,
        Err(e) => format!("{e:?}"),
    }
}

/// A manifest is the client's word: a commit reads each named shard's header and refuses a
/// manifest whose rows, bytes or columns are not the shard's (found by an adversarial
/// probe: such versions were stored, then failed every read with `shard_unreadable`), or
/// whose declared shape overflows (that panicked the handler).
#[tokio::test]
async fn a_manifest_must_agree_with_the_shards_it_names() {
    let (datasets, store, dir) = open().await;
    let schema = vec![
        Field::new("a", ColumnType::Int64),
        Field::new("s", ColumnType::String),
    ];
    let table = Table::new(
        schema.clone(),
        vec![
            Column::Int64(vec![1, 2, 3]),
            Column::String(vec!["x".into(), "y".into(), "z".into()]),
        ],
    )
    .unwrap();
    let mut shards = Shards::default();
    let mut writer = VersionWriter::new(schema, 0);
    writer.push(table, &mut shards).unwrap();
    let manifest = writer.finish(Lineage::default(), &mut shards).unwrap();
    let (sha, bytes) = shards.0[0].clone();
    datasets.put_shard(&sha, body(bytes)).await.unwrap();
    let good = serde_json::to_value(&manifest).unwrap();

    let lie = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut m = good.clone();
        edit(&mut m);
        m
    };
    let max = u32::MAX;
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            lie(&|m| {
                m["rows"] = 1000.into();
                m["shards"][0]["rows"] = 1000.into();
            }),
            "manifest.shards[0].rows",
        ),
        (
            lie(&|m| {
                m["rows"] = i64::MAX.into();
                m["shards"][0]["rows"] = i64::MAX.into();
            }),
            "manifest.shards[0].rows",
        ),
        (
            lie(&|m| m["shards"][0]["bytes"] = 1.into()),
            "manifest.shards[0].bytes",
        ),
        (
            lie(&|m| m["schema"][0]["type"] = "string".into()),
            "manifest.schema[0].type",
        ),
        (
            lie(&|m| m["schema"][1] = serde_json::json!({"name": "s", "type": "int64"})),
            "manifest.schema[1].type",
        ),
        (
            lie(&|m| {
                m["schema"][0]["name"] = "b".into();
                m["stats"] = serde_json::json!({});
            }),
            "manifest.schema[0].name",
        ),
        (
            lie(&|m| {
                m["schema"].as_array_mut().unwrap().pop();
                m["stats"] = serde_json::json!({});
            }),
            "manifest.schema",
        ),
        (
            lie(&|m| {
                m["schema"][1] =
                    serde_json::json!({"name": "x", "type": "float32", "shape": [max, max, max]});
                m["stats"] = serde_json::json!({});
            }),
            "manifest.schema[1].shape",
        ),
    ];
    for (json, field) in cases {
        assert_eq!(
            refused_field(&datasets, "lies", json.clone()).await,
            field,
            "{json}"
        );
    }
    assert!(matches!(
        datasets.versions("lies").await,
        Err(DatasetError::NotFound(_))
    ));

    // The same shard named twice, as repeated content makes it: a valid version, read whole.
    let (repeated, shards) = version(vec![7, 7, 7, 7, 7]);
    assert_eq!(repeated.shards[0].sha256, repeated.shards[1].sha256);
    for (sha, bytes) in &shards.0 {
        datasets.put_shard(sha, body(bytes.clone())).await.unwrap();
    }
    let json = serde_json::to_value(&repeated).unwrap();
    assert_eq!(refused_field(&datasets, "sevens", json.clone()).await, "ok");
    let (_, head) = datasets.head("sevens", "latest", 10).await.unwrap();
    assert_eq!(head.rows(), 5);
    // ... but each mention is held to the shard: a repeat that claims other rows is refused.
    let mut m = json;
    m["shards"][1]["rows"] = 1.into();
    m["rows"] = 4.into();
    assert_eq!(
        refused_field(&datasets, "sevens", m).await,
        "manifest.shards[1].rows"
    );

    // Bytes in the store that were never a shard (put there by hand): refused as unreadable.
    let planted = b"TYSHARD1\x02\x00\x00\x00{}".to_vec();
    let planted_sha = trainyard_data::sha256_hex(&planted);
    let path = dir.path().join("blobs/datasets/shards");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join(&planted_sha), &planted).unwrap();
    store
        .db
        .record_shard("default", &planted_sha)
        .await
        .unwrap();
    let mut m = good.clone();
    m["shards"][0]["sha256"] = planted_sha.clone().into();
    let r = datasets.commit(&ALICE, "planted", m).await;
    assert!(
        matches!(r, Err(DatasetError::Unreadable { ref sha256, .. }) if *sha256 == planted_sha),
        "{r:?}"
    );

    assert_eq!(refused_field(&datasets, "honest", good).await, "ok");
}
