"""COCO export: image chips and instance JSON, with a held-out test area."""
