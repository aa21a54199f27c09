//! Starts and stops the local host (`hanul-local`) for end-to-end tests, on
//! either backend. The aws backend runs against the moto server named by
//! `AWS_ENDPOINT_URL`, which `make test` starts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Aws,
}

/// The `hanul-local` binary: `HANUL_LOCAL_BIN`, or the one cargo built
/// beside this test (`<target>/<profile>/deps/e2e-<hash>` →
/// `<target>/<profile>/hanul-local`), wherever the target directory is.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("HANUL_LOCAL_BIN") {
        return PathBuf::from(path);
    }
    let beside_test = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("hanul-local")));
    let path = beside_test.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/hanul-local")
    });
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p hanul-local`) or set HANUL_LOCAL_BIN",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One running local host, killed when dropped.
pub struct LocalHost {
    child: Option<Child>,
    pub base: String,
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub aws_prefix: String,
    env: Vec<(String, String)>,
    /// The address to bind (`127.0.0.1` unless told) and extra arguments.
    bind: String,
    args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalHost {
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[])
    }

    pub fn start_with(backend: Backend, env: &[(&str, &str)]) -> Self {
        Self::start_bound(backend, "127.0.0.1", &[], env)
    }

    /// Binds `bind` (e.g. `0.0.0.0`) with extra arguments; reached on
    /// 127.0.0.1 all the same, over HTTPS when `--tls-cert` is among them.
    pub fn start_bound(backend: Backend, bind: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut host = LocalHost {
            child: None,
            base: String::new(),
            backend,
            data_dir: temp.path().to_owned(),
            aws_prefix: format!("e2e{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            bind: bind.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            _temp: Some(temp),
        };
        host.launch();
        host
    }

    fn launch(&mut self) {
        let port = free_port();
        let mut cmd = Command::new(binary());
        cmd.arg("--addr")
            .arg(format!("{}:{port}", self.bind))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .env_remove("HANUL_BACKEND")
            .env_remove("HANUL_AWS_PREFIX")
            .stdout(
                std::fs::File::create(self.data_dir.join(format!("stdout-{port}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .stderr(
                std::fs::File::create(self.data_dir.join(format!("stderr-{port}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        if self.backend == Backend::Aws {
            let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
                "AWS_ENDPOINT_URL is not set: the aws end-to-end tests need a moto server (run `make test`)",
            );
            cmd.args(["--backend", "aws", "--aws-prefix", &self.aws_prefix])
                .env("AWS_ENDPOINT_URL", endpoint);
            for (k, v) in [
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ] {
                if std::env::var(k).is_err() {
                    cmd.env(k, v);
                }
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start hanul-local"));
        let scheme = if self.args.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        self.base = format!("{scheme}://127.0.0.1:{port}");
        self.wait_ready(port);
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.data_dir.join(format!("stderr-{port}.log")))
                    .unwrap_or_default();
                panic!("hanul-local exited with {status} before it was ready:\n{log}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hanul-local did not start listening within 30 s");
    }

    /// Everything the host (each of its runs) wrote on stderr.
    pub fn stderr(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.data_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with("stderr-") {
                    out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The host's own platform, opened a second time from the test: the same
    /// SQLite file, or the same moto resources.
    pub async fn platform(&self) -> hanul_shared::platform::Platform {
        match self.backend {
            Backend::Embedded => {
                let store = hanul_shared::embedded::EmbeddedStore::open(&self.data_dir)
                    .expect("open the host's store");
                hanul_shared::platform::Platform::embedded(store)
            }
            Backend::Aws => {
                let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
                let config = hanul_shared::aws::endpoint_config(&endpoint).await;
                hanul_shared::platform::Platform::aws(&config, Some(self.aws_prefix.clone()))
            }
        }
    }

    /// Runs `hanul-local redrive <queue>` against this host's data.
    pub fn redrive(&self, queue: &str) -> String {
        let mut cmd = Command::new(binary());
        cmd.arg("--data-dir").arg(&self.data_dir);
        if self.backend == Backend::Aws {
            cmd.args(["--backend", "aws", "--aws-prefix", &self.aws_prefix]);
            for (k, v) in [
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ] {
                if std::env::var(k).is_err() {
                    cmd.env(k, v);
                }
            }
        }
        let out = cmd.args(["redrive", queue]).output().expect("run redrive");
        assert!(
            out.status.success(),
            "redrive failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sum of an EMF metric over every line the host printed so far
    /// (start it with `HANUL_METRICS=true`).
    pub fn metric_sum(&self, name: &str) -> f64 {
        let Ok(dir) = std::fs::read_dir(&self.data_dir) else {
            return 0.0;
        };
        dir.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("stdout-"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v.get(name).and_then(serde_json::Value::as_f64))
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "hanul-local ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts again on the same data directory (and the same aws prefix).
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }
}

impl Drop for LocalHost {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Asserts the JSON error shape and returns its code.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "status");
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message"
    );
    assert!(
        code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "snake_case code {code}"
    );
    code
}

/// Runs each named test against the local host on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(hanul_e2e::Backend::Embedded).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(hanul_e2e::Backend::Aws).await;
                }
            )*
        }
    };
}

/// Runs the host with `env` and expects it to refuse to start; returns what
/// it printed on stderr.
pub fn start_fails(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(binary());
    cmd.arg("--addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("HANUL_BACKEND")
        .env_remove("HANUL_AWS_PREFIX")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start hanul-local");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "hanul-local exited cleanly");
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                use std::io::Read;
                let _ = stderr.read_to_string(&mut err);
            }
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hanul-local started although it should have refused to");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A local bearer token for `user`.
pub async fn token(host: &LocalHost, user: &str) -> String {
    let r = client()
        .post(host.url("/local/v1/token"))
        .json(&serde_json::json!({ "userId": user }))
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200, "token for {user}");
    let body: serde_json::Value = r.json().await.expect("token body");
    body["token"].as_str().expect("token").to_owned()
}

/// A response header as text (empty when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `secs` from now as RFC 3339, second precision, UTC.
pub fn rfc3339_in(secs: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(secs);
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (since / 86_400, since % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Polls `probe` every 100 ms until it answers `Ok`, and returns that; past
/// `within` it panics with the last `Err` (what was seen instead).
pub async fn eventually<T, E, F, Fut>(within: Duration, mut probe: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("not within {within:?}; last seen: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
