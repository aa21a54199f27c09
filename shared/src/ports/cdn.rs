//! `Cdn`: what the system asks of the edge cache in front of its redirects.
//! On AWS a CloudFront invalidation; locally, a purge of the in-process caches
//! that stand in for the edge.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    #[error("invalid invalidation request: {0}")]
    Invalid(String),
    #[error("the CDN is unavailable: {0}")]
    Unavailable(String),
}

/// CloudFront takes at most 3,000 paths per invalidation.
pub const MAX_PATHS: usize = 3000;

#[async_trait]
pub trait Cdn: Send + Sync + 'static {
    /// Asks the edge to drop its copies of `paths` (each starting with `/`);
    /// returns the invalidation's id.
    async fn invalidate(&self, paths: &[String]) -> Result<String, CdnError>;
}

pub fn validate_paths(paths: &[String]) -> Result<(), CdnError> {
    if paths.is_empty() || paths.len() > MAX_PATHS {
        return Err(CdnError::Invalid(format!(
            "an invalidation takes 1 to {MAX_PATHS} paths, not {}",
            paths.len()
        )));
    }
    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/') || p.len() > 4096) {
        return Err(CdnError::Invalid(format!(
            "path {bad:?} must start with `/` and be at most 4096 bytes"
        )));
    }
    Ok(())
}
