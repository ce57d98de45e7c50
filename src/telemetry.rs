//! Tracing set-up in the style of the Rust Lambda runtime: the level from `AWS_LAMBDA_LOG_LEVEL`,
//! then `RUST_LOG`; JSON unless `AWS_LAMBDA_LOG_FORMAT` says text; no ANSI colour and no local
//! timestamp (CloudWatch adds its own). The operator commands log text on stderr.
//!
//! No level, directive or format may put an API key value, a RotationToken or a field of the
//! secret's value into the output. Two guards keep that, both here and used by both modes:
//!
//! - **The ceiling** (`may_log`): the user's level and directives choose among this crate's
//!   events freely, but every other crate's events and spans stop at INFO whatever they ask.
//!   Below INFO the dependencies log what crosses them: lambda_runtime the raw event (with its
//!   RotationToken) at TRACE, the SDK's orchestrator every request and every response body and
//!   output not marked sensitive (CreateApiKey's, GetApiKey's and GetApiKeys' hold key values)
//!   at TRACE, and at DEBUG its errors with their raw HTTP responses. (The request bodies,
//!   PutSecretValue's with the whole secret value, are not printed by the SDK version locked
//!   today; nothing promises that of the next.) What they log at
//!   INFO and above is the invocation's span (request id), configuration warnings and errors
//!   that name no value. This crate's own DEBUG and TRACE events name keys by id only.
//! - **The scrubber** (`never_log`, `Scrubbed`): every credential this process reads is
//!   registered as it is parsed (`RotationToken`, `KeyValue`, the secret value's other fields),
//!   and each formatted line has any registered string replaced with `<redacted>` before it is
//!   written. It is defence in depth: a value logged before it is parsed (the raw event, an SDK
//!   response) is not yet known to it, which is why the ceiling comes first.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

/// This crate's target (the library's modules and the binary alike).
const OWN_TARGET: &str = "api_key_rotator";

/// The most verbose level any other crate may log at, whatever the directives say.
pub const DEPENDENCY_CEILING: Level = Level::INFO;

/// The one rule: this crate's events at any level the directives allow; any other target's only
/// at `DEPENDENCY_CEILING` or above.
pub fn may_log(meta: &Metadata<'_>) -> bool {
    is_own(meta.target()) || *meta.level() <= DEPENDENCY_CEILING
}

fn is_own(target: &str) -> bool {
    target
        .strip_prefix(OWN_TARGET)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// How the logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line (Lambda's default here, and the template's `LogFormat: JSON`).
    Json,
    Text,
}

/// What the environment asks of the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `EnvFilter` directives: a level (`debug`), or `target=level` pairs.
    pub directives: String,
    /// Used when the directives do not parse.
    pub fallback: &'static str,
    pub format: Format,
}

impl LogSettings {
    /// Lambda mode: `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls; `FATAL` counts
    /// as `error`), then `RUST_LOG`, then INFO; JSON unless `AWS_LAMBDA_LOG_FORMAT` is `Text`.
    pub fn lambda(lookup: &dyn Fn(&str) -> Option<String>) -> LogSettings {
        let directives = lookup("AWS_LAMBDA_LOG_LEVEL")
            .filter(|v| !v.trim().is_empty())
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "fatal" => "error".to_owned(),
                other => other.to_owned(),
            })
            .or_else(|| lookup("RUST_LOG"))
            .unwrap_or_else(|| "info".to_owned());
        let text = lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("text"));
        LogSettings {
            directives,
            fallback: "info",
            format: if text { Format::Text } else { Format::Json },
        }
    }

    /// The operator commands: text, warnings and errors unless `RUST_LOG` says otherwise.
    pub fn cli(lookup: &dyn Fn(&str) -> Option<String>) -> LogSettings {
        LogSettings {
            directives: lookup("RUST_LOG")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "warn".to_owned()),
            fallback: "warn",
            format: Format::Text,
        }
    }
}

/// The subscriber both modes install: `settings`' directives ANDed with the ceiling, the lines
/// scrubbed, then written to `writer`. The tests build it with their own writer.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
) -> impl tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let directives = EnvFilter::try_new(&settings.directives)
        .unwrap_or_else(|_| EnvFilter::new(settings.fallback));
    let filter = directives.and(filter_fn(may_log));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(Scrubbed(writer));
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        Format::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        Format::Text => fmt.boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(filter))
}

/// Lambda mode: JSON (or text) on stdout.
pub fn init() {
    let env = |name: &str| std::env::var(name).ok();
    // Also routes the `log` crate's records (rustls) through the same filter.
    let _ = subscriber(&LogSettings::lambda(&env), io::stdout).try_init();
}

/// The operator commands: text on stderr, so that stdout holds the report alone.
pub fn init_cli() {
    let env = |name: &str| std::env::var(name).ok();
    let _ = subscriber(&LogSettings::cli(&env), io::stderr).try_init();
}

