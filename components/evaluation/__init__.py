"""Jaccard evaluation of label sets against manually drawn crowns."""
