//! RFC 6962 / RFC 9162 Merkle tree math, free of storage.
//!
//! The store keeps every complete, aligned subtree ("node (level, index)" covers leaves
//! `index·2^level .. (index+1)·2^level`). Any range the RFC's recursion needs is a short
//! run of such nodes, so a root or proof costs O(log n) lookups: callers first ask which
//! nodes they need (`*_nodes`), fetch them in one query, then fold them here.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// A node of the stored tree: (level, index).
pub type NodeRef = (u32, u64);

/// The storage key of node (level, idx): the seq of the leaf whose append completed it,
/// times 64, plus the level. Every append then writes only at the end of one B-tree, and
/// a node is still one primary-key lookup. Holds for trees of up to 2^57 entries.
pub fn node_key((level, idx): NodeRef) -> i64 {
    (((((idx + 1) << level) - 1) << 6) | u64::from(level)) as i64
}

/// The storage key of leaf `seq`.
pub fn leaf_key(seq: u64) -> i64 {
    node_key((0, seq))
}

/// The largest aligned subtrees that tile `start..end`, left to right. For every range the
/// RFC recursion produces (start aligned to the range's split) they are also the stored
/// nodes whose fold is the range's hash.
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeRef> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let mut level = if at == 0 { 63 } else { at.trailing_zeros() };
        while level > 0 && (1u64.checked_shl(level).is_none_or(|w| at + w > end)) {
            level -= 1;
        }
        out.push((level, at >> level));
        at += 1 << level;
    }
    out
}

/// Folds the nodes of one range (as returned by `range_nodes`) into its RFC 6962 hash.
pub fn fold_range(nodes: &[Hash]) -> Option<Hash> {
    let (last, rest) = nodes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, n| node_hash(n, &acc)))
}

/// Ranges (start, end) whose hashes form the inclusion proof of `index` in a tree of
/// `size`, in proof order (nearest the leaf first).
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    // Walk down from the root, then reverse: the proof lists the deepest sibling first.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    out
}

/// Ranges whose hashes form the RFC 9162 consistency proof from `m` to `n` (0 < m < n).
pub fn consistency_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if m == 0 || m >= n {
        return out;
    }
    let (mut lo, mut hi, mut m_rel, mut complete) = (0u64, n, m, true);
    loop {
        let size = hi - lo;
        if m_rel == size {
            if !complete {
                out.push((lo, hi));
            }
            break;
        }
        let k = split(size);
        if m_rel <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m_rel -= k;
            complete = false;
        }
    }
    out.reverse();
    out
}

/// Reference implementation over all leaves: for tests and for the offline verifier,
/// which recomputes everything anyway.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_from_leaves(&leaves[..k]), &root_from_leaves(&leaves[k..]))
        }
    }
}

