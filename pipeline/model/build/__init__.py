"""`callstream models build`: turn pretrained weights shipped in packages into Triton artifacts."""
