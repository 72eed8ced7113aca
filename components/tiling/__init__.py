"""Window plan: 1024-px windows, stride 512; every segment belongs to exactly one window."""
