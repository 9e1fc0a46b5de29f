//! Metric points: appended in batches with their per-series summary and rollups updated in
//! the same transaction, read back as full histories (paged) or as downsampled charts.

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyRow;

use crate::downsample::{self, Extremes, Point, ROLLUP_WIDTHS};
use crate::entities::{Metric, Page};
use crate::error::invalid;
use crate::filter;
use crate::rows::get;
use crate::validate;
use crate::{Tracking, TrackingError};

/// A point as logged by a client.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

impl MetricPoint {
    pub fn new(key: &str, value: f64, timestamp: i64, step: i64) -> Self {
        Self {
            key: key.to_string(),
            value,
            timestamp,
            step,
            model_id: None,
            dataset_name: None,
            dataset_digest: None,
        }
    }

    /// (stored value, is_nan): NaN is stored as 0 with a flag; infinities as ±f64::MAX.
    fn stored(&self) -> (f64, i64) {
        if self.value.is_nan() {
            (0.0, 1)
        } else if self.value.is_infinite() {
            (validate::MAX_DOUBLE.copysign(self.value), 0)
        } else {
            (self.value, 0)
        }
    }
}

/// A chart-ready view of one metric.
#[derive(Debug, Clone)]
pub struct SampledMetric {
    pub key: String,
    pub total_points: i64,
    /// False when `points` is the whole history.
    pub sampled: bool,
    pub points: Vec<Metric>,
}

/// Rows per multi-row INSERT.
const INSERT_ROWS: usize = 1000;

pub(crate) fn latest_from_row(row: &AnyRow) -> Result<Metric, TrackingError> {
    metric_from_row(row, &get::<String>(row, "key")?)
}

/// A stored point (`step`, `timestamp`, `value`, `is_nan` columns) of metric `key`.
fn metric_from_row(row: &AnyRow, key: &str) -> Result<Metric, TrackingError> {
    let is_nan: i64 = get(row, "is_nan")?;
    let value: f64 = get(row, "value")?;
    Ok(Metric::point(
        key,
        if is_nan != 0 { f64::NAN } else { value },
        get(row, "timestamp")?,
        get(row, "step")?,
    ))
}

/// The non-NaN points of a series as `(step, timestamp, value)`, in `order`.
async fn finite_points(
    tracking: &Tracking,
    series_id: i64,
    order: &str,
) -> Result<Vec<Point>, TrackingError> {
    sqlx::query(&format!(
        "SELECT step, timestamp, value FROM metric_points WHERE series_id = $1 \
         AND is_nan = 0 ORDER BY {order}"
    ))
    .bind(series_id)
    .fetch_all(tracking.db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(Point {
            step: get(r, "step")?,
            timestamp: get(r, "timestamp")?,
            value: get(r, "value")?,
        })
    })
    .collect()
}

/// Ids of recently written series, so a write to an existing series skips one lookup.
#[derive(Default)]
pub(crate) struct SeriesCache {
    ids: parking_lot::Mutex<HashMap<(String, String), i64>>,
}

impl SeriesCache {
    const MAX: usize = 100_000;

    fn get(&self, run_id: &str, key: &str) -> Option<i64> {
        let ids = self.ids.lock();
        ids.get(&(run_id.to_string(), key.to_string())).copied()
    }

    fn put(&self, run_id: &str, key: &str, id: i64) {
        let mut ids = self.ids.lock();
        if ids.len() >= Self::MAX {
            ids.clear();
        }
        ids.insert((run_id.to_string(), key.to_string()), id);
    }
}

/// The SQL that appends one key's points to its series. Points are numbers only and are
/// written as literals: SQLite looks bound parameters up by name in a list, which makes
/// thousands of them per statement quadratic, and literals let a whole batch travel as one
/// script. Rust prints every i64 and finite f64 as a SQL literal that reads back exactly;
/// non-finite values never get here (see `MetricPoint::stored`).
struct KeyWrite {
    /// Multi-row INSERTs of at most `INSERT_ROWS` points each.
    inserts: Vec<String>,
    /// The series UPDATE; `{inserted}` stands for how many points the inserts added.
    update: String,
    rollups: Option<String>,
}

