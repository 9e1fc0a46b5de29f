//! Logged models and the model registry.

use crate::extract::ApiPath as Path;
use axum::{Extension, Json};
use serde_json::json;
use trainyard_core::Principal;
use trainyard_tracking::{validate, KeyValue, LoggedModelStatus, NewLoggedModel, NewModelVersion};

use super::params::missing;
use super::{By, MlflowError, Params, Reply};
use crate::Scoped;

fn version(p: &Params) -> Result<i64, MlflowError> {
    let raw = match p.str("version") {
        Ok(Some(v)) => v,
        Ok(None) => return Err(missing("version")),
        Err(_) => p
            .i64("version")?
            .ok_or_else(|| missing("version"))?
            .to_string(),
    };
    Ok(validate::version(&raw)?)
}

fn ok() -> Reply {
    Ok(Json(json!({})))
}

pub async fn create_logged_model(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let experiment_id = p.req_str("experiment_id")?;
    let source_run_id = p.str("source_run_id")?;
    if let Some(run) = source_run_id.as_deref().filter(|r| !r.is_empty()) {
        s.tracking.check_run_write(&w, run).await?;
    }
    let mut tags = p.key_values("tags")?;
    w.stamp(&mut tags);
    let model = s
        .tracking
        .create_logged_model(NewLoggedModel {
            experiment_id,
            name: p.str("name")?,
            model_type: p.str("model_type")?,
            source_run_id,
            params: p.key_values("params")?,
            tags,
        })
        .await?;
    Ok(Json(json!({ "model": model })))
}

pub async fn get_logged_model(Scoped(s): Scoped, Path(id): Path<String>) -> Reply {
    let model = s.tracking.get_logged_model(&id).await?;
    Ok(Json(json!({ "model": model })))
}

pub async fn finalize_logged_model(
    Scoped(s): Scoped,
    Path(id): Path<String>,
    By(w): By,
    p: Params,
) -> Reply {
    s.tracking.check_logged_model_write(&w, &id).await?;
    let raw = match p.str("status") {
        Ok(Some(v)) => v,
        Ok(None) => return Err(missing("status")),
        Err(_) => p
            .i64("status")?
            .ok_or_else(|| missing("status"))?
            .to_string(),
    };
    let status = LoggedModelStatus::parse(&raw).ok_or_else(|| {
        MlflowError::invalid(format!(
            "Invalid value \"{raw}\" for parameter 'status' supplied"
        ))
    })?;
    let model = s.tracking.finalize_logged_model(&id, status).await?;
    Ok(Json(json!({ "model": model })))
}

pub async fn delete_logged_model(Scoped(s): Scoped, Path(id): Path<String>, By(w): By) -> Reply {
    w.check_not_job("delete logged models")?;
    s.tracking.delete_logged_model(&id).await?;
    ok()
}

pub async fn set_logged_model_tags(
    Scoped(s): Scoped,
    Path(id): Path<String>,
    By(w): By,
    p: Params,
) -> Reply {
    s.tracking.check_logged_model_write(&w, &id).await?;
    let model = s
        .tracking
        .set_logged_model_tags(&id, p.key_values("tags")?)
        .await?;
    Ok(Json(json!({ "model": model })))
}

pub async fn delete_logged_model_tag(
    Scoped(s): Scoped,
    Path((id, key)): Path<(String, String)>,
    By(w): By,
) -> Reply {
    s.tracking.check_logged_model_write(&w, &id).await?;
    s.tracking.delete_logged_model_tag(&id, &key).await?;
    ok()
}

pub async fn log_logged_model_params(
    Scoped(s): Scoped,
    Path(id): Path<String>,
    By(w): By,
    p: Params,
) -> Reply {
    s.tracking.check_logged_model_write(&w, &id).await?;
    s.tracking
        .log_logged_model_params(&id, p.key_values("params")?)
        .await?;
    ok()
}

