//! [`ControlPlane`]: a REAL Kubernetes control plane for tests: etcd plus kube-apiserver, both
//! built from the Go module proxy by `scripts/build-k8s.sh` (cached outside the clone, keyed by
//! version), started on free loopback ports.
//!
//! - etcd: its own data directory, `--unsafe-no-fsync` (a test store; nothing survives the test).
//! - kube-apiserver: TLS with the certificate it generates for itself in its `--cert-dir`
//!   (clients trust that file), a static token file with an admin token in `system:masters`,
//!   `RBAC` authorization, a service-account signing key generated here (ECDSA P-256, `rcgen`).
//!   There is no controller-manager, scheduler or kubelet: no garbage collection, no namespace
//!   finalization, no Pods running. What the API server itself does is all real: structural
//!   schemas, defaulting and pruning, formats, CEL `x-kubernetes-validations`, server-side
//!   apply with field managers, resourceVersion and pagination, admission, RBAC.
//! - [`ControlPlane::kubeconfig`] is a file a subprocess can use (`KUBECONFIG`);
//!   [`ControlPlane::client`] a `kube::Client` for the test itself.
//!
//! Dropping it kills both servers (each leads a process group) and removes their directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{ServerProcess, http_client, random_hex};

use crate::{HarnessError, Result};

/// The Kubernetes release `scripts/build-k8s.sh` builds by default.
pub const K8S_VERSION: &str = "1.36.3";
const INSTALL: &str = "scripts/build-k8s.sh (builds kube-apiserver and etcd with go)";
const START_ATTEMPTS: usize = 3;
/// Cold start on two busy cores can take a while; a warm one takes a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the control-plane binaries are: `$OPENOVA_K8S_BIN`, else
/// `${OPENOVA_TOOLS:-~/.cache/openova-tools}/k8s-v<K8S_VERSION>`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OPENOVA_K8S_BIN") {
        return PathBuf::from(d);
    }
    let tools = std::env::var_os("OPENOVA_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/openova-tools")
        },
        PathBuf::from,
    );
    tools.join(format!("k8s-v{K8S_VERSION}"))
}

fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if crate::process::is_executable(&p) {
        Ok(p)
    } else {
        Err(HarnessError::MissingBinary {
            what: name.to_owned(),
            looked_in: p.display().to_string(),
            install: INSTALL.to_owned(),
        })
    }
}

/// A running etcd + kube-apiserver.
#[derive(Debug)]
pub struct ControlPlane {
    // Declared before `dir`: the servers die before their directories go.
    apiserver: ServerProcess,
    etcd: ServerProcess,
    url: String,
    token: String,
    kubeconfig: PathBuf,
    started_in: Duration,
    /// The served resources, read once from discovery (cleared when CRDs are added).
    discovery: std::sync::Mutex<Option<Vec<::kube::api::ApiResource>>>,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until `/readyz` says ok.
    pub async fn start() -> Result<ControlPlane> {
        // kube (ring) and reqwest both link rustls: pick the process-wide provider once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let etcd_bin = binary("etcd")?;
        let apiserver_bin = binary("kube-apiserver")?;
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("testkit-k8s-")
            .tempdir()
            .map_err(HarnessError::io("creating the control plane's temp dir"))?;
        let token = random_hex(16)?;
        write(
            &dir.path().join("tokens.csv"),
            // token,user,uid,"group1,group2"
            &format!("{token},testkit-admin,testkit-admin,\"system:masters\"\n"),
        )?;
        let sa_key = rcgen::KeyPair::generate().map_err(|e| HarnessError::State {
            context: "generating the service-account key".into(),
            detail: e.to_string(),
        })?;
        write(&dir.path().join("sa.key"), &sa_key.serialize_pem())?;
        write(&dir.path().join("sa.pub"), &sa_key.public_key_pem())?;

        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&etcd_bin, &apiserver_bin, dir.path(), &token).await {
                Ok((etcd, apiserver, url)) => {
                    let kubeconfig = dir.path().join("kubeconfig");
                    write(&kubeconfig, &kubeconfig_yaml(&url, dir.path(), &token))?;
                    return Ok(ControlPlane {
                        apiserver,
                        etcd,
                        url,
                        token,
                        kubeconfig,
                        started_in: t0.elapsed(),
                        discovery: std::sync::Mutex::new(None),
                        dir,
                    });
                }
                Err(e @ HarnessError::PortTaken { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::State {
            context: "starting the control plane".into(),
            detail: "no attempt made".into(),
        }))
    }

