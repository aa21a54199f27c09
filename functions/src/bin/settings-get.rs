#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    hanul_functions::runtime::run_http("settings-get").await
}
