//! Every hanul Lambda function, one binary: the function's `Handler` in
//! template.yaml (`_HANDLER` on Lambda) says which one this instance runs.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hanul_functions::runtime::run().await
}
