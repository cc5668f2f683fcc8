//! Helpers for Flotilla's tests in every crate: a temporary directory that
//! cleans up after itself, and waiting for a condition with a deadline
//! instead of a fixed number of sleeps.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fresh temporary directory for one test, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/flotilla-<tag>-<pid>-<nanos>`, created empty.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "flotilla-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reports that a test cannot run its stage here (`"cuda"`, `"python"`,
/// ...) and why. Outside CI it prints `skipped` and the test returns early.
/// When `FLOTILLA_ALLOW_SKIP` is set (CI sets it to the stages this machine
/// may lack, comma-separated), a skip of any other stage fails the test, so
/// a green run cannot hide a stage that silently did not run.
pub fn skip(stage: &str, reason: &str) {
    if let Some(err) = skip_refusal(std::env::var("FLOTILLA_ALLOW_SKIP").ok(), stage, reason) {
        panic!("{err}");
    }
    eprintln!("skipped ({stage}): {reason}");
}

fn skip_refusal(allowed: Option<String>, stage: &str, reason: &str) -> Option<String> {
    let allowed = allowed?;
    (!allowed.split(',').any(|s| s.trim() == stage)).then(|| {
        format!("the {stage} stage cannot run here ({reason}) and FLOTILLA_ALLOW_SKIP={allowed:?} does not allow skipping it")
    })
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `secs`
/// seconds; panics naming `what` on the deadline.
pub fn wait_until<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The async form of [`wait_until`], for tests on a tokio runtime.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_must_be_allowed_when_ci_says_which() {
        assert_eq!(skip_refusal(None, "cuda", "no GPU"), None);
        assert_eq!(
            skip_refusal(Some("cuda, python".into()), "python", "x"),
            None
        );
        let e = skip_refusal(Some("cuda".into()), "python", "no VIRTUAL_ENV").unwrap();
        assert!(
            e.contains("python stage cannot run here (no VIRTUAL_ENV)"),
            "{e}"
        );
        assert!(skip_refusal(Some(String::new()), "cuda", "no GPU").is_some());
    }

    #[test]
    fn temp_dirs_are_fresh_and_removed() {
        let d = TempDir::new("testing");
        let other = TempDir::new("testing");
        assert_ne!(d.path(), other.path());
        std::fs::write(d.join("f"), b"x").unwrap();
        let p = d.path().to_owned();
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn wait_until_returns_the_first_value_and_times_out_naming_it() {
        let mut n = 0;
        assert_eq!(
            wait_until("three polls", 5, || {
                n += 1;
                (n == 3).then_some(n)
            }),
            3
        );
        let e = std::panic::catch_unwind(|| wait_until::<()>("never", 0, || None)).unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(msg.contains("waiting for never"), "{msg}");
    }
}
