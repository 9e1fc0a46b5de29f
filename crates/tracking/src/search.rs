//! `runs/search`: filter, order and page runs using only run rows and the latest metric,
//! param and tag values the filter and ordering name — never metric histories.

use std::collections::HashMap;

use crate::entities::{Page, Run, RunInfo, ViewType};
use crate::experiments::paginate;
use crate::filter::{self, Clause, Entity, Field, Grammar, OrderKey};
use crate::rows::{get, placeholders};
use crate::runs::run_info;
use crate::validate;
use crate::{Tracking, TrackingError};

/// Where proxied artifacts live, as MLflow clients spell it.
pub const ARTIFACTS_PREFIX: &str = "mlflow-artifacts:/";

/// Most runs one search page returns (MLflow's limit).
pub const MAX_RUNS_PAGE: i64 = 50_000;

pub struct SearchRequest {
    pub experiment_ids: Vec<String>,
    pub filter: String,
    pub view: ViewType,
    pub max_results: i64,
    pub order_by: Vec<String>,
    pub page_token: Option<String>,
}

pub(crate) const GRAMMAR: Grammar = Grammar {
    entities: &[
        Entity::Metric,
        Entity::Param,
        Entity::Tag,
        Entity::Attribute,
        Entity::Dataset,
    ],
    string_attributes: &["run_id", "run_name", "status", "user_id", "artifact_uri"],
    numeric_attributes: &["start_time", "end_time"],
    list_attributes: &["run_id"],
    aliases: &[
        ("created", "start_time"),
        ("Created", "start_time"),
        ("run name", "run_name"),
        ("Run name", "run_name"),
        ("Run Name", "run_name"),
    ],
};

/// Values of one metric, param or tag key across the candidate runs.
enum Column {
    Numbers(HashMap<String, f64>),
    Strings(HashMap<String, String>),
}

