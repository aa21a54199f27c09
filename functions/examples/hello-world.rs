//! The cold-start baseline: the smallest `lambda_runtime` function, built
//! with the same profile as `hanul-lambda` (`infra/scripts/coldstart.sh`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            Ok::<_, lambda_runtime::Error>(event.payload)
        },
    ))
    .await
}
