//! Per-node config Secrets `sluice-node-<node>` (key `config.yaml`) in the operator's namespace.
//!
//! Invariants:
//! * the content hash of every Secret the operator keeps is cached (loaded from the Secrets'
//!   `sluice.dev/config-hash` annotation at start), and a Secret is written only when the newly
//!   rendered hash differs: at most one write per node per change, none for a restart;
//! * writes are server-side applies with field manager `sluice-operator`;
//! * a node with nothing bound has no Secret (it is deleted);
//! * a Secret is owned by its Node (when the Node exists), so it goes away with it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Node, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sluice_api::NodeConfig;

use futures::future::BoxFuture;

use super::cluster::NodeConfigStore;
use crate::{Context, Error, Result, context::MANAGER, resolve};

/// The key of the config in each Secret.
pub const CONFIG_KEY: &str = "config.yaml";
/// The annotation holding the hex SHA-256 of the config.
pub const HASH_ANNOTATION: &str = "sluice.dev/config-hash";
/// The annotation holding the node name.
pub const NODE_ANNOTATION: &str = "sluice.dev/node";
/// The label selecting every node config Secret.
pub const COMPONENT_SELECTOR: &str =
    "app.kubernetes.io/managed-by=sluice-operator,app.kubernetes.io/component=node-config";

/// The name of a node's config Secret: `sluice-node-<node>` (hashed when too long for a name).
pub fn secret_name(node: &str) -> String {
    let name = format!("sluice-node-{node}");
    if name.len() <= 253 {
        return name;
    }
    let hash = resolve::content_hash(node);
    format!("{}-{}", &name[..240], &hash[..12])
}

/// Writes node config Secrets through the API server. Shared (`Arc`) by the writes in flight;
/// what each Secret holds is the caller's to remember (see [`plan`]), since only the caller knows
/// which writes completed.
pub struct KubeNodeConfigs {
    ctx: Context,
    secrets: Api<Secret>,
    nodes: Api<Node>,
    /// node → UID of its Node object (looked up once per node; absent Nodes are asked again).
    node_uids: Mutex<HashMap<String, String>>,
}

/// One pending write of a node's config Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeConfigWrite {
    /// Create or replace the Secret with this config.
    Apply {
        /// The node.
        node: String,
        /// The rendered config.
        yaml: String,
        /// Its content hash.
        hash: String,
    },
    /// Delete the Secret: nothing on the node is bound any more.
    Delete {
        /// The node.
        node: String,
    },
}

impl NodeConfigWrite {
    /// The node whose Secret this writes.
    pub fn node(&self) -> &str {
        match self {
            NodeConfigWrite::Apply { node, .. } | NodeConfigWrite::Delete { node } => node,
        }
    }

    /// Record a completed write in `hashes` (node → hash of the config its Secret holds).
    pub fn record(&self, hashes: &mut HashMap<String, String>) {
        match self {
            NodeConfigWrite::Apply { node, hash, .. } => hashes.insert(node.clone(), hash.clone()),
            NodeConfigWrite::Delete { node } => hashes.remove(node),
        };
    }
}

/// The write that brings `node`'s Secret in line with `config` (`None`: the node needs no
/// config), given `hashes` (node → hash its Secret holds); `Ok(None)` when it already is.
pub fn plan(
    hashes: &HashMap<String, String>,
    node: &str,
    config: Option<NodeConfig>,
) -> Result<Option<NodeConfigWrite>> {
    let Some(config) = config else {
        let node = node.to_owned();
        return Ok(hashes
            .contains_key(&node)
            .then_some(NodeConfigWrite::Delete { node }));
    };
    let yaml = config.to_yaml().map_err(|source| Error::Render {
        node: node.to_owned(),
        source,
    })?;
    let hash = resolve::content_hash(&yaml);
    Ok((hashes.get(node) != Some(&hash)).then(|| NodeConfigWrite::Apply {
        node: node.to_owned(),
        yaml,
        hash,
    }))
}

impl NodeConfigStore for KubeNodeConfigs {
    fn stored(&self) -> BoxFuture<'_, Result<HashMap<String, String>>> {
        Box::pin(self.list())
    }

    fn write<'a>(&'a self, write: &'a NodeConfigWrite) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_one(write))
    }
}

impl KubeNodeConfigs {
    /// A writer in the operator's namespace.
    pub fn new(ctx: Context) -> Self {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
        let nodes = Api::all(ctx.client.clone());
        Self {
            ctx,
            secrets,
            nodes,
            node_uids: Mutex::default(),
        }
    }