/// Strings shorter than this are not registered: they would blank out ordinary words.
pub const MIN_SCRUBBED_LEN: usize = 8;
/// The most recent registered strings kept (a warm Lambda process handles many rotations).
const KEEP: usize = 512;

static NEVER_LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Registers a credential (or a field of a secret's value) with the scrubber: from now on, a
/// log line holding it, as is or as JSON or `Debug` would escape it, has it replaced with
/// `<redacted>`.
pub fn never_log(secret: &str) {
    if secret.chars().count() < MIN_SCRUBBED_LEN {
        return;
    }
    // As is; as a JSON string holds it; as `Debug` prints it; and a `Debug` field in a JSON line.
    let debug = unquote(format!("{secret:?}"));
    let forms = [
        secret.to_owned(),
        unquote(serde_json::to_string(secret).unwrap_or_default()),
        unquote(serde_json::to_string(&debug).unwrap_or_default()),
        debug,
    ];
    let mut list = NEVER_LOG.lock().unwrap_or_else(|p| p.into_inner());
    for form in forms.into_iter().filter(|f| !f.is_empty()) {
        if let Some(at) = list.iter().position(|s| *s == form) {
            // Seen again: it becomes the most recent.
            if let Some(s) = list.remove(at) {
                list.push_back(s);
            }
        } else {
            list.push_back(form);
        }
    }
    while list.len() > KEEP {
        list.pop_front();
    }
}

/// `"text"` → `text`.
fn unquote(quoted: String) -> String {
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .map(str::to_owned)
        .unwrap_or(quoted)
}

/// Registers every string (and number) inside a JSON value: the fields of a secret's value
/// this function does not own.
pub fn never_log_json(value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) => never_log(s),
        serde_json::Value::Number(n) => never_log(&n.to_string()),
        serde_json::Value::Array(items) => items.iter().for_each(never_log_json),
        serde_json::Value::Object(fields) => fields.values().for_each(never_log_json),
        serde_json::Value::Null | serde_json::Value::Bool(_) => {}
    }
}

/// `text` with every registered string replaced by `<redacted>`, longest first (so that a
/// registered string inside a longer one does not leave the rest of the longer one behind).
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let list = NEVER_LOG.lock().unwrap_or_else(|p| p.into_inner());
    let mut hits: Vec<&String> = list.iter().filter(|s| text.contains(s.as_str())).collect();
    if hits.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    hits.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in hits {
        out = out.replace(s.as_str(), "<redacted>");
    }
    std::borrow::Cow::Owned(out)
}

/// A `MakeWriter` whose writers scrub each line (`scrub`) before passing it on. The formatter
/// writes each event in one `write_all`, so a registered string is never split across writes.
pub struct Scrubbed<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scrubbed<M> {
    type Writer = ScrubbedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer_for(meta))
    }
}

pub struct ScrubbedWriter<W>(W);

