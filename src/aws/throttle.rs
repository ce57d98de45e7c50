//! Counts the AWS answers refused for throttling, for the `ThrottledCalls` metric. An SDK
//! interceptor sees every attempt's answer, retried ones included, which the adapters never do.

use aws_sdk_apigateway::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_apigateway::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_apigateway::error::BoxError;

use crate::metrics::{self, Effect};

/// The error codes AWS SDKs treat as throttling (the smithy-rs list).
const THROTTLING_CODES: [&str; 14] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Records `Effect::ThrottledCall` for each attempt answered 429, or with a throttling error
/// code in the `x-amzn-ErrorType` header or the JSON body's `__type` (Secrets Manager answers
/// ThrottlingException with a 400).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThrottleCounter;

fn is_throttling_code(code: &str) -> bool {
    // x-amzn-ErrorType may carry ":<uri>" after the code; __type may carry a "prefix#".
    let code = code.split(':').next().unwrap_or(code);
    let code = code.rsplit('#').next().unwrap_or(code);
    THROTTLING_CODES.contains(&code.trim())
}

/// Whether an answer is a throttling refusal: status, header, or a JSON body's `__type`.
pub fn is_throttled(status: u16, error_type: Option<&str>, body: Option<&[u8]>) -> bool {
    if status == 429 {
        return true;
    }
    if !(400..500).contains(&status) {
        return false;
    }
    if error_type.is_some_and(is_throttling_code) {
        return true;
    }
    body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .as_ref()
        .and_then(|v| v.get("__type").or_else(|| v.get("code")))
        .and_then(serde_json::Value::as_str)
        .is_some_and(is_throttling_code)
}

impl Intercept for ThrottleCounter {
    fn name(&self) -> &'static str {
        "ThrottleCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(response) = context.response() {
            let throttled = is_throttled(
                response.status().as_u16(),
                response.headers().get("x-amzn-errortype"),
                response.body().bytes(),
            );
            if throttled {
                metrics::record(Effect::ThrottledCall);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_throttled;

    #[test]
    fn throttling_answers_are_recognised_and_others_are_not() {
        assert!(is_throttled(429, None, None));
        assert!(is_throttled(
            400,
            None,
            Some(br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#)
        ));
        assert!(is_throttled(
            400,
            Some("ThrottlingException:http://internal"),
            None
        ));
        assert!(is_throttled(
            400,
            None,
            Some(br#"{"__type":"com.amazonaws.secretsmanager#ThrottlingException"}"#)
        ));
        assert!(!is_throttled(400, Some("ResourceNotFoundException"), None));
        assert!(!is_throttled(500, Some("ThrottlingException"), None));
        assert!(!is_throttled(200, None, Some(b"{}")));
        assert!(!is_throttled(404, None, Some(b"not json")));
    }
}
