//! A full root rotation — prepare, activate, finish — under continuous traffic, with the
//! control plane killed between steps: no request fails, no proxy restarts, and the old
//! root is gone from every proxy at the end.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use ward_tests::apps;
use ward_tests::bin::{Run, ward};
use ward_tests::mesh::{ManagedPair, Proxy, WEB_ID, http_get, mesh_default};

fn rotate(pair: &ManagedPair) -> Run {
    ward([
        "ca",
        "rotate",
        "--data-dir",
        pair.cp.data_dir.to_str().unwrap(),
    ])
}

/// Runs `ward ca rotate` until the step goes through; a refusal must name what lags.
fn advance(pair: &ManagedPair, step: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = rotate(pair);
        if out.code == 0 {
            assert!(out.stdout.starts_with(step), "{out:?}");
            return out.stdout;
        }
        assert!(
            out.stderr.contains("lag")
                || out.stderr.contains("still hold")
                || out.stderr.contains("try again")
                || out.stderr.contains("running"),
            "unexpected refusal: {out:?}"
        );
        assert!(
            Instant::now() < deadline,
            "{step} never went through: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn roots(proxy: &Proxy) -> Vec<String> {
    let certs: Value = serde_json::from_str(&proxy.admin_get("/certs").1).unwrap();
    certs["bundle"]["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["subject"].as_str().unwrap().to_owned())
        .collect()
}

/// Key IDs of the bundle's roots, and of the root the leaf chains to (by key: with an
/// intermediate the leaf's issuer is not the root).
fn root_keys(proxy: &Proxy) -> (Vec<String>, String) {
    let certs: Value = serde_json::from_str(&proxy.admin_get("/certs").1).unwrap();
    let roots = certs["bundle"]["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let anchor = certs["root_key_id"].as_str().unwrap_or_default().to_owned();
    (roots, anchor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_root_rotation_under_load_survives_control_plane_crashes() {
    full_rotation(false).await;
}

/// The same with `ward ca init --intermediate`: roots are matched by key, so a bundle push
/// does not force renewals and `finish` is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_with_an_intermediate_ca_finishes_under_load() {
    full_rotation(true).await;
}

async fn full_rotation(intermediate: bool) {
    let app = apps::http_echo().await;
    let addr: SocketAddr = app.addr;
    let policy = mesh_default("allow-authenticated");
    let mut pair = if intermediate {
        ManagedPair::launch_with_intermediate(addr, "1h", policy).await
    } else {
        ManagedPair::launch(addr, "1h", policy).await
    };
    // A third proxy off the request path, to be the one that lags.
    let batch_id = "spiffe://example.org/ns/batch/sa/report";
    let token = pair.cp.token(batch_id, "app=report", &[]);
    std::fs::write(pair.dir.path().join("batch.token"), token).unwrap();
    let batch_config = format!(
        "trust_domain: example.org\nidentity: {{ control_plane: \"https://{}\", token_file: batch.token, bundle: bundle.pem }}\nadmin: {}\n",
        pair.cp.listen,
        ward_tests::mesh::free_addr()
    );
    let dir = pair.dir.path().to_owned();
    let batch = tokio::task::spawn_blocking(move || Proxy::start(&dir, "batch", &batch_config))
        .await
        .unwrap();
    let pids = (pair.web.pid(), pair.orders.pid(), batch.pid());
    let old_root = roots(&pair.orders);
    assert_eq!(old_root.len(), 1);

    let stop = Arc::new(AtomicBool::new(false));
    // Whatever happens below, the load stops when the test ends.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, outbound) =
            (stop.clone(), ok.clone(), failed.clone(), pair.outbound);
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::SeqCst) {
                match http_get(outbound, "/orders/1") {
                    Some((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        if failed.fetch_add(1, Ordering::SeqCst) < 5 {
                            eprintln!("failed: {other:?}");
                        }
                        0
                    }
                };
            }
        })
    };

    let steps = tokio::task::spawn_blocking(move || {
        // A proxy that cannot take the new bundle blocks activation, and is named — even
        // across a control-plane crash between the steps.
        let batch_pid = batch.pid().to_string();
        Command::new("kill")
            .args(["-STOP", &batch_pid])
            .status()
            .unwrap();
        let out = advance(&pair, "prepare");
        assert!(out.contains("added root"), "{out}");
        pair.cp.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = rotate(&pair);
            assert_ne!(out.code, 0, "activated while batch was frozen: {out:?}");
            if out.stderr.contains(batch_id) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lagging proxy was never named: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Command::new("kill")
            .args(["-CONT", &batch_pid])
            .status()
            .unwrap();
        // activate
        advance(&pair, "activate");
        pair.cp.restart();
        // finish
        advance(&pair, "finish");
        (pair, batch)
    })
    .await;
    let (pair, batch) = match steps {
        Ok(done) => done,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            std::panic::resume_unwind(e.into_panic());
        }
    };

    // Traffic keeps flowing after the rotation, then stop the load.
    let before = ok.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::SeqCst) < before + 20 {
        assert!(
            Instant::now() < deadline,
            "traffic stalled after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the rotation"
    );

    // The old root is gone from every proxy; their leaves come from the new one; nobody
    // restarted.
    let deadline = Instant::now() + Duration::from_secs(10);
    for proxy in [&pair.web, &pair.orders, &batch] {
        loop {
            let now = roots(proxy);
            if now.len() == 1 && now != old_root {
                let (keys, anchor) = root_keys(proxy);
                assert_eq!(keys.len(), 1, "{}", proxy.name);
                assert_eq!(
                    anchor, keys[0],
                    "{}: leaf chains to the new root",
                    proxy.name
                );
                break;
            }
            assert!(Instant::now() < deadline, "{}: roots {now:?}", proxy.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!((pair.web.pid(), pair.orders.pid(), batch.pid()), pids);
    let status = ward([
        "ca",
        "status",
        "--data-dir",
        pair.cp.data_dir.to_str().unwrap(),
    ]);
    let text = status.ok();
    assert!(text.contains("rotation:     Stable"), "{text}");
    assert!(text.contains(WEB_ID), "{text}");
}
