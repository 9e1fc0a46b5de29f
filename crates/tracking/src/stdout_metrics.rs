//! Metrics from a job's output, for scripts that use no client: lines holding
//! `name=value` pairs for declared names (Katib's stdout convention), with an optional
//! `step=N` or `epoch=N` on the same line; or a user regex with `name`, `value` and
//! optionally `step` groups.

use regex::Regex;

/// What a job declared it prints.
#[derive(Debug, Clone)]
pub struct MetricCollector {
    names: Vec<String>,
    custom: Option<Regex>,
    pair: Regex,
    /// Step for lines without one: counts up per metric.
    next_step: std::collections::HashMap<String, i64>,
}

/// One value found in one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub name: String,
    pub value: f64,
    pub step: i64,
}

impl MetricCollector {
    /// `custom` must have named groups `name` and `value` (and may have `step`).
    pub fn new(names: Vec<String>, custom: Option<&str>) -> Result<Self, String> {
        let custom = match custom {
            Some(re) => {
                let re = Regex::new(re).map_err(|e| format!("invalid metric regex: {e}"))?;
                let groups: Vec<&str> = re.capture_names().flatten().collect();
                if !groups.contains(&"name") || !groups.contains(&"value") {
                    return Err("the metric regex needs named groups `name` and `value`".into());
                }
                Some(re)
            }
            None => None,
        };
        Ok(Self {
            names,
            custom,
            pair: Regex::new(r"([A-Za-z_][\w./-]*)\s*[=:]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan|NaN|Inf))")
                .expect("the pair pattern is valid"),
            next_step: Default::default(),
        })
    }

    /// Metrics found in one line of output.
    pub fn scan(&mut self, line: &str) -> Vec<Found> {
        let mut found = Vec::new();
        if let Some(re) = &self.custom {
            for caps in re.captures_iter(line) {
                let name = caps.name("name").map(|m| m.as_str().to_string());
                let value = caps
                    .name("value")
                    .and_then(|m| m.as_str().parse::<f64>().ok());
                let step = caps
                    .name("step")
                    .and_then(|m| m.as_str().parse::<i64>().ok());
                if let (Some(name), Some(value)) = (name, value) {
                    if self.names.is_empty() || self.names.contains(&name) {
                        found.push((name, value, step));
                    }
                }
            }
        } else {
            let mut step = None;
            let mut pairs = Vec::new();
            for caps in self.pair.captures_iter(line) {
                let (k, v) = (&caps[1], &caps[2]);
                if k == "step" || k == "epoch" {
                    step = v.parse::<i64>().ok().or(step);
                } else if self.names.iter().any(|n| n == k) {
                    if let Ok(v) = v.parse::<f64>() {
                        pairs.push((k.to_string(), v));
                    }
                }
            }
            found.extend(pairs.into_iter().map(|(k, v)| (k, v, step)));
        }
        found
            .into_iter()
            .map(|(name, value, step)| {
                let next = self.next_step.entry(name.clone()).or_insert(0);
                let step = step.unwrap_or(*next);
                *next = step.saturating_add(1);
                Found { name, value, step }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn katib_style_lines() {
        let mut c = MetricCollector::new(vec!["loss".into(), "accuracy".into()], None).unwrap();
        assert_eq!(
            c.scan("epoch=3 loss=0.25 accuracy=0.9 lr=0.1"),
            vec![
                Found {
                    name: "loss".into(),
                    value: 0.25,
                    step: 3
                },
                Found {
                    name: "accuracy".into(),
                    value: 0.9,
                    step: 3
                },
            ]
        );
        // No step on the line: counts on from the last one.
        assert_eq!(c.scan("loss=1e-3")[0].step, 4);
        assert!(c.scan("nothing here, lossy=3").is_empty());
        assert_eq!(c.scan("step=10 loss: -2.5")[0].value, -2.5);
    }

    #[test]
    fn custom_regex() {
        let mut c = MetricCollector::new(
            vec![],
            Some(r"(?P<name>\w+) is (?P<value>[\d.]+) at (?P<step>\d+)"),
        )
        .unwrap();
        assert_eq!(
            c.scan("loss is 0.5 at 7"),
            vec![Found {
                name: "loss".into(),
                value: 0.5,
                step: 7
            }]
        );
        assert!(MetricCollector::new(vec![], Some("(x)")).is_err());
        assert!(MetricCollector::new(vec![], Some("(")).is_err());
    }
}
