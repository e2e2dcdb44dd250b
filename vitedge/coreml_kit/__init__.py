"""Files shipped inside Core ML kit bundles (run on a Mac with coremltools + numpy only)."""
