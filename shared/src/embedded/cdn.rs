//! The local host has no edge: what stands in for it are the in-process caches
//! of the functions (the redirect cache). An invalidation purges them at once.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::ports::cdn::{Cdn, CdnError, validate_paths};

pub type PurgeListener = Arc<dyn Fn(&[String]) + Send + Sync>;

#[derive(Default)]
pub struct LocalEdge {
    listeners: RwLock<Vec<PurgeListener>>,
}

impl std::fmt::Debug for LocalEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEdge").finish_non_exhaustive()
    }
}

impl LocalEdge {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `listener` with the paths of every later invalidation.
    pub fn subscribe(&self, listener: PurgeListener) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.push(listener);
        }
    }
}

#[async_trait]
impl Cdn for LocalEdge {
    async fn invalidate(&self, paths: &[String]) -> Result<String, CdnError> {
        validate_paths(paths)?;
        let listeners = self
            .listeners
            .read()
            .map_err(|_| CdnError::Unavailable("the purge list is poisoned".into()))?
            .clone();
        for listener in listeners {
            listener(paths);
        }
        Ok(format!("local-{}", uuid::Uuid::new_v4().simple()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn an_invalidation_reaches_every_listener_and_bad_paths_are_refused() {
        let edge = LocalEdge::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..2 {
            let seen = seen.clone();
            edge.subscribe(Arc::new(move |paths: &[String]| {
                seen.lock().unwrap().extend_from_slice(paths)
            }));
        }
        edge.invalidate(&["/abc".into()]).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["/abc", "/abc"]);
        assert!(edge.invalidate(&[]).await.is_err());
        assert!(edge.invalidate(&["abc".into()]).await.is_err());
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
