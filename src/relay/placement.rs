//! Where a new WHEP viewer goes: this node, or another with room. Pure: the node's
//! own load (live) and the others' last reports in, a decision out.
//!
//! The rule fills a node before spilling to the next: every node that serves a
//! room's viewers without its publisher pulls one more copy from the origin, so
//! packing viewers keeps the origin's egress to as few copies as the audience needs.
//! A node is full at its operator's viewer cap or above its CPU threshold; a full
//! node sends the viewer to a node with room that already has the room's video if
//! there is one (no new pull), else to the emptiest node with room.

use crate::bus::NodeLoad;

/// A viewer is passed on at most this many times; the last node serves it if it
/// can, so stale reports can never bounce a viewer around for ever.
pub const MAX_REDIRECTS: u32 = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Here,
    /// `307` to this node's base URL.
    Elsewhere(String),
    /// No node has room: `503`.
    Full,
}

/// Whether `load` can take another viewer under `max_cpu_percent`.
pub fn has_room(load: &NodeLoad, max_cpu_percent: f64) -> bool {
    load.max_viewers.is_none_or(|cap| load.viewers < cap) && load.cpu_percent < max_cpu_percent
}

/// How full a node is, 0 (idle) to 1 (at a limit): the larger of its viewers against
/// its cap and its CPU against the threshold.
fn fullness(load: &NodeLoad, max_cpu_percent: f64) -> f64 {
    let viewers = load
        .max_viewers
        .map_or(0.0, |cap| load.viewers as f64 / cap as f64);
    viewers.max(load.cpu_percent / max_cpu_percent)
}

/// Places a viewer of `room` that has been redirected `redirects` times already.
pub fn place(
    room: &str,
    here: &NodeLoad,
    others: &[NodeLoad],
    redirects: u32,
    max_cpu_percent: f64,
) -> Placement {
    if has_room(here, max_cpu_percent) {
        return Placement::Here;
    }
    if redirects >= MAX_REDIRECTS {
        return Placement::Full;
    }
    // Nodes that have the room's video first, then the emptiest.
    let rank = |load: &NodeLoad| {
        let pulls_again = !load.rooms.iter().any(|r| r == room);
        (pulls_again, fullness(load, max_cpu_percent))
    };
    others
        .iter()
        .filter(|other| other.url != here.url && has_room(other, max_cpu_percent))
        .min_by(|a, b| {
            let (a, b) = (rank(a), rank(b));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
        })
        .map_or(Placement::Full, |best| {
            Placement::Elsewhere(best.url.clone())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str, viewers: usize, cap: Option<usize>, cpu: f64) -> NodeLoad {
        NodeLoad {
            url: url.into(),
            viewers,
            max_viewers: cap,
            cpu_percent: cpu,
            egress_bytes_per_s: 0,
            rooms: Vec::new(),
        }
    }

    fn with_room(mut load: NodeLoad, room: &str) -> NodeLoad {
        load.rooms.push(room.into());
        load
    }

    #[test]
    fn a_node_with_room_keeps_the_viewer() {
        let here = node("a", 9, Some(10), 50.0);
        let others = [node("b", 0, Some(10), 0.0)];
        assert_eq!(place("cam", &here, &others, 0, 90.0), Placement::Here);
        let uncapped = node("a", 10_000, None, 10.0);
        assert_eq!(place("cam", &uncapped, &others, 0, 90.0), Placement::Here);
    }

    #[test]
    fn a_full_node_sends_the_viewer_to_the_emptiest_node_with_room() {
        let here = node("a", 10, Some(10), 20.0);
        let others = [
            here.clone(),
            node("b", 8, Some(10), 10.0),
            node("c", 2, Some(10), 30.0),
            node("d", 0, Some(10), 95.0),
            node("e", 5, Some(5), 0.0),
        ];
        assert_eq!(
            place("cam", &here, &others, 0, 90.0),
            Placement::Elsewhere("c".into())
        );
    }

    #[test]
    fn a_node_that_has_the_rooms_video_is_preferred_to_an_emptier_one() {
        let here = node("a", 10, Some(10), 20.0);
        let others = [
            node("b", 0, Some(10), 0.0),
            with_room(node("c", 8, Some(10), 50.0), "cam"),
            with_room(node("d", 1, Some(10), 0.0), "other"),
            with_room(node("e", 10, Some(10), 0.0), "cam"),
        ];
        assert_eq!(
            place("cam", &here, &others, 0, 90.0),
            Placement::Elsewhere("c".into())
        );
        assert_eq!(
            place("other", &here, &others, 0, 90.0),
            Placement::Elsewhere("d".into())
        );
        assert_eq!(
            place("new", &here, &others, 0, 90.0),
            Placement::Elsewhere("b".into())
        );
    }

    #[test]
    fn a_busy_cpu_counts_as_full() {
        let here = node("a", 1, None, 91.0);
        let others = [node("b", 500, None, 40.0)];
        assert_eq!(
            place("cam", &here, &others, 0, 90.0),
            Placement::Elsewhere("b".into())
        );
    }

    #[test]
    fn no_room_anywhere_or_too_many_redirects_is_full() {
        let here = node("a", 10, Some(10), 0.0);
        assert_eq!(place("cam", &here, &[], 0, 90.0), Placement::Full);
        let others = [node("b", 10, Some(10), 0.0), node("c", 0, None, 99.0)];
        assert_eq!(place("cam", &here, &others, 0, 90.0), Placement::Full);
        let roomy = [node("b", 0, Some(10), 0.0)];
        assert_eq!(
            place("cam", &here, &roomy, MAX_REDIRECTS, 90.0),
            Placement::Full
        );
        let free = node("a", 0, Some(10), 0.0);
        assert_eq!(
            place("cam", &free, &[], MAX_REDIRECTS, 90.0),
            Placement::Here
        );
    }
}
