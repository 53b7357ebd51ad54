//! Ovation: a live-streaming gifting server.
