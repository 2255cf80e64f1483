//! A real Kubernetes control plane for local debugging: etcd + kube-apiserver (built by
//! `scripts/build-k8s.sh`), with the Continuum, CNPG, Gateway API and Flux CRDs installed, kept
//! running until Ctrl-C. Prints the kubeconfig to use (`KUBECONFIG=… kubectl get continuums
//! -A`, or `continuum-controller k status --kubeconfig …`).
//!
//! `scripts/main.sh cluster` runs it.

use std::path::PathBuf;

use testkit::ControlPlane;
use testkit::kube::Crd;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut crds = vec![Crd::Path(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/continuum-controller/crds/continuums.dr.openova.io.yaml"),
    )];
    crds.extend(
        [
            "postgresql.cnpg.io_clusters.yaml",
            "gateway.networking.k8s.io_httproutes.yaml",
            "helm.toolkit.fluxcd.io_helmreleases.yaml",
            "source.toolkit.fluxcd.io_helmcharts.yaml",
            "source.toolkit.fluxcd.io_helmrepositories.yaml",
        ]
        .map(Crd::bundled),
    );
    let cp = ControlPlane::start_with(&crds, &["flux-system", "default-dr"]).await?;
    println!(
        "cluster: kube-apiserver {} ready in {} ms ({} MiB resident, etcd included)",
        cp.url(),
        cp.started_in().as_millis(),
        cp.rss_kib() / 1024
    );
    println!("cluster: export KUBECONFIG={}", cp.kubeconfig().display());
    println!(
        "cluster: logs and etcd data in {}; Ctrl-C stops it",
        cp.dir().display()
    );
    tokio::signal::ctrl_c().await?;
    println!("cluster: stopping");
    Ok(())
}
