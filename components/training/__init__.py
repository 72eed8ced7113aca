"""Mask R-CNN training, tiled inference and COCO evaluation, tracked in MLflow."""
