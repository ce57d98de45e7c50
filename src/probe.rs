//! The testSecret probe over HTTP: a GET with `x-api-key`, no redirects, retried until a 2xx
//! answer or the budget runs out, because a new key takes seconds to reach the data plane. The
//! budget is capped by the time the invocation has left (`crate::deadline`).

use std::sync::OnceLock;

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use reqwest::{redirect, Client, Url};
use tokio::time::{sleep, Instant};

use crate::config::ProbeConfig;
use crate::deadline;
use crate::error::{Failure, StepResult};
use crate::ports::Prober;
use crate::secret::KeyValue;

/// The HTTP client is built on the first probe, not at start: most secrets have no TestUrl,
/// and building it loads the system's root certificates, which cold start need not pay for.
#[derive(Debug)]
pub struct HttpProber {
    client: OnceLock<Client>,
    config: ProbeConfig,
}

impl HttpProber {
    pub fn new(config: ProbeConfig) -> Self {
        HttpProber {
            client: OnceLock::new(),
            config,
        }
    }

    fn client(&self) -> StepResult<&Client> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(self.config.attempt_timeout)
            .user_agent(concat!("api-key-rotator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::test(format!("cannot build the probe's HTTP client ({e})")))?;
        Ok(self.client.get_or_init(|| client))
    }
}

#[async_trait]
impl Prober for HttpProber {
    async fn probe(&self, url: &Url, key: &KeyValue) -> StepResult<()> {
        let client = self.client()?;
        // Marked sensitive: hyper's and reqwest's Debug of the request shows `Sensitive`.
        let mut header = HeaderValue::from_str(key.expose())
            .map_err(|_| Failure::test("the key value cannot be sent as an x-api-key header"))?;
        header.set_sensitive(true);
        let started = Instant::now();
        let own = started + self.config.budget;
        let invocation = deadline::current().map(|i| i.deadline());
        let deadline = invocation.map_or(own, |d| d.min(own));
        let budget = deadline.saturating_duration_since(started);
        let mut attempts = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::test(format!(
                    "the TestUrl probe had no time left before the invocation's deadline (budget {} ms)",
                    budget.as_millis()
                )));
            }
            attempts += 1;
            let outcome = client
                .get(url.clone())
                .header("x-api-key", header.clone())
                .timeout(self.config.attempt_timeout.min(left))
                .send()
                .await;
            let last = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(
                        attempts,
                        status = resp.status().as_u16(),
                        "TestUrl probe passed"
                    );
                    return Ok(());
                }
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                // Without the URL: the error's text is enough, and nothing of the key is in it.
                Err(e) => format!("request error ({})", e.without_url()),
            };
            tracing::info!(attempts, outcome = %last, "TestUrl probe not yet passing");
            if Instant::now() + self.config.interval >= deadline {
                let cut = if budget < self.config.budget {
                    " (its budget cut to the time the invocation had left)"
                } else {
                    ""
                };
                return Err(Failure::test(format!(
                    "the TestUrl probe got {last} on attempt {attempts} and no 2xx within {} ms{cut}",
                    budget.as_millis()
                )));
            }
            sleep(self.config.interval).await;
        }
    }
}
