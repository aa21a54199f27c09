use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hanul_local::server::{Args, serve};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    hanul_shared::http::init_tracing();
    match serve(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "hanul-local could not start");
            eprintln!("hanul-local: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
