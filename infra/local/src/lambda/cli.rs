//! `hanul-local lambda invoke` and `hanul-local lambda coldstart`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ColdStart, Launch, Outcome, Template, dev_stack};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LambdaCommand {
    /// Runs one function of template.yaml as Lambda runs it, through an
    /// emulated Runtime API and with the environment the template gives it,
    /// against `AWS_ENDPOINT_URL` (a moto server), and prints its answer.
    Invoke {
        /// The function's Handler, e.g. `shorten` (also its event's name).
        handler: String,
        /// The event; default `tests/events/<handler>.json`.
        #[arg(long)]
        event: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Prints a function's environment as template.yaml resolves it on a
    /// fresh development stack (`KEY=value` lines, for
    /// `cargo lambda watch --env-file`), with `HANUL_FUNCTION` naming it.
    Env {
        /// The function's Handler, e.g. `shorten`.
        handler: String,
        #[command(flatten)]
        common: Common,
    },
    /// Cold-starts every function of template.yaml on its sample event, and
    /// a hello-world `lambda_runtime` function, and prints init and first
    /// invocation times and binary sizes.
    Coldstart {
        /// The hello-world baseline (`functions/examples/hello-world.rs`),
        /// built with the same profile as `--bin`.
        #[arg(long)]
        hello: PathBuf,
        /// Cold starts per function (the table shows medians).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The function binary (`hanul-lambda`, as `sam build` packages it).
    #[arg(long, default_value = "target/debug/hanul-lambda")]
    bin: PathBuf,
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Where the sample events are.
    #[arg(long, default_value = "tests/events")]
    events: PathBuf,
    /// A template parameter, `Name=value` (development values fill the
    /// required ones).
    #[arg(long = "parameter", value_parser = parse_parameter)]
    parameters: Vec<(String, String)>,
}

fn parse_parameter(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?}: expected Name=value"))
}

async fn endpoint_config() -> Result<aws_config::SdkConfig, String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
        "AWS_ENDPOINT_URL is not set: point it at a moto server (infra/scripts/moto.sh start)"
            .to_owned()
    })?;
    Ok(hanul_shared::aws::endpoint_config(&endpoint).await)
}

async fn launches(common: &Common) -> Result<Vec<Launch>, String> {
    let template = Template::load(&common.template).map_err(|e| e.to_string())?;
    let config = endpoint_config().await?;
    let (stack, _) = dev_stack(
        &template,
        &config,
        common
            .parameters
            .iter()
            .cloned()
            .collect::<BTreeMap<_, _>>(),
    )
    .await
    .map_err(|e| e.to_string())?;
    template
        .functions()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|f| Launch::new(&common.bin, f, &stack).map_err(|e| e.to_string()))
        .collect()
}

fn read_event(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub async fn run(command: LambdaCommand) -> Result<(), String> {
    match command {
        LambdaCommand::Invoke {
            handler,
            event,
            common,
        } => {
            let event = event.unwrap_or_else(|| common.events.join(format!("{handler}.json")));
            let body = read_event(&event)?;
            let launch = launches(&common)
                .await?
                .into_iter()
                .find(|l| l.function.handler == handler)
                .ok_or_else(|| format!("no function in the template has Handler {handler}"))?;
            let cold = launch
                .cold_invoke(body.into())
                .await
                .map_err(|e| e.to_string())?;
            eprint!("{}", cold.output);
            eprintln!(
                "init {:.1} ms, invocation {:.1} ms",
                ms(cold.init),
                ms(cold.first.duration)
            );
            match cold.first.outcome {
                Outcome::Response(payload) => {
                    println!("{}", String::from_utf8_lossy(&payload));
                    Ok(())
                }
                Outcome::Error {
                    error_type,
                    message,
                } => Err(format!("invocation error {error_type}: {message}")),
            }
        }
        LambdaCommand::Env { handler, common } => {
            let launch = launches(&common)
                .await?
                .into_iter()
                .find(|l| l.function.handler == handler)
                .ok_or_else(|| format!("no function in the template has Handler {handler}"))?;
            println!("HANUL_FUNCTION={handler}");
            for (k, v) in &launch.environment {
                println!("{k}={v}");
            }
            Ok(())
        }
        LambdaCommand::Coldstart {
            hello,
            runs,
            common,
        } => coldstart(&hello, runs.max(1), &common).await,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn measure(
    launch: &Launch,
    event: &[u8],
    runs: usize,
) -> Result<(Duration, Duration), String> {
    let mut inits = Vec::new();
    let mut firsts = Vec::new();
    for _ in 0..runs {
        let ColdStart { init, first, .. } = launch
            .cold_invoke(event.to_vec().into())
            .await
            .map_err(|e| format!("{}: {e}", launch.function.handler))?;
        if let Outcome::Error { message, .. } = &first.outcome {
            return Err(format!("{}: {message}", launch.function.handler));
        }
        inits.push(init);
        firsts.push(first.duration);
    }
    Ok((median(inits), median(firsts)))
}

async fn coldstart(hello: &Path, runs: usize, common: &Common) -> Result<(), String> {
    let launches = launches(common).await?;
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut baseline = launches
        .first()
        .cloned()
        .ok_or("the template has no functions")?;
    baseline.binary = hello.to_owned();
    baseline.function.handler = "hello-world".into();
    baseline.environment.clear();
    let (hello_init, hello_first) = measure(&baseline, b"{}", runs).await?;
    println!(
        "binaries: {} {:.1} MB, {} {:.1} MB; {runs} cold starts each, medians",
        common.bin.display(),
        size(&common.bin)? as f64 / 1e6,
        hello.display(),
        size(hello)? as f64 / 1e6,
    );
    println!("| function | init ms | init / hello | first invocation ms |\n|---|---:|---:|---:|");
    println!(
        "| hello-world (baseline) | {:.1} | 1.00 | {:.1} |",
        ms(hello_init),
        ms(hello_first)
    );
    let mut worst: f64 = 0.0;
    for launch in &launches {
        let event = read_event(
            &common
                .events
                .join(format!("{}.json", launch.function.handler)),
        )?;
        let (init, first) = measure(launch, &event, runs).await?;
        let ratio = ms(init) / ms(hello_init).max(0.001);
        worst = worst.max(ratio);
        println!(
            "| {} | {:.1} | {ratio:.2} | {:.1} |",
            launch.function.handler,
            ms(init),
            ms(first)
        );
    }
    println!("worst init ratio: {worst:.2} (goal: at most 1.5)");
    Ok(())
}
