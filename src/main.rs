//! The `bootstrap`. Run by Lambda (`AWS_LAMBDA_RUNTIME_API` set), it is the rotation function:
//! telemetry, configuration and clients once, then the runtime loop. Run without it, it is the
//! operator command line (`api_key_rotator::cli`), which Lambda mode never touches.
//!
//! Lambda hands a process one event at a time, so a current-thread runtime does the work: no
//! worker threads to start at cold init or to hold memory. Each invocation runs inside the
//! deadline Lambda hands it, and writes its metrics as EMF lines beside the tracing logs.

use std::process::ExitCode;

use api_key_rotator::deadline::Invocation;
use api_key_rotator::{cli, metrics, telemetry, Function};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        telemetry::init_cli();
        return cli::main().await;
    }
    telemetry::init();
    match lambda().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the function stopped");
            ExitCode::FAILURE
        }
    }
}

async fn lambda() -> Result<(), Error> {
    let function = Function::from_env().await?;
    let function = &function;
    let emf = &metrics::Emf::from_lookup(&|name| std::env::var(name).ok());
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Every AWS call and the TestUrl probe stop by Lambda's deadline less the margin.
        let invocation = Invocation::from_lambda_deadline(event.context.deadline, function.margin);
        let (result, measured) = function.handle_measured(&event.payload, &invocation).await;
        measured.write(emf, &event.context.request_id);
        result
    }))
    .await
}
