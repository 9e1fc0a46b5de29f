//! Builds the web UI (`web/`, TypeScript + Vite) into this crate's `OUT_DIR` and writes the
//! table of assets `src/lib.rs` includes, so `cargo build` alone yields a binary that serves
//! the UI. Building needs Node.js and npm: without them the build stops and says so, unless
//! `TRAINYARD_SKIP_UI=1` asks for a binary without the UI (it then answers 404 at `/`).
//!
//! The sources are copied to `OUT_DIR` and built there (`npm ci` on the lock file, then
//! `vite build`), so the build writes nothing into the source tree.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What is copied from `web/` to build from.
const SOURCES: [&str; 6] = [
    "src",
    "index.html",
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "vite.config.ts",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", web.join(s).display());
    }
    println!("cargo:rerun-if-env-changed=TRAINYARD_SKIP_UI");
    let table = out.join("assets.rs");
    if std::env::var_os("TRAINYARD_SKIP_UI").is_some_and(|v| !v.is_empty() && v != "0") {
        fs::write(
            &table,
            "pub const BUILT: bool = false;\npub static ASSETS: &[Asset] = &[];\n",
        )
        .unwrap();
        return;
    }
    if Command::new("npm")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        panic!(
            "\n\nbuilding Trainyard's web UI needs Node.js (18 or later) and npm, and `npm` was not found on PATH.\n\
             Install them (Debian/Ubuntu: `apt install nodejs npm`; or https://nodejs.org), or build without the UI:\n\
             TRAINYARD_SKIP_UI=1 cargo build …  (the server then answers 404 at `/`)\n\n"
        );
    }
    let src = out.join("web-src");
    // A file removed from web/src must not stay in the copy (the type check reads them all).
    let _ = fs::remove_dir_all(src.join("src"));
    for s in SOURCES {
        copy(&web.join(s), &src.join(s));
    }
    // Install only when the lock file changed since the last install here.
    let lock = fs::read(src.join("package-lock.json")).unwrap();
    let stamp = src.join("node_modules/.trainyard-lock");
    if fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        // Dependencies' install scripts do not run in a build (esbuild works from its
        // platform package without its own).
        run(Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&src));
        fs::write(&stamp, &lock).unwrap();
    }
    let dist = out.join("ui");
    run(Command::new("npm")
        .args(["run", "build", "--silent"])
        .env("TRAINYARD_WEB_OUT", &dist)
        .current_dir(&src));

    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut rs = String::from("pub const BUILT: bool = true;\npub static ASSETS: &[Asset] = &[\n");
    for f in files {
        let rel = f
            .strip_prefix(&dist)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = fs::read(&f).unwrap();
        let gz = PathBuf::from(format!("{}.gz", f.display()));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&bytes).unwrap();
        let packed = enc.finish().unwrap();
        let gzip = if packed.len() + 64 < bytes.len() {
            fs::write(&gz, &packed).unwrap();
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_string()
        };
        // A validator from the content, computed here once rather than on every request.
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!("{:016x}", h.finish())
        };
        rs.push_str(&format!(
            "    Asset {{ path: {:?}, content_type: {:?}, immutable: {}, tag: {tag:?}, bytes: include_bytes!({:?}), gzip: {gzip} }},\n",
            format!("/{rel}"),
            content_type(&rel),
            rel.starts_with("assets/"),
            f.display().to_string(),
        ));
    }
    rs.push_str("];\n");
    fs::write(&table, rs).unwrap();
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !status.success() {
        panic!("building the web UI: {cmd:?} failed ({status})");
    }
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        if let Some(p) = to.parent() {
            fs::create_dir_all(p).unwrap();
        }
        // Unchanged files keep their times, so Vite's and tsc's caches stay warm.
        if fs::read(to).ok() != fs::read(from).ok() {
            fs::copy(from, to).unwrap();
        }
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_none_or(|x| x != "gz") {
            files.push(p);
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}
