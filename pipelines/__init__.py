"""The crownsam Kubeflow pipelines (imported as ``crownsam.pipelines``): wiring, resources, compile, run."""