/// `GET …/logged-models/{id}/artifacts/directories[?artifact_directory_path=]`.
pub async fn list_logged_model_artifacts(
    Scoped(s): Scoped,
    Path(id): Path<String>,
    p: Params,
) -> Reply {
    let path = p.str("artifact_directory_path")?.unwrap_or_default();
    let (root_uri, files) = s.tracking.list_logged_model_artifacts(&id, &path).await?;
    let mut out = json!({ "root_uri": root_uri });
    if !files.is_empty() {
        out["files"] = json!(files);
    }
    Ok(Json(out))
}

pub async fn search_logged_models(Scoped(s): Scoped, p: Params) -> Reply {
    let page = s
        .tracking
        .search_logged_models(
            &{
                let ids = p.strs("experiment_ids")?;
                if ids.is_empty() {
                    return Err(missing("experiment_ids"));
                }
                ids
            },
            &p.str("filter")?.unwrap_or_default(),
            &p.objects("order_by")?
                .iter()
                .map(|o| {
                    Ok((
                        o.req_str("field_name")?,
                        o.bool("ascending")?.unwrap_or(true),
                    ))
                })
                .collect::<Result<Vec<_>, MlflowError>>()?,
            // MLflow: 50 when unset, and an explicit 0 means the store's 100.
            match p.i64("max_results")? {
                None => 50,
                Some(n) if n <= 0 => 100,
                Some(n) => n,
            },
            p.str("page_token")?.as_deref(),
        )
        .await?;
    let mut out = json!({});
    if !page.items.is_empty() {
        out["models"] = json!(page.items);
    }
    if let Some(t) = page.next_page_token {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

pub async fn create_registered_model(
    Scoped(s): Scoped,
    Extension(who): Extension<Principal>,
    p: Params,
) -> Reply {
    let model = s
        .tracking
        .create_registered_model(
            &p.req_str("name")?,
            p.str("description")?,
            p.key_values("tags")?,
            &who.name,
        )
        .await?;
    Ok(Json(json!({ "registered_model": model })))
}

pub async fn get_registered_model(Scoped(s): Scoped, p: Params) -> Reply {
    let model = s.tracking.get_registered_model(&p.req_str("name")?).await?;
    Ok(Json(json!({ "registered_model": model })))
}

pub async fn update_registered_model(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("update registered models")?;
    let model = s
        .tracking
        .update_registered_model(&p.req_str("name")?, p.str("description")?)
        .await?;
    Ok(Json(json!({ "registered_model": model })))
}

pub async fn rename_registered_model(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("rename registered models")?;
    let model = s
        .tracking
        .rename_registered_model(&p.req_str("name")?, &p.req_str("new_name")?)
        .await?;
    Ok(Json(json!({ "registered_model": model })))
}

pub async fn delete_registered_model(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete registered models")?;
    s.tracking
        .delete_registered_model(&p.req_str("name")?)
        .await?;
    ok()
}

pub async fn search_registered_models(Scoped(s): Scoped, p: Params) -> Reply {
    let page = s
        .tracking
        .search_registered_models(
            &p.str("filter")?.unwrap_or_default(),
            p.max_results(Some(1000), None, 100)?,
            &p.strs("order_by")?,
            p.str("page_token")?.as_deref(),
        )
        .await?;
    let mut out = json!({});
    if !page.items.is_empty() {
        out["registered_models"] = json!(page.items);
    }
    if let Some(t) = page.next_page_token {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

pub async fn latest_versions(Scoped(s): Scoped, p: Params) -> Reply {
    let versions = s
        .tracking
        .latest_versions(&p.req_str("name")?, &p.strs("stages")?)
        .await?;
    Ok(Json(json!({ "model_versions": versions })))
}

pub async fn set_registered_model_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("tag registered models")?;
    let tag = KeyValue::new(p.req_str("key")?, p.req_str_or_empty("value")?);
    s.tracking
        .set_registered_model_tag(&p.req_str("name")?, tag)
        .await?;
    ok()
}

pub async fn delete_registered_model_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete registered-model tags")?;
    s.tracking
        .delete_registered_model_tag(&p.req_str("name")?, &p.req_str("key")?)
        .await?;
    ok()
}

pub async fn set_alias(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("set registry aliases")?;
    let v = version(&p)?;
    s.tracking
        .set_alias(&p.req_str("name")?, &p.req_str("alias")?, &v.to_string())
        .await?;
    ok()
}

pub async fn delete_alias(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete registry aliases")?;
    s.tracking
        .delete_alias(&p.req_str("name")?, &p.req_str("alias")?)
        .await?;
    ok()
}

pub async fn get_by_alias(Scoped(s): Scoped, p: Params) -> Reply {
    let v = s
        .tracking
        .version_by_alias(&p.req_str("name")?, &p.req_str("alias")?)
        .await?;
    Ok(Json(json!({ "model_version": v })))
}

pub async fn create_model_version(
    Scoped(s): Scoped,
    Extension(who): Extension<Principal>,
    By(w): By,
    p: Params,
) -> Reply {
    let new = NewModelVersion {
        name: p.req_str("name")?,
        source: p.req_str("source")?,
        run_id: p.str("run_id")?.filter(|r| !r.is_empty()),
        model_id: p.str("model_id")?.filter(|r| !r.is_empty()),
        tags: p.key_values("tags")?,
        run_link: p.str("run_link")?,
        description: p.str("description")?,
        user_id: who.name,
    };
    s.tracking.check_version_create(&w, &new).await?;
    let v = s.tracking.create_model_version(new).await?;
    Ok(Json(json!({ "model_version": v })))
}

pub async fn get_model_version(Scoped(s): Scoped, p: Params) -> Reply {
    let v = s
        .tracking
        .get_model_version(&p.req_str("name")?, version(&p)?)
        .await?;
    Ok(Json(json!({ "model_version": v })))
}

pub async fn update_model_version(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("update model versions")?;
    let v = s
        .tracking
        .update_model_version(&p.req_str("name")?, version(&p)?, p.str("description")?)
        .await?;
    Ok(Json(json!({ "model_version": v })))
}

pub async fn transition_stage(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("move model versions between stages")?;
    let v = s
        .tracking
        .transition_stage(
            &p.req_str("name")?,
            version(&p)?,
            &p.req_str("stage")?,
            p.bool("archive_existing_versions")?.unwrap_or(false),
        )
        .await?;
    Ok(Json(json!({ "model_version": v })))
}

pub async fn delete_model_version(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete model versions")?;
    s.tracking
        .delete_model_version(&p.req_str("name")?, version(&p)?)
        .await?;
    ok()
}

pub async fn search_model_versions(Scoped(s): Scoped, p: Params) -> Reply {
    let page = s
        .tracking
        .search_model_versions(
            &p.str("filter")?.unwrap_or_default(),
            p.max_results(
                Some(200_000),
                Some("Invalid value for max_results. It must be a positive integer, but got {n}"),
                200_000,
            )?,
            &p.strs("order_by")?,
            p.str("page_token")?.as_deref(),
        )
        .await?;
    let mut out = json!({});
    if !page.items.is_empty() {
        out["model_versions"] = json!(page.items);
    }
    if let Some(t) = page.next_page_token {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

pub async fn download_uri(Scoped(s): Scoped, p: Params) -> Reply {
    let uri = s
        .tracking
        .download_uri(&p.req_str("name")?, version(&p)?)
        .await?;
    Ok(Json(json!({ "artifact_uri": uri })))
}

pub async fn set_model_version_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let tag = KeyValue::new(p.req_str("key")?, p.req_str_or_empty("value")?);
    let (name, number) = (p.req_str("name")?, version(&p)?);
    s.tracking.check_version_write(&w, &name, number).await?;
    s.tracking.set_model_version_tag(&name, number, tag).await?;
    ok()
}

pub async fn delete_model_version_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete model-version tags")?;
    s.tracking
        .delete_model_version_tag(&p.req_str("name")?, version(&p)?, &p.req_str("key")?)
        .await?;
    ok()
}
