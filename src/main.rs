//! The Lambda `bootstrap`: telemetry, configuration and clients once, then the runtime loop.
//! Lambda hands a process one event at a time, so a current-thread runtime does the work: no
//! worker threads to start at cold init or to hold memory.

use api_key_rotator::{metrics, rotator_from_env, telemetry};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let rotator = rotator_from_env().await?;
    let rotator = &rotator;
    // Lambda mode: each invocation's metrics go to stdout as EMF lines, beside the tracing logs.
    let emf = &metrics::Emf::from_lookup(&|name| std::env::var(name).ok());
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let (result, invocation) = rotator.handle_measured(&event.payload).await;
        emf.write(&invocation, &event.context.request_id);
        result
    }))
    .await
}
