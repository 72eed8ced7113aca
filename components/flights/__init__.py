"""Flight catalog and scheduled retraining."""