impl Tracking {
    pub async fn search_runs(&self, req: SearchRequest) -> Result<Page<Run>, TrackingError> {
        validate::max_results(req.max_results, MAX_RUNS_PAGE)?;
        let clauses = filter::parse_filter(&GRAMMAR, &req.filter)?;
        let order = filter::parse_order_by(&GRAMMAR, &req.order_by)?;
        let offset = filter::decode_page_token(req.page_token.as_deref())?;
        let experiments = self.own_experiments(&req.experiment_ids).await?;
        if experiments.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        }
        // No filter and ordered by start time (the usual listing): the index on
        // (experiment_id, start_time) answers the page directly.
        if clauses.is_empty()
            && order
                .iter()
                .all(|o| o.entity == Entity::Attribute && o.key == "start_time")
        {
            let direction = if order.first().is_some_and(|o| o.ascending) {
                "ASC"
            } else {
                "DESC"
            };
            return self
                .search_by_start_time(&experiments, req.view, direction, offset, req.max_results)
                .await;
        }
        let list = placeholders(1, experiments.len());
        let sql = format!(
            "SELECT run_id, experiment_id, name, user_id, status, start_time, end_time, \
             artifact_uri, lifecycle_stage, job_id FROM runs WHERE experiment_id IN ({list})"
        );
        let mut query = sqlx::query(&sql);
        for e in &experiments {
            query = query.bind(*e);
        }
        let mut runs: Vec<RunInfo> = Vec::new();
        for row in query.fetch_all(self.db.pool()).await? {
            let info = run_info(&row)?;
            if req.view.admits(info.lifecycle_stage) {
                runs.push(info);
            }
        }
        // Load each metric/param/tag key the filter or ordering names, once.
        let mut columns: HashMap<(u8, String), Column> = HashMap::new();
        let wanted = clauses
            .iter()
            .map(|c| (c.entity, c.key.clone()))
            .chain(order.iter().map(|o| (o.entity, o.key.clone())));
        for (entity, key) in wanted {
            let (kind, table) = match entity {
                Entity::Metric => (0u8, "metric_series"),
                Entity::Param => (1, "run_params"),
                Entity::Tag => (2, "run_tags"),
                _ => continue,
            };
            if columns.contains_key(&(kind, key.clone())) {
                continue;
            }
            let select = if kind == 0 {
                "t.run_id, t.value, t.is_nan"
            } else {
                "t.run_id, t.value"
            };
            let sql = format!(
                "SELECT {select} FROM {table} t JOIN runs r ON r.run_id = t.run_id \
                 WHERE t.key = $1 AND r.experiment_id IN ({})",
                placeholders(2, experiments.len())
            );
            let mut query = sqlx::query(&sql).bind(key.clone());
            for e in &experiments {
                query = query.bind(*e);
            }
            let rows = query.fetch_all(self.db.pool()).await?;
            let column = if kind == 0 {
                let mut m = HashMap::with_capacity(rows.len());
                for r in &rows {
                    let nan: i64 = get(r, "is_nan")?;
                    let v: f64 = get(r, "value")?;
                    m.insert(get(r, "run_id")?, if nan != 0 { f64::NAN } else { v });
                }
                Column::Numbers(m)
            } else {
                let mut m = HashMap::with_capacity(rows.len());
                for r in &rows {
                    m.insert(get(r, "run_id")?, get(r, "value")?);
                }
                Column::Strings(m)
            };
            columns.insert((kind, key), column);
        }
        let datasets = if clauses.iter().any(|c| c.entity == Entity::Dataset) {
            self.dataset_inputs(&experiments).await?
        } else {
            HashMap::new()
        };
        fn field<'a>(
            columns: &'a HashMap<(u8, String), Column>,
            run: &'a RunInfo,
            entity: Entity,
            key: &str,
        ) -> Option<Field<'a>> {
            let kind = match entity {
                Entity::Metric => 0u8,
                Entity::Param => 1,
                Entity::Tag => 2,
                _ => 3,
            };
            if kind < 3 {
                return match columns.get(&(kind, key.to_string()))? {
                    Column::Numbers(m) => m.get(&run.run_id).map(|v| Field::Num(*v)),
                    Column::Strings(m) => m.get(&run.run_id).map(|v| Field::Str(v.as_str())),
                };
            }
            match (entity, key) {
                (Entity::Attribute, "run_id") => Some(Field::Str(&run.run_id)),
                (Entity::Attribute, "run_name") => Some(Field::Str(&run.run_name)),
                (Entity::Attribute, "status") => Some(Field::Str(run.status.as_str())),
                (Entity::Attribute, "user_id") => Some(Field::Str(&run.user_id)),
                (Entity::Attribute, "artifact_uri") => Some(Field::Str(&run.artifact_uri)),
                (Entity::Attribute, "start_time") => Some(Field::Num(run.start_time as f64)),
                (Entity::Attribute, "end_time") => run.end_time.map(|t| Field::Num(t as f64)),
                _ => None,
            }
        }
        let passes = |run: &RunInfo, c: &Clause| -> bool {
            if c.entity == Entity::Dataset {
                return datasets.get(&run.run_id).is_some_and(|inputs| {
                    inputs.iter().any(|(name, digest, context)| {
                        let v = match c.key.as_str() {
                            "name" => name.as_str(),
                            "digest" => digest.as_str(),
                            "context" => context.as_str(),
                            _ => return false,
                        };
                        c.matches(Some(Field::Str(v)))
                    })
                });
            }
            c.matches(field(&columns, run, c.entity, &c.key))
        };
        runs.retain(|run| clauses.iter().all(|c| passes(run, c)));
        let mut order = order;
        if !order
            .iter()
            .any(|o| o.entity == Entity::Attribute && o.key == "start_time")
        {
            order.push(OrderKey {
                entity: Entity::Attribute,
                key: "start_time".into(),
                ascending: false,
            });
        }
        order.push(OrderKey {
            entity: Entity::Attribute,
            key: "run_id".into(),
            ascending: true,
        });
        runs.sort_by(|a, b| filter::order_by(a, b, &order, |r, e, k| field(&columns, r, e, k)));
        let ids: Vec<String> = runs.into_iter().map(|r| r.run_id).collect();
        let page = paginate(ids, offset, req.max_results as usize);
        Ok(Page {
            items: self.load_runs(&page.items).await?,
            next_page_token: page.next_page_token,
        })
    }

    async fn search_by_start_time(
        &self,
        experiments: &[i64],
        view: ViewType,
        direction: &str,
        offset: usize,
        max_results: i64,
    ) -> Result<Page<Run>, TrackingError> {
        let stages = match view {
            ViewType::ActiveOnly => "'active'",
            ViewType::DeletedOnly => "'deleted'",
            ViewType::All => "'active', 'deleted'",
        };
        let n = experiments.len();
        let sql = format!(
            "SELECT run_id FROM runs WHERE experiment_id IN ({}) AND lifecycle_stage IN ({stages}) \
             ORDER BY start_time {direction}, run_id ASC LIMIT ${} OFFSET ${}",
            placeholders(1, n),
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(&sql);
        for e in experiments {
            query = query.bind(*e);
        }
        let rows = query
            .bind(max_results + 1)
            .bind(offset as i64)
            .fetch_all(self.db.pool())
            .await?;
        let mut ids = rows
            .iter()
            .map(|r| get::<String>(r, "run_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let more = ids.len() as i64 > max_results;
        ids.truncate(max_results as usize);
        let next_page_token = more.then(|| filter::encode_page_token(offset + ids.len()));
        Ok(Page {
            items: self.load_runs(&ids).await?,
            next_page_token,
        })
    }

    /// (name, digest, context) of every dataset input of the experiments' runs, by run.
    async fn dataset_inputs(
        &self,
        experiments: &[i64],
    ) -> Result<HashMap<String, Vec<(String, String, String)>>, TrackingError> {
        let sql = format!(
            "SELECT i.run_id, i.dataset_name, i.dataset_digest, i.tags FROM run_inputs i \
             JOIN runs r ON r.run_id = i.run_id WHERE r.experiment_id IN ({})",
            placeholders(1, experiments.len())
        );
        let mut query = sqlx::query(&sql);
        for e in experiments {
            query = query.bind(*e);
        }
        let mut out: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
        for row in query.fetch_all(self.db.pool()).await? {
            let tags: String = get(&row, "tags")?;
            let tags: Vec<(String, String)> = serde_json::from_str(&tags).unwrap_or_default();
            let context = tags
                .into_iter()
                .find(|(k, _)| k == "mlflow.data.context")
                .map(|(_, v)| v)
                .unwrap_or_default();
            out.entry(get(&row, "run_id")?).or_default().push((
                get(&row, "dataset_name")?,
                get(&row, "dataset_digest")?,
                context,
            ));
        }
        Ok(out)
    }
}