impl<W: io::Write> io::Write for ScrubbedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn settings(directives: &str, format: Format) -> LogSettings {
        LogSettings {
            directives: directives.to_owned(),
            fallback: "info",
            format,
        }
    }

    /// One event at each level from this crate and from dependencies' targets, in a span of each.
    fn emit_everything() {
        let own = tracing::trace_span!("own-span", marker = "own-trace-span");
        let _own = own.enter();
        let dep = tracing::trace_span!(target: "aws_smithy_runtime::client::orchestrator", "dep-span", marker = "dep-trace-span");
        let _dep = dep.enter();
        tracing::trace!("own-trace");
        tracing::debug!("own-debug");
        tracing::info!("own-info");
        // `target:` must be a constant: one line per dependency.
        tracing::trace!(target: "lambda_runtime::layers::api_response", "dep-trace lambda_runtime");
        tracing::debug!(target: "lambda_runtime::layers::api_response", "dep-debug lambda_runtime");
        tracing::info!(target: "lambda_runtime::layers::api_response", "dep-info lambda_runtime");
        tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "dep-trace smithy");
        tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "dep-debug smithy");
        tracing::warn!(target: "aws_smithy_runtime::client::orchestrator", "dep-warn smithy");
        tracing::trace!(target: "aws_sigv4::http_request::sign", "dep-trace sigv4");
        tracing::debug!(target: "aws_sigv4::http_request::sign", "dep-debug sigv4");
        tracing::trace!(target: "hyper::proto::h1::io", "dep-trace hyper");
        tracing::debug!(target: "hyper::proto::h1::io", "dep-debug hyper");
        tracing::trace!(target: "rustls::client::hs", "dep-trace rustls");
        tracing::debug!(target: "reqwest::connect", "dep-debug reqwest");
        tracing::trace!(target: "api_key_rotator_lookalike", "dep-trace lookalike");
        tracing::debug!(target: "api_key_rotator_lookalike", "dep-debug lookalike");
    }

    fn run(directives: &str, format: Format) -> String {
        let out = Capture::default();
        let sub = subscriber(&settings(directives, format), out.clone());
        tracing::subscriber::with_default(sub, emit_everything);
        out.text()
    }

    #[test]
    fn no_directive_lets_a_dependency_below_info() {
        for directives in [
            "trace",
            "debug",
            "aws_smithy_runtime=trace,lambda_runtime=trace,hyper=trace,rustls=trace,reqwest=trace,aws_sigv4=trace",
            "info,aws_smithy_runtime::client::orchestrator=trace,lambda_runtime::layers=trace",
            "[dep-span]=trace",
            "trace,api_key_rotator_lookalike=trace",
        ] {
            for format in [Format::Json, Format::Text] {
                let text = run(directives, format);
                assert!(!text.contains("dep-trace"), "{directives} {format:?}: {text}");
                assert!(!text.contains("dep-debug"), "{directives} {format:?}: {text}");
                assert!(!text.contains("dep-trace-span"), "{directives} {format:?}: {text}");
            }
        }
    }

    #[test]
    fn this_crate_logs_at_the_level_asked_and_dependencies_at_info_and_above() {
        let text = run("trace", Format::Json);
        for needle in [
            "own-trace",
            "own-debug",
            "own-info",
            "own-trace-span",
            "dep-info lambda_runtime",
            "dep-warn smithy",
        ] {
            assert!(text.contains(needle), "{needle} missing: {text}");
        }
        assert!(text.lines().all(|l| l.starts_with('{')), "{text}");
        let info = run("info", Format::Text);
        assert!(
            info.contains("own-info") && !info.contains("own-debug"),
            "{info}"
        );
        let warn = run("warn", Format::Text);
        assert!(
            !warn.contains("dep-info") && warn.contains("dep-warn"),
            "{warn}"
        );
    }

    #[test]
    fn the_rule_matches_this_crate_by_whole_path_segments() {
        assert!(is_own("api_key_rotator"));
        assert!(is_own("api_key_rotator::rotation::create_secret"));
        assert!(!is_own("api_key_rotator_lookalike"));
        assert!(!is_own("aws_smithy_runtime::client::orchestrator"));
        assert!(!is_own(""));
    }

    #[test]
    fn settings_follow_lambda_then_rust_log() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let l = LogSettings::lambda(&env(&[
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
            ("RUST_LOG", "warn"),
        ]));
        assert_eq!((l.directives.as_str(), l.format), ("trace", Format::Json));
        let l = LogSettings::lambda(&env(&[
            ("AWS_LAMBDA_LOG_LEVEL", " "),
            ("RUST_LOG", "debug"),
            ("AWS_LAMBDA_LOG_FORMAT", "Text"),
        ]));
        assert_eq!((l.directives.as_str(), l.format), ("debug", Format::Text));
        let l = LogSettings::lambda(&env(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]));
        assert_eq!(l.directives, "error");
        assert_eq!(LogSettings::lambda(&env(&[])).directives, "info");
        assert_eq!(LogSettings::cli(&env(&[])).directives, "warn");
        let c = LogSettings::cli(&env(&[
            ("RUST_LOG", "trace"),
            ("AWS_LAMBDA_LOG_LEVEL", "error"),
        ]));
        assert_eq!((c.directives.as_str(), c.format), ("trace", Format::Text));
    }

    #[test]
    fn registered_strings_are_scrubbed_in_every_format() {
        let secret = "scrub-me-7f3a9c\"quoted\\part";
        never_log(secret);
        never_log_json(
            &serde_json::json!({"client_secret": "nested-field-value-1", "n": 123456789012u64}),
        );
        never_log("short");
        for format in [Format::Json, Format::Text] {
            let out = Capture::default();
            let sub = subscriber(&settings("trace", format), out.clone());
            tracing::subscriber::with_default(sub, || {
                tracing::info!(field = secret, debug = ?secret, "message {secret}");
                tracing::info!(number = 123456789012u64, "nested-field-value-1 and short");
            });
            let text = out.text();
            assert!(!text.contains("scrub-me"), "{format:?}: {text}");
            assert!(!text.contains("nested-field-value-1"), "{format:?}: {text}");
            assert!(!text.contains("123456789012"), "{format:?}: {text}");
            assert!(
                text.contains("<redacted>") && text.contains("short"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_registered_string_inside_a_longer_one_leaves_nothing_behind() {
        never_log("inner-secret-aaaa");
        never_log("prefix-inner-secret-aaaa-suffix");
        assert_eq!(
            scrub("x prefix-inner-secret-aaaa-suffix y inner-secret-aaaa"),
            "x <redacted> y <redacted>"
        );
        assert_eq!(scrub("nothing here"), "nothing here");
    }
}
