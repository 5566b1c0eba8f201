"""Polls: one poll, the worker process it runs in, the parent's handle on it, and the schedule."""
