//! Runs the deployed artifact as Lambda runs it, without Docker: the
//! `hanul-lambda` binary started with the environment template.yaml gives a
//! function, talking to an emulated Runtime API, against an AWS endpoint
//! (moto). What `sam local invoke -e` does, plus the timings of a cold start.

pub mod cli;
pub mod runtime_api;
pub mod stack;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use std::io::Read;

pub use runtime_api::{InitFailure, Invocation, Outcome, RuntimeApi};
pub use stack::Stack;
pub use template::{FunctionDef, Template, TemplateError};

/// Variables Lambda itself sets in every execution environment, besides
/// the function's own (`AWS_LAMBDA_RUNTIME_API` and `_HANDLER` come per run).
fn lambda_environment(function: &FunctionDef) -> Vec<(String, String)> {
    let name = format!("{}-{}", template::STACK, function.logical_id);
    [
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            function.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/12/02/[$LATEST]local".into(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".into()),
        ("AWS_REGION", template::REGION.into()),
        ("AWS_DEFAULT_REGION", template::REGION.into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
        ("TZ", ":UTC".into()),
        ("LANG", "en_US.UTF-8".into()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin".into()),
        ("_HANDLER", function.handler.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The credentials and endpoint the process reaches AWS (moto) with: on
/// Lambda the role's credentials, here whatever this process has.
fn passthrough() -> Vec<(String, String)> {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
    .collect()
}

/// moto answers the WebSocket management API only on its own endpoint,
/// without the stage path the template's `CHAT_SOCKET_ENDPOINT` carries:
/// where a function is given that endpoint, it gets moto's instead.
fn socket_endpoint(environment: &BTreeMap<String, String>) -> Vec<(String, String)> {
    match (
        environment.contains_key("CHAT_SOCKET_ENDPOINT"),
        std::env::var("AWS_ENDPOINT_URL"),
    ) {
        (true, Ok(endpoint)) => vec![("CHAT_SOCKET_ENDPOINT".to_owned(), endpoint)],
        _ => Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("start {binary}: {error}")]
    Spawn {
        binary: String,
        error: std::io::Error,
    },
    #[error("runtime API: {0}")]
    Api(#[from] std::io::Error),
    #[error("{failure}\n--- function output ---\n{output}")]
    Init {
        failure: InitFailure,
        output: String,
    },
    #[error("the process exited during init ({status})\n--- function output ---\n{output}")]
    Exited { status: String, output: String },
    #[error("{error}\n--- function output ---\n{output}")]
    Invoke {
        error: runtime_api::InvokeError,
        output: String,
    },
}

/// One cold start: the init, then the first invocation.
#[derive(Debug)]
pub struct ColdStart {
    /// Process start to its first `/next` request.
    pub init: Duration,
    pub first: Invocation,
    pub extensions: Vec<String>,
    /// The process exited within 500 ms of SIGTERM (its shutdown hooks ran).
    pub clean_shutdown: bool,
    /// What the process printed (its JSON log lines).
    pub output: String,
}

/// A function ready to be started: the binary and its environment.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub function: FunctionDef,
    /// The function's environment as template.yaml resolves it.
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
}

impl Launch {
    pub fn new(
        binary: &Path,
        function: &FunctionDef,
        with: &dyn template::Resolve,
    ) -> Result<Self, TemplateError> {
        Ok(Self {
            binary: binary.to_owned(),
            function: function.clone(),
            environment: template::environment(function, with)?,
            timeout: Duration::from_secs(function.timeout_s.max(1)),
        })
    }

    /// Starts a fresh process (a cold start), hands it `event`, waits for
    /// the answer and stops the process.
    pub async fn cold_invoke(&self, event: Bytes) -> Result<ColdStart, LaunchError> {
        let api = RuntimeApi::start(
            &format!("{}-{}", template::STACK, self.function.logical_id),
            &self.function.handler,
        )
        .await?;
        let mut command = std::process::Command::new(&self.binary);
        command
            .env_clear()
            .envs(lambda_environment(&self.function))
            .envs(passthrough())
            .envs(&self.environment)
            .envs(socket_endpoint(&self.environment))
            .env("AWS_LAMBDA_RUNTIME_API", api.endpoint())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().map_err(|error| LaunchError::Spawn {
            binary: self.binary.display().to_string(),
            error,
        })?;
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for mut stream in streams.into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut out) = output.lock() {
                        out.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let mut process = Process(child);
        let printed = |output: &Arc<Mutex<String>>| {
            // Give the reader threads a moment to take the last lines.
            std::thread::sleep(Duration::from_millis(20));
            output.lock().map(|o| o.clone()).unwrap_or_default()
        };
        let ready = tokio::select! {
            ready = api.wait_ready(started, Duration::from_secs(10)) => ready,
            status = process.exited() => {
                // It may have reported an init error just before exiting.
                if let Some((error_type, message)) = api.init_error() {
                    Err(InitFailure::Reported { error_type, message })
                } else {
                    return Err(LaunchError::Exited { status, output: printed(&output) });
                }
            }
        };
        let init = match ready {
            Ok(init) => init,
            Err(failure) => {
                process.kill();
                return Err(LaunchError::Init {
                    failure,
                    output: printed(&output),
                });
            }
        };
        let first = api.invoke(event, self.timeout).await;
        let extensions = api.extensions();
        let clean_shutdown = process.shut_down(Duration::from_millis(500)).await;
        let output = printed(&output);
        match first {
            Ok(first) => Ok(ColdStart {
                init,
                first,
                extensions,
                clean_shutdown,
                output,
            }),
            Err(error) => Err(LaunchError::Invoke { error, output }),
        }
    }
}

/// The key the sample events in `tests/events/` send as `x-api-key`.
pub const SAMPLE_SERVICE_KEY: &str = "an-example-service-key-0123456789";

/// A fresh development stack on the endpoint of `config` (moto): the
/// template's resources under a new prefix, SNS platform applications for
/// the push parameters, development values for the parameters a deploy must
/// be given, and the service-key secret set to the sample events' key.
/// `overrides` win over all of these.
pub async fn dev_stack(
    template: &Template,
    config: &aws_config::SdkConfig,
    overrides: BTreeMap<String, String>,
) -> Result<(Stack, String), TemplateError> {
    let prefix = format!("lr{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let sns = aws_sdk_sns::Client::new(config);
    let app = |name: String, kind: &'static str| {
        let sns = sns.clone();
        async move {
            hanul_shared::aws::bootstrap::ensure_platform_application(&sns, &name, kind)
                .await
                .map_err(|e| TemplateError(e.to_string()))
        }
    };
    let mut parameters = BTreeMap::from([
        ("ShortBaseUrl".to_owned(), "https://hnl.example".to_owned()),
        (
            "ShortCodeKey".to_owned(),
            "a-development-code-key-of-at-least-32-characters".to_owned(),
        ),
        (
            "CdnOriginSecret".to_owned(),
            "a-development-origin-secret-of-32-characters".to_owned(),
        ),
        (
            "NotifyApnsApplicationArn".to_owned(),
            app(format!("{prefix}apns"), "APNS").await?,
        ),
        (
            "NotifyFcmApplicationArn".to_owned(),
            app(format!("{prefix}fcm"), "GCM").await?,
        ),
    ]);
    parameters.extend(overrides);
    let mut stack = Stack::provision(template, config, &prefix, parameters).await?;
    stack.set_secret("ServiceApiKeySecret", SAMPLE_SERVICE_KEY);
    Ok((stack, prefix))
}

/// The function's process; killed when dropped, as Lambda ends an
/// environment.
struct Process(std::process::Child);

impl Process {
    /// Resolves when the process exits, with its status.
    async fn exited(&mut self) -> String {
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => return e.to_string(),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Lambda's shutdown with an extension registered: SIGTERM, then
    /// SIGKILL if the process has not exited within `grace`. Returns whether
    /// it exited by itself.
    async fn shut_down(&mut self, grace: Duration) -> bool {
        let pid = self.0.id().to_string();
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if signalled && tokio::time::timeout(grace, self.exited()).await.is_ok() {
            return true;
        }
        self.kill();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where cargo puts build output: `CARGO_TARGET_DIR`, else the
/// workspace's `target/` (`cargo metadata` knows; this asks it).
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR")
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    let metadata =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(Stdio::null())
            .output();
    metadata
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .and_then(|v| v["target_directory"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}