/// Incremental root computation for verifying a whole log in one pass: keeps the
/// "frontier" of complete subtrees, O(log n) memory.
#[derive(Default, Clone)]
pub struct Frontier {
    size: u64,
    /// (level, hash) of the complete subtrees, largest first.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn push(&mut self, leaf: Hash) {
        self.push_subtree(0, leaf);
    }

    /// Appends a whole subtree of 2^level leaves given by its hash (a compacted range).
    /// Returns false, changing nothing, when the tree's size is not a multiple of 2^level:
    /// the subtree would not be aligned.
    pub fn push_subtree(&mut self, level: u32, hash: Hash) -> bool {
        if level >= 63 || !self.size.is_multiple_of(1u64 << level) {
            return false;
        }
        let mut node = (level, hash);
        while let Some(&(l, left)) = self.stack.last() {
            if l != node.0 {
                break;
            }
            self.stack.pop();
            node = (l + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1 << level;
        true
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> Hash {
        let Some((&(_, last), rest)) = self.stack.split_last() else {
            return empty_root();
        };
        rest.iter().rev().fold(last, |acc, (_, n)| node_hash(n, &acc))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProofError(pub &'static str);

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ProofError {}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError("leaf index is not below the tree size"));
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if s == 0 {
            return Err(ProofError("proof has more hashes than the tree has levels"));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError("proof is too short"));
    }
    if &r != root {
        return Err(ProofError("proof does not lead to the root"));
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2, with the edge cases the RFC leaves to the caller: equal sizes need
/// an empty proof and equal roots; from size 0 every tree is consistent with an empty proof.
pub fn verify_consistency(m: u64, n: u64, root1: &Hash, root2: &Hash, proof: &[Hash]) -> Result<(), ProofError> {
    if m > n {
        return Err(ProofError("first size is larger than second size"));
    }
    if m == n {
        if !proof.is_empty() {
            return Err(ProofError("equal sizes need an empty proof"));
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError("equal sizes with different roots"))
        };
    }
    if m == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError("a proof from size 0 must be empty"))
        };
    }
    if proof.is_empty() {
        return Err(ProofError("empty consistency proof"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (m - 1, n - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError("proof has hashes left over"));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError("proof is too short"));
    }
    if &fr != root1 {
        return Err(ProofError("proof does not match the first root"));
    }
    if &sr != root2 {
        return Err(ProofError("proof does not match the second root"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_hash_from_leaves(leaves: &[Hash], start: u64, end: u64) -> Hash {
        root_from_leaves(&leaves[start as usize..end as usize])
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The stored-node path, checked against brute force for every range it is used on.
    fn node_value(all: &[Hash], (level, index): NodeRef) -> Hash {
        let w = 1u64 << level;
        range_hash_from_leaves(all, index * w, index * w + w)
    }

    fn via_nodes(all: &[Hash], start: u64, end: u64) -> Hash {
        let nodes: Vec<Hash> = range_nodes(start, end)
            .into_iter()
            .map(|r| node_value(all, r))
            .collect();
        fold_range(&nodes).unwrap()
    }

    #[test]
    fn proofs_match_brute_force_on_every_small_tree() {
        for n in 1..=70u64 {
            let all = leaves(n);
            let root = root_from_leaves(&all);
            assert_eq!(via_nodes(&all, 0, n), root, "root via nodes, n={n}");
            let mut f = Frontier::default();
            all.iter().for_each(|l| f.push(*l));
            assert_eq!(f.root(), root);
            for i in 0..n {
                let proof: Vec<Hash> = inclusion_ranges(i, n)
                    .iter()
                    .map(|&(s, e)| via_nodes(&all, s, e))
                    .collect();
                verify_inclusion(i, n, &all[i as usize], &proof, &root).unwrap();
                let mut bad = proof.clone();
                if let Some(p) = bad.first_mut() {
                    p[0] ^= 1;
                    assert!(verify_inclusion(i, n, &all[i as usize], &bad, &root).is_err());
                }
            }
            for m in 1..n {
                let r1 = root_from_leaves(&all[..m as usize]);
                let proof: Vec<Hash> = consistency_ranges(m, n)
                    .iter()
                    .map(|&(s, e)| via_nodes(&all, s, e))
                    .collect();
                verify_consistency(m, n, &r1, &root, &proof).unwrap();
                let mut extra = proof.clone();
                extra.push(root);
                assert!(
                    verify_consistency(m, n, &r1, &root, &extra).is_err(),
                    "left-over hash m={m} n={n}"
                );
                assert!(verify_consistency(m, n, &root, &r1, &proof).is_err());
            }
        }
    }

    #[test]
    fn node_keys_are_unique_and_grow_with_appends() {
        let mut seen = std::collections::HashSet::new();
        let mut last = -1i64;
        for seq in 0..4096u64 {
            // The nodes completed by appending leaf `seq`, in the order append writes them.
            let mut level = 0;
            let mut idx = seq;
            loop {
                let key = node_key((level, idx));
                assert!(seen.insert(key) && key > last, "key of ({level}, {idx})");
                last = key;
                if idx & 1 == 0 {
                    break;
                }
                idx >>= 1;
                level += 1;
            }
        }
        assert_eq!(leaf_key(5), 5 * 64);
    }

    #[test]
    fn proof_sizes_are_logarithmic() {
        let n = 1_000_003u64;
        assert!(inclusion_ranges(777_777, n).len() <= 21);
        assert!(consistency_ranges(500_001, n).len() <= 42);
        for (s, e) in inclusion_ranges(777_777, n) {
            assert!(range_nodes(s, e).len() <= 21);
        }
    }

    #[test]
    fn a_frontier_fed_subtree_hashes_has_the_same_root() {
        for n in 1..=40u64 {
            let all = leaves(n);
            let root = root_from_leaves(&all);
            for k in 0..=n {
                // Compacted prefix 0..k, leaves after it: what `verify` folds.
                let mut f = Frontier::default();
                for (level, idx) in range_nodes(0, k) {
                    assert!(f.push_subtree(level, node_value(&all, (level, idx))));
                }
                all[k as usize..].iter().for_each(|l| f.push(*l));
                assert_eq!((f.size(), f.root()), (n, root), "n={n} k={k}");
            }
        }
        let mut f = Frontier::default();
        f.push([1; 32]);
        assert!(!f.push_subtree(1, [2; 32]), "a subtree of 2 cannot start at 1");
        assert_eq!(f.size(), 1);
    }

    #[test]
    fn range_nodes_tile_any_range_with_aligned_subtrees() {
        assert_eq!(range_nodes(5, 13), vec![(0, 5), (1, 3), (2, 2), (0, 12)]);
        assert_eq!(range_nodes(0, 8), vec![(3, 0)]);
        assert!(range_nodes(7, 7).is_empty());
        for (s, e) in [(0u64, 1u64), (3, 100), (64, 65), (1, 1 << 20)] {
            let mut at = s;
            for (level, idx) in range_nodes(s, e) {
                assert_eq!(idx << level, at, "contiguous and aligned");
                at += 1 << level;
            }
            assert_eq!(at, e);
        }
    }
}
