//! Which gifts and questions of a room its broadcaster can still acknowledge, and who
//! sent them: the newest `capacity` per room.

use std::collections::{HashMap, VecDeque};

use crate::protocol::UserRef;

pub struct Acknowledgeable {
    capacity: usize,
    order: VecDeque<String>,
    senders: HashMap<String, UserRef>,
}

impl Acknowledgeable {
    pub fn new(capacity: usize) -> Acknowledgeable {
        assert!(capacity > 0);
        Acknowledgeable {
            capacity,
            order: VecDeque::new(),
            senders: HashMap::new(),
        }
    }

    pub fn remember(&mut self, id: String, sender: UserRef) {
        if self.senders.contains_key(&id) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.senders.remove(&oldest);
            }
        }
        self.order.push_back(id.clone());
        self.senders.insert(id, sender);
        debug_assert_eq!(self.order.len(), self.senders.len());
    }

    pub fn sender(&self, id: &str) -> Option<&UserRef> {
        self.senders.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_refs() {
        let mut refs = Acknowledgeable::new(2);
        let bob = UserRef {
            id: "bob".into(),
            name: "Bob".into(),
        };
        for id in ["g1", "g2", "g3"] {
            refs.remember(id.into(), bob.clone());
        }
        assert!(refs.sender("g1").is_none());
        assert_eq!(refs.sender("g3"), Some(&bob));
    }
}
