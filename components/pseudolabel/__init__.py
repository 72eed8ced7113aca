"""SAM2 pseudolabeling: one image embedding per window, batched box prompts, largest component -> polygon."""
