"""Storage: the in-memory head, its query interface, histogram maths and small transactional state."""
