//! The web UI at `/`: the assets `trainyard-web` embeds, with caching that fits how they
//! are named. Hashed files under `/assets/` are cached for a year (a new build renames
//! them); `index.html` is revalidated on every load (`no-cache` + `ETag`), so a new binary's
//! UI reaches browsers at once. Pages are hash routes (`/#/experiments/2`), so the server
//! needs no route per page. The UI calls the same API as every client, with a token.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use trainyard_web::Asset;

use crate::error;

/// What the page may load: its own scripts, styles and API only; images also from `data:`
/// and `blob:` (artifact previews); nothing may frame it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The UI's routes; `None` when the binary was built without it (`TRAINYARD_SKIP_UI`),
/// so `/` answers 404 like any unknown path.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Option<Router<S>> {
    trainyard_web::built().then(|| {
        Router::new()
            .route("/", get(index))
            .route("/index.html", get(index))
            .route("/assets/{*file}", get(asset))
    })
}

async fn index(uri: Uri, headers: HeaderMap) -> Response {
    match trainyard_web::index() {
        Some(a) => respond(a, &headers),
        None => error::route_not_found(uri).await.into_response(),
    }
}

async fn asset(Path(file): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    match trainyard_web::asset(&format!("/assets/{file}")) {
        Some(a) => respond(a, &headers),
        None => error::route_not_found(uri).await.into_response(),
    }
}

/// The asset's validator, apart for each coding sent.
fn etag(a: &Asset, gzip: bool) -> String {
    format!("\"{}{}\"", a.tag, if gzip { "-gz" } else { "" })
}

fn respond(a: &'static Asset, request: &HeaderMap) -> Response {
    let gzip_ok = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let gzip = a.gzip.filter(|_| gzip_ok);
    let tag = etag(a, gzip.is_some());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if a.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(header::ETAG, HeaderValue::from_str(&tag).expect("hex"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if a.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    match gzip {
        Some(packed) => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, packed).into_response()
        }
        _ => (headers, a.bytes).into_response(),
    }
}

/// Whether an `Accept-Encoding` value allows gzip (`gzip;q=0` does not).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or_default().trim();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip(""));
    }
}
