"""Crown pseudo-classes without labels (after ALPS): per-crown spectral and SAM2 features, clustered with
scikit-learn's MiniBatchKMeans; centres saved so new crowns can be assigned without refitting."""
