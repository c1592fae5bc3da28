//! The admin endpoint's mutating `/quitquitquit`: POST only, and never from a browser page
//! of another site.

use std::time::Duration;

use skein_proxy::ProxyConfig;
use skein_proxy::test_util::*;

#[tokio::test(start_paused = true)]
async fn quitquitquit_refuses_cross_site_requests_and_get() {
    let h = skein_proxy::start(ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    h.apply(skein_snapshot::build::SnapshotBuilder::new("v1", "blog", "web").build())
        .unwrap();
    let a = h.addrs.admin.unwrap();
    let url = format!("http://{a}/quitquitquit");
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let url = url.clone();
        async move { H1Client::connect(a).await.send("POST", &url, headers).await }
    };
    assert_eq!(post(&[("origin", "http://evil.example")]).await.status, 403);
    assert_eq!(post(&[("sec-fetch-site", "cross-site")]).await.status, 403);
    assert_eq!(
        H1Client::connect(a)
            .await
            .send("GET", &url, &[])
            .await
            .status,
        405
    );
    // Still serving: nothing above stopped the proxy.
    let ready = get(a, &format!("http://{a}/ready"), &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    // The admin's own page (or curl, with no Origin) may stop it.
    let own: &'static str = Box::leak(format!("http://{a}").into_boxed_str());
    let origin: &'static [(&'static str, &'static str)] = Box::leak(Box::new([("origin", own)]));
    assert_eq!(post(origin).await.status, 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
