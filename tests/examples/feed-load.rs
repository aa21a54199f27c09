//! Fan-out load run (a benchmark, not a test): against a running local host,
//! N accounts follow one author, the author publishes, and this measures how
//! long until the post is readable in every follower's feed, and the feed
//! entries written per second. `infra/scripts/load.sh` runs it.
//!
//!   cargo run --release -p hanul-e2e --example feed-load -- http://127.0.0.1:3998 5000

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn token(client: &reqwest::Client, base: &str, user: &str) -> Result<String, Error> {
    let body: Value = client
        .post(format!("{base}/local/v1/token"))
        .json(&json!({ "userId": user }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no token in the answer".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let followers: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(5_000);
    let concurrency = 64;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let author = format!("load-author-{run}");
    let author_token = token(&client, &base, &author).await?;

    let started = Instant::now();
    let tokens: Vec<(usize, String)> = futures_util::stream::iter(0..followers)
        .map(|i| {
            let (client, base, author, run) = (&client, &base, &author, &run);
            async move {
                let t = token(client, base, &format!("load-{run}-{i}")).await?;
                client
                    .put(format!("{base}/api/v1/me/following/{author}"))
                    .bearer_auth(&t)
                    .send()
                    .await?
                    .error_for_status()?;
                Ok::<_, Error>((i, t))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let follow_time = started.elapsed();
    println!(
        "follows: {followers} in {:.1} s ({:.0}/s, {concurrency} in flight)",
        follow_time.as_secs_f64(),
        followers as f64 / follow_time.as_secs_f64()
    );

    let published = Instant::now();
    let post: Value = client
        .post(format!("{base}/api/v1/me/posts"))
        .bearer_auth(&author_token)
        .json(&json!({ "text": format!("fan-out run {run}") }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let post_id = post["id"].as_str().ok_or("no post id")?.to_owned();
    let mut waiting: HashSet<usize> = tokens.iter().map(|(i, _)| *i).collect();
    let mut rounds = 0;
    while !waiting.is_empty() {
        rounds += 1;
        if published.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "{} followers still lack the post after 120 s",
                waiting.len()
            )
            .into());
        }
        let seen: Vec<usize> =
            futures_util::stream::iter(tokens.iter().filter(|(i, _)| waiting.contains(i)))
                .map(|(i, t)| {
                    let (client, base, post_id) = (&client, &base, &post_id);
                    async move {
                        let page: Value = client
                            .get(format!("{base}/api/v1/me/feed?limit=1"))
                            .bearer_auth(t)
                            .send()
                            .await
                            .ok()?
                            .json()
                            .await
                            .ok()?;
                        (page["posts"][0]["id"].as_str() == Some(post_id.as_str())).then_some(*i)
                    }
                })
                .buffer_unordered(concurrency)
                .filter_map(|seen| async move { seen })
                .collect()
                .await;
        for i in seen {
            waiting.remove(&i);
        }
    }
    let elapsed = published.elapsed();
    println!(
        "publish → readable in all {followers} feeds: {:.2} s ({rounds} polling rounds; an upper bound)",
        elapsed.as_secs_f64()
    );
    println!(
        "feed entries written: {:.0}/s (at least)",
        followers as f64 / elapsed.as_secs_f64()
    );
    // A full page for the read benchmark: 19 more posts, until the reader
    // has 20.
    for n in 1..20 {
        client
            .post(format!("{base}/api/v1/me/posts"))
            .bearer_auth(&author_token)
            .json(&json!({ "text": format!("post {n} of run {run}") }))
            .send()
            .await?
            .error_for_status()?;
    }
    let reader = &tokens[0].1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: Value = client
            .get(format!("{base}/api/v1/me/feed?limit=20"))
            .bearer_auth(reader)
            .send()
            .await?
            .json()
            .await?;
        if page["posts"].as_array().map(Vec::len) == Some(20) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the reader's feed never reached 20 posts".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("reader token for wrk: {reader}");
    Ok(())
}
