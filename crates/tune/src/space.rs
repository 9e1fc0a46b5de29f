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
/// Most steps a stepped float's range may hold (`(high - low) / step`): past this the
/// check that the step divides the range no longer means anything in `f64`.
pub const MAX_FLOAT_STEPS: f64 = 1e9;
/// A stepped float's step is at least this fraction of its largest value, so that every
/// `low + k·step` is a distinct `f64` that rounds back to its own `k`.
pub const MIN_RELATIVE_STEP: f64 = 1e-9;
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
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_keys"
    )]
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
    /// Parent name → the values that switch this parameter on, each as the parent's
    /// sampler gives it (`0.30000000000000004` for `0.3` on a step of 0.1), so
    /// [`Space::is_active`] can compare them exactly.
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
        let dists: BTreeMap<String, Dist> = checked
            .iter()
            .map(|p| (p.name.clone(), p.dist.clone()))
            .collect();
        for p in &mut checked {
            for (parent, values) in &mut p.when {
                let field = format!("space.{}.when.{parent}", p.name);
                if parent == &p.name {
                    return Err(invalid(field, "a parameter cannot depend on itself"));
                }
                let Some(parent_dist) = dists.get(parent.as_str()) else {
                    return Err(invalid(
                        field,
                        format!("no parameter `{parent}` in the space"),
                    ));
                };
                if parent_dist.is_continuous() {
                    return Err(invalid(
                        field,
                        format!(
                            "`{parent}` is continuous: it takes no one value a condition could \
                             name; give it a `step`, or make it an int or a categorical"
                        ),
                    ));
                }
                for v in values.iter_mut() {
                    *v = parent_dist.value_of(v).ok_or_else(|| {
                        invalid(&field, format!("{v} is not a value `{parent}` can take"))
                    })?;
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

    /// Calls `visit` with every configuration of a finite space, once each, in a fixed
    /// order (conditions respected: a parameter is present exactly when it is active), until
    /// `visit` answers false. Returns how many were visited, or `None`, having visited
    /// only some, when a parameter that can be active is continuous or has more than
    /// [`MAX_CHOICES`] values, or when there are more than `limit` configurations.
    pub fn for_each_configuration(
        &self,
        limit: u64,
        mut visit: impl FnMut(&Params) -> bool,
    ) -> Option<u64> {
        let values: Vec<Option<Vec<Value>>> =
            self.params.iter().map(|p| p.dist.grid_values()).collect();
        let mut walk = Walk {
            params: &self.params,
            values: &values,
            chosen: Params::new(),
            count: 0,
            limit,
            visit: &mut visit,
        };
        match walk.from(0) {
            Ok(()) | Err(Halt::Visitor) => Some(walk.count),
            Err(Halt::Unbounded) => None,
        }
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

/// A map whose keys must each come once: `{"x": …, "x": …}` is refused, naming the key
/// (serde's maps keep the last silently). The error is raised while reading the repeated
/// key's value, so a path-tracking deserializer names it (`space.x`).
pub fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, Visitor};

    struct Twice(String);
    impl<'de> DeserializeSeed<'de> for Twice {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
            Err(D::Error::custom(format!("`{}` is given twice", self.0)))
        }
    }

    struct Keys<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Keys<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map with each key once")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    map.next_value_seed(Twice(key.clone()))?;
                    return Err(A::Error::custom(format!("`{key}` is given twice")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(Keys(std::marker::PhantomData))
}

/// A depth-first walk over the configurations of a space, parents before children.
struct Walk<'a, F: FnMut(&Params) -> bool> {
    params: &'a [Param],
    values: &'a [Option<Vec<Value>>],
    chosen: Params,
    count: u64,
    limit: u64,
    visit: &'a mut F,
}

enum Halt {
    /// The visitor has seen enough.
    Visitor,
    /// Continuous, or more configurations than the limit.
    Unbounded,
}

impl<F: FnMut(&Params) -> bool> Walk<'_, F> {
    fn from(&mut self, i: usize) -> Result<(), Halt> {
        let Some(p) = self.params.get(i) else {
            self.count += 1;
            if self.count > self.limit {
                return Err(Halt::Unbounded);
            }
            return if (self.visit)(&self.chosen) {
                Ok(())
            } else {
                Err(Halt::Visitor)
            };
        };
        if !Space::is_active(p, &self.chosen) {
            return self.from(i + 1);
        }
        let values = self.values[i].as_ref().ok_or(Halt::Unbounded)?;
        for v in values {
            self.chosen.insert(p.name.clone(), v.clone());
            let next = self.from(i + 1);
            self.chosen.remove(&p.name);
            next?;
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
            }
            if spec.kind == ParamKind::Int {
                for (f, v) in [("low", low), ("high", high)] {
                    if v.fract() != 0.0 || v.abs() > MAX_EXACT_INT {
                        return Err(invalid(field(f), format!("{v} is not an integer")));
                    }
                }
                let step = spec.step.unwrap_or(1.0);
                if step.fract() != 0.0 || step > MAX_EXACT_INT {
                    return Err(invalid(
                        field("step"),
                        "an integer's step is a whole number up to 2^53",
                    ));
                }
                let (low, high, step) = (low as i64, high as i64, step as i64);
                // Exact: both ends and the step are at most 2^53 in size.
                let range = high - low;
                if range % step != 0 {
                    return Err(invalid(
                        field("step"),
                        format!("step {step} does not divide the range [{low}, {high}]"),
                    ));
                }
                Dist::Int {
                    low,
                    high,
                    log: spec.log,
                    step,
                }
            } else {
                if let Some(step) = spec.step {
                    check_float_step(low, high, step).map_err(|m| invalid(field("step"), m))?;
                }
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

/// Whether `step` cuts the float range `[low, high]` (finite, `low <= high`) into whole
/// steps that `f64` can tell apart; the reason when it does not.
fn check_float_step(low: f64, high: f64, step: f64) -> Result<(), String> {
    let steps = (high - low) / step;
    if steps > MAX_FLOAT_STEPS {
        return Err(format!(
            "step {step} cuts the range [{low}, {high}] into more than {MAX_FLOAT_STEPS:e} steps; \
             leave out `step` for a continuous range"
        ));
    }
    let largest = low.abs().max(high.abs());
    if step < MIN_RELATIVE_STEP * largest {
        return Err(format!(
            "step {step} is too small beside values as large as {largest}: low + k·step \
             could not be told apart (the step must be at least {MIN_RELATIVE_STEP:e} of them)"
        ));
    }
    let whole = steps.round();
    // Rounding in `f64` moves `steps` by far less than 1e-3 within the bounds above.
    let tolerance = (1e-9 * steps.max(1.0)).min(1e-3);
    if (steps - whole).abs() > tolerance || (whole < 1.0 && high > low) {
        return Err(format!(
            "step {step} does not divide the range [{low}, {high}]"
        ));
    }
    Ok(())
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

    /// A float without a step over more than one value: no value of it is drawn twice.
    pub fn is_continuous(&self) -> bool {
        matches!(self, Dist::Float { low, high, step: None, .. } if low < high)
    }

    /// The value `v` stands for, exactly as a sampler gives it (a choice as it is written,
    /// an integer as an integer, a stepped float as `low + k·step` computes it), or `None`
    /// when the parameter cannot take it.
    pub fn value_of(&self, v: &Value) -> Option<Value> {
        match self {
            Dist::Categorical { choices } => choices.iter().find(|c| same_value(c, v)).cloned(),
            Dist::Int { .. } => {
                // `3.0` names the integer 3, as `same_value` compares them.
                let n = v.as_i64().or_else(|| {
                    v.as_f64()
                        .filter(|x| x.fract() == 0.0 && x.abs() <= MAX_EXACT_INT)
                        .map(|x| x as i64)
                })?;
                let n = Value::from(n);
                self.holds(&n).then_some(n)
            }
            Dist::Float { .. } => {
                if !self.holds(v) {
                    return None;
                }
                Some(self.from_internal(self.to_internal(v)?))
            }
        }
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
                    k.is_finite() && (k - k.round()).abs() < 1e-6
                });
                x >= *low && x <= *high && on_step
            }),
            // Checked: a `Dist` built by hand may hold any step.
            Dist::Int {
                low, high, step, ..
            } => v.as_i64().is_some_and(|x| {
                x >= *low
                    && x <= *high
                    && x.checked_sub(*low)
                        .and_then(|d| d.checked_rem(*step))
                        .is_some_and(|r| r == 0)
            }),
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

    /// Every value of a finite parameter, in order, as [`Dist::from_internal`] gives them;
    /// `None` for a continuous one or one with more than [`MAX_CHOICES`] points.
    pub fn grid_values(&self) -> Option<Vec<Value>> {
        let points = self.grid_len()?;
        Some(match self {
            Dist::Categorical { choices } => choices.clone(),
            Dist::Int { low, step, .. } => (0..points as i64)
                .map(|k| Value::from(low + k * step))
                .collect(),
            Dist::Float {
                low,
                high,
                step: Some(s),
                ..
            } => (0..points)
                .map(|k| Value::from((low + k as f64 * s).min(*high)))
                .collect(),
            Dist::Float { low, .. } => vec![Value::from(*low)],
        })
    }

    /// How many values a finite parameter has (at most [`MAX_CHOICES`]), counted without
    /// trusting the range: `None` for a continuous parameter or a larger count.
    fn grid_len(&self) -> Option<usize> {
        let points = match self {
            Dist::Categorical { choices } => choices.len(),
            Dist::Int {
                low, high, step, ..
            } => {
                let steps = high.checked_sub(*low)?.checked_div(*step)?;
                usize::try_from(steps).ok()?.checked_add(1)?
            }
            Dist::Float {
                low,
                high,
                step: Some(s),
                ..
            } => {
                let steps = ((high - low) / s).round();
                // Also false for NaN; compared as a float before any cast.
                if !(s.is_finite() && steps >= 0.0 && steps < MAX_CHOICES as f64) {
                    return None;
                }
                steps as usize + 1
            }
            Dist::Float {
                low,
                high,
                step: None,
                ..
            } => {
                if low != high {
                    return None;
                }
                1
            }
        };
        (points <= MAX_CHOICES).then_some(points)
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
    fn steps_too_small_or_too_large_for_their_range_are_refused() {
        let float = |low: f64, high: f64, step: f64| {
            space(json!({"x": {"type": "float", "low": low, "high": high, "step": step}}))
        };
        for (low, high, step) in [
            // More steps than f64 can check, down to the smallest.
            (0.0, 1.0, 1e-300),
            (0.0, 1.0, 5e-324),
            (0.0, 1.0, 1e-10),
            // Fewer than 1e9 steps, but low + k·step are not distinct f64s at 1e10.
            (1e10, 1e10 + 0.5, 2f64.powi(-20)),
            // Larger than the range: only `low` could ever be drawn.
            (0.0, 10.0, 1e12),
            (0.0, 10.0, 11.0),
        ] {
            let err = float(low, high, step).unwrap_err();
            assert_eq!(
                err.field, "space.x.step",
                "[{low}, {high}] by {step}: {err}"
            );
        }
        // Fine: a billion steps, or one point.
        float(0.0, 1.0, 1e-9).unwrap();
        float(2.0, 2.0, 1e12).unwrap();
        let int = |low: f64, high: f64, step: f64| {
            space(json!({"n": {"type": "int", "low": low, "high": high, "step": step}}))
        };
        for (low, high, step) in [
            (0.0, 10.0, 1e300),
            (0.0, 10.0, 20.0),
            (-9e15, 9e15, 7.0),
            (0.0, 0.0, 1e16),
        ] {
            let err = int(low, high, step).unwrap_err();
            assert_eq!(
                err.field, "space.n.step",
                "[{low}, {high}] by {step}: {err}"
            );
        }
        // The widest integer range, every integer: counted without overflow.
        let wide = int(-9_007_199_254_740_992.0, 9_007_199_254_740_992.0, 1.0).unwrap();
        assert_eq!(wide.params[0].dist.grid_values(), None);
        let n = &wide.params[0].dist;
        assert!(n.holds(&json!(9_007_199_254_740_992_i64)));
        assert!(!n.holds(&json!(i64::MIN)));
    }

    /// `Dist`s built by hand (not through `Space::new`) with steps no space accepts: counting
    /// and checking their values must not overflow or divide by zero.
    #[test]
    fn counting_a_range_never_overflows() {
        for step in [
            1e-300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            0.0,
            -1.0,
            f64::INFINITY,
        ] {
            let d = Dist::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: Some(step),
            };
            assert_eq!(d.grid_values(), None, "step {step}");
            let _ = d.holds(&json!(0.5));
            let _ = d.from_internal(0.5);
        }
        for (low, high, step) in [
            (i64::MIN, i64::MAX, 1),
            (0, 10, 0),
            (0, 10, -1),
            (i64::MIN, 0, 1),
        ] {
            let d = Dist::Int {
                low,
                high,
                log: false,
                step,
            };
            assert_eq!(d.grid_values(), None, "[{low}, {high}] by {step}");
            let _ = d.holds(&json!(5));
            let _ = d.holds(&json!(i64::MAX));
            let _ = d.from_internal(5.0);
        }
        let point = Dist::Float {
            low: 3.0,
            high: 3.0,
            log: true,
            step: None,
        };
        assert_eq!(point.grid_values(), Some(vec![json!(3.0)]));
        assert_eq!(point.from_internal(3f64.ln()), json!(3.0));
    }

    #[test]
    fn conditions_on_numbers_name_values_the_parent_takes() {
        for (parent, value) in [
            (json!({"type": "float", "low": 0, "high": 1}), json!(5)),
            // A continuous parent takes no one value a condition could wait for.
            (json!({"type": "float", "low": 0, "high": 1}), json!(0.5)),
            (
                json!({"type": "int", "low": 0, "high": 10, "step": 2}),
                json!(3),
            ),
            (json!({"type": "int", "low": 0, "high": 10}), json!(11)),
            (json!({"type": "int", "low": 0, "high": 10}), json!(2.5)),
            (json!({"type": "int", "low": 0, "high": 10}), json!("2")),
            (
                json!({"type": "float", "low": 0, "high": 1, "step": 0.25}),
                json!(0.3),
            ),
            (json!({"type": "categorical", "choices": [1, 2]}), json!(3)),
        ] {
            let spec = json!({
                "a": parent,
                "b": {"type": "float", "low": 0, "high": 1, "when": {"a": [value]}},
            });
            let err = space(spec.clone()).unwrap_err();
            assert_eq!(err.field, "space.b.when.a", "{spec}: {err}");
        }
        // Values the parent takes are kept as its sampler gives them, so they match.
        let s = space(json!({
            "a": {"type": "float", "low": 0, "high": 1, "step": 0.1},
            "n": {"type": "int", "low": 0, "high": 10, "step": 2},
            "b": {"type": "float", "low": 0, "high": 1, "when": {"a": 0.3, "n": [4.0, 6]}},
        }))
        .unwrap();
        let b = s.param("b").unwrap();
        let a = &s.param("a").unwrap().dist;
        assert_eq!(b.when[0].1, vec![a.from_internal(0.3)]);
        assert_eq!(b.when[1].1, vec![json!(4), json!(6)]);
        let chosen: Params = [("a".into(), a.from_internal(0.31)), ("n".into(), json!(4))].into();
        assert!(Space::is_active(b, &chosen));
    }

    #[test]
    fn a_parameter_given_twice_is_refused_naming_it() {
        let text = r#"{"x": {"type": "float", "low": 0, "high": 1},
                       "x": {"type": "int", "low": 0, "high": 3}}"#;
        // (The path, `space.x`, is what the API's extractor names: tested over HTTP.)
        let err = serde_json::from_str::<crate::StudySpec>(&format!(
            r#"{{"name": "s", "space": {text}}}"#
        ))
        .unwrap_err();
        assert!(err.to_string().contains("`x` is given twice"), "{err}");
        let when = r#"{"type": "float", "low": 0, "high": 1, "when": {"a": 1, "a": 2}}"#;
        let err = serde_json::from_str::<ParamSpec>(when).unwrap_err();
        assert!(err.to_string().contains("`a` is given twice"), "{err}");
        let once: BTreeMap<String, ParamSpec> = serde_json::from_str(
            r#"{"x": {"type": "float", "low": 0, "high": 1, "when": {"a": 1}}}"#,
        )
        .unwrap();
        assert_eq!(once["x"].when.len(), 1);
    }

    #[test]
    fn configurations_of_a_conditional_space_are_enumerated() {
        let s = space(json!({
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "m": {"type": "float", "low": 0, "high": 1, "step": 0.5, "when": {"opt": "sgd"}},
            "n": {"type": "int", "low": 1, "high": 2},
        }))
        .unwrap();
        let mut all = Vec::new();
        assert_eq!(
            s.for_each_configuration(100, |p| {
                all.push(p.clone());
                true
            }),
            Some(8)
        );
        for p in &all {
            s.check_params(p).unwrap();
        }
        assert_eq!(s.for_each_configuration(7, |_| true), None);
        assert_eq!(s.for_each_configuration(100, |_| false), Some(1));
        let continuous = space(json!({
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
        }))
        .unwrap();
        assert_eq!(continuous.for_each_configuration(100, |_| true), None);
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
