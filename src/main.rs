//! The Lambda `bootstrap`: telemetry, configuration and clients once, then the runtime loop.
//! Lambda hands a process one event at a time, so a current-thread runtime does the work: no
//! worker threads to start at cold init or to hold memory. Each invocation runs inside the
//! deadline Lambda hands it.

use api_key_rotator::deadline::Invocation;
use api_key_rotator::{telemetry, Function};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let function = Function::from_env().await?;
    let function = &function;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Every AWS call and the TestUrl probe stop by Lambda's deadline less the margin.
        let invocation = Invocation::from_lambda_deadline(event.context.deadline, function.margin);
        function.handle(&event.payload, &invocation).await
    }))
    .await
}
