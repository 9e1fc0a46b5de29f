//! Search spaces: what a user may ask to search, checked once at submission, and the
//! mapping between a parameter's value and the coordinate samplers work in.
//!
//! Samplers never see raw values. Each numeric parameter has an *internal* coordinate: the
//! value itself on a linear scale, its natural logarithm on a log scale; a categorical one
//! has the index of its choice. Integers and stepped floats are searched as continuous
//! coordinates over `[low - step/2, high + step/2]` and rounded back, so every grid point
//! owns an equal share of the range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trainyard_core::error::InvalidField;
use utoipa::ToSchema;

/// One configuration: parameter name → value, as a trial receives it.
pub type Params = BTreeMap<String, Value>;

/// Most parameters one space may hold (the Sobol sequence's dimensions).
pub const MAX_PARAMS: usize = 256;
/// Most choices of one categorical parameter, and most points a stepped range may have in a
/// grid.
pub const MAX_CHOICES: usize = 10_000;
/// Names a trial template uses for itself; no parameter may take them.
pub const RESERVED: [&str; 4] = ["resource", "trial", "study", "resume_from"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    Float,
    Int,
    Categorical,
}

/// A parameter as a user writes it (`[space.lr] type = "float", low = 1e-5, high = 0.1,
/// log = true`). Checked into a [`Param`] by [`Space::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// Search the logarithm of the value (low must be above 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Only values `low + k·step`; must divide `high - low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// A categorical parameter's values: strings, numbers, booleans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub choices: Vec<Value>,
    /// The parameter exists only when each parameter named here has this value (or one of
    /// these values, given a list): `when = { optimizer = "sgd" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub when: BTreeMap<String, Value>,
}

/// A checked distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Float {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    Int {
        low: i64,
        high: i64,
        log: bool,
        step: i64,
    },
    Categorical {
        choices: Vec<Value>,
    },
}

/// A checked parameter and the conditions under which it exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub dist: Dist,
    /// Parent name → the values that switch this parameter on.
    pub when: Vec<(String, Vec<Value>)>,
}

/// A checked space, parents before the parameters that depend on them.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub params: Vec<Param>,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField::new(field, message)
}

