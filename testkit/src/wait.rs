//! Deadline-bounded polling: tests wait for a condition, never for a fixed time.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{HarnessError, Result};

/// Poll interval used by [`eventually`] and [`assert_eventually!`](crate::assert_eventually).
pub const DEFAULT_POLL: Duration = Duration::from_millis(50);

/// Calls `check` every [`DEFAULT_POLL`] until it returns `Ok`, for at most `timeout`.
///
/// Returns the first `Ok` value, or [`HarnessError::Timeout`] carrying the last `Err` seen.
/// An attempt still running at the deadline is abandoned.
///
/// ```no_run
/// # async fn f() -> testkit::Result<()> {
/// use std::time::Duration;
/// let n = testkit::eventually("the counter to reach 3", Duration::from_secs(5), || async {
///     let n = 3; // e.g. a query
///     if n >= 3 { Ok(n) } else { Err(format!("counter is {n}")) }
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: Display,
{
    eventually_with(what, timeout, DEFAULT_POLL, check).await
}

/// Like [`eventually`] with an explicit poll interval.
pub async fn eventually_with<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: Display,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("(no attempt finished)");
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => last = err.to_string(),
            Err(_) => {}
        }
        if Instant::now() + poll > deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Asserts that a boolean expression becomes true within a timeout (default 10 s), re-evaluating
/// it every 50 ms. The expression may `.await`. Panics with the expression text on timeout.
///
/// ```no_run
/// # async fn f(ready: impl Fn() -> bool) {
/// testkit::assert_eventually!(ready());
/// testkit::assert_eventually!(ready(), std::time::Duration::from_secs(2));
/// # }
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, ::std::time::Duration::from_secs(10))
    };
    ($cond:expr, $timeout:expr $(,)?) => {{
        let timeout: ::std::time::Duration = $timeout;
        let deadline = $crate::__tokio::time::Instant::now() + timeout;
        loop {
            if $cond {
                break;
            }
            if $crate::__tokio::time::Instant::now() >= deadline {
                panic!(
                    "assertion `{}` did not become true within {:?}",
                    stringify!($cond),
                    timeout
                );
            }
            $crate::__tokio::time::sleep($crate::wait::DEFAULT_POLL).await;
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_ok() {
        let calls = AtomicU32::new(0);
        let n = eventually("three calls", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("only {n}"))
            }
        })
        .await
        .unwrap();
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn eventually_times_out_with_the_last_error() {
        let err = eventually("never", Duration::from_millis(200), || async {
            Err::<(), _>("still no")
        })
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("never") && msg.contains("still no"), "{msg}");
    }

    #[tokio::test]
    async fn assert_eventually_accepts_await() {
        let calls = AtomicU32::new(0);
        assert_eventually!(
            async { calls.fetch_add(1, Ordering::SeqCst) >= 2 }.await,
            Duration::from_secs(5)
        );
    }
}
