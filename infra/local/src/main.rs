use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hanul_local::server::{Args, Command, redrive, serve};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    hanul_shared::http::init_tracing();
    let args = Args::parse();
    if let Some(Command::Lambda(command)) = &args.command {
        return match hanul_local::lambda::cli::run(command.clone()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hanul-local lambda: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Web(command)) = &args.command {
        return match hanul_local::web::publish::run(command.clone()).await {
            Ok(done) => {
                println!("{done}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hanul-local web: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Redrive { queue, max }) = &args.command {
        return match redrive(&args, queue, *max).await {
            Ok(moved) => {
                println!("moved {moved} message(s) from {queue}-dlq back to {queue}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hanul-local redrive: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match serve(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "hanul-local could not start");
            eprintln!("hanul-local: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
