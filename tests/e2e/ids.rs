//! `GET /api/v1/ids` and `GET /api/v1/ids/{id}`, and what a crash or a clean
//! stop does to the machine-id lease.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hanul_e2e::{Backend, LocalHost, client, error_code};
use serde_json::Value;

async fn ids(host: &LocalHost, count: u32) -> reqwest::Response {
    client()
        .get(host.url("/api/v1/ids"))
        .query(&[("count", count)])
        .send()
        .await
        .unwrap()
}

async fn id_values(r: reqwest::Response) -> Vec<u64> {
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().expect("ids are strings").parse::<u64>().unwrap())
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn issues_and_decodes_ids(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    let five = id_values(ids(&host, 5).await).await;
    assert_eq!(five.len(), 5);
    assert!(five.windows(2).all(|w| w[0] < w[1]));
    assert!(five.iter().all(|id| *id <= i64::MAX as u64));
    let thousand = id_values(ids(&host, 1000).await).await;
    assert_eq!(thousand.iter().collect::<HashSet<_>>().len(), 1000);
    assert!(thousand[0] > five[4]);
    let one = id_values(c.get(host.url("/api/v1/ids")).send().await.unwrap()).await;
    assert_eq!(one.len(), 1);

    let r = c
        .get(host.url(&format!("/api/v1/ids/{}", five[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let parts: Value = r.json().await.unwrap();
    assert_eq!(parts["id"], five[0].to_string());
    let ts = parts["timestampMs"].as_u64().unwrap();
    assert!(ts <= now_ms() && now_ms() - ts < 60_000, "timestamp {ts}");
    assert!(parts["machineId"].as_u64().unwrap() < 1024);
    assert!(parts["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(parts["machineId"].as_u64().unwrap(), (five[0] >> 12) & 1023);
}

async fn bad_id_requests_are_400(backend: Backend) {
    let host = LocalHost::start(backend);
    let c = client();
    for count in ["0", "1001", "-1", "abc", "1.5", "", "99999999999999999999"] {
        let r = c
            .get(host.url(&format!("/api/v1/ids?count={count}")))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_count", "count={count}");
    }
    for id in [
        "abc",
        "0",
        "-1",
        "99999999999999999999",
        "9223372036854775808",
        "1%202",
    ] {
        let r = c
            .get(host.url(&format!("/api/v1/ids/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_id", "id={id}");
    }
    let r = c.post(host.url("/api/v1/ids")).send().await.unwrap();
    assert_eq!(error_code(r, 405).await, "method_not_allowed");
}

/// `kill -9`: the lease the dead process acknowledged is still held after the
/// restart (so the restarted host must wait for it), and once it lapses the
/// recycled machine id only issues IDs above everything issued before.
async fn a_killed_host_never_repeats_an_id(backend: Backend) {
    // The lease must outlast a restart (which, on moto, creates every
    // subsystem's resources) so that the 503 below is seen.
    let env = [("ID_MACHINE_RANGE", "7-7"), ("ID_LEASE_SECONDS", "10")];
    let mut host = LocalHost::start_with(backend, &env);
    let mut before = Vec::new();
    for _ in 0..5 {
        before.extend(id_values(ids(&host, 1000).await).await);
    }
    let max_before = before.iter().max().copied().unwrap();
    host.restart(); // SIGKILL, then start on the same data
    let r = ids(&host, 1).await;
    assert_eq!(
        error_code(r, 503).await,
        "ids_unavailable",
        "the dead host's lease survived the crash"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let r = ids(&host, 1000).await;
        if r.status() == 200 {
            break id_values(r).await;
        }
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        after.iter().all(|id| *id > max_before),
        "a recycled machine id repeated the past"
    );
    assert!(after.iter().all(|id| (id >> 12) & 1023 == 7));
}

/// SIGTERM: the host releases its lease, so a restart gets it back at once.
async fn a_clean_stop_releases_the_lease(backend: Backend) {
    let env = [("ID_MACHINE_RANGE", "9-9"), ("ID_LEASE_SECONDS", "600")];
    let mut host = LocalHost::start_with(backend, &env);
    let before = id_values(ids(&host, 100).await).await;
    let status = host.terminate();
    assert!(status.success(), "clean exit: {status}");
    host.restart();
    let after = id_values(ids(&host, 100).await).await;
    assert!(after[0] > before[99]);
}

hanul_e2e::on_both_backends!(
    issues_and_decodes_ids,
    bad_id_requests_are_400,
    a_killed_host_never_repeats_an_id,
    a_clean_stop_releases_the_lease,
);
