//! A real `trainyard up` process on loopback for integration tests, with its own data
//! directory and database: a SQLite file by default, or a fresh PostgreSQL database when
//! `TRAINYARD_TEST_DATABASE_URL` names a server (the role needs CREATEDB).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_trainyard");

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    hostname: Option<String>,
    http: reqwest::Client,
    /// The CA the server's TLS certificate comes from (with `ServerOptions::tls`).
    pub ca: Option<PathBuf>,
}

pub struct ServerOptions {
    pub cpus: f64,
    pub gpus: u32,
    pub kill_grace_s: f64,
    pub blobs: Option<String>,
    pub env: Vec<(String, String)>,
    pub backfill_window_s: Option<f64>,
    /// `--job-user`; `None` = the test's own user, so jobs see the files the test made (the
    /// server's default for root, a dedicated account, is tested on its own).
    pub job_user: Option<String>,
    /// A `trainyard.toml` for the server (`--config`).
    pub config_toml: Option<String>,
    /// `--database`: a database another server shares [default: a fresh one].
    pub database_url: Option<String>,
    /// Runs the server in a UTS namespace of its own with this host name, as if on another
    /// machine (needs root and `unshare`).
    pub hostname: Option<String>,
    /// Serves TLS with a certificate for 127.0.0.1 from a CA made for the test (the
    /// server gets `--tls-ca` too; the test's client and `cli` trust that CA).
    pub tls: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            cpus: 2.0,
            gpus: 0,
            kill_grace_s: 2.0,
            blobs: None,
            env: Vec::new(),
            backfill_window_s: None,
            job_user: None,
            config_toml: None,
            database_url: None,
            hostname: None,
            tls: false,
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh PostgreSQL database for one server, when the suite runs against PostgreSQL.
pub async fn database_url() -> Option<String> {
    let admin = std::env::var("TRAINYARD_TEST_DATABASE_URL").ok()?;
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to TRAINYARD_TEST_DATABASE_URL");
    let name = format!("ty_test_{}", trainyard_core::new_id());
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("database URL with a path");
    Some(format!("{base}/{name}"))
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(opts: ServerOptions) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let port = free_port();
        let mut args = vec![
            "up".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--cpus".into(),
            opts.cpus.to_string(),
            "--gpus".into(),
            opts.gpus.to_string(),
            "--kill-grace-s".into(),
            opts.kill_grace_s.to_string(),
            // Many servers run at once: each takes a free gRPC port.
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
        ];
        let database = match opts.database_url.clone() {
            Some(url) => Some(url),
            None => database_url().await,
        };
        if let Some(url) = database {
            args.push("--database".into());
            args.push(url);
        }
        args.push("--job-user".into());
        args.push(match opts.job_user {
            Some(user) => user,
            None => trainyard_compute::JobUser::current().unwrap().name,
        });
        if let Some(text) = &opts.config_toml {
            let path = dir.path().join("trainyard.toml");
            std::fs::write(&path, text).unwrap();
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        if let Some(window) = opts.backfill_window_s {
            args.push("--backfill-window-s".into());
            args.push(window.to_string());
        }
        if let Some(blobs) = &opts.blobs {
            args.push("--blobs".into());
            args.push(blobs.clone());
        }
        let mut http = reqwest::Client::builder();
        let mut ca = None;
        if opts.tls {
            let (cert, key, ca_pem) = test_certificate(dir.path());
            args.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
                "--tls-ca".into(),
                ca_pem.display().to_string(),
            ]);
            let pem = std::fs::read(&ca_pem).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
            ca = Some(ca_pem);
        }
        let scheme = if opts.tls { "https" } else { "http" };
        let mut server = Server {
            child: None,
            ca,
            base: format!("{scheme}://127.0.0.1:{port}"),
            token: String::new(),
            data_dir,
            _dir: dir,
            args,
            env: opts.env,
            hostname: opts.hostname,
            http: http.build().unwrap(),
        };
        server.spawn().await;
        // A server given TRAINYARD_ADMIN_TOKEN takes that token and writes no file.
        server.token = match server
            .env
            .iter()
            .find(|(k, _)| k == "TRAINYARD_ADMIN_TOKEN")
        {
            Some((_, token)) => token.clone(),
            None => std::fs::read_to_string(server.data_dir.join("admin-token"))
                .expect("admin-token written at first start")
                .trim()
                .to_string(),
        };
        server
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("server.log"))
            .unwrap();
        let mut cmd = match &self.hostname {
            None => Command::new(BIN),
            Some(name) => {
                let mut cmd = Command::new("unshare");
                cmd.args([
                    "--uts",
                    "--",
                    "sh",
                    "-c",
                    "hostname \"$0\" && exec \"$@\"",
                    name,
                    BIN,
                ]);
                cmd
            }
        };
        cmd.args(&self.args)
            .env_remove("TRAINYARD_ADMIN_TOKEN")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start trainyard up"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited at start ({status}):\n{}", self.server_log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up:\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// `kill -9` the server, leaving its jobs' supervisors running.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap()
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&self.token)
    }

    /// GET with the token; the body as JSON whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    pub async fn submit(&self, body: Value) -> Value {
        let r = self.post("/api/v1/jobs").json(&body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "submit {body}: {v}");
        v
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn wait_state(
        &self,
        id: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if pred(job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} stuck: {job}\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        self.wait_state(
            id,
            |s| matches!(s, "succeeded" | "failed" | "cancelled"),
            timeout,
        )
        .await
    }

    pub async fn logs(&self, id: &str, query: &str) -> String {
        let r = self
            .get(&format!("/api/v1/jobs/{id}/logs?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TRAINYARD_SERVER", &self.base)
            .env("TRAINYARD_TOKEN", &self.token)
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca {
            cmd.env("TRAINYARD_CA_CERT", ca);
        }
        cmd.output().unwrap()
    }

    /// Runs the CLI against this server with `token`, writing `stdin` to its standard input.
    pub fn cli_as(&self, token: &str, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TRAINYARD_SERVER", &self.base)
            .env("TRAINYARD_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = &self.ca {
            cmd.env("TRAINYARD_CA_CERT", ca);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// The HTTP client the test talks to this server with (trusts its CA).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // End the supervisors this server left behind (their process trees go with them).
        if let Ok(entries) = std::fs::read_dir(self.data_dir.join("executor")) {
            for entry in entries.flatten() {
                for f in std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if f.file_name().to_string_lossy().ends_with(".pid.json") {
                        if let Ok(v) = serde_json::from_slice::<Value>(
                            &std::fs::read(f.path()).unwrap_or_default(),
                        ) {
                            if let Some(pid) = v["pid"].as_u64() {
                                unsafe {
                                    libc::kill(pid as i32, libc::SIGTERM);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A job body with `command` and defaults.
pub fn job(command: &[&str]) -> Value {
    json!({ "command": command })
}

/// A kB figure of a process's `/proc/PID/status` (`VmHWM:` peak, `VmRSS:` now).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Peak resident memory of a process (kB).
pub fn peak_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// Resident memory of a process now (kB).
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Server {
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.token)
    }

    pub fn http_put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(&self.token)
    }

    /// Uploads `table` as one shard, as a client does; its honest one-shard manifest.
    #[allow(dead_code)]
    pub async fn upload_table(&self, table: trainyard_data::Table) -> Value {
        let shard = trainyard_data::shard::encode(&table);
        let sha = trainyard_data::shard::sha256_hex(&shard);
        let r = self
            .http_put(&format!("/api/v1/datasets/shards/{sha}"))
            .body(shard)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let rows = table.rows();
        let mut writer = trainyard_data::VersionWriter::new(table.schema.clone(), rows);
        let mut sink = trainyard_data::MemStore::default();
        writer.push(table, &mut sink).unwrap();
        let manifest = writer
            .finish(trainyard_data::Lineage::default(), &mut sink)
            .unwrap();
        assert_eq!(manifest.shards[0].sha256, sha);
        serde_json::to_value(&manifest).unwrap()
    }
}

impl Server {
    /// Waits until the job's log contains `needle`: proof that the command itself runs.
    pub async fn wait_log(&self, id: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.logs(id, "").await.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "job {id} never printed {needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Server {
    /// The executor removes a finished job's local folder just after recording its outcome.
    pub async fn wait_spool_removed(&self, id: &str) {
        let dir = self.data_dir.join(format!("executor/{id}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.exists() {
            assert!(
                Instant::now() < deadline,
                "{} was never removed",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `examples/digits/FILE`.
pub fn example(file: &str) -> String {
    PathBuf::from(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../examples/digits")
    .join(file)
    .display()
    .to_string()
}

/// A command's stdout and stderr, together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The output of a command that must succeed.
pub fn ok(out: Output) -> String {
    let t = text(&out);
    assert!(out.status.success(), "exit {:?}:\n{t}", out.status.code());
    t
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost, made with the
/// `openssl` command in `dir`; returns (certificate, key, CA certificate).
pub fn test_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    test_certificate_for(dir, "IP:127.0.0.1,DNS:localhost")
}

/// The same for the subject alternative names `names` (`DNS:a.example,IP:10.0.0.1`).
pub fn test_certificate_for(dir: &std::path::Path, names: &str) -> (PathBuf, PathBuf, PathBuf) {
    let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=trainyard-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=trainyard-test -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' "$NAMES" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null
"#;
    let status = Command::new("sh")
        .args(["-c", script])
        .env("NAMES", names)
        .current_dir(dir)
        .status()
        .expect("run openssl");
    assert!(
        status.success(),
        "openssl could not make the test certificates"
    );
    (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    )
}

/// Imports digits.csv.gz and applies the example's steps; returns the processed version.
pub fn prepare_digits(server: &Server) -> String {
    let data = example("data/digits.csv.gz");
    assert!(
        std::path::Path::new(&data).exists(),
        "{data} is missing: run examples/digits/fetch.sh"
    );
    let imported = ok(server.cli(&["dataset", "import", "digits", &data]));
    assert!(imported.contains("1797 rows"), "{imported}");
    let again = ok(server.cli(&["dataset", "import", "digits", &data]));
    assert!(again.contains("already existed"), "{again}");
    ok(server.cli(&[
        "dataset",
        "process",
        "digits",
        "--steps",
        &example("steps.toml"),
    ]));
    let shown: Value =
        serde_json::from_str(&ok(server.cli(&["dataset", "show", "digits", "-o", "json"])))
            .unwrap();
    let histogram = &shown["manifest"]["stats"]["split"]["histogram"];
    // 1797 rows, 80/20 per class: every class's share in both parts.
    let train = histogram["train"].as_u64().unwrap();
    let test = histogram["test"].as_u64().unwrap();
    assert_eq!(train + test, 1797, "{shown}");
    assert!((355..=365).contains(&test), "{histogram}");
    shown["version"].as_str().unwrap().to_string()
}
