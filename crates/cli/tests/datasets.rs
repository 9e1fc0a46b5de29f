//! Dataset commits an adversarial probe made on a live server, performed for real over
//! HTTP: a manifest whose declared shape overflows (it panicked the handler: 500
//! `internal`), manifests whose rows, bytes or columns contradict the shards they name
//! (stored with 201, then every read failed with `shard_unreadable`). Each test passes only
//! when the attack fails with a 4xx naming the field, and the client's own import, repeated
//! shards included, still works.

mod common;

use common::Server;
use serde_json::{json, Value};

/// A one-shard table of 3 rows (`a` int64, `s` string), uploaded; its honest manifest.
async fn uploaded(server: &Server) -> Value {
    let schema = vec![
        trainyard_data::Field::new("a", trainyard_data::ColumnType::Int64),
        trainyard_data::Field::new("s", trainyard_data::ColumnType::String),
    ];
    let table = trainyard_data::Table::new(
        schema,
        vec![
            trainyard_data::Column::Int64(vec![1, 2, 3]),
            trainyard_data::Column::String(vec!["x".into(), "y".into(), "z".into()]),
        ],
    )
    .unwrap();
    server.upload_table(table).await
}

/// POSTs `manifest` as a version of `name`: the status and the JSON body.
async fn commit(server: &Server, name: &str, manifest: &Value) -> (u16, Value) {
    let r = server
        .post(&format!("/api/v1/datasets/{name}/versions"))
        .json(&json!({ "manifest": manifest }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn manifests_that_overflow_or_contradict_their_shards_are_refused_by_field() {
    let server = Server::start().await;
    let good = uploaded(&server).await;
    let lie = |edit: &dyn Fn(&mut Value)| {
        let mut m = good.clone();
        edit(&mut m);
        m
    };
    let max = u32::MAX;
    let attacks: Vec<(&str, Value, &str)> = vec![
        (
            "a declared shape whose product overflows",
            lie(&|m| {
                m["schema"][1] = json!({"name": "x", "type": "float32", "shape": [max, max, max]});
                m["stats"] = json!({});
            }),
            "manifest.schema[1].shape",
        ),
        (
            "1000 rows where the shard holds 3",
            lie(&|m| {
                m["rows"] = 1000.into();
                m["shards"][0]["rows"] = 1000.into();
            }),
            "manifest.shards[0].rows",
        ),
        (
            "2^63-1 rows where the shard holds 3",
            lie(&|m| {
                m["rows"] = i64::MAX.into();
                m["shards"][0]["rows"] = i64::MAX.into();
            }),
            "manifest.shards[0].rows",
        ),
        (
            "int64 declared string",
            lie(&|m| m["schema"][0]["type"] = "string".into()),
            "manifest.schema[0].type",
        ),
        (
            "a column renamed",
            lie(&|m| {
                m["schema"][1]["name"] = "t".into();
                m["stats"] = json!({});
            }),
            "manifest.schema[1].name",
        ),
        (
            "a column left out",
            lie(&|m| {
                m["schema"].as_array_mut().unwrap().pop();
                m["stats"] = json!({});
            }),
            "manifest.schema",
        ),
        (
            "a byte count that is not the shard's",
            lie(&|m| m["shards"][0]["bytes"] = 1.into()),
            "manifest.shards[0].bytes",
        ),
    ];
    for (what, manifest, field) in &attacks {
        let (status, body) = commit(&server, "lies", manifest).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{what}: {body}");
        assert_eq!(body["error"]["field"], *field, "{what}: {body}");
    }
    // Nothing was stored, and the server still serves.
    let r = server.get("/api/v1/datasets/lies").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (status, body) = commit(&server, "honest", &good).await;
    assert_eq!(status, 201, "{body}");
    let head = server
        .get_json("/api/v1/datasets/honest/versions/latest/head?rows=5")
        .await;
    assert_eq!(head["rows"].as_array().map(Vec::len), Some(3), "{head}");
}

/// Shards are content-addressed, so repeated content makes the same shard twice and the
/// client names it twice: `trainyard dataset import` of such data still commits, and the
/// version reads back whole.
#[tokio::test]
async fn an_import_whose_shards_repeat_still_commits() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sevens.csv");
    std::fs::write(&csv, format!("a,b\n{}", "7,1.5\n".repeat(10))).unwrap();
    common::ok(server.cli(&[
        "dataset",
        "import",
        "sevens",
        csv.to_str().unwrap(),
        "--shard-rows",
        "4",
    ]));
    let v = server
        .get_json("/api/v1/datasets/sevens/versions/latest")
        .await;
    assert_eq!(v["rows"], 10, "{v}");
    let shards = v["manifest"]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "{v}");
    assert_eq!(shards[0], shards[1], "the same shard twice: {v}");
    let head = server
        .get_json("/api/v1/datasets/sevens/versions/latest/head?rows=20")
        .await;
    assert_eq!(head["rows"].as_array().map(Vec::len), Some(10), "{head}");
}
