//! Cycle detection for a batch of tasks that depend on each other. Tasks that depend
//! only on tasks already stored can never close a cycle (those were accepted earlier and
//! cannot gain new edges), so only the edges inside one batch need checking.

/// `edges[i]` lists the batch members task `i` depends on. Returns one cycle as a list of
/// indices `[a, b, ..., a]` if there is one.
pub fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let n = edges.len();
    let mut mark = vec![Mark::New; n];
    // Iterative DFS: a batch can be 1000 tasks deep, too deep to recurse safely.
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        let mut path: Vec<usize> = vec![root];
        let mut next_edge: Vec<usize> = vec![0];
        mark[root] = Mark::OnPath;
        while let Some(&node) = path.last() {
            let i = next_edge.last_mut().expect("parallel stacks");
            if let Some(&dep) = edges[node].get(*i) {
                *i += 1;
                match mark.get(dep).copied() {
                    Some(Mark::New) => {
                        mark[dep] = Mark::OnPath;
                        path.push(dep);
                        next_edge.push(0);
                    }
                    Some(Mark::OnPath) => {
                        let start = path.iter().position(|&p| p == dep).expect("on path");
                        let mut cycle = path[start..].to_vec();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
                next_edge.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_and_accepts_dags() {
        // diamond: 0 <- 1, 0 <- 2, {1,2} <- 3
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0], vec![1, 2]]), None);
        let c = find_cycle(&[vec![2], vec![0], vec![1]]).unwrap();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0, 0]));
    }
}
