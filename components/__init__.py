"""crownsam: SAM2 pseudolabels for tree-crown instance segmentation.

The library lives here (imported as ``crownsam``); the CLI (``crownsam.cli``) and the KFP components
are thin layers over it.
"""

__version__ = "0.1.0"
