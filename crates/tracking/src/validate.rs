//! MLflow's validation rules (spec §5), with its error texts where clients or tests read them.

use crate::error::{invalid, TrackingError};

pub const MAX_KEY_LEN: usize = 250;
pub const MAX_PARAM_VALUE_LEN: usize = 6000;
pub const MAX_RUN_TAG_VALUE_LEN: usize = 8000;
pub const MAX_EXPERIMENT_TAG_VALUE_LEN: usize = 20000;
pub const MAX_EXPERIMENT_NAME_LEN: usize = 500;
pub const MAX_MODEL_TAG_VALUE_LEN: usize = 100_000;
pub const MAX_ALIAS_LEN: usize = 255;
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_BATCH_TOTAL: usize = 1000;
/// Infinities are stored as the largest finite double, as MLflow does.
pub const MAX_DOUBLE: f64 = f64::MAX;

/// A metric, param or tag key: `^[/\w.\- :]*$`, no path tricks, at most 250 characters.
pub fn key(what: &str, key: &str) -> Result<(), TrackingError> {
    let allowed = |c: char| c.is_alphanumeric() || "_-. :/".contains(c);
    if !key.chars().all(allowed) {
        return Err(invalid(format!(
            "Invalid value {} for parameter '{what}' supplied: Names may only contain \
             alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and \
             slashes (/).",
            json_str(key)
        )));
    }
    if !path_is_normal(key) {
        return Err(invalid(format!(
            "Invalid value {} for parameter '{what}' supplied: Names cannot be a path that \
             would be changed by normalisation (no '..', leading '/', '//' or '.').",
            json_str(key)
        )));
    }
    length(what, key, MAX_KEY_LEN)
}

fn path_is_normal(key: &str) -> bool {
    if key.is_empty() {
        return true;
    }
    !(key.starts_with('/') || key.contains("//") || key.ends_with('/'))
        && key.split('/').all(|seg| seg != "." && seg != "..")
}

/// A value over `max` characters is an error (used where MLflow refuses instead of truncating).
pub fn length(what: &str, value: &str, max: usize) -> Result<(), TrackingError> {
    if value.chars().count() > max {
        return Err(invalid(format!(
            "'{what}' exceeds the maximum length of {max} characters"
        )));
    }
    Ok(())
}

/// Cuts a value to `max` characters (MLflow truncates long param and run-tag values).
pub fn truncate(mut value: String, max: usize) -> String {
    if let Some((i, _)) = value.char_indices().nth(max) {
        value.truncate(i);
    }
    value
}

pub fn required<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, TrackingError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(format!(
            "Missing value for required parameter '{name}'. See the API docs for more \
             information about request parameters."
        ))),
    }
}

/// An experiment id: a decimal integer (MLflow ids are strings holding integers).
pub fn experiment_id(id: &str) -> Result<i64, TrackingError> {
    id.parse::<i64>().map_err(|_| {
        invalid(format!(
            "Invalid experiment ID '{id}'. Experiment ID must be a valid integer."
        ))
    })
}

/// A run id: 32 lowercase hexadecimal characters (uuid4 hex, or a job id).
pub fn is_run_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Registered-model names: non-empty, no `/` or `:`, nothing a path would reinterpret.
pub fn model_name(name: &str) -> Result<(), TrackingError> {
    if name.is_empty() {
        return Err(invalid("Registered model name cannot be empty."));
    }
    if name.contains('/') || name.contains(':') || name == "." || name == ".." {
        return Err(invalid(format!(
            "Invalid name: '{name}'. Registered model name cannot contain '/' or ':'."
        )));
    }
    if name.contains('\0') {
        return Err(invalid("Registered model name cannot contain NUL bytes."));
    }
    Ok(())
}

/// An alias being set: `^[\w\-]*$`, at most 255, not `latest` and not `v<digits>`.
pub fn alias(alias: &str) -> Result<(), TrackingError> {
    if alias.is_empty()
        || alias.chars().count() > MAX_ALIAS_LEN
        || !alias
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(format!(
            "Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores \
             (_), and dashes (-), and be 1 to 255 characters long."
        )));
    }
    let lower = alias.to_ascii_lowercase();
    let version_like =
        lower.len() > 1 && lower.starts_with('v') && lower[1..].bytes().all(|b| b.is_ascii_digit());
    if lower == "latest" || version_like {
        return Err(invalid(format!(
            "Invalid alias name: '{alias}'. Aliases 'latest' and 'v<number>' are reserved."
        )));
    }
    Ok(())
}

/// A model version number given as a string.
pub fn version(version: &str) -> Result<i64, TrackingError> {
    version.trim().parse::<i64>().map_err(|_| {
        invalid(format!(
            "Parameter 'version' must be an integer, got '{version}'."
        ))
    })
}

/// The canonical spelling of a registry stage (input is case-insensitive).
pub fn stage(stage: &str) -> Result<&'static str, TrackingError> {
    ["None", "Staging", "Production", "Archived"]
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(stage))
        .ok_or_else(|| {
            invalid(format!(
                "Invalid Model Version stage: {stage}. Value must be one of None, Staging, \
                 Production, Archived."
            ))
        })
}

/// A page size between 1 and `max` (each search has its own MLflow limit).
pub fn max_results(n: i64, max: i64) -> Result<(), TrackingError> {
    if !(1..=max).contains(&n) {
        return Err(invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be at most {max} \
             and at least 1"
        )));
    }
    Ok(())
}

/// A float as Python's `repr` writes it (`1.0`, `0.5`, `nan`, `inf`), for messages that
/// quote MLflow's.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflow_rules() {
        for ok in ["loss", "train/loss", "a b:c-d.e_f", "é"] {
            assert!(key("key", ok).is_ok(), "{ok}");
        }
        for bad in ["a$b", "../x", "/abs", "a//b", ".", "a/./b", "a\0b"] {
            assert!(key("key", bad).is_err(), "{bad}");
        }
        assert!(key("key", &"k".repeat(251)).is_err());
        assert!(key("key", &"k".repeat(250)).is_ok());
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("ééé".into(), 2), "éé");
        assert_eq!(truncate("ab".into(), 5), "ab");
    }

    #[test]
    fn aliases_and_stages() {
        assert!(alias("champion").is_ok());
        assert!(alias("Latest").is_err());
        assert!(alias("v12").is_err());
        assert!(alias("v").is_ok());
        assert!(alias("a b").is_err());
        assert_eq!(stage("production").unwrap(), "Production");
        assert!(stage("Foo").is_err());
    }
}
