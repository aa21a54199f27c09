#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hanul_functions::runtime::run_worker("notify-sms").await
}
