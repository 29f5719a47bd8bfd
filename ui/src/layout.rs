//! A layered layout for the service map: callers left of callees, each node in its own
//! slot of its layer, so no two nodes overlap however many there are.
//!
//! Layers are longest paths from the nodes nobody calls (edges that close a cycle are
//! ignored for layering); within a layer, nodes are ordered by the mean position of their
//! neighbours in the layer before (a few barycentre sweeps), which keeps edges short and
//! crossings few.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Where a node goes: its layer (column) and its slot (row) in that layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Column, from 0 (callers).
    pub layer: usize,
    /// Row within the column, from 0.
    pub slot: usize,
}

/// Lays out `nodes` (ids) joined by `edges` (source, target).
pub fn layered(nodes: &[String], edges: &[(String, String)]) -> HashMap<String, Place> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let n = nodes.len();
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (s, t) in edges {
        if let (Some(&a), Some(&b)) = (index.get(s.as_str()), index.get(t.as_str()))
            && a != b
        {
            out_edges[a].push(b);
        }
    }
    // Drop edges that close a cycle (iterative DFS; back edges go to a node on the stack).
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut dag: Vec<Vec<usize>> = vec![Vec::new(); n];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some((v, i)) = stack.pop() {
            if i < out_edges[v].len() {
                stack.push((v, i + 1));
                let w = out_edges[v][i];
                match state[w] {
                    0 => {
                        dag[v].push(w);
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    2 => dag[v].push(w),
                    _ => {} // back edge: ignored for layering
                }
            } else {
                state[v] = 2;
            }
        }
    }
    // Longest path layering, in topological order (Kahn).
    let mut indegree = vec![0usize; n];
    for targets in &dag {
        for &t in targets {
            indegree[t] += 1;
        }
    }
    let mut layer = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    while let Some(v) = ready.pop() {
        for &t in &dag[v] {
            layer[t] = layer[t].max(layer[v] + 1);
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(t);
            }
        }
    }
    let mut layers: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (v, l) in layer.iter().enumerate() {
        layers.entry(*l).or_default().push(v);
    }
    for members in layers.values_mut() {
        members.sort_by(|a, b| nodes[*a].cmp(&nodes[*b]));
    }
    // Barycentre sweeps: order each layer by its callers' mean slot.
    let mut slot = vec![0usize; n];
    for members in layers.values() {
        for (i, v) in members.iter().enumerate() {
            slot[*v] = i;
        }
    }
    let mut callers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (v, targets) in dag.iter().enumerate() {
        for &t in targets {
            callers[t].push(v);
        }
    }
    for _ in 0..4 {
        for members in layers.values_mut() {
            let key = |v: usize| -> f64 {
                if callers[v].is_empty() {
                    slot[v] as f64
                } else {
                    callers[v].iter().map(|c| slot[*c] as f64).sum::<f64>()
                        / callers[v].len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize)> = members.iter().map(|v| (key(*v), *v)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(nodes[a.1].cmp(&nodes[b.1])));
            *members = keyed.into_iter().map(|(_, v)| v).collect();
            for (i, v) in members.iter().enumerate() {
                slot[*v] = i;
            }
        }
    }
    let mut out = HashMap::new();
    let mut seen = HashSet::new();
    for (l, members) in &layers {
        for (i, v) in members.iter().enumerate() {
            if seen.insert(*v) {
                out.insert(nodes[*v].clone(), Place { layer: *l, slot: i });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i:03}")).collect()
    }

    #[test]
    fn callers_come_before_callees_and_cycles_do_not_loop() {
        let nodes = ids(4);
        let edges = vec![
            ("s000".to_string(), "s001".to_string()),
            ("s001".to_string(), "s002".to_string()),
            ("s002".to_string(), "s001".to_string()),
            ("s000".to_string(), "s003".to_string()),
        ];
        let p = layered(&nodes, &edges);
        assert_eq!(p["s000"].layer, 0);
        assert_eq!(p["s001"].layer, 1);
        assert_eq!(p["s002"].layer, 2);
        assert_eq!(p["s003"].layer, 1);
    }

    #[test]
    fn two_hundred_services_never_share_a_place() {
        let nodes = ids(200);
        let mut edges = Vec::new();
        for i in 0..200usize {
            for j in [i * 3 + 1, i * 7 + 5, (i * 13) % 200] {
                if j < 200 && j != i {
                    edges.push((nodes[i].clone(), nodes[j].clone()));
                }
            }
        }
        let p = layered(&nodes, &edges);
        assert_eq!(p.len(), 200);
        let places: HashSet<(usize, usize)> = p.values().map(|pl| (pl.layer, pl.slot)).collect();
        assert_eq!(places.len(), 200, "every node has its own slot");
    }
}
