"""Benchmarks: loaders for HR-Bench, MME-RealWorld and V*, their scoring rules, a resumable runner."""
