//! What the end-to-end tests share: the embedded local AWS, a fault-injecting proxy, and a
//! `World` that plays Secrets Manager and sets up APIs, plans, keys and secrets.

pub mod localstack;
pub mod logs;
pub mod moto;
pub mod propagation;
pub mod proxy;
pub mod runtime;
pub mod world;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type R<T> = Result<T, BoxError>;

/// Fails the test with a message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{} ({}:{})", format!($($fmt)+), file!(), line!()).into());
        }
    };
}
