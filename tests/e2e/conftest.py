"""Fixtures of the emulated cluster (tests.kubeemu), for kubectl-driven tests."""

