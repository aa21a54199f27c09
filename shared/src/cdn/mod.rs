//! Edge invalidation, off the request path. An edit that changes what the
//! edge may hold queues an `InvalidationRequest`; the invalidation worker
//! sends each batch of them to the `Cdn` as one invalidation, retried by the
//! queue (then the DLQ) when the CDN fails. The edit never waits on the CDN.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ports::cdn::{Cdn, CdnError, MAX_PATHS, validate_paths};
use crate::ports::queue::{OutgoingMessage, Queue, QueueError, QueueSpec};

pub const INVALIDATION_QUEUE: &str = "cdn-invalidations";
pub const INVALIDATION_DLQ: &str = "cdn-invalidations-dlq";

pub fn invalidation_queue() -> QueueSpec {
    QueueSpec::new(INVALIDATION_QUEUE)
        .with_visibility(Duration::from_secs(60))
        .with_dead_letter(INVALIDATION_DLQ, 5)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidationRequest {
    pub paths: Vec<String>,
}

impl InvalidationRequest {
    pub fn parse(body: &str) -> Result<Self, String> {
        let request: Self =
            serde_json::from_str(body).map_err(|e| format!("not an invalidation request: {e}"))?;
        validate_paths(&request.paths).map_err(|e| e.to_string())?;
        Ok(request)
    }
}

/// Queues an invalidation of `paths`.
pub async fn request_invalidation(queue: &dyn Queue, paths: Vec<String>) -> Result<(), QueueError> {
    validate_paths(&paths).map_err(|e| QueueError::Invalid(e.to_string()))?;
    let body = serde_json::to_string(&InvalidationRequest { paths })
        .map_err(|e| QueueError::Invalid(e.to_string()))?;
    queue.send(OutgoingMessage::new(body)).await.map(|_| ())
}

/// Invalidates every path of a batch of requests in as few CDN calls as the
/// path limit allows. Returns the message ids to retry: the malformed ones,
/// and all of them if the CDN failed.
pub async fn invalidate_batch(cdn: &dyn Cdn, messages: &[(String, String)]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut paths = BTreeSet::new();
    let mut good = Vec::new();
    for (id, body) in messages {
        match InvalidationRequest::parse(body) {
            Ok(request) => {
                paths.extend(request.paths);
                good.push(id.clone());
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "malformed invalidation request");
                failed.push(id.clone());
            }
        }
    }
    let paths: Vec<String> = paths.into_iter().collect();
    for chunk in paths.chunks(MAX_PATHS) {
        if let Err(e) = cdn.invalidate(chunk).await {
            let retry = matches!(e, CdnError::Unavailable(_));
            tracing::error!(error = %e, paths = chunk.len(), retry, "CDN invalidation failed");
            failed.append(&mut good);
            break;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    struct Recorder {
        calls: Mutex<Vec<Vec<String>>>,
        fail: bool,
    }

    #[async_trait]
    impl Cdn for Recorder {
        async fn invalidate(&self, paths: &[String]) -> Result<String, CdnError> {
            self.calls.lock().unwrap().push(paths.to_vec());
            if self.fail {
                Err(CdnError::Unavailable("down".into()))
            } else {
                Ok("I1".into())
            }
        }
    }

    fn body(paths: &[&str]) -> String {
        serde_json::to_string(&InvalidationRequest {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_batch_becomes_one_invalidation_and_bad_messages_fail_alone() {
        let cdn = Recorder {
            calls: Mutex::new(Vec::new()),
            fail: false,
        };
        let messages = vec![
            ("m1".to_string(), body(&["/a", "/api/v1/a"])),
            ("m2".to_string(), "garbage".to_string()),
            ("m3".to_string(), body(&["/b", "/a"])),
            ("m4".to_string(), body(&["no-slash"])),
        ];
        let failed = invalidate_batch(&cdn, &messages).await;
        assert_eq!(failed, vec!["m2", "m4"]);
        assert_eq!(
            *cdn.calls.lock().unwrap(),
            vec![vec!["/a".to_string(), "/api/v1/a".into(), "/b".into()]]
        );
    }

    #[tokio::test]
    async fn a_cdn_failure_retries_the_whole_batch() {
        let cdn = Recorder {
            calls: Mutex::new(Vec::new()),
            fail: true,
        };
        let messages = vec![
            ("m1".to_string(), body(&["/a"])),
            ("m2".to_string(), body(&["/b"])),
        ];
        assert_eq!(invalidate_batch(&cdn, &messages).await, vec!["m1", "m2"]);
    }
}