    /// node → content hash of every node config Secret as stored now (one list, in the operator's
    /// namespace only).
    async fn list(&self) -> Result<HashMap<String, String>> {
        let ctx = &self.ctx;
        let list = self
            .secrets
            .list_metadata(&ListParams::default().labels(COMPONENT_SELECTOR))
            .await
            .map_err(|e| {
                Error::kube(
                    "list",
                    format!("node config Secrets in {}", ctx.settings.namespace),
                    e,
                )
            })?;
        let hashes: HashMap<String, String> = list
            .items
            .into_iter()
            .filter_map(|s| {
                let annotations = s.metadata.annotations?;
                Some((
                    annotations.get(NODE_ANNOTATION)?.clone(),
                    annotations.get(HASH_ANNOTATION)?.clone(),
                ))
            })
            .collect();
        ctx.metrics
            .node_configs
            .set(i64::try_from(hashes.len()).unwrap_or(i64::MAX));
        Ok(hashes)
    }

    /// Carry out one write (a server-side apply, or a delete that tolerates a missing Secret).
    async fn write_one(&self, write: &NodeConfigWrite) -> Result<()> {
        let result = self.send(write).await;
        if let (NodeConfigWrite::Delete { .. }, Ok(())) = (write, &result) {
            // A Node re-created under the same name has a new UID: look it up again.
            if let Ok(mut uids) = self.node_uids.lock() {
                uids.remove(write.node());
            }
        }
        result
    }

    async fn send(&self, write: &NodeConfigWrite) -> Result<()> {
        match write {
            NodeConfigWrite::Delete { node } => {
                let name = secret_name(node);
                self.ctx.before_write("secret", "delete")?;
                match self.secrets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(Error::kube(
                        "delete",
                        format!("Secret {}/{name}", self.ctx.settings.namespace),
                        e,
                    )),
                }
            }
            NodeConfigWrite::Apply { node, yaml, hash } => {
                let secret = self.desired(node, yaml, hash).await?;
                let name = secret_name(node);
                self.ctx.before_write("secret", "apply")?;
                let params = PatchParams::apply(MANAGER).force();
                self.secrets
                    .patch(&name, &params, &Patch::Apply(&secret))
                    .await
                    .map(drop)
                    .map_err(|e| {
                        Error::kube(
                            "apply",
                            format!("Secret {}/{name}", self.ctx.settings.namespace),
                            e,
                        )
                    })
            }
        }
    }

    /// The full Secret as the operator wants it (server-side apply sends all of it).
    async fn desired(&self, node: &str, yaml: &str, hash: &str) -> Result<Secret> {
        let mut labels = BTreeMap::from([
            ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
            ("app.kubernetes.io/name".to_owned(), "sluice".to_owned()),
            ("app.kubernetes.io/component".to_owned(), "node-config".to_owned()),
        ]);
        if node.len() <= 63 {
            labels.insert(NODE_ANNOTATION.to_owned(), node.to_owned());
        }
        Ok(Secret {
            metadata: ObjectMeta {
                name: Some(secret_name(node)),
                namespace: Some(self.ctx.settings.namespace.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([
                    (HASH_ANNOTATION.to_owned(), hash.to_owned()),
                    (NODE_ANNOTATION.to_owned(), node.to_owned()),
                ])),
                owner_references: self.owner(node).await?.map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                CONFIG_KEY.to_owned(),
                ByteString(yaml.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        })
    }

    /// The Node as owner, when it exists (a Node that is gone, or not readable, gives none).
    async fn owner(&self, node: &str) -> Result<Option<OwnerReference>> {
        let cached = self
            .node_uids
            .lock()
            .ok()
            .and_then(|uids| uids.get(node).cloned());
        let uid = match cached {
            Some(uid) => Some(uid),
            None => {
                let found = match self.nodes.get_metadata_opt(node).await {
                    Ok(found) => found,
                    Err(kube::Error::Api(s)) if s.code == 403 => None,
                    Err(e) => return Err(Error::kube("get", format!("Node {node}"), e)),
                };
                let uid = found.and_then(|n| n.metadata.uid);
                if let (Some(uid), Ok(mut uids)) = (&uid, self.node_uids.lock()) {
                    uids.insert(node.to_owned(), uid.clone());
                }
                uid
            }
        };
        Ok(uid.map(|uid| OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.to_owned(),
            uid,
            ..OwnerReference::default()
        }))
    }
}