    async fn try_start(
        etcd_bin: &Path,
        apiserver_bin: &Path,
        dir: &Path,
        token: &str,
    ) -> Result<(ServerProcess, ServerProcess, String)> {
        let (client, peer) = (crate::free_port()?, crate::free_port()?);
        let data = dir.join("etcd");
        let _ = std::fs::remove_dir_all(&data);
        let mut cmd = dies_with_us(etcd_bin);
        cmd.arg("--name=testkit")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=testkit=http://127.0.0.1:{peer}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let mut etcd = ServerProcess::spawn("etcd", cmd, &dir.join("etcd.log"), true)?
            .with_port_taken_markers(&["address already in use"]);
        let http = http_client()?;
        let health = format!("http://127.0.0.1:{client}/health");
        etcd.wait_ready("etcd /health", READY_TIMEOUT, || async {
            let body = http
                .get(&health)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(body)
            }
        })
        .await?;

        let secure = crate::free_port()?;
        let mut cmd = dies_with_us(apiserver_bin);
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={secure}"))
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            // No controller-manager creates the `default` ServiceAccount of a namespace.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--enable-priority-and-fairness=false")
            .arg("--v=1");
        let mut apiserver =
            ServerProcess::spawn("kube-apiserver", cmd, &dir.join("apiserver.log"), true)?
                .with_port_taken_markers(&["address already in use"]);
        let url = format!("https://127.0.0.1:{secure}");
        let crt = dir.join("certs").join("apiserver.crt");
        apiserver
            .wait_ready("kube-apiserver /readyz", READY_TIMEOUT, || async {
                // The certificate file appears once the server has generated it.
                let client = readyz_client(&crt).map_err(|e| e.to_string())?;
                let resp = client
                    .get(format!("{url}/readyz"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.text().await.map_err(|e| e.to_string())?;
                if status.is_success() && body.trim() == "ok" {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}: {}", body.trim()))
                }
            })
            .await?;
        etcd.check_alive()?;
        Ok((etcd, apiserver, url))
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin bearer token (`system:masters`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The file clients trust the API server's certificate with (its serving certificate
    /// followed by the CA that signed it).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs").join("apiserver.crt")
    }

    /// A kubeconfig file for the admin (for subprocesses: `KUBECONFIG=…`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// How long the start took, from spawning etcd to kube-apiserver's `/readyz` ok.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The resident memory of etcd and kube-apiserver together, KiB (from `/proc`).
    pub fn rss_kib(&self) -> u64 {
        [self.etcd.pid(), self.apiserver.pid()]
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// The end of kube-apiserver's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.apiserver.log_tail(lines)
    }

    /// A `kube::Client` for the admin.
    pub async fn client(&self) -> Result<::kube::Client> {
        let state = |detail: String| HarnessError::State {
            context: "building a kube client for the control plane".into(),
            detail,
        };
        let kc = ::kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| state(e.to_string()))?;
        let config = ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| state(e.to_string()))?;
        ::kube::Client::try_from(config).map_err(|e| state(e.to_string()))
    }

    /// Starts a control plane, creates `crds` and waits until each is Established, and creates
    /// the namespaces `namespaces`.
    pub async fn start_with(crds: &[crate::Crd], namespaces: &[&str]) -> Result<ControlPlane> {
        let cp = Self::start().await?;
        cp.install_crds(crds).await?;
        let client = cp.client().await?;
        let ns: ::kube::Api<k8s_openapi::api::core::v1::Namespace> = ::kube::Api::all(client);
        for name in namespaces {
            let n = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                .map_err(|e| HarnessError::Parse {
                    context: "a namespace".into(),
                    detail: e.to_string(),
                })?;
            ns.create(&Default::default(), &n)
                .await
                .map_err(|e| api_err(&format!("creating namespace {name}"), e))?;
        }
        Ok(cp)
    }

    /// Creates every CRD of `crds` and waits until the API server serves each (Established).
    pub async fn install_crds(&self, crds: &[crate::Crd]) -> Result<()> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition as K8sCrd;
        let client = self.client().await?;
        let api: ::kube::Api<K8sCrd> = ::kube::Api::all(client);
        let mut names = Vec::new();
        for c in crds {
            for doc in c.documents()? {
                let crd: K8sCrd = serde_json::from_value(doc).map_err(|e| HarnessError::Parse {
                    context: "a CustomResourceDefinition".into(),
                    detail: e.to_string(),
                })?;
                let name = crd.metadata.name.clone().unwrap_or_default();
                api.create(&Default::default(), &crd)
                    .await
                    .map_err(|e| api_err(&format!("creating CRD {name}"), e))?;
                names.push(name);
            }
        }
        for name in names {
            crate::eventually(&format!("CRD {name} Established"), READY_TIMEOUT, || {
                let (api, name) = (&api, &name);
                async move {
                    let c = api.get(name).await.map_err(|e| e.to_string())?;
                    let ok = c
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    if ok {
                        Ok(())
                    } else {
                        Err("not Established yet".to_owned())
                    }
                }
            })
            .await?;
        }
        *self
            .discovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }

    /// The object `name` of the resource with plural `plural` (any group; the first match in
    /// discovery), as JSON; `None` when it does not exist or cannot be read.
    pub async fn object(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let client = self.client().await.ok()?;
        let ar = self.resource(&client, plural).await?;
        let api: ::kube::Api<::kube::api::DynamicObject> =
            ::kube::Api::namespaced_with(client, namespace, &ar);
        let o = api.get_opt(name).await.ok()??;
        serde_json::to_value(o).ok()
    }

    async fn resource(
        &self,
        client: &::kube::Client,
        plural: &str,
    ) -> Option<::kube::api::ApiResource> {
        let cached = self
            .discovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let found =
            |list: &[::kube::api::ApiResource]| list.iter().find(|r| r.plural == plural).cloned();
        if let Some(list) = cached
            && let Some(r) = found(&list)
        {
            return Some(r);
        }
        let d = ::kube::Discovery::new(client.clone()).run().await.ok()?;
        let list: Vec<::kube::api::ApiResource> = d
            .groups()
            .flat_map(|g| g.recommended_resources().into_iter().map(|(r, _)| r))
            .collect();
        let r = found(&list);
        *self
            .discovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(list);
        r
    }

    /// The directory holding the logs, certificates, tokens and etcd's data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A command for `program` that the kernel SIGKILLs when the thread that started it dies
