"""A prelude for subprocesses that must prove the device side works where torch cannot import."""

import textwrap

NO_TORCH = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test (device side)")
    sys.meta_path.insert(0, _Block())
""")
