//! The Lambda `bootstrap`: telemetry, configuration and clients once, then the runtime loop.
//! Lambda hands a process one event at a time, so a current-thread runtime does the work: no
//! worker threads to start at cold init or to hold memory. Each invocation runs inside the
//! deadline Lambda hands it, and writes its metrics as EMF lines beside the tracing logs.

use api_key_rotator::deadline::Invocation;
use api_key_rotator::{metrics, telemetry, Function};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let function = Function::from_env().await?;
    let function = &function;
    let emf = &metrics::Emf::from_lookup(&|name| std::env::var(name).ok());
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Every AWS call and the TestUrl probe stop by Lambda's deadline less the margin.
        let invocation = Invocation::from_lambda_deadline(event.context.deadline, function.margin);
        let (result, measured) = function.handle_measured(&event.payload, &invocation).await;
        emf.write(&measured, &event.context.request_id);
        result
    }))
    .await
}
