//! The web UI's assets, built from `web/` by this crate's build script and embedded in the
//! binary. `api` serves them at `/`; this crate only knows what they are.

/// One built file.
#[derive(Debug)]
pub struct Asset {
    /// Its URL path, e.g. `/assets/index-C4JSLLJN.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// Its name carries a hash of its content (everything under `/assets/`): it can be
    /// cached for good, since a new build gives it a new name.
    pub immutable: bool,
    /// A hash of `bytes` (hex), for `ETag`s: equal content, equal tag.
    pub tag: &'static str,
    pub bytes: &'static [u8],
    /// The same bytes gzip-compressed, when that is smaller.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Whether this binary was built with the UI (`TRAINYARD_SKIP_UI` unset).
pub fn built() -> bool {
    BUILT
}

/// The asset at a URL path, if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The page every UI route starts from.
pub fn index() -> Option<&'static Asset> {
    asset("/index.html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_ui_has_an_index_and_hashed_assets() {
        if !built() {
            return;
        }
        let index = index().expect("index.html");
        assert!(!index.immutable);
        let html = std::str::from_utf8(index.bytes).unwrap();
        // Every script and stylesheet the page names is embedded, and cacheable for good.
        for part in html.split("\"/assets/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            let a = asset(&format!("/assets/{name}")).unwrap_or_else(|| panic!("{name}"));
            assert!(a.immutable);
        }
        assert!(asset("/../Cargo.toml").is_none());
    }
}
