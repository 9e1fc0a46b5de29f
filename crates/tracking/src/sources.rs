//! Which model-version sources are accepted, with MLflow's rules and messages (its
//! `_create_model_version`): host-addressed schemes refused (the server would connect
//! wherever the URI says), no relative path references after any amount of percent
//! decoding, local paths refused (this server keeps artifacts in its store), `runs:/`,
//! `models:/<model_id>` and `mlflow-artifacts:` sources only with the request parameter
//! that names the run or logged model holding them; other object stores (`s3://`, `gs://`,
//! `dbfs:/`, …) accepted as they are: a version Trainyard cannot read is a version it cannot
//! serve, shown so by the serving side, not a refused create.

use crate::error::invalid;
use crate::TrackingError;

pub(crate) fn bad_source(source: &str, why: &str) -> TrackingError {
    invalid(format!("Invalid model version source: '{source}'. {why}"))
}

/// Schemes whose URIs name a host the server would connect to.
const HOST_ADDRESSED: &[&str] = &[
    "ftp", "sftp", "hdfs", "viewfs", "http", "https", "r2", "b2", "abfss",
];

pub(crate) const RUN_ID_MUST_MATCH: &str =
    "The run_id request parameter must identify the resource that contains the source.";
pub(crate) const MODEL_ID_MUST_MATCH: &str =
    "The model_id request parameter must identify the resource that contains the source.";

/// A URI's parts as Python's `urlparse` splits them (scheme, netloc, path), enough for
/// these rules.
pub(crate) struct Parts<'a> {
    pub scheme: String,
    pub netloc: &'a str,
    pub path: &'a str,
}

pub(crate) fn split(uri: &str) -> Parts<'_> {
    let (scheme, rest) = match uri.split_once(':') {
        Some((s, rest))
            if !s.is_empty()
                && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (s.to_ascii_lowercase(), rest)
        }
        _ => (String::new(), uri),
    };
    let (netloc, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            (&after[..end], &after[end..])
        }
        None => ("", rest),
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    Parts {
        scheme,
        netloc,
        path: &rest[..end],
    }
}

/// Percent-decoding (with `+` as space) repeated until nothing changes, as MLflow does
/// before it looks for `..`: `%252e%252e` is `..` too.
pub(crate) fn unquote_fully(s: &str) -> String {
    let mut current = s.to_string();
    for _ in 0..16 {
        let plus = current.replace('+', " ");
        let next = percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Whether an `mlflow-artifacts:` source lies inside `root` (an artifact URI of ours),
/// compared on its decoded path.
pub(crate) fn lies_inside(source: &str, root: &str) -> bool {
    let (Some(path), Some(root)) = (
        crate::artifacts::artifact_path(source),
        crate::artifacts::artifact_path(root),
    ) else {
        return false;
    };
    let path = unquote_fully(path);
    crate::artifacts::check_path(&path).is_ok() && crate::artifacts::path_within(&path, root)
}

/// A local path: no scheme, `file:`, or a scheme with a localhost host.
pub(crate) fn is_local(uri: &str) -> bool {
    let p = split(uri);
    if p.scheme.is_empty() {
        return true;
    }
    let host = p
        .netloc
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default();
    let local_host =
        host.is_empty() || host == "." || host.starts_with("localhost") || host == "127.0.0.1";
    if !local_host {
        return false;
    }
    p.scheme == "file"
}

/// Refused: a scheme that addresses another host (`https://…`, `ftp://…`,
/// `mlflow-artifacts://host/…`).
pub(crate) fn check_not_host_addressed(source: &str) -> Result<(), TrackingError> {
    let p = split(source);
    let addressed = HOST_ADDRESSED.contains(&p.scheme.as_str())
        || (p.scheme == "mlflow-artifacts" && !p.netloc.is_empty());
    if addressed {
        let scheme = &p.scheme;
        return Err(invalid(format!(
            "'source' cannot use the '{scheme}' scheme: the '{scheme}' scheme addresses a host \
             other than the tracking server's configured artifact storage, so the server would \
             connect to the host named in the URI."
        )));
    }
    Ok(())
}

/// Refused: `..`, `.`, NUL or an empty path, after decoding as often as it decodes.
pub(crate) fn check_no_relative_references(source: &str) -> Result<(), TrackingError> {
    let refuse = || {
        Err(bad_source(
            source,
            "If supplying a source as an http, https, local file path, ftp, objectstore, or \
             mlflow-artifacts uri, an absolute path must be provided without relative path \
             references present. Please provide an absolute path.",
        ))
    };
    let decoded = unquote_fully(source);
    let raw_path = split(&decoded).path.to_string();
    let mut path = String::with_capacity(raw_path.len());
    for c in raw_path.trim_end_matches('/').chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    if path.contains('\0') || decoded.split('/').any(|seg| seg == "..") {
        return refuse();
    }
    // What resolving the path would change: relative, `.` segments, nothing at all.
    if !path.starts_with('/')
        || path
            .split('/')
            .skip(1)
            .any(|seg| seg == "." || seg.is_empty())
    {
        return refuse();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_references_are_found_however_encoded() {
        for bad in [
            "runs:/r/..%2f..",
            "runs:/r/../../x",
            "runs:/r/model/../../other",
            "runs:/r/%2e%2e/%2e%2e/x",
            "runs:/r/..%252f..%252fx",
            "s3://bucket/a/../b",
            "s3://bucket/a/%2e%2e/b",
            "s3://b/p%00",
            "s3://bucket",
            "s3://bucket/",
            "s3://b/./x",
        ] {
            assert!(check_no_relative_references(bad).is_err(), "{bad}");
        }
        for good in [
            "runs:/r/model",
            "s3://bucket/path",
            "gs://b/p",
            "dbfs:/a/b",
            "models:/m-1",
        ] {
            assert!(check_no_relative_references(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn schemes_and_local_paths() {
        assert!(check_not_host_addressed("https://host/p").is_err());
        assert!(check_not_host_addressed("mlflow-artifacts://host/p").is_err());
        assert!(check_not_host_addressed("mlflow-artifacts:/1/x").is_ok());
        assert!(check_not_host_addressed("s3://b/p").is_ok());
        assert!(is_local("/tmp/x") && is_local("file:///tmp/x") && is_local("rel/path"));
        assert!(!is_local("s3://b/p") && !is_local("file://remote/x"));
        let p = split("s3://bucket/a/b?x#y");
        assert_eq!(
            (p.scheme.as_str(), p.netloc, p.path),
            ("s3", "bucket", "/a/b")
        );
    }
}
