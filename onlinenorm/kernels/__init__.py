"""The kernels behind ``onlinenorm.functional``'s fused paths: the scans over the batch, the C kernels
(``csrc/``, built and called through ctypes), the Triton kernels, the ``torch.library`` custom ops
that let ``torch.compile`` keep them, and the named structures they pass."""
