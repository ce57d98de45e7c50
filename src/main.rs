//! The Lambda `bootstrap`: telemetry, configuration and clients once, then the runtime loop.
//! Lambda hands a process one event at a time, so a current-thread runtime does the work: no
//! worker threads to start at cold init or to hold memory.

use api_key_rotator::{rotator_from_env, telemetry};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let rotator = rotator_from_env().await?;
    let rotator = &rotator;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        rotator.handle(&event.payload).await
    }))
    .await
}
