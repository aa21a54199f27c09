//! `Cdn`: an invalidation reaches the edge. Locally that purges the
//! subscribed caches; on AWS it is a CloudFront invalidation (moto).

use std::sync::{Arc, Mutex};

use hanul_shared::aws::{CloudFrontCdn, bootstrap};
use hanul_shared::embedded::LocalEdge;
use hanul_shared::ports::Cdn;

use crate::support::{moto, unique};

#[tokio::test]
async fn embedded_invalidation_purges_subscribers() {
    let edge = LocalEdge::new();
    let purged = Arc::new(Mutex::new(Vec::new()));
    let seen = purged.clone();
    edge.subscribe(Arc::new(move |paths: &[String]| {
        seen.lock().unwrap().extend_from_slice(paths)
    }));
    let id = edge
        .invalidate(&["/abc".into(), "/api/v1/abc".into()])
        .await
        .unwrap();
    assert!(!id.is_empty());
    assert_eq!(*purged.lock().unwrap(), vec!["/abc", "/api/v1/abc"]);
    assert!(edge.invalidate(&[]).await.is_err());
}

#[tokio::test]
async fn aws_invalidation_reaches_cloudfront() {
    let config = moto().await;
    let client = aws_sdk_cloudfront::Client::new(&config);
    let name = unique("cdn");
    let id = bootstrap::ensure_distribution(&client, &name)
        .await
        .unwrap();
    // Bootstrapping again finds the same distribution.
    assert_eq!(
        bootstrap::ensure_distribution(&client, &name)
            .await
            .unwrap(),
        id
    );
    let cdn = CloudFrontCdn::new(client.clone(), id.clone());
    let invalidation = cdn
        .invalidate(&["/abc".into(), "/api/v1/abc".into()])
        .await
        .unwrap();
    assert!(!invalidation.is_empty());
    let listed = client
        .list_invalidations()
        .distribution_id(&id)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = listed
        .invalidation_list()
        .map(|l| l.items().iter().map(|i| i.id().to_owned()).collect())
        .unwrap_or_default();
    assert!(ids.contains(&invalidation), "{ids:?}");
    // Bad paths never reach CloudFront; an unknown distribution is an error.
    assert!(cdn.invalidate(&["no-slash".into()]).await.is_err());
    let nowhere = CloudFrontCdn::new(client, "ENOSUCHDIST");
    assert!(nowhere.invalidate(&["/abc".into()]).await.is_err());
}