fn valid_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// Integers beyond 2^53 do not survive a round trip through `f64`.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Space {
    /// Checks every parameter, naming the field of the first rule broken
    /// (`space.lr.low`, `space.opt.choices`, …).
    pub fn new(specs: &BTreeMap<String, ParamSpec>) -> Result<Space, InvalidField> {
        if specs.is_empty() {
            return Err(invalid("space", "give at least one parameter"));
        }
        if specs.len() > MAX_PARAMS {
            return Err(invalid("space", format!("at most {MAX_PARAMS} parameters")));
        }
        let mut checked = Vec::with_capacity(specs.len());
        for (name, spec) in specs {
            checked.push(check_param(name, spec)?);
        }
        for p in &checked {
            for (parent, values) in &p.when {
                let field = format!("space.{}.when.{parent}", p.name);
                if parent == &p.name {
                    return Err(invalid(field, "a parameter cannot depend on itself"));
                }
                let Some(parent_param) = checked.iter().find(|q| &q.name == parent) else {
                    return Err(invalid(
                        field,
                        format!("no parameter `{parent}` in the space"),
                    ));
                };
                for v in values {
                    if parent_param.dist.to_internal(v).is_none() {
                        return Err(invalid(
                            field,
                            format!("{v} is not a value `{parent}` can take"),
                        ));
                    }
                }
            }
        }
        // Parents first: repeatedly take the parameters whose parents are all placed.
        let mut ordered: Vec<Param> = Vec::with_capacity(checked.len());
        while !checked.is_empty() {
            let ready = checked.iter().position(|p| {
                p.when
                    .iter()
                    .all(|(parent, _)| ordered.iter().any(|q| &q.name == parent))
            });
            match ready {
                Some(i) => ordered.push(checked.remove(i)),
                None => {
                    return Err(invalid(
                        format!("space.{}.when", checked[0].name),
                        "the conditions form a cycle",
                    ))
                }
            }
        }
        Ok(Space { params: ordered })
    }

    /// Whether `param` exists given the values chosen so far.
    pub fn is_active(param: &Param, chosen: &Params) -> bool {
        param.when.iter().all(|(parent, values)| {
            chosen
                .get(parent)
                .is_some_and(|v| values.iter().any(|w| same_value(v, w)))
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The internal coordinates of a configuration, for the parameters it holds that
    /// belong to the space (a value the space cannot hold is left out).
    pub fn to_internal(&self, params: &Params) -> BTreeMap<String, f64> {
        self.params
            .iter()
            .filter_map(|p| {
                let v = params.get(&p.name)?;
                Some((p.name.clone(), p.dist.to_internal(v)?))
            })
            .collect()
    }

    /// Whether `params` is a configuration of this space: every active parameter present
    /// with a value it can take, no other names.
    pub fn check_params(&self, params: &Params) -> Result<(), InvalidField> {
        for p in &self.params {
            let active = Self::is_active(p, params);
            match (params.get(&p.name), active) {
                (Some(v), true) => {
                    if p.dist.to_internal(v).is_none() || !p.dist.holds(v) {
                        return Err(invalid(
                            format!("params.{}", p.name),
                            format!("{v} is outside the parameter's range"),
                        ));
                    }
                }
                (None, true) => {
                    return Err(invalid(format!("params.{}", p.name), "missing"));
                }
                (Some(_), false) => {
                    return Err(invalid(
                        format!("params.{}", p.name),
                        "not active under the other parameters' values",
                    ));
                }
                (None, false) => {}
            }
        }
        if let Some(stranger) = params.keys().find(|k| self.param(k).is_none()) {
            return Err(invalid(
                format!("params.{stranger}"),
                "no such parameter in the space",
            ));
        }
        Ok(())
    }
}

/// JSON values compared as a user means them: `1` and `1.0` are the same number.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn check_param(name: &str, spec: &ParamSpec) -> Result<Param, InvalidField> {
    let field = |f: &str| format!("space.{name}.{f}");
    if !valid_param_name(name) {
        return Err(invalid(
            format!("space.{name}"),
            "parameter names are 1-100 letters, digits, '_', '-', '.'",
        ));
    }
    if RESERVED.contains(&name) {
        return Err(invalid(
            format!("space.{name}"),
            format!("`{name}` is reserved for the trial template"),
        ));
    }
    let when = spec
        .when
        .iter()
        .map(|(parent, v)| {
            let values = match v {
                Value::Array(vs) => vs.clone(),
                other => vec![other.clone()],
            };
            if values.is_empty() || values.iter().any(|v| v.is_array() || v.is_object()) {
                return Err(invalid(
                    field(&format!("when.{parent}")),
                    "give a value or a list of values",
                ));
            }
            Ok((parent.clone(), values))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dist = match spec.kind {
        ParamKind::Categorical => {
            for f in [("low", spec.low), ("high", spec.high), ("step", spec.step)] {
                if f.1.is_some() {
                    return Err(invalid(
                        field(f.0),
                        "a categorical parameter takes `choices`",
                    ));
                }
            }
            if spec.log {
                return Err(invalid(
                    field("log"),
                    "a categorical parameter has no scale",
                ));
            }
            if spec.choices.is_empty() {
                return Err(invalid(field("choices"), "give at least one choice"));
            }
            if spec.choices.len() > MAX_CHOICES {
                return Err(invalid(
                    field("choices"),
                    format!("at most {MAX_CHOICES} choices"),
                ));
            }
            for (i, c) in spec.choices.iter().enumerate() {
                if c.is_array() || c.is_object() {
                    return Err(invalid(
                        format!("space.{name}.choices[{i}]"),
                        "choices are strings, numbers, booleans or null",
                    ));
                }
                if spec.choices[..i].iter().any(|d| same_value(c, d)) {
                    return Err(invalid(
                        format!("space.{name}.choices[{i}]"),
                        format!("{c} is given twice"),
                    ));
                }
            }
            Dist::Categorical {
                choices: spec.choices.clone(),
            }
        }
        ParamKind::Float | ParamKind::Int => {
            if !spec.choices.is_empty() {
                return Err(invalid(
                    field("choices"),
                    "only a categorical parameter takes choices",
                ));
            }
            let low = spec.low.ok_or_else(|| invalid(field("low"), "required"))?;
            let high = spec
                .high
                .ok_or_else(|| invalid(field("high"), "required"))?;
            if !low.is_finite() {
                return Err(invalid(field("low"), "must be a finite number"));
            }
            if !high.is_finite() {
                return Err(invalid(field("high"), "must be a finite number"));
            }
            if low > high {
                return Err(invalid(
                    field("low"),
                    format!("low {low} is greater than high {high}"),
                ));
            }
            if !(high - low).is_finite() {
                return Err(invalid(field("high"), "the range is too wide to search"));
            }
            if spec.log && low <= 0.0 {
                return Err(invalid(
                    field("low"),
                    format!("a log scale needs low > 0, not {low}"),
                ));
            }
            if let Some(step) = spec.step {
                if !(step.is_finite() && step > 0.0) {
                    return Err(invalid(field("step"), "must be a number above 0"));
                }
                if spec.log && !(spec.kind == ParamKind::Int && step == 1.0) {
                    return Err(invalid(field("step"), "a log scale takes no step"));
                }
                let points = (high - low) / step;
                if (points - points.round()).abs() > 1e-9 * points.abs().max(1.0) {
                    return Err(invalid(
                        field("step"),
                        format!("step {step} does not divide the range [{low}, {high}]"),
                    ));
                }
            }
            if spec.kind == ParamKind::Int {
                for (f, v) in [("low", low), ("high", high)] {
                    if v.fract() != 0.0 || v.abs() > MAX_EXACT_INT {
                        return Err(invalid(field(f), format!("{v} is not an integer")));
                    }
                }
                let step = spec.step.unwrap_or(1.0);
                if step.fract() != 0.0 {
                    return Err(invalid(field("step"), "an integer's step is an integer"));
                }
                Dist::Int {
                    low: low as i64,
                    high: high as i64,
                    log: spec.log,
                    step: step as i64,
                }
            } else {
                Dist::Float {
                    low,
                    high,
                    log: spec.log,
                    step: spec.step,
                }
            }
        }
    };
    // The range samplers draw from (with half a step beyond each end) must be finite too.
    let (lo, hi) = dist.internal_range();
    if !(hi - lo).is_finite() {
        return Err(invalid(field("step"), "the range is too wide to search"));
    }
    Ok(Param {
        name: name.to_string(),
        dist,
        when,
    })
}

impl Dist {
    /// The range of the internal coordinate samplers draw from.
    pub fn internal_range(&self) -> (f64, f64) {
        match *self {
            Dist::Float {
                low,
                high,
                log: true,
                ..
            } => (low.ln(), high.ln()),
            Dist::Float {
                low,
                high,
                step: Some(step),
                ..
            } => (low - step / 2.0, high + step / 2.0),
            Dist::Float { low, high, .. } => (low, high),
            Dist::Int {
                low,
                high,
                log: true,
                ..
            } => (
                (low as f64 - 0.5).max(f64::MIN_POSITIVE).ln(),
                (high as f64 + 0.5).ln(),
            ),
            Dist::Int {
                low, high, step, ..
            } => (
                low as f64 - step as f64 / 2.0,
                high as f64 + step as f64 / 2.0,
            ),
            Dist::Categorical { ref choices } => (0.0, choices.len() as f64),
        }
    }

    pub fn is_categorical(&self) -> bool {
        matches!(self, Dist::Categorical { .. })
    }

    /// The internal coordinate of a value, or `None` for a value of the wrong kind.
    pub fn to_internal(&self, v: &Value) -> Option<f64> {
        match self {
            Dist::Categorical { choices } => choices
                .iter()
                .position(|c| same_value(c, v))
                .map(|i| i as f64),
            Dist::Float { log, .. } | Dist::Int { log, .. } => {
                let x = v.as_f64()?;
                if *log {
                    (x > 0.0).then(|| x.ln())
                } else {
                    Some(x)
                }
            }
        }
    }

    /// Whether a value lies in the range (and on the step).
    pub fn holds(&self, v: &Value) -> bool {
        match self {
            Dist::Categorical { choices } => choices.iter().any(|c| same_value(c, v)),
            Dist::Float {
                low, high, step, ..
            } => v.as_f64().is_some_and(|x| {
                let on_step = step.is_none_or(|s| {
                    let k = (x - low) / s;
                    (k - k.round()).abs() < 1e-6
                });
                x >= *low && x <= *high && on_step
            }),
            Dist::Int {
                low, high, step, ..
            } => v
                .as_i64()
                .is_some_and(|x| x >= *low && x <= *high && (x - low) % step == 0),
        }
    }

    /// The value at an internal coordinate: rounded to the step, clamped to the range.
    pub fn from_internal(&self, x: f64) -> Value {
        match self {
            Dist::Categorical { choices } => {
                let i = (x.floor().max(0.0) as usize).min(choices.len() - 1);
                choices[i].clone()
            }
            Dist::Float {
                low,
                high,
                log,
                step,
            } => {
                let mut v = if *log { x.exp() } else { x };
                if let Some(s) = step {
                    v = low + ((v - low) / s).round() * s;
                }
                let v = v.clamp(*low, *high);
                Value::from(v)
            }
            Dist::Int {
                low,
                high,
                log,
                step,
            } => {
                let v = if *log { x.exp() } else { x };
                let k = ((v - *low as f64) / *step as f64).round();
                let v = (*low as f64 + k * *step as f64).clamp(*low as f64, *high as f64);
                Value::from(v as i64)
            }
        }
    }

    /// The internal coordinate a value rounds to (what a sampler's draw becomes), so two
    /// draws that give the same value compare equal.
    pub fn snap(&self, x: f64) -> f64 {
        match self {
            Dist::Categorical { .. } => x.floor(),
            _ => self.to_internal(&self.from_internal(x)).unwrap_or(x),
        }
    }

    /// Every value of a finite parameter, in order; `None` for a continuous one or one with
    /// more than [`MAX_CHOICES`] points.
    pub fn grid_values(&self) -> Option<Vec<Value>> {
        match self {
            Dist::Categorical { choices } => Some(choices.clone()),
            Dist::Int {
                low, high, step, ..
            } => {
                let n = (high - low) / step + 1;
                (n as usize <= MAX_CHOICES)
                    .then(|| (0..n).map(|k| Value::from(low + k * step)).collect())
            }
            Dist::Float {
                low,
                high,
                step: Some(s),
                ..
            } => {
                let n = ((high - low) / s).round() as usize + 1;
                (n <= MAX_CHOICES).then(|| {
                    (0..n)
                        .map(|k| Value::from((low + k as f64 * s).min(*high)))
                        .collect()
                })
            }
            Dist::Float { step: None, .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn space(v: serde_json::Value) -> Result<Space, InvalidField> {
        let specs: BTreeMap<String, ParamSpec> = serde_json::from_value(v).unwrap();
        Space::new(&specs)
    }

    #[test]
    fn bad_spaces_name_the_field() {
        let cases = [
            (
                json!({"x": {"type": "float", "low": 2, "high": 1}}),
                "space.x.low",
            ),
            (
                json!({"x": {"type": "float", "low": 0, "high": 1, "log": true}}),
                "space.x.low",
            ),
            (
                json!({"x": {"type": "float", "low": -1, "high": 1, "log": true}}),
                "space.x.low",
            ),
            (
                json!({"c": {"type": "categorical", "choices": []}}),
                "space.c.choices",
            ),
            (
                json!({"x": {"type": "float", "low": 0, "high": 1, "step": 0.3}}),
                "space.x.step",
            ),
            (
                json!({"n": {"type": "int", "low": 0, "high": 10, "step": 3}}),
                "space.n.step",
            ),
            (
                json!({"n": {"type": "int", "low": 0.5, "high": 10}}),
                "space.n.low",
            ),
            (json!({"x": {"type": "float", "high": 1}}), "space.x.low"),
            (
                json!({"x": {"type": "float", "low": 1, "high": 2, "log": true, "step": 0.5}}),
                "space.x.step",
            ),
            (
                json!({"c": {"type": "categorical", "choices": ["a", "a"]}}),
                "space.c.choices[1]",
            ),
            (
                json!({"c": {"type": "categorical", "choices": [[1]]}}),
                "space.c.choices[0]",
            ),
            (
                json!({"c": {"type": "categorical", "choices": ["a"], "low": 1}}),
                "space.c.low",
            ),
            (
                json!({"x": {"type": "float", "low": 0, "high": 1, "when": {"y": 1}}}),
                "space.x.when.y",
            ),
            (
                json!({"x": {"type": "float", "low": 0, "high": 1, "when": {"x": 1}}}),
                "space.x.when.x",
            ),
            (
                json!({"resource": {"type": "int", "low": 1, "high": 2}}),
                "space.resource",
            ),
            (
                json!({"a b": {"type": "int", "low": 1, "high": 2}}),
                "space.a b",
            ),
            (json!({}), "space"),
            (
                json!({"x": {"type": "float", "low": -1e308, "high": 1e308}}),
                "space.x.high",
            ),
            (
                json!({"x": {"type": "float", "low": 0, "high": 1e308, "step": 1e308}}),
                "space.x.step",
            ),
        ];
        for (spec, field) in cases {
            let err = space(spec.clone()).unwrap_err();
            assert_eq!(err.field, field, "{spec}: {err}");
        }
        let cycle = json!({
            "a": {"type": "categorical", "choices": [1, 2], "when": {"b": 1}},
            "b": {"type": "categorical", "choices": [1, 2], "when": {"a": 1}},
        });
        assert_eq!(space(cycle).unwrap_err().field, "space.a.when");
        let wrong_value = json!({
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "rmsprop"}},
        });
        assert_eq!(space(wrong_value).unwrap_err().field, "space.m.when.opt");
    }

    #[test]
    fn parents_come_first_and_conditions_switch_parameters() {
        let s = space(json!({
            "a_momentum": {"type": "float", "low": 0, "high": 1, "when": {"opt": ["sgd", "rms"]}},
            "opt": {"type": "categorical", "choices": ["sgd", "adam", "rms"]},
        }))
        .unwrap();
        assert_eq!(s.params[0].name, "opt");
        let m = &s.params[1];
        let chosen: Params = [("opt".to_string(), json!("rms"))].into();
        assert!(Space::is_active(m, &chosen));
        let chosen: Params = [("opt".to_string(), json!("adam"))].into();
        assert!(!Space::is_active(m, &chosen));
        s.check_params(&chosen).unwrap();
        let with_m: Params = [
            ("opt".into(), json!("adam")),
            ("a_momentum".into(), json!(0.5)),
        ]
        .into();
        assert_eq!(
            s.check_params(&with_m).unwrap_err().field,
            "params.a_momentum"
        );
    }

    #[test]
    fn values_round_to_their_step_and_stay_in_range() {
        let d = Dist::Int {
            low: 2,
            high: 10,
            log: false,
            step: 2,
        };
        let (lo, hi) = d.internal_range();
        assert_eq!((lo, hi), (1.0, 11.0));
        assert_eq!(d.from_internal(1.0), json!(2));
        assert_eq!(d.from_internal(10.9), json!(10));
        assert_eq!(d.from_internal(5.2), json!(6));
        assert_eq!(d.grid_values().unwrap().len(), 5);
        let f = Dist::Float {
            low: 0.0,
            high: 1.0,
            log: false,
            step: Some(0.25),
        };
        assert_eq!(f.from_internal(0.3), json!(0.25));
        assert_eq!(f.grid_values().unwrap().len(), 5);
        let l = Dist::Float {
            low: 1e-4,
            high: 1.0,
            log: true,
            step: None,
        };
        let (lo, hi) = l.internal_range();
        assert!((l.from_internal(lo).as_f64().unwrap() - 1e-4).abs() < 1e-12);
        assert_eq!(l.from_internal(hi + 1.0), json!(1.0));
        let li = Dist::Int {
            low: 1,
            high: 1000,
            log: true,
            step: 1,
        };
        let (lo, hi) = li.internal_range();
        assert_eq!(li.from_internal(lo), json!(1));
        assert_eq!(li.from_internal(hi), json!(1000));
        let c = Dist::Categorical {
            choices: vec![json!("a"), json!(2)],
        };
        assert_eq!(c.to_internal(&json!(2.0)), Some(1.0));
        assert_eq!(c.from_internal(1.99), json!(2));
    }
}