fn plan_key(series: i64, points: &[&MetricPoint]) -> KeyWrite {
    use std::fmt::Write;
    let inserts = points
        .chunks(INSERT_ROWS)
        .map(|chunk| {
            let mut sql = String::with_capacity(64 + chunk.len() * 48);
            sql.push_str(
                "INSERT INTO metric_points (series_id, step, timestamp, value, is_nan) VALUES ",
            );
            for (i, p) in chunk.iter().enumerate() {
                let (value, is_nan) = p.stored();
                debug_assert!(value.is_finite());
                if i > 0 {
                    sql.push(',');
                }
                let _ = write!(
                    sql,
                    "({series},{},{},{value:?},{is_nan})",
                    p.step, p.timestamp
                );
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            sql
        })
        .collect();
    let (step, ts, (value, is_nan)) = points
        .iter()
        .map(|p| (p.step, p.timestamp, p.stored()))
        .max_by(|a, b| {
            (a.0, a.1).cmp(&(b.0, b.1)).then(
                a.2 .0
                    .partial_cmp(&b.2 .0)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        })
        .expect("a key has at least one point");
    let min_step = points.iter().map(|p| p.step).min().unwrap_or(0);
    let max_step = points.iter().map(|p| p.step).max().unwrap_or(0);
    // Does this batch keep timestamps non-decreasing along steps?
    let mut ordered: Vec<(i64, i64)> = points.iter().map(|p| (p.step, p.timestamp)).collect();
    ordered.sort_unstable();
    let batch_monotone = ordered.windows(2).all(|w| w[0].1 <= w[1].1) as i64;
    let (first_step, first_ts) = ordered[0];
    // Counts, step range, and the latest point when this one is later by (step,
    // timestamp, value); every CASE reads the row's old values.
    let newer = format!(
        "(step < {step} OR (step = {step} AND (timestamp < {ts} \
         OR (timestamp = {ts} AND value <= {value:?}))))"
    );
    let update = format!(
        "UPDATE metric_series SET points = points + {{inserted}}, \
         min_step = CASE WHEN {min_step} < min_step THEN {min_step} ELSE min_step END, \
         max_step = CASE WHEN {max_step} > max_step THEN {max_step} ELSE max_step END, \
         value = CASE WHEN {newer} THEN {value:?} ELSE value END, \
         is_nan = CASE WHEN {newer} THEN {is_nan} ELSE is_nan END, \
         timestamp = CASE WHEN {newer} THEN {ts} ELSE timestamp END, \
         step = CASE WHEN {newer} THEN {step} ELSE step END, \
         monotone = CASE WHEN monotone = 1 AND {batch_monotone} = 1 AND (points = 0 \
             OR ({first_step} >= max_step AND {first_ts} >= timestamp)) THEN 1 ELSE 0 END \
         WHERE id = {series}"
    );
    KeyWrite {
        inserts,
        update,
        rollups: rollups_sql(series, points),
    }
}

fn by_key(points: &[MetricPoint]) -> BTreeMap<&str, Vec<&MetricPoint>> {
    let mut by_key: BTreeMap<&str, Vec<&MetricPoint>> = BTreeMap::new();
    for p in points {
        by_key.entry(p.key.as_str()).or_default().push(p);
    }
    by_key
}

/// The whole batch as one SQLite script (one round trip to the database thread), when
/// every series already exists and is known and no point names a logged model.
pub(crate) fn sqlite_script(
    cache: &SeriesCache,
    run_id: &str,
    points: &[MetricPoint],
) -> Option<String> {
    if points.iter().any(|p| p.model_id.is_some()) {
        return None;
    }
    let mut script = String::from("BEGIN IMMEDIATE;");
    for (key, points) in by_key(points) {
        let series = cache.get(run_id, key)?;
        let plan = plan_key(series, &points);
        let [insert] = plan.inserts.as_slice() else {
            return None;
        };
        script.push_str(insert);
        script.push(';');
        // `changes()`: rows the statement just before added.
        script.push_str(&plan.update.replace("{inserted}", "changes()"));
        script.push(';');
        if let Some(r) = &plan.rollups {
            script.push_str(r);
            script.push(';');
        }
    }
    script.push_str("COMMIT;");
    Some(script)
}

/// Appends points to their series (creating series as needed) inside `tx`.
pub(crate) async fn insert_points(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    cache: &SeriesCache,
    run_id: &str,
    points: &[MetricPoint],
) -> Result<(), TrackingError> {
    for (key, points) in by_key(points) {
        let series = series_id(tx, cache, run_id, key, points[0]).await?;
        let plan = plan_key(series, &points);
        let mut inserted = 0;
        for sql in &plan.inserts {
            // Each statement's text is unique: keep it out of the prepared-statement cache.
            inserted += sqlx::query(sql)
                .persistent(false)
                .execute(&mut **tx)
                .await?
                .rows_affected() as i64;
        }
        sqlx::query(&plan.update.replace("{inserted}", &inserted.to_string()))
            .persistent(false)
            .execute(&mut **tx)
            .await?;
        if let Some(r) = &plan.rollups {
            sqlx::query(r).persistent(false).execute(&mut **tx).await?;
        }
        for p in points.iter().filter(|p| p.model_id.is_some()) {
            let (value, is_nan) = p.stored();
            sqlx::query(
                "INSERT INTO logged_model_metric_points (model_id, key, value, is_nan, \
                 timestamp, step, run_id, dataset_name, dataset_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(p.model_id.clone())
            .bind(&p.key)
            .bind(value)
            .bind(is_nan)
            .bind(p.timestamp)
            .bind(p.step)
            .bind(run_id)
            .bind(p.dataset_name.clone())
            .bind(p.dataset_digest.clone())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// The series' id, creating the series (with `first` as its latest point) when new.
async fn series_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    cache: &SeriesCache,
    run_id: &str,
    key: &str,
    first: &MetricPoint,
) -> Result<i64, TrackingError> {
    if let Some(id) = cache.get(run_id, key) {
        return Ok(id);
    }
    if let Some(row) = sqlx::query("SELECT id FROM metric_series WHERE run_id = $1 AND key = $2")
        .bind(run_id)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?
    {
        // Found, not created by this transaction: committed, and series are never deleted.
        let id: i64 = get(&row, "id")?;
        cache.put(run_id, key, id);
        return Ok(id);
    }
    // Random ids need no read of a counter; 62 bits make a clash practically impossible.
    let id = (rand::random::<u64>() >> 2) as i64;
    let (value, is_nan) = first.stored();
    let done = sqlx::query(
        "INSERT INTO metric_series (id, run_id, key, value, is_nan, timestamp, step, points, \
         min_step, max_step, monotone) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7, $7, 1) \
         ON CONFLICT (run_id, key) DO NOTHING",
    )
    .bind(id)
    .bind(run_id)
    .bind(key)
    .bind(value)
    .bind(is_nan)
    .bind(first.timestamp)
    .bind(first.step)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        // A concurrent writer (PostgreSQL) created the series first: use its id.
        let row = sqlx::query("SELECT id FROM metric_series WHERE run_id = $1 AND key = $2")
            .bind(run_id)
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
        return get(&row, "id");
    }
    Ok(id)
}

/// One multi-row upsert of the per-bucket extremes of `points` at every rollup level.
fn rollups_sql(series: i64, points: &[&MetricPoint]) -> Option<String> {
    use std::fmt::Write;
    let mut buckets: HashMap<(usize, i64), (i64, Extremes)> = HashMap::new();
    for p in points.iter().filter(|p| !p.value.is_nan()) {
        let point = Point {
            step: p.step,
            timestamp: p.timestamp,
            value: p.stored().0,
        };
        for (level, width) in ROLLUP_WIDTHS.iter().enumerate() {
            let bucket = p.step.div_euclid(*width);
            buckets
                .entry((level, bucket))
                .and_modify(|(n, e)| {
                    *n += 1;
                    e.merge(&Extremes::of(point));
                })
                .or_insert((1, Extremes::of(point)));
        }
    }
    if buckets.is_empty() {
        return None;
    }
    let mut sql = String::from(
        "INSERT INTO metric_rollups (series_id, level, bucket, points, min_value, min_step, \
         min_timestamp, max_value, max_step, max_timestamp) VALUES ",
    );
    for (i, ((level, bucket), (n, e))) in buckets.into_iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(
            sql,
            "({series},{level},{bucket},{n},{:?},{},{},{:?},{},{})",
            e.min.value, e.min.step, e.min.timestamp, e.max.value, e.max.step, e.max.timestamp
        );
    }
    sql.push_str(
        " ON CONFLICT (series_id, level, bucket) DO UPDATE SET \
         points = metric_rollups.points + excluded.points, \
         min_step = CASE WHEN excluded.min_value < metric_rollups.min_value \
             THEN excluded.min_step ELSE metric_rollups.min_step END, \
         min_timestamp = CASE WHEN excluded.min_value < metric_rollups.min_value \
             THEN excluded.min_timestamp ELSE metric_rollups.min_timestamp END, \
         min_value = CASE WHEN excluded.min_value < metric_rollups.min_value \
             THEN excluded.min_value ELSE metric_rollups.min_value END, \
         max_step = CASE WHEN excluded.max_value > metric_rollups.max_value \
             THEN excluded.max_step ELSE metric_rollups.max_step END, \
         max_timestamp = CASE WHEN excluded.max_value > metric_rollups.max_value \
             THEN excluded.max_timestamp ELSE metric_rollups.max_timestamp END, \
         max_value = CASE WHEN excluded.max_value > metric_rollups.max_value \
             THEN excluded.max_value ELSE metric_rollups.max_value END",
    );
    Some(sql)
}

struct Series {
    id: i64,
    points: i64,
    min_step: i64,
    max_step: i64,
    monotone: bool,
}

/// Where a history page starts: an offset into the sorted history, or (for monotone
/// series) the primary key of the last point sent, which makes each page an index range.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HistoryCursor {
    Offset(usize),
    After {
        step: i64,
        timestamp: i64,
        value: f64,
        is_nan: i64,
    },
}

impl HistoryCursor {
    fn encode(self) -> String {
        match self {
            HistoryCursor::Offset(n) => filter::encode_page_token(n),
            HistoryCursor::After {
                step,
                timestamp,
                value,
                is_nan,
            } => format!("k{step}:{timestamp}:{}:{is_nan}", value.to_bits()),
        }
    }

    fn decode(token: Option<&str>) -> Result<Self, TrackingError> {
        if let Some(rest) = token.and_then(|t| t.strip_prefix('k')) {
            let parts: Vec<&str> = rest.split(':').collect();
            let parsed = match parts.as_slice() {
                [s, t, v, n] => (|| {
                    Some(HistoryCursor::After {
                        step: s.parse().ok()?,
                        timestamp: t.parse().ok()?,
                        value: f64::from_bits(v.parse().ok()?),
                        is_nan: n.parse().ok()?,
                    })
                })(),
                _ => None,
            };
            return parsed.ok_or_else(|| invalid(format!("Invalid page token {rest:?}")));
        }
        Ok(HistoryCursor::Offset(filter::decode_page_token(token)?))
    }
}

impl Tracking {
    async fn series(&self, run_id: &str, key: &str) -> Result<Option<Series>, TrackingError> {
        if key.contains('\0') || !validate::is_run_id(run_id) {
            return Ok(None);
        }
        // Series of runs in this workspace's experiments only.
        let row = sqlx::query(
            "SELECT s.id, s.points, s.min_step, s.max_step, s.monotone FROM metric_series s \
             JOIN runs r ON r.run_id = s.run_id JOIN experiments e ON e.id = r.experiment_id \
             WHERE s.run_id = $1 AND s.key = $2 AND (e.workspace_id = $3 OR $4 = 1)",
        )
        .bind(run_id)
        .bind(key)
        .bind(self.workspace())
        .bind(self.every_workspace())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| {
            Ok(Series {
                id: get(&r, "id")?,
                points: get(&r, "points")?,
                min_step: get(&r, "min_step")?,
                max_step: get(&r, "max_step")?,
                monotone: get::<i64>(&r, "monotone")? == 1,
            })
        })
        .transpose()
    }

    /// Every point of one metric ordered by (timestamp, step, value), in pages when
    /// `max_results` is given. An unknown run or key is an empty history, not an error.
    pub async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        page_token: Option<&str>,
    ) -> Result<Page<Metric>, TrackingError> {
        if let Some(n) = max_results {
            if n <= 0 {
                return Err(invalid(format!(
                    "Invalid value {n} for parameter 'max_results' supplied: it must be positive"
                )));
            }
        }
        let cursor = HistoryCursor::decode(page_token)?;
        let Some(series) = self.series(run_id, key).await? else {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        };
        let limit = max_results.unwrap_or(i64::MAX / 2);
        // One extra row tells whether another page exists.
        let rows = match cursor {
            HistoryCursor::After {
                step,
                timestamp,
                value,
                is_nan,
            } => {
                sqlx::query(
                    "SELECT step, timestamp, value, is_nan FROM metric_points \
                     WHERE series_id = $1 AND (step, timestamp, value, is_nan) > ($2, $3, $4, $5) \
                     ORDER BY step, timestamp, value, is_nan LIMIT $6",
                )
                .bind(series.id)
                .bind(step)
                .bind(timestamp)
                .bind(value)
                .bind(is_nan)
                .bind(limit.saturating_add(1))
                .fetch_all(self.db.pool())
                .await?
            }
            // Timestamps follow steps: the primary key's order is the history's order.
            HistoryCursor::Offset(0) if series.monotone => {
                sqlx::query(
                    "SELECT step, timestamp, value, is_nan FROM metric_points \
                     WHERE series_id = $1 ORDER BY step, timestamp, value, is_nan LIMIT $2",
                )
                .bind(series.id)
                .bind(limit.saturating_add(1))
                .fetch_all(self.db.pool())
                .await?
            }
            HistoryCursor::Offset(offset) => sqlx::query(
                "SELECT step, timestamp, value, is_nan FROM metric_points WHERE series_id = $1 \
                     ORDER BY timestamp, step, value, is_nan LIMIT $2 OFFSET $3",
            )
            .bind(series.id)
            .bind(limit.saturating_add(1))
            .bind(offset as i64)
            .fetch_all(self.db.pool())
            .await?,
        };
        let more = rows.len() as i64 > limit;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            let mut m = metric_from_row(row, key)?;
            m.run_id = Some(run_id.to_string());
            items.push(m);
        }
        let next = match (more, cursor, rows.get(items.len().saturating_sub(1))) {
            (false, ..) | (_, _, None) => None,
            (true, HistoryCursor::Offset(offset), _) if !series.monotone => {
                Some(HistoryCursor::Offset(offset + items.len()).encode())
            }
            (true, _, Some(last)) => Some(
                HistoryCursor::After {
                    step: get(last, "step")?,
                    timestamp: get(last, "timestamp")?,
                    value: get(last, "value")?,
                    is_nan: get(last, "is_nan")?,
                }
                .encode(),
            ),
        };
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// The first `limit` points of a metric in `(timestamp, step, value)` order, as MLflow's
    /// bulk history reads them; an unknown run or key has none.
    pub async fn metric_history_by_time(
        &self,
        run_id: &str,
        key: &str,
        limit: i64,
    ) -> Result<Vec<Metric>, TrackingError> {
        let Some(series) = self.series(run_id, key).await? else {
            return Ok(Vec::new());
        };
        sqlx::query(
            "SELECT step, timestamp, value, is_nan FROM metric_points WHERE series_id = $1 \
             ORDER BY timestamp, step, value, is_nan LIMIT $2",
        )
        .bind(series.id)
        .bind(limit.max(0))
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(|r| metric_from_row(r, key))
        .collect()
    }

    /// MLflow's `get-history-bulk-interval` sample of one metric: the points within
    /// `steps` (inclusive) in `(step, timestamp, value, is_nan)` order, cut into `k`
    /// buckets as SQL's `NTILE(k)` cuts them (the first `N % k` one row longer), the first
    /// point of each, with the very last point in place of the last bucket's first. All of
    /// them when there are at most `k`. The database picks the rows: only `k` travel.
    pub async fn interval_sample(
        &self,
        run_id: &str,
        key: &str,
        k: usize,
        steps: Option<(i64, i64)>,
    ) -> Result<Vec<Metric>, TrackingError> {
        let k = k.max(1) as i64;
        let Some(series) = self.series(run_id, key).await? else {
            return Ok(Vec::new());
        };
        let (lo, hi) = steps.unwrap_or((i64::MIN, i64::MAX));
        let n: i64 = get(
            &sqlx::query(
                "SELECT COUNT(*) AS n FROM metric_points WHERE series_id = $1 \
                 AND step >= $2 AND step <= $3",
            )
            .bind(series.id)
            .bind(lo)
            .bind(hi)
            .fetch_one(self.db.pool())
            .await?,
            "n",
        )?;
        if n == 0 {
            return Ok(Vec::new());
        }
        // Bucket b starts at b*q + min(b, r): every (q+1)-th row while the buckets are q+1
        // long (the first r), then every q-th. With n <= k, (q, r) = (1, 0): every row.
        let (q, r) = if n <= k { (1, 0) } else { (n / k, n % k) };
        let long_end = r * (q + 1);
        let rows = sqlx::query(
            "SELECT step, timestamp, value, is_nan FROM (SELECT step, timestamp, value, is_nan, \
             ROW_NUMBER() OVER (ORDER BY step, timestamp, value, is_nan) - 1 AS rn \
             FROM metric_points WHERE series_id = $1 AND step >= $2 AND step <= $3) AS ranked \
             WHERE (rn < $4 AND rn % $5 = 0) OR (rn >= $4 AND (rn - $4) % $6 = 0) OR rn = $7 \
             ORDER BY rn",
        )
        .bind(series.id)
        .bind(lo)
        .bind(hi)
        .bind(long_end)
        .bind(q + 1)
        .bind(q)
        .bind(n - 1)
        .fetch_all(self.db.pool())
        .await?;
        let mut points = rows
            .iter()
            .map(|r| metric_from_row(r, key))
            .collect::<Result<Vec<_>, TrackingError>>()?;
        if n > k {
            // k bucket starts plus the last row: the last start is replaced by the last row.
            if points.len() as i64 > k {
                let last = points.pop().expect("more than k points");
                points.pop();
                points.push(last);
            }
        }
        Ok(points)
    }

    /// At most about `max_points` points of a metric, keeping each bucket's min and max:
    /// reads raw points for short histories and the rollups for long ones, so the cost
    /// does not grow with the history's length.
    pub async fn sampled_metric(
        &self,
        run_id: &str,
        key: &str,
        max_points: usize,
    ) -> Result<SampledMetric, TrackingError> {
        let max_points = max_points.clamp(2, 100_000);
        let Some(series) = self.series(run_id, key).await? else {
            return Err(TrackingError::NotFound(format!(
                "Run {run_id} has no metric '{key}'"
            )));
        };
        let to_metric = |p: Point| Metric::point(key, p.value, p.timestamp, p.step);
        if series.points as usize <= max_points {
            let rows = sqlx::query(
                "SELECT step, timestamp, value, is_nan FROM metric_points WHERE series_id = $1 \
                 ORDER BY step, timestamp, value",
            )
            .bind(series.id)
            .fetch_all(self.db.pool())
            .await?;
            let points = rows
                .iter()
                .map(|r| metric_from_row(r, key))
                .collect::<Result<Vec<_>, TrackingError>>()?;
            return Ok(SampledMetric {
                key: key.to_string(),
                total_points: series.points,
                sampled: false,
                points,
            });
        }
        // Each output bucket yields up to two points (its min and its max).
        let span = series
            .max_step
            .saturating_sub(series.min_step)
            .saturating_add(1);
        if span < (max_points / 2) as i64 {
            // Few distinct steps for many points (clients that log without steps): cut
            // along time instead, from the raw points (rollups are kept per step).
            let raw = finite_points(self, series.id, "timestamp, step, value").await?;
            let (first, last) = match (raw.first(), raw.last()) {
                (Some(a), Some(b)) => (a.timestamp, b.timestamp),
                _ => (0, 0),
            };
            let width = downsample::bucket_width(
                last.saturating_sub(first).saturating_add(1),
                max_points / 2,
            );
            let points = downsample::sample_along(
                downsample::Axis::Time,
                raw.into_iter().map(Extremes::of),
                first,
                width,
            );
            return Ok(SampledMetric {
                key: key.to_string(),
                total_points: series.points,
                sampled: true,
                points: points.into_iter().map(to_metric).collect(),
            });
        }
        let width = downsample::bucket_width(span, max_points / 2);
        let extremes: Vec<Extremes> = match downsample::rollup_level(width) {
            Some(level) => sqlx::query(
                "SELECT min_value, min_step, min_timestamp, max_value, max_step, max_timestamp \
                 FROM metric_rollups WHERE series_id = $1 AND level = $2 ORDER BY bucket",
            )
            .bind(series.id)
            .bind(level as i64)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(Extremes {
                    min: Point {
                        step: get(r, "min_step")?,
                        timestamp: get(r, "min_timestamp")?,
                        value: get(r, "min_value")?,
                    },
                    max: Point {
                        step: get(r, "max_step")?,
                        timestamp: get(r, "max_timestamp")?,
                        value: get(r, "max_value")?,
                    },
                })
            })
            .collect::<Result<_, TrackingError>>()?,
            None => finite_points(self, series.id, "step, timestamp, value")
                .await?
                .into_iter()
                .map(Extremes::of)
                .collect(),
        };
        let points = downsample::sample(extremes, series.min_step, width)
            .into_iter()
            .map(to_metric)
            .collect();
        Ok(SampledMetric {
            key: key.to_string(),
            total_points: series.points,
            sampled: true,
            points,
        })
    }
}
