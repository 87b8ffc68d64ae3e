"""Model lifecycle on one replica: single-flight loads with warm-up, pinning, LRU, reconcile."""
