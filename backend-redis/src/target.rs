//! Where the broker's Redis is: one server or a Redis Cluster, from a URL.

use redis::ConnectionInfo;

/// Where the broker's Redis is.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// One server.
    Server(ConnectionInfo),
    /// A Redis Cluster: any of its nodes (the rest are discovered).
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    /// The command that publishes to a topic's channel from the publish script.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Target::Server(_) => "PUBLISH",
            Target::Cluster(_) => "SPUBLISH",
        }
    }

    /// The first node, for `Debug`.
    pub(crate) fn first(&self) -> Option<&ConnectionInfo> {
        match self {
            Target::Server(info) => Some(info),
            Target::Cluster(nodes) => nodes.first(),
        }
    }
}

/// Parse `redis+cluster://[user:password@]host:port[,host:port…]` (or `rediss+cluster://`) into
/// the cluster's nodes; `None` when `url` is not a cluster URL or a node does not parse.
pub(crate) fn parse_cluster_url(url: &str) -> Option<Option<Vec<ConnectionInfo>>> {
    use redis::IntoConnectionInfo;
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return None;
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Option<Vec<ConnectionInfo>> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| {
            if host.contains('/') {
                return None; // a cluster has no databases
            }
            format!("{scheme}://{auth}{host}")
                .into_connection_info()
                .ok()
        })
        .collect();
    Some(nodes.filter(|n| !n.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_node() {
        let nodes = parse_cluster_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
            .expect("a cluster url")
            .expect("valid");
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        let nodes = parse_cluster_url("redis+cluster://u:secret@h1:1,h2:2/")
            .expect("a cluster url")
            .expect("valid");
        assert!(
            nodes
                .iter()
                .all(|n| n.redis_settings().password() == Some("secret"))
        );
        assert!(parse_cluster_url("redis://127.0.0.1:6379").is_none());
        assert_eq!(
            parse_cluster_url("redis+cluster://").map(|n| n.is_some()),
            Some(false)
        );
        assert_eq!(
            parse_cluster_url("redis+cluster://h:1/2").map(|n| n.is_some()),
            Some(false)
        );
    }
}
