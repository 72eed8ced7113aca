"""Comparison of label sets and models; MLflow model registry."""