/// (`setpriv --pdeathsig KILL`, util-linux, which then execs the program): a test process
/// killed by a timeout, or `scripts/main.sh cluster` stopped with SIGTERM, leaves no
/// kube-apiserver or etcd behind. Without `setpriv`, a plain command (Drop still kills it).
fn dies_with_us(program: &Path) -> Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    if crate::process::is_executable(setpriv) {
        let mut cmd = Command::new(setpriv);
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn api_err(context: &str, e: ::kube::Error) -> HarnessError {
    HarnessError::State {
        context: context.to_owned(),
        detail: e.to_string(),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(HarnessError::io(format!("writing {}", path.display())))
}

/// An HTTPS client that trusts the certificates in `crt` (kube-apiserver's self-generated
/// serving certificate followed by its CA).
fn readyz_client(crt: &Path) -> Result<reqwest::Client> {
    let pem = std::fs::read(crt).map_err(HarnessError::io(format!("reading {}", crt.display())))?;
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5));
    for c in reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(HarnessError::http("reading the API server's certificate"))?
    {
        b = b.add_root_certificate(c);
    }
    b.build()
        .map_err(HarnessError::http("building the readiness client"))
}

fn kubeconfig_yaml(url: &str, dir: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testkit
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: testkit-admin
  user:
    token: {token}
contexts:
- name: testkit
  context:
    cluster: testkit
    user: testkit-admin
current-context: testkit
",
        ca = dir.join("certs").join("apiserver.crt").display()
    )
}
